"""Q/K/V activation structure at a target token: neuron-by-neuron similarity within and
across the query, key and value projections, at the target and at a neighbouring token.

For samples ``X ∈ R^{n×f}`` (n sentences, f = Q, K and V neurons side by side) the cosine matrix is
``C = X̂ᵀX̂`` with every column of ``X`` scaled to unit norm; the correlation matrix centres each
column first. Entries are grouped into blocks QQ, KK, VV (pairs i < j) and QK, QV, KV (all pairs),
and compared with the same matrix of a shuffled ``X`` (all entries permuted: no structure).

Q, K and V are the linear projections as TransformerLens hooks them (``hook_q``/``hook_k``/``hook_v``:
before rotary and before any qk-norm). Under grouped-query attention K and V have ``n_key_value_heads``
heads, and the concatenated layout keeps them unexpanded: ``[Q (n_heads·d_head) | K (n_kv·d_head) |
V (n_kv·d_head)]``. ``per_head=True`` instead builds, per query head ``h``, ``[Q_h | K_g(h) | V_g(h)]``.

>>> study = qkv_similarity_study(model, sentences, " her", layer=6)
>>> study.histograms.query("condition == 'target' and block == 'QK'")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import einops
import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer
from transformer_lens.utilities import to_numpy
from transformer_lens.utils import get_act_name

from interp._validate import as_layers
from interp.activations.caching import cache_positions
from interp.activations.positions import OnMissing, Positions, target_positions
from interp.prompts import TokenBatch, tokenize
from interp.results import Result, ResultLayout

Kind = Literal["cosine", "correlation"]
BLOCKS = ("QQ", "KK", "VV", "QK", "QV", "KV")


@dataclass(frozen=True)
class QKVActivations(Result):
    """Query, key and value projections of one layer at selected tokens (one row per token)."""

    result_layout: ClassVar[ResultLayout] = ResultLayout(headline="shapes", tensors=("q", "k", "v"),
                                                         metadata=("layer",), results=("positions",))

    q: Float[torch.Tensor, "n head d_head"]
    k: Float[torch.Tensor, "n kv_head d_head"]
    v: Float[torch.Tensor, "n kv_head d_head"]
    layer: int
    positions: Positions

    @property
    def n_heads(self) -> int:
        return self.q.shape[1]

    def shapes(self) -> pd.DataFrame:
        """One row per projection ("q", "k", "v"): ``tokens``, ``heads``, ``d_head``."""
        return pd.DataFrame({"projection": ["q", "k", "v"], "layer": self.layer,
                             "tokens": [x.shape[0] for x in (self.q, self.k, self.v)],
                             "heads": [x.shape[1] for x in (self.q, self.k, self.v)],
                             "d_head": [x.shape[2] for x in (self.q, self.k, self.v)]})

    @property
    def n_kv_heads(self) -> int:
        return self.k.shape[1]

    def concatenated(self) -> Float[torch.Tensor, "n neuron"]:
        """``[Q | K | V]`` with heads flattened (K, V unexpanded under GQA), like GPT-2's ``c_attn`` output."""
        return torch.cat([einops.rearrange(x, "n head d -> n (head d)") for x in (self.q, self.k, self.v)], dim=1)

    def per_head(self) -> Float[torch.Tensor, "head n neuron"]:
        """For each query head ``h``: ``[Q_h | K_g(h) | V_g(h)]`` with ``g(h) = h // (n_heads / n_kv_heads)``."""
        group = self.n_heads // self.n_kv_heads
        k = torch.repeat_interleave(self.k, group, dim=1)
        v = torch.repeat_interleave(self.v, group, dim=1)
        return einops.rearrange(torch.cat([self.q, k, v], dim=-1), "n head neuron -> head n neuron")

    def labels(self, per_head: bool = False) -> np.ndarray:
        """The block ("Q", "K" or "V") of every neuron of :meth:`concatenated` (or of :meth:`per_head`)."""
        d_head = self.q.shape[-1]
        if per_head:
            sizes = (d_head, d_head, d_head)
        else:
            sizes = (self.n_heads * d_head, self.n_kv_heads * d_head, self.n_kv_heads * d_head)
        return np.repeat(np.array(["Q", "K", "V"]), sizes)


