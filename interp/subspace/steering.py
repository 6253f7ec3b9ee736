"""Weight steering: W ← W + α·ΔW on a HookedTransformer's parameters, temporarily or permanently.

>>> with steer(pair.base, pair.delta(), alpha=1.0):   # the base now computes the tuned model
...     logits = pair.base(tokens)
>>> # here the base's original weights are back, bit for bit
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from transformer_lens import HookedTransformer


def check_delta(model: HookedTransformer, delta: Mapping[str, torch.Tensor]) -> dict[str, torch.nn.Parameter]:
    """The model parameters ``delta`` addresses, after checking names, shapes and finiteness.

    Raises ValueError naming the offending key: an unknown parameter name, a shape that differs from
    ``model.state_dict()[name]``, NaN/inf in the delta, or NaN/inf in the model weight it would touch.
    """
    if not isinstance(model, HookedTransformer):
        raise TypeError(f"model: expected a HookedTransformer, got {type(model).__name__}")
    if not isinstance(delta, Mapping):
        raise TypeError(f"delta: expected a mapping of TL parameter name -> tensor, got {type(delta).__name__}")
    if len(delta) == 0:
        raise ValueError("delta: is empty")
    params = dict(model.named_parameters())
    unknown = [key for key in delta if key not in params]
    if unknown:
        example = next(iter(k for k in params if ".attn.W_O" in k), next(iter(params)))
        raise ValueError(
            f"delta: {len(unknown)} keys are not parameters of the model, e.g. {unknown[:3]} "
            f"(expected TransformerLens parameter names like {example!r})"
        )
    out = {}
    for key, value in delta.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"delta[{key!r}]: expected a tensor, got {type(value).__name__}")
        param = params[key]
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(
                f"delta[{key!r}]: shape {tuple(value.shape)} does not match the model's {tuple(param.shape)}"
            )
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"delta[{key!r}]: contains NaN or infinite values")
        if not bool(torch.isfinite(param).all()):
            raise ValueError(f"model: parameter {key!r} contains NaN or infinite values")
        out[key] = param
    return out


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha: expected a real number, got {type(alpha).__name__}")
    if not math.isfinite(alpha):
        raise ValueError(f"alpha: expected a finite number, got {alpha}")
    return float(alpha)


@contextmanager
def steer(model: HookedTransformer, delta: Mapping[str, torch.Tensor], alpha: float = 1.0) -> Iterator[HookedTransformer]:
    """Inside the block, ``model`` has weights W + α·ΔW; on exit (also on an exception) the originals.

    Only the touched tensors are copied; restoration is a ``copy_`` of those copies, so it is
    bit-exact. ``alpha == 0`` leaves the weights untouched.
    """
    alpha = _check_alpha(alpha)
    params = check_delta(model, delta)
    saved = {key: param.detach().clone() for key, param in params.items()}
    try:
        with torch.no_grad():
            if alpha != 0.0:
                for key, param in params.items():
                    param.add_(delta[key].to(device=param.device, dtype=param.dtype), alpha=alpha)
        yield model
    finally:
        with torch.no_grad():
            for key, param in params.items():
                param.copy_(saved[key])


def apply_delta(model: HookedTransformer, delta: Mapping[str, torch.Tensor], alpha: float = 1.0) -> HookedTransformer:
    """Permanently set W ← W + α·ΔW for every tensor in ``delta``; returns ``model``."""
    alpha = _check_alpha(alpha)
    params = check_delta(model, delta)
    with torch.no_grad():
        for key, param in params.items():
            param.add_(delta[key].to(device=param.device, dtype=param.dtype), alpha=alpha)
    return model
