"""The weight side of the subspace scores for streamed models: R_w targets and weight bases.

``R_w(B) = energy(B, T_l)`` with ``T_l = ΔW_l ΔW_lᵀ / ‖ΔW_l‖²`` the target of layer ``l``'s write deltas
(:func:`interp.subspace.scores.write_targets`, with the post-norm gains of
:func:`interp.subspace.weight_library.post_norm_gains`, as the sweep builds them), computed one layer at
a time by the in-memory functions on the layer's one-block model and stacked (:meth:`Target.cat`).

Every basis of :data:`interp.subspace.weight_library.WEIGHT_BASES` is built by its own recipe, fed
what it reads. The recipes read per-layer Grams of layer ``l`` (the layer-local bases, and the
``write_not_*``/``causally_isolated`` bases' own layer), sums of Grams over layers
(``global_*``, ``write_not_global_read``, ``write_not_downstream_read``) and the unembedding Gram
``W_U W_Uᵀ`` (``lm_head_read``, ``logits_null`` and every basis projected away from a read subspace).
One pass gives them all: first the unembedding Gram, accumulated over blocks of vocabulary rows in
float64 (:mod:`interp.streaming.vocab`: ln_final on the residual side, centred over the vocabulary as
``load_model`` centres ``W_U``), then the layers from last to first. At layer ``l`` the one-block
model's context has that Gram and ``Σ_{l' > l}`` of the read Grams (the downstream read, complete
because later layers came first), so every basis of layer ``l`` is built then, except those that need
the sum over *all* layers (``global_write``, ``global_read``, ``global_write_not_global_read``: the same
at every layer) and ``write_not_global_read``, built at the end from the sums and the write Grams
kept for the requested layers. ``attention_sink`` reads the BOS token's embedding row through layer
``l`` (``vocab_rows=[bos]``).

Memory: one layer of the model (converted whole, as :meth:`StreamedModel.layer` does), one block of
vocabulary rows while the unembedding Gram accumulates, the float64 sums (``d_model²`` each:
read and write over layers, unembedding) and, only when ``write_not_global_read`` is asked for, one
float32 ``d_model × d_model`` write Gram per requested layer (85 MB per layer for gemma-2-27b).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from jaxtyping import Float

from interp._validate import as_layers
from interp.progress import progress_bar
from interp.streaming.deltas import streamed_delta
from interp.streaming.model import StreamedModel, StreamedPair, as_streamed_pair
from interp.streaming.vocab import VocabSums, centres_vocab, vocab_models
from interp.subspace import _linalg as la
from interp.subspace.basis import Basis, check_rank, select_recipes
from interp.subspace.scores import write_targets
from interp.subspace.targets import Target
from interp.subspace.weight_library import (
    WEIGHT_BASES,
    ModelWeights,
    WeightContext,
    context_bases,
    default_weight_bases,
    post_norm_gains,
)

__all__ = ["LOCAL_WEIGHT_BASES", "streamed_unembed_gram", "streamed_weight_bases", "streamed_weight_targets"]

#: weight bases of :func:`interp.subspace.weight_library.weight_bases` that read one layer's weights only.
LOCAL_WEIGHT_BASES = (
    "write", "attn_write", "mlp_write", "attn_ov_write", "mlp_roundtrip_write", "qk_circuit",
    "mlp_up_read", "mlp_gate_read", "attn_qkv_read", "kv_super", "input_super",
)
# Bases built from the sums over every layer, after the pass (all others are built at their layer).
_AFTER_PASS = ("global_write", "global_read", "global_write_not_global_read", "write_not_global_read")
# Bases that read no Gram of another layer and not the unembedding: only the requested layers are read.
_OWN_LAYER = (*LOCAL_WEIGHT_BASES, "attention_sink")


class _LayerWeights(ModelWeights):
    """One layer's weights (a one-block model, layer 0) with the stream's unembedding Gram and the sum of
    the read Grams of the layers after it."""

    def __init__(self, model, unembed: torch.Tensor | None, after: torch.Tensor) -> None:  # noqa: ANN001
        super().__init__(model, [0])
        self._unembed, self._after = unembed, after

    def unembed_gram(self) -> Float[torch.Tensor, "d d"]:
        if self._unembed is None:
            raise RuntimeError("streamed weight bases: a basis read the unembedding, which this pass did not read")
        return self._unembed

    def read_gram_after(self, layers: Sequence[int]) -> Float[torch.Tensor, "layer d d"]:
        return self._after[None]

    def read_gram_total(self) -> torch.Tensor:
        raise RuntimeError("streamed weight bases: a per-layer basis read the sum over all layers")

    write_gram_total = read_gram_total


class _LayerContext(WeightContext):
    """The context of one streamed layer; its model holds one embedding row, the BOS token's (or none)."""

    def __init__(self, model, k: int, k_broad: int, weights: _LayerWeights, bos: int | None) -> None:  # noqa: ANN001
        super().__init__(model, [0], k, k_broad, weights=weights)
        self.bos = bos

    def bos_embedding(self) -> Float[torch.Tensor, " d"]:
        if self.bos is None:
            raise ValueError("model: has no BOS token, so the attention_sink basis is undefined")
        return self.model.W_E[0].detach().float()


