"""Weight deltas ΔW = W_tuned − W_base per TransformerLens tensor, viewed in the residual stream.

Every matrix that touches the residual stream is arranged as ``[d_model, cols]`` so that its column
space is the set of residual directions it *writes* (``attn.W_O``, ``mlp.W_out``) or *reads*
(``attn.W_Q``/``W_K``/``W_V``, ``mlp.W_in``/``W_gate``, ``unembed.W_U``):

====================  ====================  =====================================  =====
tensor kind           TL shape              residual view                          side
====================  ====================  =====================================  =====
``attn.W_O``          ``[h, d_head, d]``    ``h dh d -> d (h dh)``                 write
``mlp.W_out``         ``[d_mlp, d]``        ``m d -> d m`` (i.e. W_outᵀ)           write
``attn.W_Q``/K/V      ``[h, d, d_head]``    ``h d dh -> d (h dh)``                 read
``mlp.W_in``/W_gate   ``[d, d_mlp]``        unchanged                              read
``unembed.W_U``       ``[d, vocab]``        unchanged                              read
====================  ====================  =====================================  =====

For grouped-query attention the delta holds the per-KV-head tensors ``attn._W_K``/``attn._W_V``
(``[n_kv_heads, d, d_head]``); they are viewed as they are, never repeated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import einops
import pandas as pd
import torch
from jaxtyping import Float

from interp.pair import ModelPair, is_streamed

WRITE_KINDS = ("attn.W_O", "mlp.W_out")
READ_KINDS = ("attn.W_Q", "attn.W_K", "attn.W_V", "mlp.W_in", "mlp.W_gate")

_BLOCK_KEY = re.compile(r"^blocks\.(?P<layer>\d+)\.(?P<module>attn|mlp)\.(?P<param>_?W_\w+)$")


def as_delta(source: object) -> dict[str, torch.Tensor]:
    """ΔW keyed by TL parameter name, from a :class:`interp.ModelPair` (``pair.delta()``) or a mapping.

    Every value must be a finite tensor; a mapping is copied (tensors are not).
    """
    if hasattr(source, "delta") and callable(source.delta):
        delta = source.delta()
    elif isinstance(source, Mapping):
        delta = dict(source)
    else:
        raise TypeError(
            f"delta: expected a ModelPair or a mapping of TL parameter name -> tensor, got {type(source).__name__}"
        )
    if not delta:
        raise ValueError("delta: is empty (the two models have identical weights?)")
    for key, value in delta.items():
        if not isinstance(key, str):
            raise TypeError(f"delta: keys must be TL parameter names (str), got {key!r}")
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"delta[{key!r}]: expected a tensor, got {type(value).__name__}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"delta[{key!r}]: contains NaN or infinite values")
    return delta


def tensor_kind(name: str) -> tuple[int | None, str, str]:
    """``(layer, kind, side)`` of a TL parameter name, e.g. ``blocks.9.attn._W_K -> (9, 'attn.W_K', 'read')``.

    ``side`` is ``'write'``, ``'read'`` or ``'other'`` (biases, norms, embeddings).
    """
    match = _BLOCK_KEY.match(name)
    if match is None:
        if name == "unembed.W_U":
            return None, "unembed.W_U", "read"
        return None, name, "other"
    kind = f"{match['module']}.{match['param'].lstrip('_')}"
    side = "write" if kind in WRITE_KINDS else "read" if kind in READ_KINDS else "other"
    return int(match["layer"]), kind, side


def residual_view(name: str, tensor: torch.Tensor) -> Float[torch.Tensor, "d_model cols"]:
    """The tensor as ``[d_model, cols]``: its column space is what it writes to / reads from the residual."""
    _, kind, side = tensor_kind(name)
    if side == "other":
        raise ValueError(f"name: {name!r} is neither a residual read nor a residual write tensor")
    return _stacked_view(kind, tensor[None])[0]


def stack_kind(
    delta: Mapping[str, torch.Tensor], kind: str, layers: list[int] | None = None
) -> tuple[list[int], Float[torch.Tensor, "layer d_model cols"]]:
    """The residual views of every ``kind`` tensor in ``delta``, stacked over layers (sorted).

    With ``layers`` given, every one of them must be present (ValueError naming the missing ones).
    The raw tensors are stacked and the result is a (possibly transposed) view of that stack.
    """
    found = {}
    for name, value in delta.items():
        layer, k, _ = tensor_kind(name)
        if k == kind and layer is not None:
            found[layer] = value
    if layers is None:
        layers = sorted(found)
    missing = [layer for layer in layers if layer not in found]
    if missing:
        have = _ranges(sorted(found)) or "no layers"
        raise ValueError(
            f"layers: {missing} are outside the delta's range for {kind} (it changes {kind} at {have})"
        )
    if not layers:
        raise ValueError(f"delta: has no {kind} tensors")
    stacked = torch.stack([found[layer].float() for layer in layers])
    return list(layers), _stacked_view(kind, stacked)


def _stacked_view(kind: str, stacked: torch.Tensor) -> torch.Tensor:
    """``[layer, ...]`` tensors of ``kind`` as ``[layer, d_model, cols]`` (a view)."""
    if kind == "attn.W_O":
        return einops.rearrange(stacked, "layer head d_head d_model -> layer d_model (head d_head)")
    if kind == "mlp.W_out":
        return einops.rearrange(stacked, "layer d_mlp d_model -> layer d_model d_mlp")
    if kind.startswith("attn."):
        return einops.rearrange(stacked, "layer head d_model d_head -> layer d_model (head d_head)")
    return stacked


def write_layers(delta: Mapping[str, torch.Tensor]) -> list[int]:
    """Layers at which ``delta`` changes at least one residual-write tensor (W_O or W_out)."""
    return sorted({layer for name in delta for layer, _, side in [tensor_kind(name)] if side == "write"})


def delta_diagnostics(delta: Mapping[str, torch.Tensor] | object, *, top_k: int = 4) -> pd.DataFrame:
    """One row per changed tensor: Frobenius norm, effective rank, participation ratio, top singular values.

    Singular values σ are those of the ``[d_model, cols]`` residual view (biases/norms: of the tensor
    flattened to a row). ``effective_rank = exp(H(p))`` with ``p_i = σ_i / Σσ`` (Roy & Vetterli 2007);
    ``participation_ratio = (Σσ²)² / Σσ⁴``; both equal r for r equal singular values and 1 for rank 1.
    ``delta`` may be an :class:`interp.streaming.StreamedPair`: the rows of its block tensors, read layer
    by layer (:func:`interp.streaming.streamed_delta_diagnostics`).
    """
    if is_streamed(delta):  # an interp.streaming.StreamedPair: its block tensors, read layer by layer
        return delta.run("delta_diagnostics", top_k=top_k)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k: expected a positive int, got {top_k!r}")
    delta = as_delta(delta)
    singular: dict[str, tuple[tuple[int, ...], torch.Tensor]] = {}
    by_shape: dict[tuple[int, ...], list[tuple[str, torch.Tensor]]] = {}
    for name, value in delta.items():
        _, _, side = tensor_kind(name)
        view = residual_view(name, value.float()) if side != "other" else value.float().reshape(1, -1)
        by_shape.setdefault(tuple(view.shape), []).append((name, view))
    for group in by_shape.values():  # one batched decomposition per shape
        sv = _singular_values(torch.stack([view for _, view in group]))
        for (name, _view), s in zip(group, sv, strict=True):
            singular[name] = (tuple(delta[name].shape), s)
    return diagnostics_frame(singular, top_k=top_k)


def diagnostics_frame(
    singular: Mapping[str, tuple[tuple[int, ...], torch.Tensor]], *, top_k: int = 4
) -> pd.DataFrame:
    """The :func:`delta_diagnostics` table from each tensor's ``(shape, singular values)`` (largest
    first; those of the residual view, or the one singular value ‖ΔW‖_F of a flattened tensor)."""
    rows = []
    for name, (shape, s) in singular.items():
        layer, kind, side = tensor_kind(name)
        rows.append(
            {
                "name": name,
                "layer": layer,
                "kind": kind,
                "side": side,
                "shape": tuple(shape),
                "frobenius": float(s.double().pow(2).sum().sqrt()),
                **_rank_measures(s),
                **{f"sv_{i + 1}": float(s[i]) if i < len(s) else math.nan for i in range(top_k)},
            }
        )
    frame = pd.DataFrame(rows)
    frame["layer"] = frame["layer"].astype("Int64")
    return frame.sort_values(["layer", "kind"], na_position="last", kind="stable").reset_index(drop=True)


def changed_layers(delta: Mapping[str, torch.Tensor]) -> list[int]:
    """Layers with at least one parameter in ``delta`` (keys ``blocks.{layer}.…``), sorted."""
    return sorted({int(name.split(".")[1]) for name in delta if name.startswith("blocks.")})


def delta_norms(pair: ModelPair) -> pd.DataFrame:
    """One row per changed parameter of a :class:`interp.ModelPair`: ``layer`` (−1 outside the blocks),
    ``tensor``, ``delta_fro`` = ‖W_tuned − W_base‖_F and ``relative`` = ‖ΔW‖_F / ‖W_base‖_F.
    ``pair`` may be an :class:`interp.streaming.StreamedPair`: the block tensors' rows, read layer by layer."""
    if is_streamed(pair):  # an interp.streaming.StreamedPair: its block tensors, read layer by layer
        return pair.run("delta_norms")
    pair = ModelPair.check(pair)
    base_params = dict(pair.base.named_parameters())
    rows = []
    for name, delta in pair.delta().items():
        parts = name.split(".")
        layer = int(parts[1]) if parts[0] == "blocks" else -1
        weight_norm = frobenius(base_params[name].detach())
        delta_norm = frobenius(delta)
        rows.append({
            "layer": layer,
            "tensor": ".".join(parts[2:]) if layer >= 0 else name,
            "delta_fro": delta_norm,
            "relative": delta_norm / weight_norm if weight_norm else float("nan"),
        })
    columns = ["layer", "tensor", "delta_fro", "relative"]
    if not rows:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(rows, columns=columns).sort_values(["layer", "tensor"]).reset_index(drop=True)