def qkv_activations(
    model: HookedTransformer,
    batch: TokenBatch,
    positions: Positions,
    layer: int,
    *,
    batch_size: int = 16,
    progress: bool | None = None,
) -> QKVActivations:
    """``hook_q``/``hook_k``/``hook_v`` of ``layer`` at ``positions`` (the pass stops after ``layer``)."""
    (layer,) = as_layers(layer, model.cfg.n_layers, name="layer")
    names = [get_act_name(kind, layer) for kind in ("q", "k", "v")]
    cache = cache_positions(model, batch, positions, names, batch_size=batch_size, progress=progress)
    q, k, v = (cache[name] for name in names)
    return QKVActivations(q, k, v, layer, positions)


def neuron_similarity(
    acts: Float[torch.Tensor, "... sample neuron"], kind: Kind = "cosine"
) -> Float[torch.Tensor, "... neuron neuron"]:
    """Cosine (``X̂ᵀX̂``, unit-norm columns) or Pearson correlation (centred columns) between neurons.

    Works on any leading dims (e.g. ``[head, sample, neuron]``). A neuron with zero norm (or zero
    variance, for correlation) gives NaN in its row and column.
    """
    if kind not in ("cosine", "correlation"):
        raise ValueError(f"kind: expected 'cosine' or 'correlation', got {kind!r}")
    if acts.ndim < 2:
        raise ValueError(f"acts: expected shape [..., sample, neuron], got {tuple(acts.shape)}")
    if acts.shape[-2] < 2:
        raise ValueError(f"acts: need at least 2 samples to compare neurons, got {acts.shape[-2]}")
    x = acts.to(torch.float64)
    if kind == "correlation":
        x = x - x.mean(dim=-2, keepdim=True)
    norm = torch.linalg.vector_norm(x, dim=-2, keepdim=True)
    x = x / torch.where(norm > 0, norm, torch.nan)
    return einops.einsum(x, x, "... sample i, ... sample j -> ... i j").to(acts.dtype)


def shuffle_entries(
    acts: Float[torch.Tensor, "... sample neuron"], *, seed: int = 0
) -> Float[torch.Tensor, "... sample neuron"]:
    """A seeded random permutation of all entries of each ``[sample, neuron]`` matrix (the shuffled baseline).

    Uses ``torch.Generator().manual_seed(seed)``: same seed, same permutation.
    """
    generator = torch.Generator().manual_seed(seed)
    flat = acts.reshape(*acts.shape[:-2], -1)
    order = torch.randperm(flat.shape[-1], generator=generator).to(acts.device)
    return flat[..., order].reshape(acts.shape)


def block_values(
    sim: Float[torch.Tensor, "... neuron neuron"], labels: Sequence[str] | np.ndarray
) -> dict[str, Float[torch.Tensor, "... pair"]]:
    """Similarity entries grouped by block: "QQ", "KK", "VV" (pairs i < j) and "QK", "QV", "KV" (all pairs).

    With ``labels`` in Q, K, V order, every block is read from the upper triangle, as the original notebook's
    mask ``triu(outer(m, m), 1)`` does; ``"all"`` holds the whole upper triangle.
    """
    labels = np.asarray(labels)
    if labels.shape != (sim.shape[-1],) or sim.shape[-1] != sim.shape[-2]:
        raise ValueError(f"labels: expected {sim.shape[-1]} labels for a square similarity matrix, got {labels.shape}")
    upper = np.triu(np.ones((len(labels), len(labels)), dtype=bool), k=1)
    out = {}
    for block in (*BLOCKS, "all"):
        if block == "all":
            pick = upper
        else:
            pick = upper & (labels[:, None] == block[0]) & (labels[None, :] == block[1])
        rows, cols = np.nonzero(pick)
        out[block] = sim[..., torch.as_tensor(rows), torch.as_tensor(cols)]
    return out


