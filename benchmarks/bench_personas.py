"""Persona directions on SmolLM2: interp's batched role vectors + PCA against the straightforward
approach (one prompt at a time through the whole model with ``run_with_cache``, the residual read
from the cache, averaged in Python loops over roles and questions, then an SVD).

Both compute the same numbers (tests/test_personas.py checks this); interp runs each system
prompt's shared token prefix once (key-value cache), batches the prompts, keeps only the last-token
residual inside a hook and stops the forward pass after the requested layer.
"""

from __future__ import annotations

import torch

from benchmarks._harness import BenchRow, compare
from interp.loading import load_model
from interp.personas import persona_directions, persona_prompts

N_ROLES, N_QUESTIONS, N_COMPONENTS = 6, 3, 3  # small: the reference runs every prompt alone


def _seed_style(model, roles: dict[str, str], questions, default: str, layer: int, k: int) -> torch.Tensor:  # noqa: ANN001
    """Loops as a notebook would write them: one full forward + full cache per prompt."""
    hook = f"blocks.{layer}.hook_resid_post"

    def mean_last(system: str) -> torch.Tensor:
        rows = []
        for question in questions:
            messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
            text = model.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            _, cache = model.run_with_cache(model.to_tokens(text))
            rows.append(cache[hook][0, -1])
        return torch.stack(rows).mean(0)

    base = mean_last(default)
    vectors = torch.stack([mean_last(system) - base for system in roles.values()])
    centred = vectors - vectors.mean(0, keepdim=True)
    _u, _s, vh = torch.linalg.svd(centred, full_matrices=False)
    return vh[:k]


def run() -> list[BenchRow]:
    torch.set_grad_enabled(False)
    model = load_model("smollm2-135m-instruct")
    prompts = persona_prompts()
    roles = dict(list(prompts.roles.items())[:N_ROLES])
    questions = list(prompts.questions[:N_QUESTIONS])
    layer = model.cfg.n_layers // 2

    def interp_fn() -> None:
        persona_directions(model, layer=layer, n_components=N_COMPONENTS, roles=roles, questions=questions)

    def reference_fn() -> None:
        _seed_style(model, roles, questions, prompts.default, layer, N_COMPONENTS)

    shape = f"{N_ROLES} roles × {N_QUESTIONS} questions (+ default), layer {layer}, {N_COMPONENTS} PCs"
    return [
        compare("persona PCs from role prompts", interp_fn, reference_fn,
                reference="one prompt at a time, full run_with_cache, Python loops", repeats=1,
                notes=shape),
    ]
