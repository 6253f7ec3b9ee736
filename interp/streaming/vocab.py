"""The global tensors of a streamed model — token embedding ``W_E``, unembedding ``W_U``/``b_U``, final
norm, learned positions — read in blocks of vocabulary rows.

A block of token ids converts as a one-block model holding those tokens' embedding rows and
unembedding columns (:func:`interp.streaming.convert.layer_model` with ``vocab_rows`` and
``unembed=True``; its block is layer 0's MLP cut to one neuron, so it reads almost nothing else):
TransformerLens' converter and the loader's processing, as ``load_model`` applies them. Every
processing step on these tensors is per token (folding ``ln_final`` into ``W_U``, centring a column
of ``W_U`` over ``d_model`` or a row of ``W_E``) except centring ``W_U``/``b_U`` over the vocabulary,
which is applied to the sums: with ``x_v`` the uncentred columns and ``μ = Σ_v x_v / V``,

    Σ_v (x_v − μ)(x_v − μ)ᵀ = Σ_v x_v x_vᵀ − (Σ_v x_v)(Σ_v x_v)ᵀ / V,

and ``‖X − μ1ᵀ‖²_F`` is its trace. So one pass over the vocabulary accumulates, per tensor, ``Σ x²``,
``Σ_v x_v`` and (when singular values are wanted) the ``d_model × d_model`` Gram ``Σ_v x_v x_vᵀ``, in
float64; the singular values of ``W_U`` (``[d_model, vocab]``) are the square roots of the Gram's
eigenvalues.

Memory: one block of rows of each model at a time (``vocab_block="auto"``: about
:data:`DEFAULT_VOCAB_BLOCK_BYTES` of float32 ``W_E`` + ``W_U`` rows per model, 3640 tokens of
gemma-2-27b's 256000 × 4608; the conversion holds a few copies of a block) plus the float64 sums
(``d_model²`` each: 170 MB for gemma-2-27b); never a float32 copy of a whole matrix, nor both models'.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from interp.progress import progress_bar
from interp.streaming.model import StreamedModel, StreamedPair
from interp.subspace.weight_diff import sq_sum, tensor_kind

__all__ = ["DEFAULT_VOCAB_BLOCK_BYTES", "GlobalDelta", "VocabSums", "centres_vocab", "global_deltas", "vocab_blocks", "vocab_model",
           "vocab_models"]

#: float32 bytes of W_E + W_U rows of one model per block with ``vocab_block="auto"``.
DEFAULT_VOCAB_BLOCK_BYTES = 128 * 2**20

# Tensors with a vocabulary axis (read in blocks; the axis each block cuts) — the rest are read whole.
_VOCAB_AXIS = {"embed.W_E": 0, "unembed.W_U": 1, "unembed.b_U": 0}
# Tensors the processing centres over the vocabulary (when load_model's processing does).
_VOCAB_CENTRED = ("unembed.W_U", "unembed.b_U")


def vocab_blocks(model: StreamedModel, vocab_block: int | Literal["auto"] | None) -> list[range]:
    """The token-id ranges of ``model``'s vocabulary taken ``vocab_block`` tokens at a time (None: all at once)."""
    d_vocab = int(model.cfg_dict["d_vocab"])
    if vocab_block is None:
        return [range(d_vocab)]
    if vocab_block == "auto":
        vocab_block = max(1, DEFAULT_VOCAB_BLOCK_BYTES // (4 * model.d_model * 2))
    if not isinstance(vocab_block, int) or isinstance(vocab_block, bool) or vocab_block < 1:
        raise ValueError(f"vocab_block: expected a positive int, 'auto' or None, got {vocab_block!r}")
    return [range(start, min(start + vocab_block, d_vocab)) for start in range(0, d_vocab, vocab_block)]


def vocab_model(model: StreamedModel, rows: range) -> HookedTransformer:
    """A one-block model holding the embedding rows and unembedding columns of token ids ``rows``,
    the final norm and learned positions (see the module docstring; ``W_U``/``b_U`` uncentred)."""
    # layer 0's MLP cut to one neuron: a block that reads next to nothing
    return model.layer(0, part="mlp", neurons=(0, 1), vocab_rows=list(rows), unembed=True)


def vocab_models(
    model: StreamedModel, vocab_block: int | Literal["auto"] | None, *, progress: bool = False
) -> Iterator[HookedTransformer]:
    """:func:`vocab_model` of each block of :func:`vocab_blocks`, in order (one at a time)."""
    for rows in progress_bar(vocab_blocks(model, vocab_block), desc="vocabulary", unit="block",
                             progress=progress and model.show_progress):
        yield vocab_model(model, rows)


def centres_vocab(model: StreamedModel) -> bool:
    """Whether ``load_model`` centres ``model``'s ``W_U``/``b_U`` over the vocabulary."""
    from interp.loading import centres_unembed

    return model.processed and centres_unembed(model.cfg)


class VocabSums:
    """Running float64 sums over the vocabulary of one tensor's blocks: ``Σ x²``, ``Σ_v x_v`` (the
    vocabulary-axis sum) and, with ``gram``, ``Σ_v x_v x_vᵀ`` of a ``[d_model, vocab]`` matrix."""

    def __init__(self, *, gram: bool = False) -> None:
        self.n, self.sq, self.changed = 0, 0.0, False
        self.total: torch.Tensor | None = None
        self.gram: torch.Tensor | None = None
        self._want_gram = gram

    def add(self, x: torch.Tensor, axis: int) -> None:
        """Add a block whose vocabulary axis is ``axis``."""
        self.n += x.shape[axis]
        self.sq += sq_sum(x)
        self.changed = self.changed or bool(x.ne(0).any())
        total = x.double().sum(axis)
        self.total = total if self.total is None else self.total + total
        if self._want_gram:
            x64 = x.double()
            g = x64 @ x64.T if axis == 1 else x64.T @ x64
            self.gram = g if self.gram is None else self.gram + g

    def centred_sq(self, centre: bool) -> float:
        """Σ x² of the tensor (centred over the vocabulary when ``centre``)."""
        if not centre or self.total is None:
            return self.sq
        return max(self.sq - float(self.total.pow(2).sum()) / self.n, 0.0)

    def centred_gram(self, centre: bool) -> Float[torch.Tensor, "d d"]:
        """``X Xᵀ`` (float64) of the ``[d_model, vocab]`` tensor (centred over the vocabulary when ``centre``)."""
        if self.gram is None:
            raise ValueError("VocabSums: built without gram=True")
        if not centre:
            return self.gram
        return self.gram - torch.outer(self.total, self.total) / self.n


@dataclass(frozen=True)
class GlobalDelta:
    """One global tensor of a pair: its shape, ‖ΔW‖²_F, ‖W_base‖²_F, whether it changed, and (when asked)
    the singular values of ΔW's residual view (``unembed.W_U``: ``[d_model, vocab]``; others flattened)."""

    name: str
    shape: tuple[int, ...]
    delta_sq: float
    base_sq: float
    changed: bool
    singular: torch.Tensor | None = None


def global_deltas(
    pair: StreamedPair, *, singular: bool = False, vocab_block: int | Literal["auto"] | None = "auto"
) -> list[GlobalDelta]:
    """``tuned − base`` of every parameter outside the blocks (``embed.W_E``, ``unembed.W_U``,
    ``unembed.b_U``, ``ln_final.*``, ``pos_embed.W_pos``), read in blocks of vocabulary rows: their
    norms, and with ``singular`` the singular values the :func:`delta_diagnostics` row needs."""
    centre = centres_vocab(pair.base)
    sums: dict[str, tuple[VocabSums, VocabSums]] = {}
    shapes: dict[str, list[int]] = {}
    blocks = zip(vocab_models(pair.base, vocab_block), vocab_models(pair.tuned, vocab_block), strict=True)
    for i, (base, tuned) in enumerate(blocks):
        tuned_params = dict(tuned.named_parameters())
        for name, param in base.named_parameters():
            if name.startswith("blocks.") or (i > 0 and name not in _VOCAB_AXIS):
                continue  # tensors without a vocabulary axis are the same in every block
            b, t = param.detach().float(), tuned_params[name].detach().float()
            axis = _VOCAB_AXIS.get(name, 0)
            gram = singular and tensor_kind(name)[2] == "read"  # unembed.W_U
            pair_sums = sums.setdefault(name, (VocabSums(), VocabSums(gram=gram)))
            pair_sums[0].add(b, axis)
            pair_sums[1].add(t - b, axis)
            shape = shapes.setdefault(name, list(b.shape))
            if i > 0 and name in _VOCAB_AXIS:
                shape[axis] += b.shape[axis]
    out = []
    for name, (base_sums, delta_sums) in sums.items():
        centred = centre and name in _VOCAB_CENTRED
        delta_sq = delta_sums.centred_sq(centred)
        values = None
        if singular:
            if delta_sums.gram is not None:  # σ of the [d_model, vocab] view: √ eigenvalues of ΔW ΔWᵀ
                eig = torch.linalg.eigvalsh(delta_sums.centred_gram(centred)).flip(0)
                values = eig[: min(shapes[name])].clamp_min(0).sqrt()
            else:  # a flattened tensor's one singular value
                values = torch.tensor([delta_sq**0.5], dtype=torch.float64)
        out.append(GlobalDelta(name, tuple(shapes[name]), delta_sq, base_sums.centred_sq(centred),
                               delta_sums.changed, values))
    return out