def norms_by_tensor(norms: pd.DataFrame) -> pd.DataFrame:
    """Per tensor kind of a :func:`delta_norms` table: ``layers`` changed, ``total_delta_fro`` =
    sqrt(Σ_layers ‖ΔW‖_F²), ``mean_relative`` and ``max_relative``; largest total first."""
    return (norms.groupby("tensor").agg(layers=("layer", "nunique"),
                                        total_delta_fro=("delta_fro", lambda s: (s**2).sum() ** 0.5),
                                        mean_relative=("relative", "mean"), max_relative=("relative", "max"))
            .reset_index().sort_values("total_delta_fro", ascending=False))


def norms_by_layer(norms: pd.DataFrame) -> pd.Series:
    """sqrt(Σ_tensors ‖ΔW‖_F²) per block layer of a :func:`delta_norms` table."""
    in_blocks = norms[norms.layer >= 0]
    return in_blocks.groupby("layer")["delta_fro"].apply(lambda s: (s**2).sum() ** 0.5)


def frobenius(t: torch.Tensor, *, chunk: int = 1 << 22) -> float:
    """‖t‖_F, its squares summed in float64 ``chunk`` elements at a time (a float32 sum over millions
    of entries drifts by 1e-4 relative; no float64 copy of the whole tensor is made)."""
    return sq_sum(t, chunk=chunk) ** 0.5


