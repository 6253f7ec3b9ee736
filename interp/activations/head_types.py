"""Previous-token, duplicate-token and induction scores of every head on repeated random tokens.

The scores are TransformerLens' ``head_detector`` "mul" measure, ``score = Σ_{q,k} A[q,k] D[q,k] /
Σ_{q,k} A[q,k]`` (the share of a head's attention that lands where the detection pattern ``D`` has
ones), with ``D`` from ``head_detector.get_{previous_token,duplicate_token,induction}_head_detection_pattern``.
Unlike ``detect_head``, which caches every pattern and loops over heads, the score is computed
inside each layer's ``hook_pattern`` for all heads and a batch of sequences at once, and averaged
over sequences (as ``detect_head`` averages over a list of prompts).

The probe is the induction-head literature's: ``[BOS] r r`` with ``r`` a seeded uniformly random
sequence of ordinary (non-special) tokens; on the second copy an induction head attends to the token
after the previous occurrence of the current token.

>>> scores = head_type_scores(model, length=40, n_sequences=8, seed=0)
>>> scores.to_frame().query("induction > 0.4")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import einops
import pandas as pd
import torch
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer
from transformer_lens import head_detector as hd
from transformer_lens.utilities import to_numpy
from transformer_lens.utils import get_act_name

from interp._validate import as_layers
from interp.activations.attention_metrics import with_delta
from interp.pair import ModelPair
from interp.prompts import Chunk, batch_from_tokens, run_batched
from interp.results import Result, ResultLayout

HEAD_TYPES = ("previous_token", "duplicate_token", "induction")
_DETECTORS = {
    "previous_token": hd.get_previous_token_head_detection_pattern,
    "duplicate_token": hd.get_duplicate_token_head_detection_pattern,
    "induction": hd.get_induction_head_detection_pattern,
}


def repeated_random_tokens(
    model: HookedTransformer, *, length: int = 40, n_sequences: int = 8, seed: int = 0
) -> Int[torch.Tensor, "sequence pos"]:
    """``[BOS] r r`` per row (BOS only if ``cfg.default_prepend_bos``), ``r`` of ``length`` tokens drawn
    uniformly from the vocabulary minus special/added tokens with ``torch.Generator().manual_seed(seed)``."""
    for name, value in (("length", length), ("n_sequences", n_sequences)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    bos = bool(model.cfg.default_prepend_bos)
    if 2 * length + bos > model.cfg.n_ctx:
        raise ValueError(f"length: 2 × {length} tokens (+ BOS) exceed the model's context of {model.cfg.n_ctx}")
    vocab = model.cfg.d_vocab
    allowed = torch.ones(vocab, dtype=torch.bool)
    tokenizer = model.tokenizer
    if tokenizer is not None:
        special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
        special = [i for i in special if 0 <= i < vocab]
        allowed[special] = False
    candidates = torch.nonzero(allowed).flatten()
    generator = torch.Generator().manual_seed(seed)
    picks = candidates[torch.randint(len(candidates), (n_sequences, length), generator=generator)]
    tokens = torch.cat([picks, picks], dim=1)
    if bos:
        bos_id = tokenizer.bos_token_id if tokenizer is not None else 0
        tokens = torch.cat([torch.full((n_sequences, 1), bos_id), tokens], dim=1)
    return tokens


def detection_patterns(tokens: Int[torch.Tensor, "sequence pos"]) -> Float[torch.Tensor, "kind sequence q k"]:
    """TransformerLens' detection patterns for :data:`HEAD_TYPES`, one per sequence."""
    tokens = tokens.cpu()
    return torch.stack([
        torch.stack([_DETECTORS[kind](row[None]) for row in tokens]) for kind in HEAD_TYPES
    ]).float()


