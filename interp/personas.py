"""Persona directions from prompts: role vectors, trait vectors and the principal axes of role space.

The recipe behind the persona-space analyses (seeds 000/001), at prompt level: ask the model a set of
neutral questions with a role as the system prompt, read the residual stream at the last prompt
token at one layer, average over questions and subtract the same average under a plain-assistant
system prompt::

    v_role = mean_q h_L(role, q) - mean_q h_L(default, q)

Persona PCs are the principal axes of the role vectors centred across roles. Everything runs as
batched forward passes (right padding, explicit attention mask, stopping after layer ``L``).

The packaged prompts (``interp/data/personas.json``: 30 roles, 12 traits, 8 questions) were written
for interp; pass your own mappings to use others.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import einops
import pandas as pd
import torch
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer

from interp._validate import as_layers
from interp.directions import DirectionSet

__all__ = [
    "PersonaDirections",
    "PersonaPrompts",
    "format_prompt",
    "persona_directions",
    "persona_prompts",
    "prompt_activations",
    "role_vectors",
    "trait_vectors",
]

Position = Literal["last", "mean"]
PromptFormat = Literal["auto", "chat", "plain"]


class _PackagedDefault:
    def __repr__(self) -> str:
        return "<packaged default>"


#: Sentinel for ``default_system``: the packaged plain-assistant prompt ("You are a helpful assistant.").
PACKAGED_DEFAULT: Any = _PackagedDefault()


@dataclass(frozen=True)
class PersonaPrompts:
    """The packaged prompt set: system prompts per role and per trait, the default-assistant prompt
    and the neutral questions asked under each."""

    roles: dict[str, str]
    traits: dict[str, str]
    questions: tuple[str, ...]
    default: str


@lru_cache(maxsize=1)
def _packaged() -> PersonaPrompts:
    text = resources.files("interp").joinpath("data/personas.json").read_text(encoding="utf-8")
    data = json.loads(text)
    return PersonaPrompts(
        roles=dict(data["roles"]),
        traits=dict(data["traits"]),
        questions=tuple(data["questions"]),
        default=str(data["default"]),
    )


def persona_prompts() -> PersonaPrompts:
    """The packaged prompts from ``interp/data/personas.json`` (a fresh copy; edit it freely)."""
    base = _packaged()
    return PersonaPrompts(dict(base.roles), dict(base.traits), tuple(base.questions), base.default)


# ---------------------------------------------------------------------- prompts
def format_prompt(
    model: HookedTransformer, system: str | None, question: str, *, prompt_format: PromptFormat = "auto"
) -> str:
    """The text fed to ``model`` for ``question`` under the system prompt ``system``.

    ``"chat"``: the tokenizer's chat template, ``apply_chat_template([system, user],
    add_generation_prompt=True)`` (a template that rejects the system role gets the system prompt
    prepended to the user turn; ``system=None`` sends no system turn, so a template may insert its
    own default, as SmolLM2's does). ``"plain"``: ``"System: {system}\\nUser: {question}\\nAssistant:"``
    (no ``System:`` line when ``system`` is None), for base models without a template such as
    Gemma 3 270M. ``"auto"`` (default): ``"chat"`` when the tokenizer has a chat template, else
    ``"plain"``.
    """
    use_chat = _use_chat(model, prompt_format)
    if not isinstance(question, str):
        raise TypeError(f"question: expected a string, got {type(question).__name__}")
    if system is not None and not isinstance(system, str):
        raise TypeError(f"system: expected a string or None, got {type(system).__name__}")
    if not use_chat:
        head = "" if system is None else f"System: {system}\n"
        return f"{head}User: {question}\nAssistant:"
    tokenizer = model.tokenizer
    messages = [{"role": "user", "content": question}]
    if system is not None:
        try:
            return tokenizer.apply_chat_template(
                [{"role": "system", "content": system}, *messages], tokenize=False, add_generation_prompt=True
            )
        except Exception:  # templates that refuse a system turn (e.g. Gemma 2) raise jinja errors
            messages = [{"role": "user", "content": f"{system}\n\n{question}"}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _use_chat(model: HookedTransformer, prompt_format: str) -> bool:
    if prompt_format not in ("auto", "chat", "plain"):
        raise ValueError(f"prompt_format: expected 'auto', 'chat' or 'plain', got {prompt_format!r}")
    if model.tokenizer is None:
        raise ValueError("model: has no tokenizer, so prompts cannot be tokenized")
    has_template = bool(getattr(model.tokenizer, "chat_template", None))
    if prompt_format == "chat" and not has_template:
        raise ValueError("prompt_format: 'chat' needs a tokenizer with a chat template; this one has none (use 'plain')")
    return has_template if prompt_format == "auto" else prompt_format == "chat"


def _token_ids(model: HookedTransformer, text: str) -> list[int]:
    """Token ids of ``text`` as the model would see it: BOS prepended iff ``cfg.default_prepend_bos``
    and the text does not already start with it (chat templates often write it themselves)."""
    tokenizer = model.tokenizer
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    bos = tokenizer.bos_token_id
    if model.cfg.default_prepend_bos and bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    if not ids:
        raise ValueError(f"prompt {text!r} has no tokens")
    return ids


# ---------------------------------------------------------------------- activations
def prompt_activations(
    model: HookedTransformer,
    systems: Sequence[str | None],
    questions: Sequence[str],
    *,
    layer: int,
    position: Position = "last",
    batch_size: int = 8,
    prompt_format: PromptFormat = "auto",
) -> Float[torch.Tensor, "system question d_model"]:
    """Residual stream ``h_L(s, q)`` = ``blocks.{layer}.hook_resid_post`` for every system prompt
    ``s`` and question ``q``, at the last prompt token (``position="last"``) or averaged over all
    prompt tokens (``"mean"``).

    Prompts are sorted by length, right-padded into batches of ``batch_size`` with an explicit
    attention mask, and run only up to block ``layer``; padding never reaches a real token (causal
    attention, right padding), so the result equals one forward pass per prompt.
    """
    layer = _as_layer(model, layer)
    if position not in ("last", "mean"):
        raise ValueError(f"position: expected 'last' or 'mean', got {position!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    if isinstance(systems, str) or not isinstance(systems, Sequence) or len(systems) == 0:
        raise ValueError("systems: expected a non-empty sequence of system prompts (str or None)")
    questions = _as_questions(questions)
    texts = [format_prompt(model, s, q, prompt_format=prompt_format) for s in systems for q in questions]
    ids = [_token_ids(model, t) for t in texts]
    longest = max(len(i) for i in ids)
    if longest > model.cfg.n_ctx:
        raise ValueError(f"questions: a prompt has {longest} tokens, more than the model's context of {model.cfg.n_ctx}")

    out = torch.empty(len(ids), model.cfg.d_model, dtype=torch.float32)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        tokens, mask = _right_pad([ids[i] for i in rows], pad_id)
        out[torch.tensor(rows)] = _run_batch(model, tokens, mask, layer=layer, position=position)
    return einops.rearrange(out, "(system question) d -> system question d", system=len(systems))


def _run_batch(
    model: HookedTransformer,
    tokens: Int[torch.Tensor, "batch pos"],
    mask: Int[torch.Tensor, "batch pos"],
    *,
    layer: int,
    position: str,
) -> Float[torch.Tensor, "batch d_model"]:
    """``hook_resid_post`` of block ``layer`` at the requested position, running blocks 0..layer only."""
    captured: list[torch.Tensor] = []

    def keep(resid: Float[torch.Tensor, "batch pos d_model"], hook: Any) -> None:
        captured.append(_read_position(resid, mask.to(resid.device), position))

    device = model.cfg.device
    model.run_with_hooks(
        tokens.to(device),
        attention_mask=mask.to(device),
        fwd_hooks=[(f"blocks.{layer}.hook_resid_post", keep)],
        stop_at_layer=layer + 1,
        return_type=None,
    )
    return captured[0].detach().to("cpu", torch.float32)


def _read_position(
    resid: Float[torch.Tensor, "batch pos d_model"], mask: Int[torch.Tensor, "batch pos"], position: str
) -> Float[torch.Tensor, "batch d_model"]:
    if position == "last":
        last = mask.sum(dim=1) - 1
        return resid[torch.arange(resid.shape[0], device=resid.device), last]
    weights = mask.to(resid.dtype)
    summed = einops.einsum(resid, weights, "batch pos d, batch pos -> batch d")
    return summed / weights.sum(dim=1, keepdim=True)


def _right_pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return tokens, mask


# ---------------------------------------------------------------------- role / trait vectors
def role_vectors(
    model: HookedTransformer,
    roles: Mapping[str, str] | Sequence[str] | None = None,
    questions: Sequence[str] | None = None,
    *,
    layer: int,
    position: Position = "last",
    batch_size: int = 8,
    default_system: str | None = PACKAGED_DEFAULT,
    prompt_format: PromptFormat = "auto",
) -> DirectionSet:
    """One unnormalised vector per role: ``v_r = mean_q h_L(r, q) - mean_q h_L(default, q)``.

    ``roles``: ``{name: system prompt}``, a list of packaged role names, or None for all packaged
    roles. ``questions``: defaults to the packaged questions. ``default_system``: the baseline system
    prompt (packaged: "You are a helpful assistant."; None sends no system turn). See
    :func:`prompt_activations` for ``position`` and batching and :func:`format_prompt` for the text.

    Example::

        roles = role_vectors(model, ["pirate", "poet"], layer=15)
        roles["pirate"]          # [d_model], in the residual basis of blocks.15.hook_resid_post
    """
    return _vectors(
        model, "role", _as_prompts(roles, _packaged().roles, "roles", "role"), questions,
        layer=layer, position=position, batch_size=batch_size, default_system=default_system,
        prompt_format=prompt_format,
    )


def trait_vectors(
    model: HookedTransformer,
    traits: Mapping[str, str] | Sequence[str] | None = None,
    questions: Sequence[str] | None = None,
    *,
    layer: int,
    position: Position = "last",
    batch_size: int = 8,
    default_system: str | None = PACKAGED_DEFAULT,
    prompt_format: PromptFormat = "auto",
) -> DirectionSet:
    """One unnormalised vector per trait, ``v_t = mean_q h_L(t, q) - mean_q h_L(default, q)``, with
    trait system prompts ("You are a very {trait} assistant: ..."); arguments as :func:`role_vectors`."""
    return _vectors(
        model, "trait", _as_prompts(traits, _packaged().traits, "traits", "trait"), questions,
        layer=layer, position=position, batch_size=batch_size, default_system=default_system,
        prompt_format=prompt_format,
    )


def _vectors(
    model: HookedTransformer,
    kind: str,
    prompts: dict[str, str],
    questions: Sequence[str] | None,
    **kwargs: Any,
) -> DirectionSet:
    return _persona_vectors(model, {kind: prompts}, questions, **kwargs)[kind]


def _persona_vectors(
    model: HookedTransformer,
    groups: Mapping[str, dict[str, str]],
    questions: Sequence[str] | None,
    *,
    layer: int,
    position: Position,
    batch_size: int,
    default_system: str | None,
    prompt_format: PromptFormat,
) -> dict[str, DirectionSet]:
    """Vectors for several groups of system prompts sharing one pass over the default prompt."""
    layer = _as_layer(model, layer)
    questions = _as_questions(_packaged().questions if questions is None else questions)
    if default_system is PACKAGED_DEFAULT:
        default_system = _packaged().default
    if default_system is not None and not isinstance(default_system, str):
        raise TypeError(f"default_system: expected a string or None, got {type(default_system).__name__}")
    systems = [s for prompts in groups.values() for s in prompts.values()] + [default_system]
    acts = prompt_activations(
        model, systems, questions, layer=layer, position=position, batch_size=batch_size,
        prompt_format=prompt_format,
    )
    means = einops.reduce(acts, "system question d -> system d", "mean")
    offsets = means[:-1] - means[-1:]
    used_format = "chat" if _use_chat(model, prompt_format) else "plain"
    model_name = getattr(model.cfg, "model_name", "model")
    out: dict[str, DirectionSet] = {}
    start = 0
    for kind, prompts in groups.items():
        rows = offsets[start : start + len(prompts)]
        start += len(prompts)
        out[kind] = DirectionSet(
            tuple(prompts),
            rows,
            layer=layer,
            source=f"{kind} vectors of {model_name} at blocks.{layer}.hook_resid_post ({position} token, minus default)",
            metadata={
                "kind": kind,
                "position": position,
                "prompt_format": used_format,
                "default_system": default_system,
                "questions": list(questions),
                "system_prompts": dict(prompts),
            },
        )
    return out


# ---------------------------------------------------------------------- persona PCs
@dataclass(frozen=True, eq=False)
class PersonaDirections:
    """Principal axes of role space at one layer, with the role (and optionally trait) vectors.

    ``pcs``: unit vectors PC1..PCk of the role vectors centred across roles, sorted by explained
    variance (ratios in ``pcs.metadata["explained_variance_ratio"]`` and :attr:`explained_variance`).
    """

    pcs: DirectionSet
    roles: DirectionSet
    traits: DirectionSet | None
    layer: int

    @property
    def explained_variance(self) -> Float[torch.Tensor, " component"]:
        """Share of the variance across roles captured by each PC, ``S_i^2 / sum_j S_j^2``."""
        return torch.tensor(self.pcs.metadata["explained_variance_ratio"], dtype=torch.float32)

    def scores(self) -> pd.DataFrame:
        """Coordinates in PC space, one row per (vector, component): ``<v - mean_roles v, PC_i>``.

        Columns ``kind`` ("role"/"trait"), ``name``, ``component``, ``score``. Traits are placed with
        the role mean as origin, like a fitted PCA transforming new samples.
        """
        center = self.roles.vectors.mean(dim=0, keepdim=True)
        frames = []
        for kind, group in (("role", self.roles), ("trait", self.traits)):
            if group is None:
                continue
            coords = einops.einsum(group.vectors - center, self.pcs.vectors, "n d, k d -> n k")
            frames.append(
                pd.DataFrame(
                    {
                        "kind": kind,
                        "name": [n for n in group.names for _ in self.pcs.names],
                        "component": list(self.pcs.names) * len(group),
                        "score": coords.flatten().tolist(),
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)


def persona_directions(
    model: HookedTransformer,
    *,
    layer: int | None = None,
    n_components: int = 5,
    roles: Mapping[str, str] | Sequence[str] | None = None,
    questions: Sequence[str] | None = None,
    traits: Mapping[str, str] | Sequence[str] | bool = False,
    position: Position = "last",
    batch_size: int = 8,
    default_system: str | None = PACKAGED_DEFAULT,
    prompt_format: PromptFormat = "auto",
) -> PersonaDirections:
    """Persona PCs: the top ``n_components`` principal axes of the role vectors at ``layer``.

    With ``v_r`` from :func:`role_vectors` and ``V`` the matrix of ``v_r - mean_r v_r``, the PCs are
    the top right singular vectors of ``V`` (sign: largest-|entry| positive), see
    :meth:`DirectionSet.from_pca`. ``layer`` defaults to the middle layer, ``n_layers // 2``.
    ``traits``: also compute trait vectors (True: packaged traits; or a mapping / list of names).
    ``n_components`` may be at most ``n_roles - 1``. Deterministic: same inputs, same result.

    Example::

        persona = persona_directions(model, n_components=3, questions=persona_prompts().questions[:4])
        persona.pcs.with_negations()     # PC1, -PC1, PC2, ... for QK/OV probes
        persona.explained_variance       # tensor of 3 ratios, decreasing
    """
    layer = model.cfg.n_layers // 2 if layer is None else _as_layer(model, layer)
    role_prompts = _as_prompts(roles, _packaged().roles, "roles", "role")
    if not isinstance(n_components, int) or isinstance(n_components, bool):
        raise TypeError(f"n_components: expected an int, got {n_components!r}")
    if not 1 <= n_components <= len(role_prompts) - 1:
        raise ValueError(
            f"n_components: must be between 1 and n_roles - 1 = {len(role_prompts) - 1} "
            f"(the rank of {len(role_prompts)} centred role vectors), got {n_components}"
        )
    groups = {"role": role_prompts}
    if traits is True:
        groups["trait"] = dict(_packaged().traits)
    elif traits is not False and traits is not None:
        groups["trait"] = _as_prompts(traits, _packaged().traits, "traits", "trait")
    vectors = _persona_vectors(
        model, groups, questions, layer=layer, position=position, batch_size=batch_size,
        default_system=default_system, prompt_format=prompt_format,
    )
    model_name = getattr(model.cfg, "model_name", "model")
    pcs = DirectionSet.from_pca(
        vectors["role"].vectors,
        n_components,
        prefix="PC",
        layer=layer,
        source=f"persona PCA of {model_name} at layer {layer} ({len(role_prompts)} roles)",
    )
    return PersonaDirections(pcs=pcs, roles=vectors["role"], traits=vectors.get("trait"), layer=layer)


# ---------------------------------------------------------------------- argument checks
def _as_layer(model: HookedTransformer, layer: object) -> int:
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise TypeError(f"layer: expected one int layer index, got {layer!r}")
    return as_layers(layer, model.cfg.n_layers, name="layer")[0]


def _as_questions(questions: object) -> tuple[str, ...]:
    if isinstance(questions, str) or not isinstance(questions, Sequence):
        raise TypeError(f"questions: expected a sequence of strings, got {type(questions).__name__}")
    if len(questions) == 0:
        raise ValueError("questions: is empty (expected at least one question)")
    bad = [q for q in questions if not isinstance(q, str) or not q.strip()]
    if bad:
        raise ValueError(f"questions: every question must be a non-empty string, got {bad[:3]!r}")
    return tuple(questions)


def _as_prompts(
    prompts: Mapping[str, str] | Sequence[str] | None, packaged: Mapping[str, str], name: str, kind: str
) -> dict[str, str]:
    if prompts is None:
        return dict(packaged)
    if isinstance(prompts, Mapping):
        out = dict(prompts)
    elif isinstance(prompts, Sequence) and not isinstance(prompts, str):
        unknown = [p for p in prompts if p not in packaged]
        if unknown:
            raise ValueError(f"{name}: unknown packaged {kind}s {unknown[:10]}; known: {sorted(packaged)}")
        out = {p: packaged[p] for p in prompts}
    else:
        raise TypeError(f"{name}: expected a mapping of {kind} -> system prompt or a list of {kind} names, got {type(prompts).__name__}")
    if not out:
        raise ValueError(f"{name}: is empty (expected at least one {kind})")
    bad = [k for k, v in out.items() if not isinstance(k, str) or not k or not isinstance(v, str) or not v.strip()]
    if bad:
        raise ValueError(f"{name}: names and system prompts must be non-empty strings; bad entries: {bad[:10]}")
    return out