def sq_sum(t: torch.Tensor, *, chunk: int = 1 << 22) -> float:
    """Σ t², accumulated in float64 ``chunk`` elements at a time."""
    flat = t.detach().reshape(-1)
    return float(sum((part.double().square().sum() for part in flat.split(chunk)), torch.zeros((), dtype=torch.float64)))


def _singular_values(m: Float[torch.Tensor, "batch d cols"]) -> Float[torch.Tensor, "batch r"]:
    """Singular values, largest first: a one-row view's is its norm (:func:`frobenius`); otherwise from
    the exact low-rank compression of :meth:`interp.subspace.targets.Target.from_matrix` when it
    applies (LoRA deltas), else an SVD."""
    from interp.subspace.targets import Target

    if m.shape[-2] == 1:
        return torch.tensor([[frobenius(row)] for row in m])
    if bool((m.pow(2).sum((-2, -1)) == 0).any()):
        return torch.linalg.svdvals(m)
    t = Target.from_matrix(m)
    if t.u is None:
        return torch.linalg.svdvals(m)
    return (t.eigvals() * t.scale[:, None]).sqrt().float()


def _rank_measures(s: torch.Tensor) -> dict[str, float]:
    total = s.sum()
    if float(total) == 0.0:
        return {"effective_rank": 0.0, "participation_ratio": 0.0}
    p = s / total
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum()
    s2 = s.pow(2)
    return {
        "effective_rank": float(torch.exp(entropy)),
        "participation_ratio": float(s2.sum().pow(2) / s2.pow(2).sum()),
    }


def _ranges(layers: list[int]) -> str:
    if not layers:
        return ""
    parts, start, prev = [], layers[0], layers[0]
    for layer in layers[1:] + [None]:
        if layer is not None and layer == prev + 1:
            prev = layer
            continue
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
        if layer is not None:
            start = prev = layer
    return "layers " + ", ".join(parts)


def random_lowrank_delta(
    model: object,
    layers: list[int],
    *,
    rank: int = 8,
    scale: float = 0.05,
    seed: int = 0,
    kinds: tuple[str, ...] = WRITE_KINDS + READ_KINDS,
) -> dict[str, torch.Tensor]:
    """A synthetic LoRA-like delta: for each ``kind`` at each layer, ΔW = scale·‖W‖_F · (A B)/‖A B‖_F
    in the ``[d_model, cols]`` residual view, with A ``[d_model, rank]``, B ``[rank, cols]`` Gaussian
    from ``torch.Generator().manual_seed(seed)``. For tests and null experiments."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    out = {}
    for layer in layers:
        for kind in kinds:
            module, attr = kind.split(".")
            name = f"blocks.{layer}.{module}.{attr}"
            if name not in params:
                name = f"blocks.{layer}.{module}._{attr}"
            w = params[name].detach().float()
            view = residual_view(name, w)
            a = torch.randn(view.shape[0], rank, generator=gen)
            b = torch.randn(rank, view.shape[1], generator=gen)
            dv = a @ b
            dv = dv * (scale * view.norm() / dv.norm())
            out[name] = _from_view(name, dv, tuple(w.shape))
    return out


def _from_view(name: str, view: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    _, kind, _ = tensor_kind(name)
    if kind == "attn.W_O":
        return einops.rearrange(view, "d_model (head d_head) -> head d_head d_model", head=shape[0])
    if kind == "mlp.W_out":
        return einops.rearrange(view, "d_model d_mlp -> d_mlp d_model")
    if kind.startswith("attn."):
        return einops.rearrange(view, "d_model (head d_head) -> head d_model d_head", head=shape[0])
    return view.clone()
