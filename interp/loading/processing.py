"""TransformerLens' weight processing, with the options ``load_model`` uses, on a state dict.

``processed=True`` in interp means TransformerLens' ``ProcessWeights.process_weights`` with
``fold_ln`` and ``center_writing_weights`` (except on post-norm architectures, which TL neither folds
nor centres), ``center_unembed`` (except with a final logit softcap, where a shift of the logits is
not harmless), ``fold_value_biases``, and no refactoring of the attention factors.

:func:`process_state` runs exactly that. Each of TL's steps first copies every tensor of the state
dict, so that the caller's tensors are never changed; for a caller that gives its state dict away
(a streamed layer, converted for one use), ``owned=True`` runs the same TL steps in the same order
without those copies: every step replaces the tensors it changes by new ones, so only those are new
and the result is bit-for-bit what ``process_weights`` gives (tests/test_loading_processing.py). On a
layer of gemma-2-27b's shape (4.5 GB of float32 for the pair) the copies were most of the streamed
sweep's time (benchmarks/RESULTS.md, "Streaming").
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["centres_unembed", "is_post_norm", "process_state", "processing_options"]

_LN = ("LN", "LNPre")
# the keys TransformerLens' fold_value_biases reads or writes (GQA's _b_V; a split-format v.bias)
_VALUE_BIAS_KEYS = (".attn.b_V", ".attn._b_V", ".attn.v.bias", ".attn.W_O", ".attn.b_O")
_RMS = ("RMS", "RMSPre")


def is_post_norm(architecture: str | None) -> bool:
    """Whether the architecture's norms act on sublayer outputs: TransformerLens neither folds nor centres them."""
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    return architecture in set(POST_NORM_ARCHITECTURES)


def centres_unembed(cfg: Any) -> bool:
    """Whether processing centres ``W_U`` (and ``b_U``) over the vocabulary, TransformerLens'
    ``center_unembed``: not when the logits are soft-capped (centring would change the capped logits)."""
    return cfg.output_logits_soft_cap <= 0


def processing_options(cfg: Any) -> dict[str, bool]:
    """The ``ProcessWeights.process_weights`` options interp uses for a model with config ``cfg``."""
    post_norm = is_post_norm(cfg.original_architecture)
    return {
        "fold_ln": not post_norm,
        "center_writing_weights": not post_norm,
        "center_unembed": centres_unembed(cfg),
        "fold_value_biases": True,
    }


def process_state(
    state: dict[str, torch.Tensor], cfg: Any, *, owned: bool = False, center_unembed: bool = True
) -> dict[str, torch.Tensor]:
    """``state`` (TransformerLens layout, float32, every parameter present) processed as ``load_model``
    processes weights (:func:`processing_options`).

    ``center_unembed=False`` leaves ``W_U``/``b_U`` uncentred even where the options centre them (a
    streamed block of vocabulary rows: the mean over the whole vocabulary is taken by the caller).

    ``owned=True``: the caller gives ``state`` and its tensors away (they may be changed or freed);
    the result is the same, computed without TransformerLens' defensive copy of every tensor per step.
    """
    from transformer_lens.weight_processing import ProcessWeights

    options = processing_options(cfg)
    options["center_unembed"] = options["center_unembed"] and center_unembed
    if not owned:
        return ProcessWeights.process_weights(state, cfg, refactor_factored_attn_matrices=False, **options)
    if any(v.dtype != torch.float32 for v in state.values() if v.is_floating_point()):
        raise ValueError("state: owned processing expects float32 tensors (process_weights upcasts a copy)")
    return _process_owned(dict(state), cfg, **options)


def _process_owned(
    state: dict[str, torch.Tensor],
    cfg: Any,
    *,
    fold_ln: bool,
    center_writing_weights: bool,
    center_unembed: bool,
    fold_value_biases: bool,
) -> dict[str, torch.Tensor]:
    """``ProcessWeights.process_weights`` (TransformerLens 3.x, no adapter, float32) step by step, each
    step given only the tensors it reads (or, where it works layer by layer, called per layer)."""
    from transformer_lens.weight_processing import ProcessWeights as P

    norm = getattr(cfg, "normalization_type", "LN")
    if fold_ln and norm in _LN + _RMS:
        ln = norm in _LN  # LayerNorm folds its bias and centres the reading weights; RMS norm neither
        gqa = "" if getattr(cfg, "n_key_value_heads", None) is None else "_"
        for layer in range(cfg.n_layers):  # fold_layer_norm without its copy of the state dict
            state = P._fold_layer(state, cfg, layer, ln, ln, None, gqa)
        state = P._fold_final_rms_bias(state, cfg, ln, None)
        state = P._fold_unembed_layer_norm(state, cfg, ln, ln, None)
    centre = center_writing_weights and norm in _LN and not getattr(cfg, "final_rms", False)
    if centre:
        state = P.center_writing_weights(state, cfg)  # replaces tensors, copies nothing
    if center_unembed:  # reads and writes the unembedding only
        state.update(P.center_unembed({k: v for k, v in state.items() if k.startswith("unembed.")}, cfg=cfg))
    if fold_value_biases:  # reads and writes b_V, W_O and b_O only
        state.update(P.fold_value_biases({k: v for k, v in state.items() if k.endswith(_VALUE_BIAS_KEYS)}, cfg))
        if center_writing_weights and norm in _LN:  # as process_weights: without the final_rms test
            for layer in range(cfg.n_layers):
                key = f"blocks.{layer}.attn.b_O"
                if key in state:
                    state[key] = state[key] - state[key].mean()
    return state