def histogram_frame(
    values: Float[torch.Tensor, " n"], *, bins: int = 100, value_range: tuple[float, float] = (-1.0, 1.0)
) -> pd.DataFrame:
    """Histogram as a tidy frame: ``bin_left``, ``bin_right``, ``bin_center``, ``count``, ``density``.

    Bins are ``[left, right)`` except the last, which includes its right edge (numpy's convention);
    NaN and out-of-range values are left out; density integrates to 1 over the range.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins: expected a positive int, got {bins!r}")
    lo, hi = value_range
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    x = values.detach().flatten().to(torch.float64).cpu()
    x = x[torch.isfinite(x) & (x >= lo) & (x <= hi)]
    index = torch.clamp(torch.searchsorted(edges, x, right=True) - 1, max=bins - 1)
    counts = torch.bincount(index, minlength=bins).to(torch.float64)
    widths = edges[1:] - edges[:-1]
    density = counts / (counts.sum() * widths) if counts.sum() > 0 else torch.zeros_like(counts)
    return pd.DataFrame({
        "bin_left": to_numpy(edges[:-1]),
        "bin_right": to_numpy(edges[1:]),
        "bin_center": to_numpy((edges[:-1] + edges[1:]) / 2),
        "count": to_numpy(counts).astype(np.int64),
        "density": to_numpy(density),
    })


def similarity_histograms(
    acts: Float[torch.Tensor, "... sample neuron"],
    labels: Sequence[str] | np.ndarray,
    *,
    kind: Kind = "cosine",
    bins: int = 100,
) -> pd.DataFrame:
    """Histograms of the blocked neuron similarities of ``acts``: one row per (block, bin) (and head)."""
    sim = neuron_similarity(acts, kind)
    blocks = block_values(sim, labels)
    frames = []
    for block in BLOCKS:
        values = blocks[block]
        if values.ndim == 1:
            frames.append(histogram_frame(values, bins=bins).assign(block=block))
        else:  # per-head: one histogram per head
            flat = values.reshape(-1, values.shape[-1])
            for head, row in enumerate(flat):
                frames.append(histogram_frame(row, bins=bins).assign(block=block, head=head))
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class QKVSimilarityStudy(Result):
    """One layer: Q/K/V at the target and at a neighbouring token, and their histograms.

    ``histograms`` has one row per (condition, block, bin) — and head, when ``per_head`` — with
    ``condition`` in "target", "neighbour" and "shuffled" (the shuffled target matrix, block "all").
    """

    result_layout: ClassVar[ResultLayout] = ResultLayout(
        headline="histograms", tables=("histograms",), results=("target", "neighbour"),
        metadata=("kind", "per_head", "seed"))

    target: QKVActivations
    neighbour: QKVActivations
    histograms: pd.DataFrame
    kind: Kind
    per_head: bool
    seed: int

    def matrix(self, condition: Literal["target", "neighbour"] = "target") -> Float[torch.Tensor, "... sample neuron"]:
        """The ``[sample, neuron]`` matrix (``[head, sample, neuron]`` per head) of a condition."""
        acts = self.target if condition == "target" else self.neighbour
        return acts.per_head() if self.per_head else acts.concatenated()


def qkv_similarity_study(
    model: HookedTransformer,
    prompts: Sequence[str] | TokenBatch,
    target: str,
    *,
    layer: int,
    neighbour_offset: int = -1,
    kind: Kind = "cosine",
    per_head: bool = False,
    bins: int = 100,
    seed: int = 0,
    on_missing: OnMissing = "raise",
    batch_size: int = 16,
    progress: bool | None = None,
    prepend_bos: bool | None = None,
) -> QKVSimilarityStudy:
    """Neuron similarity of Q/K/V at the first ``target`` token of each prompt vs the token
    ``neighbour_offset`` away, with a shuffled-matrix baseline.

    With ``X`` the ``[prompt, neuron]`` matrix of ``[Q | K | V]`` at the target, the similarity of neurons
    ``i, j`` is ``cos(X[:, i], X[:, j])`` (or their correlation), histogrammed per block (QQ, KK, VV,
    QK, QV, KV).

    Args:
        model: The model to run.
        prompts: Texts (or a TokenBatch); only prompts that have both positions are used, so target and
            neighbour rows pair up.
        target: The target string, tokenized without special tokens (``" her"`` and ``"her"`` differ).
        layer: The layer whose ``hook_q``/``hook_k``/``hook_v`` are read.
        neighbour_offset: Offset of the comparison token (nonzero; -1: the token before).
        kind: "cosine" or "correlation".
        per_head: One matrix per query head (``[Q_h | K_g(h) | V_g(h)]``) instead of all heads at once.
        bins: Histogram bins over [-1, 1].
        seed: Seed of the shuffled baseline (``torch.Generator``).
        on_missing: "raise" (listing the prompts without the target) or "skip" them with a warning.
        batch_size: Prompts per forward pass.
        progress: Progress bar (None: when there is more than one batch; False: silent).
        prepend_bos: As in :func:`interp.prompts.tokenize` (None: the model's ``cfg.default_prepend_bos``).

    Returns:
        A :class:`QKVSimilarityStudy`: the activations at target and neighbour, and ``histograms`` (one row
        per condition, block and bin).
    """
    batch = tokenize(model, prompts, prepend_bos=prepend_bos)
    (layer,) = as_layers(layer, model.cfg.n_layers, name="layer")
    if neighbour_offset == 0:
        raise ValueError("neighbour_offset: must be nonzero (0 is the target itself)")
    at_target = target_positions(batch, target, on_missing=on_missing)
    at_neighbour = target_positions(batch, target, offset=neighbour_offset, on_missing=on_missing)
    common = sorted(set(at_target.prompt.tolist()) & set(at_neighbour.prompt.tolist()))
    if len(common) < 2:
        raise ValueError(f"prompts: need at least 2 prompts containing {target!r} with a neighbour, got {len(common)}")
    if len(common) < len(at_target) or len(common) < len(at_neighbour):
        keep = torch.tensor(common)
        at_target = _restrict(at_target, keep)
        at_neighbour = _restrict(at_neighbour, keep)
    both = Positions(torch.cat([at_target.prompt, at_neighbour.prompt]), torch.cat([at_target.position, at_neighbour.position]))
    acts = qkv_activations(model, batch, both, layer, batch_size=batch_size, progress=progress)
    n = len(at_target)
    target_acts = QKVActivations(acts.q[:n], acts.k[:n], acts.v[:n], layer, at_target)
    neighbour_acts = QKVActivations(acts.q[n:], acts.k[n:], acts.v[n:], layer, at_neighbour)

    labels = target_acts.labels(per_head)
    matrices = {c: (a.per_head() if per_head else a.concatenated()) for c, a in
                (("target", target_acts), ("neighbour", neighbour_acts))}
    frames = [similarity_histograms(m, labels, kind=kind, bins=bins).assign(condition=c) for c, m in matrices.items()]
    shuffled = neuron_similarity(shuffle_entries(matrices["target"], seed=seed), kind)
    flat = block_values(shuffled, labels)["all"]
    if flat.ndim == 1:
        frames.append(histogram_frame(flat, bins=bins).assign(block="all", condition="shuffled"))
    else:
        for head, row in enumerate(flat.reshape(-1, flat.shape[-1])):
            frames.append(histogram_frame(row, bins=bins).assign(block="all", condition="shuffled", head=head))
    histograms = pd.concat(frames, ignore_index=True)
    front = ["condition", "block"] + (["head"] if per_head else [])
    histograms = histograms[front + [c for c in histograms.columns if c not in front]]
    return QKVSimilarityStudy(target_acts, neighbour_acts, histograms, kind, per_head, seed)


def _restrict(positions: Positions, prompts: torch.Tensor) -> Positions:
    keep = torch.isin(positions.prompt, prompts)
    return Positions(positions.prompt[keep], positions.position[keep])
