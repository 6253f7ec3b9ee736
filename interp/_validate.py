"""Input checks shared by interp's public functions: each raises a specific error naming the argument."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


def as_directions(x: object, d_model: int, *, name: str = "directions", allow_zero: bool = False) -> torch.Tensor:
    """``x`` as a float32 ``[n, d_model]`` tensor, or a ValueError/TypeError naming ``name``.

    Accepts a tensor or array of shape ``[d_model]`` (one direction) or ``[n, d_model]``, or a
    :class:`interp.DirectionSet`.
    """
    vectors = getattr(x, "vectors", x)
    if not isinstance(vectors, torch.Tensor):
        try:
            vectors = torch.as_tensor(vectors)
        except Exception as exc:
            raise TypeError(f"{name}: expected a tensor of shape [n, {d_model}], got {type(x).__name__}") from exc
    if vectors.ndim == 1:
        vectors = vectors[None]
    if vectors.ndim != 2:
        raise ValueError(f"{name}: expected shape [n, {d_model}], got {tuple(vectors.shape)}")
    if vectors.shape[0] == 0:
        raise ValueError(f"{name}: is empty (expected at least one direction)")
    if vectors.shape[1] != d_model:
        raise ValueError(
            f"{name}: directions have width {vectors.shape[1]} but the model's d_model is {d_model}"
        )
    if not (vectors.is_floating_point() or vectors.is_complex()):
        vectors = vectors.float()
    vectors = vectors.to(torch.float32)  # not detached: the weight kernels are differentiable in the directions
    finite = torch.isfinite(vectors).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(f"{name}: rows {bad[:10]} contain NaN or infinite values")
    if not allow_zero:
        zero = vectors.norm(dim=1) == 0
        if bool(zero.any()):
            bad = torch.nonzero(zero).flatten().tolist()
            raise ValueError(f"{name}: rows {bad[:10]} are zero vectors (a direction needs a nonzero norm)")
    return vectors


def as_layers(layers: int | Iterable[int] | None, n_layers: int, *, name: str = "layers") -> list[int]:
    """Valid layer indices in the order given (``None`` = all); negative indices count from the end."""
    return _as_indices(layers, n_layers, name=name, kind="layer")


def as_heads(heads: int | Iterable[int] | None, n_heads: int, *, name: str = "heads") -> list[int]:
    """Valid head indices in the order given (``None`` = all)."""
    return _as_indices(heads, n_heads, name=name, kind="head")


def _as_indices(layers: int | Iterable[int] | None, n_layers: int, *, name: str, kind: str) -> list[int]:
    if layers is None:
        return list(range(n_layers))
    if isinstance(layers, bool):
        raise TypeError(f"{name}: expected an int or a sequence of ints, got bool")
    items: Sequence[int] = [layers] if isinstance(layers, int) else list(layers)
    if len(items) == 0:
        raise ValueError(f"{name}: is empty (expected at least one {kind} index)")
    out = []
    for layer in items:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise TypeError(f"{name}: expected ints, got {layer!r}")
        if not -n_layers <= layer < n_layers:
            raise ValueError(f"{name}: {kind} {layer} is out of range for a model with {n_layers} {kind}s")
        out.append(layer % n_layers)
    return out


def require_columns(frame: object, columns: Sequence[str], name: str = "frame") -> None:
    """A TypeError unless ``frame`` is a DataFrame, a ValueError naming ``name`` if it lacks ``columns``."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name}: expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; has {list(frame.columns)}")
