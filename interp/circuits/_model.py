"""The pieces of a HookedTransformer that the weight-circuit kernels read, stacked over layers.

Each block's norms are described by :class:`NormStack`, derived from the block's own norm modules
(``ln1``, ``ln2``, ``ln1_post``, ``ln2_post``, ``attn.q_norm``/``k_norm``) so that applying it is
exactly what the model does; weights are stacked over the requested layers with a leading
``layer`` dimension and cast to float32 (the kernels always compute in float32).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import einops
import torch
from jaxtyping import Float
from torch import nn
from transformer_lens import HookedTransformer
from transformer_lens.components import LayerNorm, LayerNormPre, RMSNorm, RMSNormPre

from interp._validate import as_directions, as_layers

NormKind = Literal["identity", "rms", "layernorm"]


@dataclass(frozen=True)
class NormStack:
    """One norm per layer: ``y = (x - centre) / sqrt(mean((x - centre)^2) + eps) * w + b``.

    ``kind`` "rms" has no centring, "layernorm" subtracts the mean, "identity" returns ``x``;
    ``w``/``b`` are ``[layer, length]`` or ``None`` (a TL "Pre" norm, whose gain is folded into the
    next weights).
    """

    kind: NormKind
    eps: float
    w: Float[torch.Tensor, "layer length"] | None = None
    b: Float[torch.Tensor, "layer length"] | None = None

    def __call__(self, x: Float[torch.Tensor, "layer *mid length"]) -> Float[torch.Tensor, "layer *mid length"]:
        """Apply layer ``l``'s norm to ``x[l]`` over the last dimension (float32 in and out)."""
        if self.kind == "identity":
            return x
        if self.kind == "layernorm":
            x = x - x.mean(-1, keepdim=True)
        x = x / (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()
        if self.w is not None:
            x = x * _per_layer(self.w, x)
        if self.b is not None:
            x = x + _per_layer(self.b, x)
        return x


def _per_layer(p: Float[torch.Tensor, "layer length"], x: torch.Tensor) -> torch.Tensor:
    """``p`` viewed as ``[layer, 1, ..., 1, length]`` to broadcast against ``x``."""
    return p.view(p.shape[0], *([1] * (x.ndim - 2)), p.shape[-1])


def norm_stack(modules: Sequence[nn.Module], *, name: str) -> NormStack:
    """The :class:`NormStack` that does what each module in ``modules`` (one per layer) does."""
    kinds = set()
    eps = set()
    for module in modules:
        if isinstance(module, nn.Identity):
            kinds.add(("identity", False, False))
            continue
        if isinstance(module, RMSNormPre):
            kinds.add(("rms", False, False))
        elif isinstance(module, RMSNorm):
            kinds.add(("rms", True, False))
        elif isinstance(module, LayerNormPre):
            kinds.add(("layernorm", False, False))
        elif isinstance(module, LayerNorm):
            kinds.add(("layernorm", True, True))
        else:
            raise ValueError(
                f"{name}: norm module {type(module).__name__} is not supported (expected TransformerLens "
                "RMSNorm, RMSNormPre, LayerNorm, LayerNormPre or Identity)"
            )
        eps.add(float(module.eps))
    if len(kinds) != 1 or len(eps) > 1:
        raise ValueError(f"{name}: the layers use different kinds of norm ({sorted(kinds)}, eps {sorted(eps)})")
    kind, has_w, has_b = kinds.pop()
    return NormStack(
        kind=kind,
        eps=eps.pop() if eps else 0.0,
        w=_stack([m.w for m in modules]) if has_w else None,
        b=_stack([m.b for m in modules]) if has_b else None,
    )


def _stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``tensors`` stacked on a new leading ``layer`` dimension, float32 (one copy at most)."""
    if len(tensors) == 1:
        return tensors[0].detach().unsqueeze(0).to(torch.float32)
    return torch.stack([t.detach() for t in tensors]).to(torch.float32)


def sum_head_groups(
    x: Float[torch.Tensor, "layer head *rest"], n_groups: int
) -> Float[torch.Tensor, "layer group *rest"]:
    """``y[:, k] = Σ_{h ∈ group k} x[:, h]`` for ``n_groups`` consecutive head blocks (GQA: the query
    heads that read KV head ``k``). Slices are added in place: a strided ``sum`` over the middle
    axis is several times slower on CPU."""
    heads = einops.rearrange(x, "layer (group member) ... -> member layer group ...", group=n_groups)
    total = heads[0].clone()
    for member in heads[1:]:
        total += member
    return total


def stack_blocks(model: HookedTransformer, layers: Sequence[int], get: Callable[[nn.Module], torch.Tensor]) -> torch.Tensor:
    """``get(model.blocks[l])`` for each layer, stacked as ``[layer, ...]`` in float32."""
    return _stack([get(model.blocks[layer]) for layer in layers])


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


# The kernels take weights stacked over a leading ``layer`` dimension; the drivers feed them runs of
# consecutive layers whose stacked float32 weights fit in this many bytes. A run of one layer is a
# view of the block's own parameters (no copy), so a budget of 0 never copies a float32 weight. On
# CPUs copying costs more than the Python overhead it saves, so the default there is 0; on
# accelerators stacking many layers saves kernel launches. See docs/analyses/weight_circuits.md.
CHUNK_BYTES: dict[str, int] = {"cpu": 0, "default": 256 * 2**20}


def layer_chunks(
    layers: Sequence[int], bytes_per_layer: int, device: torch.device | str = "cpu", budget: int | None = None
) -> list[list[int]]:
    """``layers`` cut into consecutive runs whose stacked float32 weights fit in ``budget`` bytes
    (default :data:`CHUNK_BYTES` for the device type; at least one layer per run)."""
    if budget is None:
        kind = torch.device(device).type
        budget = CHUNK_BYTES.get(kind, CHUNK_BYTES["default"])
    per_chunk = max(1, budget // max(1, bytes_per_layer))
    return [list(layers[i : i + per_chunk]) for i in range(0, len(layers), per_chunk)]


def param_bytes(*tensors: torch.Tensor) -> int:
    """Bytes these tensors take as float32."""
    return 4 * sum(t.numel() for t in tensors)


_PAIR_FIELDS = ("d_model", "n_layers", "n_heads", "d_head", "n_key_value_heads", "d_mlp", "act_fn",
                "gated_mlp", "normalization_type", "use_qk_norm", "use_normalization_before_and_after")


def check_pair(pair: object, *, name: str = "pair") -> tuple[HookedTransformer, HookedTransformer]:
    """``(base, tuned)`` from an :class:`interp.ModelPair` (or a ``(base, tuned)`` tuple) of one architecture."""
    if isinstance(pair, tuple) and len(pair) == 2:
        base, tuned = pair
    elif hasattr(pair, "base") and hasattr(pair, "tuned"):
        base, tuned = pair.base, pair.tuned
    else:
        raise TypeError(f"{name}: expected an interp.ModelPair or a (base, tuned) tuple, got {type(pair).__name__}")
    check_model(base, name=f"{name}.base")
    check_model(tuned, name=f"{name}.tuned")
    mismatched = [
        f"{field} (base {getattr(base.cfg, field)!r}, tuned {getattr(tuned.cfg, field)!r})"
        for field in _PAIR_FIELDS
        if getattr(base.cfg, field) != getattr(tuned.cfg, field)
    ]
    if mismatched:
        raise ValueError(f"{name}: base and tuned have different architectures: " + "; ".join(mismatched))
    return base, tuned