@dataclasses.dataclass
class _Sums:
    """The Grams the after-pass bases read: sums over every layer, the unembedding's, and the write Grams
    kept at the requested layers (in their order)."""

    read_total: torch.Tensor
    write_total: torch.Tensor
    unembed: torch.Tensor | None
    writes: dict[int, torch.Tensor]
    layers: list[int]
    all_layers: list[int]

    def read_gram_total(self) -> torch.Tensor:
        return self.read_total

    def write_gram_total(self) -> torch.Tensor:
        return self.write_total

    def unembed_gram(self) -> torch.Tensor:
        return self.unembed

    def write_gram(self, layers: Sequence[int] | None = None) -> torch.Tensor:
        return torch.stack([self.writes[layer] for layer in (self.layers if layers is None else layers)])


def streamed_unembed_gram(
    model: StreamedModel, *, vocab_block: int | Literal["auto"] | None = "auto", progress: bool = False
) -> Float[torch.Tensor, "d d"]:
    """:meth:`ModelWeights.unembed_gram` of a streamed model (``W_U W_Uᵀ``, the final norm's weight on the
    residual side, centred over the vocabulary where ``load_model`` centres ``W_U``), accumulated over
    blocks of ``vocab_block`` tokens, in float64 like the in-memory one."""
    sums = VocabSums(gram=True)
    for block in vocab_models(model, vocab_block, progress=progress):
        sums.add(ModelWeights(block, []).unembed_view(), axis=1)
    gram = sums.centred_gram(centres_vocab(model))
    if not bool(torch.isfinite(gram).all()):
        raise ValueError("model: weight unembed.W_U contains NaN or infinite values")
    return gram


def streamed_weight_bases(
    model: StreamedModel,
    layers: int | Iterable[int] | None = None,
    k: int = 8,
    *,
    k_broad: int = 64,
    include: Sequence[str] | None = None,
    vocab_block: int | Literal["auto"] | None = "auto",
    progress: bool = True,
) -> list[Basis]:
    """:func:`interp.subspace.weight_library.weight_bases` of a streamed model: the same :class:`Basis`
    objects, every basis of the library by default (``include``), in the library's order.

    Bases of :data:`LOCAL_WEIGHT_BASES` and ``attention_sink`` read the requested layers only; the
    others also read the unembedding (in blocks of ``vocab_block`` tokens) and, for the ``global_*``,
    ``write_not_global_read`` and ``write_not_downstream_read`` bases, every layer (module docstring).
    """
    if not isinstance(model, StreamedModel):
        raise TypeError(f"model: expected an interp.streaming.StreamedModel, got {type(model).__name__}")
    d = model.d_model
    check_rank(k, d)
    check_rank(k_broad, max(k_broad, 1), name="k_broad")
    k_broad = min(k_broad, d)
    names = [r.name for r in select_recipes(WEIGHT_BASES, default_weight_bases(model.cfg) if include is None else include,
                                            "weight")]
    layer_list = as_layers(layers, model.n_layers)
    if not layer_list:
        raise ValueError("layers: expected at least one layer")
    bos = model.tokenizer.bos_token_id if model.tokenizer is not None else None
    every_layer = any(n in _AFTER_PASS or n == "write_not_downstream_read" for n in names)
    reads_unembed = any(n not in _OWN_LAYER and n != "global_write" for n in names)
    unembed = streamed_unembed_gram(model, vocab_block=vocab_block, progress=progress) if reads_unembed else None
    at_layer = [n for n in names if n not in _AFTER_PASS]
    keep_writes = "write_not_global_read" in names
    read_after = torch.zeros(d, d, dtype=torch.float64)  # Σ_{l' > l} R_l'
    write_total = torch.zeros(d, d, dtype=torch.float64)
    writes: dict[int, torch.Tensor] = {}
    per_layer: dict[int, list[Basis]] = {}
    to_read = sorted(set(range(model.n_layers)) if every_layer else set(layer_list), reverse=True)
    for layer in progress_bar(to_read, desc="weight bases", unit="layer", progress=progress and model.show_progress):
        wanted = layer in layer_list
        sink = wanted and "attention_sink" in at_layer and bos is not None
        block = model.layer(layer, vocab_rows=[bos] if sink else None)
        weights = _LayerWeights(block, unembed, read_after.float())
        if wanted:
            per_layer[layer] = context_bases(_LayerContext(block, k, k_broad, weights, bos), at_layer)
        if every_layer:
            read_after += weights.read_gram()[0].double()
            write = weights.write_gram()[0]
            write_total += write.double()
            if keep_writes and wanted:
                writes[layer] = write
    out = {name: _stack([per_layer[layer][i] for layer in layer_list], layer_list)
           for i, name in enumerate(at_layer)}
    after_pass = [n for n in names if n in _AFTER_PASS]
    if after_pass:
        sums = _Sums(read_after.float(), write_total.float(), unembed, writes, layer_list, list(range(model.n_layers)))
        out.update(zip(after_pass, context_bases(WeightContext(None, layer_list, k, k_broad, weights=sums),
                                                 after_pass), strict=True))
    return [out[name] for name in names]


def _stack(slices: list[Basis], layers: list[int]) -> Basis:
    """One-layer bases of the same recipe (one per layer, in ``layers`` order) as one basis at ``layers``."""
    width = max(b.vectors.shape[-1] for b in slices)
    vectors = torch.cat([torch.nn.functional.pad(b.vectors, (0, width - b.vectors.shape[-1])) for b in slices])
    q, ranks = la.trim(vectors, torch.tensor([r for b in slices for r in b.ranks]))
    return dataclasses.replace(slices[0], layers=tuple(layers), vectors=q, ranks=tuple(int(r) for r in ranks))


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
