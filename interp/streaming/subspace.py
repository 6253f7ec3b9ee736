"""The weight side of the subspace scores for streamed models: R_w targets and layer-local weight bases.

``R_w(B) = energy(B, T_l)`` with ``T_l = ΔW_l ΔW_lᵀ / ‖ΔW_l‖²`` the target of layer ``l``'s write deltas
(:func:`interp.subspace.scores.write_targets`, with the post-norm gains of
:func:`interp.subspace.weight_library.post_norm_gains`, as the sweep builds them): both the target and
every *layer-local* weight basis (built from layer ``l``'s weights only) are computed one layer at a
time by the in-memory functions on the layer's one-block model, and stacked (:meth:`Target.cat`). Bases that read every layer or the unembedding
(``global_*``, ``write_not_*``, ``lm_head_read``, ``logits_null``, ``attention_sink``) are not streamed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Literal

import torch

from interp._validate import as_layers
from interp.streaming.deltas import streamed_delta
from interp.streaming.model import StreamedModel, StreamedPair, as_streamed_pair
from interp.subspace.basis import Basis
from interp.subspace.scores import write_targets
from interp.subspace.targets import Target
from interp.subspace.weight_library import post_norm_gains, weight_bases

__all__ = ["LOCAL_WEIGHT_BASES", "streamed_weight_bases", "streamed_weight_targets"]

#: weight bases of :func:`interp.subspace.weight_library.weight_bases` that read one layer's weights only.
LOCAL_WEIGHT_BASES = (
    "write", "attn_write", "mlp_write", "attn_ov_write", "mlp_roundtrip_write", "qk_circuit",
    "mlp_up_read", "mlp_gate_read", "attn_qkv_read", "kv_super", "input_super",
)


def streamed_weight_bases(
    model: StreamedModel,
    layers: int | Iterable[int] | None = None,
    k: int = 8,
    *,
    include: Sequence[str] | None = None,
    progress: bool = True,
) -> list[Basis]:
    """:func:`interp.subspace.weight_library.weight_bases` of a streamed model, for the layer-local bases
    (``include``, default :data:`LOCAL_WEIGHT_BASES`): the same :class:`Basis` objects."""
    if not isinstance(model, StreamedModel):
        raise TypeError(f"model: expected an interp.streaming.StreamedModel, got {type(model).__name__}")
    names = tuple(LOCAL_WEIGHT_BASES if include is None else include)
    other = [n for n in names if n not in LOCAL_WEIGHT_BASES]
    if other:
        raise ValueError(f"include: {other} read more than one layer (or the embeddings) and are not streamed; "
                         f"streamed weight bases: {LOCAL_WEIGHT_BASES}")
    layer_list = as_layers(layers, model.n_layers)
    from interp.progress import progress_bar

    per_layer: list[list[Basis]] = []
    for layer in progress_bar(layer_list, desc="weight bases", unit="layer", progress=progress):
        per_layer.append(weight_bases(model.layer(layer), [0], k, include=names))
    out = []
    for i, name in enumerate(names):
        slices = [bases[i] for bases in per_layer]
        out.append(dataclasses.replace(
            slices[0], layers=tuple(layer_list), vectors=torch.cat([b.vectors for b in slices]),
            ranks=tuple(r for b in slices for r in b.ranks),
        ))
        assert out[-1].name == name
    return out


def streamed_weight_targets(
    pair: StreamedPair,
    layers: int | Iterable[int] | None = None,
    *,
    gains: bool = True,
    neuron_block: int | Literal["auto"] | None = "auto",
    progress: bool = True,
) -> dict[str, Target]:
    """:func:`interp.subspace.scores.write_targets` of a streamed pair's delta at ``layers``: one
    :class:`Target` per write kind (``attn.W_O``, ``mlp.W_out``) and their ``combined`` mean.

    ``gains``: scale ΔW by the base's post-norm gains (``post_norm_gains(base, layers)``, as the sweep does).
    """
    pair = as_streamed_pair(pair)
    layer_list = as_layers(layers, pair.n_layers)
    per_layer = []
    for layer in pair.layers(layer_list, progress=progress, desc="weight targets"):
        delta = streamed_delta(pair, layer, neuron_block=neuron_block)
        # the post-norms' gains of the base's layer (its weights and one MLP neuron: the norms are whole)
        scale = post_norm_gains(pair.base.layer(layer, neurons=(0, 1)), [0]) if gains else None
        per_layer.append(write_targets(delta, [layer], gains=scale))
    kinds = [set(t) for t in per_layer]
    if any(k != kinds[0] for k in kinds):
        missing = sorted(set().union(*kinds) - set.intersection(*kinds))
        raise ValueError(f"delta: write kinds {missing} change at some of layers {layer_list} but not at others")
    return {kind: Target.cat([t[kind] for t in per_layer]) for kind in per_layer[0]}