@dataclass(frozen=True)
class HeadTypeScores(Result):
    """Per-(layer, head) head-type scores in [0, 1], averaged over the probe sequences
    (``per_sequence[kind, sequence, layer, head]``: before that average, kinds in :data:`HEAD_TYPES` order)."""

    result_layout: ClassVar[ResultLayout] = ResultLayout(
        headline="to_frame", metadata=("layers",), tensors=("previous_token", "duplicate_token", "induction", "tokens", "per_sequence"))

    layers: tuple[int, ...]
    previous_token: Float[torch.Tensor, "layer head"]
    duplicate_token: Float[torch.Tensor, "layer head"]
    induction: Float[torch.Tensor, "layer head"]
    tokens: Int[torch.Tensor, "sequence pos"]
    per_sequence: Float[torch.Tensor, "kind sequence layer head"] | None = None

    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, head) with one column per head type."""
        n_layers, n_heads = self.induction.shape
        frame = pd.DataFrame({
            "layer": [layer for layer in self.layers for _ in range(n_heads)],
            "head": [h for _ in self.layers for h in range(n_heads)],
        })
        for kind in HEAD_TYPES:
            frame[kind] = to_numpy(getattr(self, kind).flatten())
        return frame

    def sequence_frame(self) -> pd.DataFrame:
        """One row per (sequence, layer, head) with one column per head type (the scores before averaging)."""
        if self.per_sequence is None:
            raise ValueError("per_sequence: these scores were built without per-sequence scores")
        _, n_seq, n_layers, n_heads = self.per_sequence.shape
        frame = pd.DataFrame({
            "sequence": [s for s in range(n_seq) for _ in range(n_layers * n_heads)],
            "layer": [layer for _ in range(n_seq) for layer in self.layers for _ in range(n_heads)],
            "head": [h for _ in range(n_seq * n_layers) for h in range(n_heads)],
        })
        for k, kind in enumerate(HEAD_TYPES):
            frame[kind] = to_numpy(self.per_sequence[k].flatten())
        return frame

    def heads_above(self, kind: str, threshold: float) -> list[tuple[int, int]]:
        """``(layer, head)`` pairs whose ``kind`` score exceeds ``threshold``, highest first."""
        if kind not in HEAD_TYPES:
            raise ValueError(f"kind: expected one of {HEAD_TYPES}, got {kind!r}")
        frame = self.to_frame()
        frame = frame[frame[kind] > threshold].sort_values(kind, ascending=False)
        return [(int(r.layer), int(r.head)) for r in frame.itertuples()]


def head_type_scores(
    model: HookedTransformer,
    tokens: Int[torch.Tensor, "sequence pos"] | None = None,
    *,
    length: int = 40,
    n_sequences: int = 8,
    seed: int = 0,
    layers: int | Sequence[int] | None = None,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    rows: Literal["all", "detected"] = "all",
    batch_size: int = 16,
    progress: bool | None = None,
) -> HeadTypeScores:
    """Head-type scores of every head on ``tokens`` (default: :func:`repeated_random_tokens`).

    Score of head ``h`` for a type with detection pattern ``D``: ``Σ (A_h ⊙ D) / Σ A_h`` over the
    counted query rows, averaged over sequences (TransformerLens' ``detect_head`` measure).

    Args:
        model: The model to run.
        tokens: ``[sequence, pos]`` token ids (default: ``n_sequences`` random sequences of ``length``
            tokens, each repeated twice, drawn with ``seed``).
        length: Length of each random sequence before repetition.
        n_sequences: Number of random sequences.
        seed: Seed of the random tokens.
        layers: Analysed layers (default all).
        exclude_bos: Drop the first key from numerator and denominator, as in
            ``head_detector.compute_head_attention_similarity_score``.
        exclude_current_token: Drop the diagonal likewise.
        rows: "all" is ``detect_head``'s measure (every query row counts, so on ``[BOS] r r`` a perfect
            induction head scores about ``(length - 1) / (2 length)``); "detected" divides only by the
            attention of query rows where the detection pattern has a one (a perfect head scores 1).
        batch_size: Sequences per forward pass.
        progress: Progress bar (None: when there is more than one batch; False: silent).

    Returns:
        A :class:`HeadTypeScores` with ``[layer, head]`` scores in [0, 1] per type; ``to_frame()`` is the
        tidy table.
    """
    if rows not in ("all", "detected"):
        raise ValueError(f"rows: expected 'all' or 'detected', got {rows!r}")
    if tokens is None:
        tokens = repeated_random_tokens(model, length=length, n_sequences=n_sequences, seed=seed)
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.is_floating_point():
        raise TypeError("tokens: expected an integer tensor of shape [sequence, pos]")
    if tokens.shape[1] < 2 or tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"tokens: sequences need 2..{model.cfg.n_ctx} tokens, got {tokens.shape[1]}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= model.cfg.d_vocab):
        raise ValueError(
            f"tokens: expected ids in [0, {model.cfg.d_vocab}) (the model's d_vocab), "
            f"got ids in [{int(tokens.min())}, {int(tokens.max())}]"
        )
    layer_list = as_layers(layers, model.cfg.n_layers)
    n_seq, seq = tokens.shape
    patterns = detection_patterns(tokens)  # [kind, sequence, q, k]
    keep = torch.ones(seq, seq)
    if exclude_bos:
        keep[:, 0] = 0
    if exclude_current_token:
        keep.fill_diagonal_(0)
    weighted = patterns * keep  # numerator weights
    if rows == "all":
        denominator = keep.expand_as(patterns)
    else:
        denominator = keep * (weighted.sum(dim=-1, keepdim=True) > 0)  # [kind, sequence, q, k]
    batch = batch_from_tokens(model, tokens)
    scores = torch.zeros((len(HEAD_TYPES), n_seq, len(layer_list), model.cfg.n_heads))
    slot = {layer: i for i, layer in enumerate(layer_list)}

    def make_hooks(chunk: Chunk):  # noqa: ANN202
        det = weighted[:, chunk.rows]  # [kind, b, q, k]
        den = denominator[:, chunk.rows]

        def score(pattern: Float[torch.Tensor, "b head q k"], hook) -> None:  # noqa: ANN001
            dev = pattern.device
            hits = einops.einsum(pattern, det.to(dev), "b head q k, kind b q k -> kind b head")
            total = einops.einsum(pattern, den.to(dev), "b head q k, kind b q k -> kind b head")
            scores[:, chunk.rows, slot[hook.layer()]] = (hits / total).cpu()

        return [(get_act_name("pattern", layer), score) for layer in layer_list]

    deepest = max(layer_list) + 1
    run_batched(model, batch, make_hooks, batch_size=batch_size,
                stop_at_layer=None if deepest >= model.cfg.n_layers else deepest, progress=progress,
                desc="head types")
    mean = scores.mean(dim=1)  # [kind, layer, head]
    return HeadTypeScores(tuple(layer_list), mean[0], mean[1], mean[2], tokens.cpu(), per_sequence=scores)


def pair_head_type_scores(
    pair: ModelPair,
    tokens: Int[torch.Tensor, "sequence pos"] | None = None,
    *,
    length: int = 40,
    n_sequences: int = 8,
    seed: int = 0,
    layers: int | Sequence[int] | None = None,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    rows: Literal["all", "detected"] = "all",
    batch_size: int = 16,
    progress: bool | None = None,
    by_sequence: bool = False,
) -> pd.DataFrame:
    """:func:`head_type_scores` of base and tuned on the same probe tokens, in the tuned − base layout
    of :func:`~interp.activations.attention_metrics.with_delta`; ``by_sequence=True``: one row per
    probe sequence (a ``sequence`` column, :meth:`HeadTypeScores.sequence_frame`) instead of the mean."""
    mean, per_sequence = pair_head_type_frames(
        pair, tokens, length=length, n_sequences=n_sequences, seed=seed, layers=layers, exclude_bos=exclude_bos,
        exclude_current_token=exclude_current_token, rows=rows, batch_size=batch_size, progress=progress)
    return per_sequence if by_sequence else mean


def pair_head_type_frames(
    pair: ModelPair, tokens: Int[torch.Tensor, "sequence pos"] | None = None, **kwargs: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both layouts of :func:`pair_head_type_scores` (mean, per sequence) from one pass of each model;
    ``kwargs`` as :func:`head_type_scores`."""
    pair = ModelPair.check(pair)
    base = head_type_scores(pair.base, tokens, **kwargs)
    tuned = head_type_scores(pair.tuned, base.tokens, **kwargs)
    mean = with_delta(base.to_frame(), tuned.to_frame(), keys=["layer", "head"], values=list(HEAD_TYPES))
    per_sequence = with_delta(base.sequence_frame(), tuned.sequence_frame(), keys=["sequence", "layer", "head"],
                              values=list(HEAD_TYPES))
    return mean, per_sequence
