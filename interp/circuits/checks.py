"""Argument checks of the circuit kernels: a model whose blocks they understand, a pair of such
models, directions and layers, and row names."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from interp._validate import as_directions, as_layers
from interp.pair import ModelPair

__all__ = ["check_model", "check_pair", "names_of", "prepare"]


def check_model(model: object, *, name: str = "model") -> HookedTransformer:
    """``model`` if it is a HookedTransformer whose blocks the circuit kernels understand."""
    if not isinstance(model, HookedTransformer):
        raise TypeError(f"{name}: expected a transformer_lens.HookedTransformer, got {type(model).__name__}")
    cfg = model.cfg
    if cfg.original_architecture in ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM"):
        raise ValueError(f"{name}: OLMo-style post-norm / full-width qk-norm blocks are not supported")
    if cfg.use_logn_attn or cfg.clip_qkv is not None or cfg.use_attention_sinks:
        raise ValueError(
            f"{name}: position-dependent query scaling, QKV clipping and attention sinks are not supported"
        )
    if cfg.parallel_attn_mlp:
        raise ValueError(f"{name}: parallel attention/MLP blocks are not supported")
    return model


def prepare(
    model: object, directions: object, layers: object, *, name: str = "directions", model_name: str = "model"
) -> tuple[HookedTransformer, Float[torch.Tensor, "n d_model"], list[int]]:
    """Validated ``(model, float32 directions [n, d_model], layer indices)``."""
    model = check_model(model, name=model_name)
    vectors = as_directions(directions, model.cfg.d_model, name=name)
    layer_list = as_layers(layers, model.cfg.n_layers)
    return model, vectors.to(model.cfg.device), layer_list


def names_of(directions: object, names: Sequence[str] | None, n: int, *, name: str = "names") -> list[str]:
    """Row names: ``names`` if given, else a DirectionSet's own names, else ``"0", "1", ...``."""
    if names is None:
        names = getattr(directions, "names", None)
    if names is None:
        return [str(i) for i in range(n)]
    if isinstance(names, str):
        raise TypeError(f"{name}: expected a sequence of strings, got a single string")
    names = [str(x) for x in names]
    if len(names) != n:
        raise ValueError(f"{name}: {len(names)} names for {n} directions (need one per direction)")
    if len(set(names)) != n:
        raise ValueError(f"{name}: names must be unique")
    return names


def check_pair(pair: ModelPair, *, name: str = "pair") -> tuple[HookedTransformer, HookedTransformer]:
    """``(base, tuned)`` of ``pair`` (see :meth:`interp.ModelPair.check`), both models supported by the kernels."""
    pair = ModelPair.check(pair, name=name)
    return check_model(pair.base, name=f"{name}.base"), check_model(pair.tuned, name=f"{name}.tuned")
