"""Norms of a HookedTransformer's blocks as one object per kind, stacked over layers.

Each block's norms are described by :class:`NormStack`, derived from the block's own norm modules
(``ln1``, ``ln2``, ``ln1_post``, ``ln2_post``, ``attn.q_norm``/``k_norm``) so that applying it is
exactly what the model does; weights are float32 with a leading ``layer`` dimension.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import nn
from transformer_lens.components import LayerNorm, LayerNormPre, RMSNorm, RMSNormPre

from interp.circuits.stacking import stack

__all__ = ["NormKind", "NormStack", "norm_stack"]

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
        w=stack([m.w for m in modules]) if has_w else None,
        b=stack([m.b for m in modules]) if has_b else None,
    )
