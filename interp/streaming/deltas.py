"""The per-tensor weight-delta table of a streamed pair: :func:`interp.subspace.weight_diff.delta_diagnostics`
of ``tuned − base``, one layer at a time.

Layer ``l``'s attention tensors of both models are converted together and differenced; its MLP
tensors are differenced in blocks of neurons and the blocks concatenated (a delta's singular values
need the whole matrix, so one layer's MLP delta is held whole, in float32, but never both models'
MLP weights). The tensors outside the blocks (token embedding, unembedding, final norm, learned
positions) are read in blocks of vocabulary rows (:mod:`interp.streaming.vocab`): their norms
accumulate, and the singular values of the unembedding's delta are the square roots of the eigenvalues
of its ``d_model × d_model`` Gram, accumulated in float64. Their rows (``layer`` −1 in
:func:`streamed_delta_norms`, ``layer`` NA in :func:`streamed_delta_diagnostics`) are in the table by
default, as in the in-memory one (``global_tensors=False``, or a list of ``layers``, leaves them out).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal

import pandas as pd
import torch

from interp._validate import as_layers
from interp.pair import ModelPair
from interp.streaming.checkpoint import layer_index
from interp.streaming.circuits import neuron_blocks
from interp.streaming.model import StreamedPair, as_streamed_pair
from interp.streaming.vocab import global_deltas
from interp.subspace.weight_diff import delta_diagnostics, diagnostics_frame, sq_sum

__all__ = ["changed_layers", "streamed_delta", "streamed_delta_diagnostics", "streamed_delta_norms"]

# The neuron axis of each MLP parameter in TransformerLens' layout.
_NEURON_AXIS = {"W_in": 1, "W_gate": 1, "b_in": 0, "W_out": 0}


def _is_mlp(name: str) -> bool:
    return name.startswith(("blocks.0.mlp.", "blocks.0.ln2"))


def _pieces(
    pair: StreamedPair, layer: int, neuron_block: int | Literal["auto"] | None
) -> Iterator[tuple[str, int | None, torch.Tensor, torch.Tensor]]:
    """``(name, block, base value, tuned − base)`` for every parameter of one-block models of layer
    ``layer`` (names ``blocks.0.*``): attention tensors once (``block`` None), MLP tensors per block of
    neurons (``block`` 0, 1, ...; tensors without a neuron axis repeat in every block)."""
    base, tuned = pair.base.layer(layer, part="attn"), pair.tuned.layer(layer, part="attn")
    yield from _param_deltas(base, tuned, lambda n: not _is_mlp(n), None)
    for i, neurons in enumerate(neuron_blocks(pair.base, neuron_block)):
        base, tuned = (pair.base.layer(layer, part="mlp", neurons=neurons),
                       pair.tuned.layer(layer, part="mlp", neurons=neurons))
        yield from _param_deltas(base, tuned, _is_mlp, i)


def _param_deltas(base, tuned, keep, block):  # noqa: ANN001, ANN202
    params = {n: p for n, p in base.named_parameters() if n.startswith("blocks.0.") and keep(n)}
    delta = ModelPair(base, tuned).delta(list(params))
    for name, value in params.items():
        yield name, block, value.detach().float(), delta[name]


def streamed_delta(
    pair: StreamedPair,
    layer: int,
    *,
    neuron_block: int | Literal["auto"] | None = "auto",
) -> dict[str, torch.Tensor]:
    """``tuned − base`` for every tensor of block ``layer`` that differs, keyed ``blocks.{layer}.*``
    (the block entries of :meth:`interp.ModelPair.delta`)."""
    pair = as_streamed_pair(pair)
    pieces: dict[str, list[torch.Tensor]] = {}
    for name, _block, _base, value in _pieces(pair, layer, neuron_block):
        pieces.setdefault(name, []).append(value)
    out = {}
    for name, values in pieces.items():
        param = name.rsplit(".", 1)[-1]
        out[name] = torch.cat(values, dim=_NEURON_AXIS[param]) if param in _NEURON_AXIS and len(values) > 1 else values[0]
    return {name.replace("blocks.0.", f"blocks.{layer}.", 1): value
            for name, value in out.items() if bool(value.ne(0).any())}


def _steps(layers: int | Iterable[int] | None, n_layers: int, global_tensors: bool | None) -> list[int]:
    """The block layers to read, preceded by −1 (the tensors outside the blocks) when those are wanted:
    by default when every layer is (``layers`` None)."""
    if global_tensors is not None and not isinstance(global_tensors, bool):
        raise TypeError(f"global_tensors: expected a bool or None, got {type(global_tensors).__name__}")
    with_globals = layers is None if global_tensors is None else global_tensors
    return ([-1] if with_globals else []) + as_layers(layers, n_layers)


def streamed_delta_norms(
    pair: StreamedPair,
    *,
    layers: int | Iterable[int] | None = None,
    global_tensors: bool | None = None,
    neuron_block: int | Literal["auto"] | None = "auto",
    vocab_block: int | Literal["auto"] | None = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """:func:`interp.subspace.weight_diff.delta_norms` of a streamed pair: ‖ΔW‖_F and ‖ΔW‖_F / ‖W_base‖_F
    per changed tensor, the MLP summed over neuron blocks, the tensors outside the blocks (``layer`` −1:
    embedding, unembedding, final norm) summed over blocks of ``vocab_block`` tokens.

    ``global_tensors``: include the ``layer`` −1 rows (default: when ``layers`` is None, i.e. the whole
    in-memory table; a list of ``layers`` gives those layers' rows only)."""
    pair = as_streamed_pair(pair)
    steps = _steps(layers, pair.n_layers, global_tensors)
    rows = []
    for layer in pair.layers(steps, progress=progress, desc="weight norms"):
        if layer == -1:
            for g in global_deltas(pair, vocab_block=vocab_block):
                if g.changed:
                    rows.append({"layer": -1, "tensor": g.name, "delta_fro": g.delta_sq**0.5,
                                 "relative": (g.delta_sq / g.base_sq) ** 0.5 if g.base_sq else float("nan")})
            continue
        sums: dict[str, list[float]] = {}
        for name, block, base, delta in _pieces(pair, layer, neuron_block):
            if block not in (None, 0) and name.rsplit(".", 1)[-1] not in _NEURON_AXIS:
                continue  # norms' gains repeat in every neuron block
            acc = sums.setdefault(name, [0.0, 0.0])
            acc[0] += sq_sum(delta)
            acc[1] += sq_sum(base)
        for name, (delta2, base2) in sums.items():
            if delta2 > 0:
                rows.append({"layer": layer, "tensor": name.split(".", 2)[2], "delta_fro": delta2**0.5,
                             "relative": (delta2 / base2) ** 0.5 if base2 else float("nan")})
    columns = ["layer", "tensor", "delta_fro", "relative"]
    if not rows:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(rows, columns=columns).sort_values(["layer", "tensor"]).reset_index(drop=True)


def streamed_delta_diagnostics(
    pair: StreamedPair,
    *,
    layers: int | Iterable[int] | None = None,
    top_k: int = 4,
    global_tensors: bool | None = None,
    neuron_block: int | Literal["auto"] | None = "auto",
    vocab_block: int | Literal["auto"] | None = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """:func:`interp.subspace.weight_diff.delta_diagnostics` of a streamed pair: one row per changed
    tensor (Frobenius norm, effective rank, participation ratio, top singular values), the in-memory
    table's rows. The tensors outside the blocks (``embed.W_E``, ``unembed.W_U``, ``ln_final.*``...)
    are read in blocks of ``vocab_block`` tokens; ``unembed.W_U``'s singular values come from the
    eigenvalues of its delta's Gram ΔW ΔWᵀ (``d_model × d_model``, float64).

    ``global_tensors``: include their rows (default: when ``layers`` is None, the whole table)."""
    pair = as_streamed_pair(pair)
    steps = _steps(layers, pair.n_layers, global_tensors)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k: expected a positive int, got {top_k!r}")
    frames = []
    for layer in pair.layers(steps, progress=progress, desc="weight deltas"):
        if layer == -1:
            changed = {g.name: (g.shape, g.singular)
                       for g in global_deltas(pair, singular=True, vocab_block=vocab_block) if g.changed}
            if changed:
                frames.append(diagnostics_frame(changed, top_k=top_k))
            continue
        delta = streamed_delta(pair, layer, neuron_block=neuron_block)
        if delta:
            frames.append(delta_diagnostics(delta, top_k=top_k))
    if not frames:
        raise ValueError("pair: base and tuned have identical weights in the requested layers")
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values(["layer", "kind"], na_position="last", kind="stable").reset_index(drop=True)


def changed_layers(pair: StreamedPair, *, progress: bool = True) -> list[int]:
    """Layers where any tensor of the tuned checkpoint differs from the base's (compared as stored,
    one tensor pair at a time, before any conversion); what ``changed_layers(pair.delta())`` gives
    for a loaded pair whenever the two checkpoints share their dtype. Block layers only, as there: a
    changed embedding, unembedding or final norm is no layer (see :func:`streamed_delta_norms`)."""
    pair = as_streamed_pair(pair)
    base, tuned = pair.base.checkpoint, pair.tuned.checkpoint
    by_layer: dict[int, list[str]] = {}
    for name in base.tensors:
        index = layer_index(name)
        if index is not None:
            by_layer.setdefault(index, []).append(name)
    out = []
    for layer in pair.layers(sorted(by_layer), progress=progress, desc="changed layers"):
        for name in by_layer[layer]:
            if not tuned.has(name) or not torch.equal(base.read(name), tuned.read(name)):
                out.append(layer)
                break
    return out
