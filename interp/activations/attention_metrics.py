"""Per-head attention metrics computed inside the forward pass.

Each layer's ``hook_pattern`` ``A[b, h, q, k]`` is reduced to a few numbers per (prompt, head) while
the pass runs, so nothing of size layers × heads × seq × seq is ever kept. For the distribution
``p = A[b, h, q*, :]`` of the chosen query position ``q*`` over the prompt's real tokens:

* ``entropy``: ``H(p) = -Σ_k p_k ln p_k`` (natural log; padding and future positions have ``p_k = 0``
  and add nothing; ``0 ln 0 = 0``);
* ``normalized_entropy``: ``H(p) / ln n`` with ``n`` (``n_keys``) the number of keys the query sees
  (the prompt's real tokens up to and including it: causal mask and padding), in [0, 1]; unlike
  ``H``, comparable between prompts of different lengths (NaN when ``n = 1``);
* ``mean_entropy``, ``mean_normalized_entropy``: ``H`` and ``H / ln n_q`` averaged over every query
  but the prompt's first token (whose distribution is forced to one key);
* ``max_attention``, ``max_position``: ``max_k p_k`` and ``argmax_k p_k`` (positions count the
  prompt's real tokens from 0);
* ``sink``: ``p_first``, attention on the prompt's first token; ``mean_sink`` averages it over
  queries 1..n-1;
* ``head_mean_entropy`` (per layer): ``H(mean_h p_h)``, the layer curve, and
  ``head_mean_normalized_entropy = H(mean_h p_h) / ln n``;
* ``keyword_attention``: ``Σ_{k ∈ K_w} p_k`` over the tokens overlapping any occurrence of keyword
  ``w`` in the prompt text.

>>> metrics = attention_metrics(model, prompts, keywords=["15", "27", "plus"])
>>> metrics.to_frame().nsmallest(5, "entropy")       # most focused heads at the last token
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import einops
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from transformer_lens import HookedTransformer
from transformer_lens.utilities import to_numpy
from transformer_lens.utils import get_act_name

from interp._validate import as_heads, as_layers, require_columns
from interp.activations.positions import (
    Positions,
    index_positions,
    last_positions,
    occurrence_spans,
    span_mask,
)
from interp.pair import ModelPair, delta_frame
from interp.prompts import Chunk, TokenBatch, batch_from_tokens, run_batched, tokenize
from interp.results import Result, ResultLayout

if TYPE_CHECKING:
    from interp.plots.attention_view import AttentionView

Query = Literal["last"] | int | Positions
HEAD_METRICS = ("entropy", "normalized_entropy", "mean_entropy", "mean_normalized_entropy", "max_attention", "sink",
                "mean_sink")


def _entropy(p: Float[torch.Tensor, "... key"]) -> Float[torch.Tensor, "..."]:
    """``-Σ p ln p`` over the last dim, with ``0 ln 0 = 0``."""
    return -torch.special.xlogy(p, p).sum(dim=-1)


@dataclass(frozen=True)
class AttentionMetrics(Result):
    """Per-(prompt, layer, head) attention metrics at one query position per prompt (module docstring).

    Saved with its :class:`~interp.prompts.TokenBatch`, whose tokenizer is kept only as the strings of
    the batch's own tokens (so :meth:`to_frame` shows the same ``max_token`` after loading).
    """

    result_layout: ClassVar[ResultLayout] = ResultLayout(
        headline="to_frame", derived_tables=("layer_frame", "keyword_frame"), results=("batch",),
        metadata=("labels", "layers", "keywords"),
        tensors=("query_position", "entropy", "mean_entropy", "max_attention", "max_position", "sink", "mean_sink",
                 "head_mean_entropy", "normalized_entropy", "mean_normalized_entropy", "head_mean_normalized_entropy",
                 "n_keys", "keyword_attention", "keyword_tokens"))

    batch: TokenBatch
    labels: tuple[str, ...]
    layers: tuple[int, ...]
    query_position: Int[torch.Tensor, " prompt"]
    entropy: Float[torch.Tensor, "prompt layer head"]
    mean_entropy: Float[torch.Tensor, "prompt layer head"]
    max_attention: Float[torch.Tensor, "prompt layer head"]
    max_position: Int[torch.Tensor, "prompt layer head"]
    sink: Float[torch.Tensor, "prompt layer head"]
    mean_sink: Float[torch.Tensor, "prompt layer head"]
    head_mean_entropy: Float[torch.Tensor, "prompt layer"]
    normalized_entropy: Float[torch.Tensor, "prompt layer head"]
    mean_normalized_entropy: Float[torch.Tensor, "prompt layer head"]
    head_mean_normalized_entropy: Float[torch.Tensor, "prompt layer"]
    n_keys: Int[torch.Tensor, " prompt"]
    keywords: tuple[str, ...]
    keyword_attention: Float[torch.Tensor, "prompt layer head keyword"]
    keyword_tokens: Int[torch.Tensor, "prompt keyword"]

    def to_frame(self) -> pd.DataFrame:
        """One row per (prompt, layer, head) with every head metric and the token of maximal attention."""
        n_prompts, n_layers, n_heads = self.entropy.shape
        index = pd.MultiIndex.from_product([range(n_prompts), range(n_layers), range(n_heads)],
                                           names=["prompt", "layer_index", "head"]).to_frame(index=False)
        frame = pd.DataFrame({
            "prompt": index["prompt"],
            "label": [self.labels[i] for i in index["prompt"]],
            "layer": [self.layers[i] for i in index["layer_index"]],
            "head": index["head"],
            "query_position": to_numpy(self.query_position[torch.as_tensor(index["prompt"].to_numpy().copy())]),
            "n_keys": to_numpy(self.n_keys[torch.as_tensor(index["prompt"].to_numpy().copy())]),
        })
        for name in HEAD_METRICS:
            frame[name] = to_numpy(getattr(self, name).flatten())
        frame["max_position"] = to_numpy(self.max_position.flatten())
        tokens = [self.batch.str_tokens(i) for i in range(n_prompts)]
        frame["max_token"] = [tokens[p][k] for p, k in zip(frame["prompt"], frame["max_position"], strict=True)]
        # a notebook shows the first and last six columns: keep both entropies, the maximum and the sink
        # there, and the positions (query, keys seen, argmax) in the middle
        order = ["prompt", "label", "layer", "head", "entropy", "mean_entropy", "query_position", "n_keys",
                 "max_position", "normalized_entropy", "mean_normalized_entropy", "max_attention", "sink",
                 "mean_sink", "max_token"]
        return frame[order + [c for c in frame.columns if c not in order]]

    def layer_frame(self) -> pd.DataFrame:
        """One row per (prompt, layer): head-averaged metrics and the (normalised) entropy of the
        head-averaged pattern; ``n_keys`` is the number of keys the query sees."""
        frame = self.to_frame().groupby(["prompt", "label", "n_keys", "layer"], sort=False)[list(HEAD_METRICS)].mean()
        frame = frame.reset_index()
        frame["head_mean_entropy"] = to_numpy(self.head_mean_entropy.flatten())
        frame["head_mean_normalized_entropy"] = to_numpy(self.head_mean_normalized_entropy.flatten())
        return frame

    def keyword_frame(self) -> pd.DataFrame:
        """One row per (prompt, layer, head, keyword): attention mass on the keyword's tokens."""
        n_prompts, n_layers, n_heads, n_kw = self.keyword_attention.shape
        if n_kw == 0:
            return pd.DataFrame(columns=["prompt", "label", "layer", "head", "keyword", "attention", "n_tokens"])
        index = pd.MultiIndex.from_product([range(n_prompts), range(n_layers), range(n_heads), range(n_kw)],
                                           names=["p", "l", "h", "w"]).to_frame(index=False)
        return pd.DataFrame({
            "prompt": index["p"],
            "label": [self.labels[i] for i in index["p"]],
            "layer": [self.layers[i] for i in index["l"]],
            "head": index["h"],
            "keyword": [self.keywords[i] for i in index["w"]],
            "attention": to_numpy(self.keyword_attention.flatten()),
            "n_tokens": to_numpy(self.keyword_tokens[torch.as_tensor(index["p"].to_numpy().copy()), torch.as_tensor(index["w"].to_numpy().copy())]),
        })


def _query_positions(batch: TokenBatch, query: Query) -> Int[torch.Tensor, " prompt"]:
    """The query position (batch column) of each prompt."""
    if isinstance(query, str):
        if query != "last":
            raise ValueError(f"query: expected 'last', an int or a Positions, got {query!r}")
        positions = last_positions(batch)
    elif isinstance(query, Positions):
        positions = query
    elif isinstance(query, int) and not isinstance(query, bool):
        lengths = batch.lengths.cpu()
        outside = [i for i, n in enumerate(lengths.tolist()) if not -n <= query < n]
        if outside:
            listed = ", ".join(f"prompt {i} ({int(lengths[i])} tokens)" for i in outside[:10])
            raise ValueError(f"query: index {query} is outside {listed}; expected -n <= query < n "
                             "for a prompt of n real tokens")
        positions = index_positions(batch, query)
    else:
        raise TypeError(f"query: expected 'last', an int or a Positions, got {type(query).__name__}")
    if not torch.equal(positions.prompt.cpu(), torch.arange(len(batch))):
        raise ValueError("query: needs exactly one position per prompt, in prompt order")
    return positions.position.cpu()


def reduce_attention(
    model: HookedTransformer,
    batch: TokenBatch,
    *,
    layers: Sequence[int],
    query: Int[torch.Tensor, " prompt"],
    key_groups: Bool[torch.Tensor, "prompt group pos"] | None = None,
    batch_size: int = 16,
    progress: bool | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``batch`` and reduce each ``hook_pattern`` of ``layers`` to per-(prompt, layer, head) metrics.

    Returns tensors ``entropy``, ``normalized_entropy``, ``mean_entropy``, ``mean_normalized_entropy``,
    ``max_attention``, ``max_position`` (batch column), ``sink``, ``mean_sink`` ``[prompt, layer, head]``,
    ``head_mean_entropy``, ``head_mean_normalized_entropy`` ``[prompt, layer]``, ``n_keys`` ``[prompt]``
    (keys the chosen query sees) and ``group_attention`` ``[prompt, layer, head, group]`` (attention
    mass on each key group).
    """
    n, n_heads = len(batch), model.cfg.n_heads
    groups = 0 if key_groups is None else key_groups.shape[1]
    shape = (n, len(layers), n_heads)
    out = {name: torch.zeros(shape) for name in HEAD_METRICS}
    out["max_position"] = torch.zeros(shape, dtype=torch.long)
    out["head_mean_entropy"] = torch.zeros((n, len(layers)))
    out["head_mean_normalized_entropy"] = torch.zeros((n, len(layers)))
    # keys a query at batch column q sees: the prompt's real tokens at columns <= q (causal + padding)
    seen = batch.mask.cpu().long().cumsum(dim=1)  # [prompt, pos]
    out["n_keys"] = seen[torch.arange(n), query]
    log_n = torch.log(out["n_keys"].float())
    log_n[out["n_keys"] < 2] = torch.nan  # one key: entropy 0 of a forced distribution, no normalised value
    out["group_attention"] = torch.zeros((*shape, groups))
    slot = {layer: i for i, layer in enumerate(layers)}
    first_all = batch.first.cpu()

    def make_hooks(chunk: Chunk):  # noqa: ANN202
        rows = torch.arange(chunk.rows.start, chunk.rows.stop)
        local_b, local_q = chunk.local(rows, query[rows])
        _, local_first = chunk.local(rows, first_all[rows])
        mask = batch.mask[chunk.rows, chunk.cols]  # [b, pos]
        width = mask.shape[1]
        positions = torch.arange(width, device=mask.device)
        # queries that see at least two real keys: real and after the prompt's first token
        many_keys = mask & (positions[None, :] > local_first[:, None].to(mask.device))
        weights = many_keys.float() / many_keys.sum(dim=1, keepdim=True).clamp(min=1).float()  # [b, q]
        # ln(keys seen) per query; 1 where a query sees < 2 keys (those have weight 0 above)
        log_keys = torch.log(mask.long().cumsum(dim=1).clamp(min=2).float())  # [b, q]
        log_n_rows = log_n[rows]
        key_mask = mask.float()
        group_mask = None if key_groups is None else key_groups[chunk.rows, :, chunk.cols].float()

        def reduce(pattern: Float[torch.Tensor, "b head q k"], hook) -> None:  # noqa: ANN001
            i = slot[hook.layer()]
            dev = pattern.device
            p = pattern[local_b.to(dev), :, local_q.to(dev)] * key_mask[:, None, :].to(dev)  # [b, head, k]
            head_rows = (rows, i)
            entropy = _entropy(p).cpu()
            out["entropy"][head_rows] = entropy
            out["normalized_entropy"][head_rows] = entropy / log_n_rows[:, None]
            best, where = p.max(dim=-1)
            out["max_attention"][head_rows] = best.cpu()
            out["max_position"][head_rows] = where.cpu() + chunk.cols.start
            first_col = local_first.to(dev)[:, None, None].expand(-1, p.shape[1], 1)
            out["sink"][head_rows] = p.gather(-1, first_col)[..., 0].cpu()
            head_mean = _entropy(p.mean(dim=1)).cpu()
            out["head_mean_entropy"][head_rows] = head_mean
            out["head_mean_normalized_entropy"][head_rows] = head_mean / log_n_rows
            if group_mask is not None:
                out["group_attention"][head_rows] = einops.einsum(
                    p, group_mask.to(dev), "b head k, b group k -> b head group").cpu()
            w = weights.to(dev)
            per_query = _entropy(pattern)
            out["mean_entropy"][head_rows] = einops.einsum(per_query, w, "b head q, b q -> b head").cpu()
            out["mean_normalized_entropy"][head_rows] = einops.einsum(
                per_query / log_keys.to(dev)[:, None, :], w, "b head q, b q -> b head").cpu()
            first_cols = local_first.to(dev)[:, None, None, None].expand(-1, pattern.shape[1], pattern.shape[2], 1)
            out["mean_sink"][head_rows] = einops.einsum(
                pattern.gather(-1, first_cols)[..., 0], w, "b head q, b q -> b head").cpu()

        return [(get_act_name("pattern", layer), reduce) for layer in layers]

    run_batched(model, batch, make_hooks, batch_size=batch_size, stop_at_layer=_stop(model, layers),
                progress=progress, desc="attention metrics")
    few_keys = (batch.lengths.cpu() < 2)
    out["mean_entropy"][few_keys] = torch.nan
    out["mean_normalized_entropy"][few_keys] = torch.nan
    out["mean_sink"][few_keys] = torch.nan
    return out


def _stop(model: HookedTransformer, layers: Sequence[int]) -> int | None:
    deepest = max(layers) + 1
    return None if deepest >= model.cfg.n_layers else deepest


def attention_metrics(
    model: HookedTransformer,
    prompts: str | Sequence[str] | TokenBatch,
    *,
    layers: int | Sequence[int] | None = None,
    query: Query = "last",
    keywords: Sequence[str] = (),
    case_sensitive: bool = False,
    labels: Sequence[str] | None = None,
    padding_side: Literal["left", "right"] | None = None,
    batch_size: int = 16,
    progress: bool | None = None,
) -> AttentionMetrics:
    """Entropy, maximum, sink and keyword attention of every head at ``query`` (module docstring).

    For head ``h`` with attention ``p = softmax(q_h K_hᵀ)`` at the query token: ``entropy = −Σ p ln p``,
    ``max_attention = max p``, ``sink = p[first real token]``, keyword attention = ``Σ p`` over the
    keyword's tokens; reduced inside the forward pass, so no pattern is kept.

    Args:
        model: The model to run.
        prompts: One text, several, or a :class:`~interp.prompts.TokenBatch`.
        layers: Analysed layers (default all).
        query: "last" (last real token), an index over each prompt's real tokens, or a Positions with
            one row per prompt.
        keywords: Found in the prompt text (case-insensitive unless ``case_sensitive``), every
            occurrence, and mapped to the tokens overlapping them.
        case_sensitive: Match keywords case-sensitively.
        labels: One label per prompt (default ``"0"``, ``"1"``, ...).
        padding_side: Padding of the batch made from texts (None: right; a TokenBatch keeps its own, and
            a different side is a ValueError); results do not depend on it.
        batch_size: Prompts per forward pass.
        progress: Progress bar (None: when there is more than one batch; False: silent).

    Returns:
        An :class:`AttentionMetrics` of ``[prompt, layer, head]`` tensors; ``to_frame()``,
        ``layer_frame()`` and ``keyword_frame()`` are its tidy tables.
    """
    batch = tokenize(model, prompts, padding_side=padding_side)
    layer_list = as_layers(layers, model.cfg.n_layers)
    query_cols = _query_positions(batch, query)
    if isinstance(keywords, str):
        keywords = [keywords]
    keywords = tuple(keywords)
    bad = [k for k in keywords if not isinstance(k, str) or k == ""]
    if bad:
        raise ValueError(f"keywords: expected non-empty strings, got {bad[:5]}")
    if labels is None:
        labels = [str(i) for i in range(len(batch))]
    labels = tuple(str(label) for label in labels)
    if len(labels) != len(batch):
        raise ValueError(f"labels: got {len(labels)} labels for {len(batch)} prompts")
    groups = None
    if keywords:
        spans = [[occurrence_spans(p, k, case_sensitive=case_sensitive) for k in keywords] for p in batch.prompts]
        groups = span_mask(batch, spans)
    reduced = reduce_attention(model, batch, layers=layer_list, query=query_cols, key_groups=groups,
                               batch_size=batch_size, progress=progress)
    first = batch.first.cpu()
    key_groups = groups if groups is not None else torch.zeros((len(batch), 0, batch.tokens.shape[1]), dtype=torch.bool)
    keyword_tokens = (key_groups.cpu() & (torch.arange(key_groups.shape[-1]) <= query_cols[:, None, None])).sum(-1)
    return AttentionMetrics(
        batch=batch,
        labels=labels,
        layers=tuple(layer_list),
        query_position=query_cols - first,
        entropy=reduced["entropy"],
        mean_entropy=reduced["mean_entropy"],
        max_attention=reduced["max_attention"],
        max_position=reduced["max_position"] - first[:, None, None],
        sink=reduced["sink"],
        mean_sink=reduced["mean_sink"],
        head_mean_entropy=reduced["head_mean_entropy"],
        normalized_entropy=reduced["normalized_entropy"],
        mean_normalized_entropy=reduced["mean_normalized_entropy"],
        head_mean_normalized_entropy=reduced["head_mean_normalized_entropy"],
        n_keys=reduced["n_keys"],
        keywords=keywords,
        keyword_attention=reduced["group_attention"],
        keyword_tokens=keyword_tokens,
    )


def prompt_sensitivity(layer_frame: pd.DataFrame) -> pd.DataFrame:
    """Per layer, how much the head-mean last-token entropy varies across prompt variants (``label``):
    ``entropy_spread`` and ``normalized_entropy_spread`` (max − min over variants, in nats and in units
    of ln n_keys). Raw entropy grows with the number of keys a query sees, so when the variants'
    ``n_keys`` differ the rows are ranked by the normalised spread (``ranked_by`` says which).

    ``layer_frame``: :meth:`AttentionMetrics.layer_frame` (for a pair, the rows of one ``model``).
    """
    require_columns(layer_frame, ["label", "layer", "n_keys", "entropy", "normalized_entropy"], "layer_frame")
    if "model" in layer_frame.columns and layer_frame["model"].nunique() > 1:
        raise ValueError("layer_frame: has several models; pass the rows of one (e.g. frame[frame.model == 'base'])")
    means = layer_frame.groupby(["layer", "label"])[["entropy", "normalized_entropy"]].mean()
    spread = means.groupby("layer").agg(lambda s: s.max() - s.min())
    spread.columns = ["entropy_spread", "normalized_entropy_spread"]
    lengths_differ = layer_frame.groupby("label")["n_keys"].first().nunique() > 1
    ranked_by = "normalized_entropy_spread" if lengths_differ else "entropy_spread"
    out = spread.reset_index().sort_values(ranked_by, ascending=False, kind="stable").reset_index(drop=True)
    out["ranked_by"] = ranked_by
    return out


def compare_prompt_variants(
    model: HookedTransformer, variants: Mapping[str, str], **kwargs: object
) -> AttentionMetrics:
    """:func:`attention_metrics` for named prompt variants (plain / cot / expert / few-shot...):
    the frames' ``label`` column holds the variant names; ``layer_frame()`` gives the entropy curves."""
    if not isinstance(variants, Mapping) or len(variants) == 0:
        raise ValueError("variants: expected a non-empty mapping of variant name to prompt")
    return attention_metrics(model, list(variants.values()), labels=list(variants), **kwargs)  # type: ignore[arg-type]


def few_shot_answers(prompt: str, *, marker: str = "A:") -> list[tuple[str, tuple[int, int]]]:
    """The example answers of a few-shot prompt: the text after each ``marker`` up to the line end,
    with its character span; a marker with nothing after it (the open question) is not an answer."""
    answers = []
    for _, end in occurrence_spans(prompt, marker, case_sensitive=True):
        line_end = prompt.find("\n", end)
        line_end = len(prompt) if line_end < 0 else line_end
        text = prompt[end:line_end]
        stripped = text.strip()
        if stripped:
            start = end + text.index(stripped)
            answers.append((stripped, (start, start + len(stripped))))
    return answers


def few_shot_answer_attention(
    model: HookedTransformer,
    prompts: Sequence[str],
    *,
    marker: str = "A:",
    labels: Sequence[str] | None = None,
    layers: int | Sequence[int] | None = None,
    query: Query = "last",
    batch_size: int = 16,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Attention from ``query`` to each example answer of few-shot prompts (:func:`few_shot_answers`).

    One row per (prompt, layer, head, example): ``answer`` text, ``attention`` = ``Σ_{k ∈ answer} p_k``
    and ``n_tokens``. Prompts without answers (0-shot) give no rows.
    """
    batch = tokenize(model, prompts)
    if not isinstance(marker, str) or marker == "":
        raise ValueError("marker: expected a non-empty string")
    layer_list = as_layers(layers, model.cfg.n_layers)
    labels = tuple(str(i) for i in range(len(batch))) if labels is None else tuple(map(str, labels))
    if len(labels) != len(batch):
        raise ValueError(f"labels: got {len(labels)} labels for {len(batch)} prompts")
    answers = [few_shot_answers(p, marker=marker) for p in batch.prompts]
    groups = span_mask(batch, [[[span] for _, span in a] for a in answers])
    query_cols = _query_positions(batch, query)
    reduced = reduce_attention(model, batch, layers=layer_list, query=query_cols, key_groups=groups,
                               batch_size=batch_size, progress=progress)
    attention = reduced["group_attention"]  # [prompt, layer, head, example]
    n_tokens = groups.sum(dim=-1).cpu()  # [prompt, example]
    frames = []
    for p, prompt_answers in enumerate(answers):
        if not prompt_answers:
            continue
        index = pd.MultiIndex.from_product([layer_list, range(model.cfg.n_heads), range(len(prompt_answers))],
                                           names=["layer", "head", "example"]).to_frame(index=False)
        index.insert(0, "prompt", p)
        index.insert(1, "label", labels[p])
        index["answer"] = [prompt_answers[e][0] for e in index["example"]]
        index["attention"] = to_numpy(attention[p, :, :, : len(prompt_answers)].flatten())
        index["n_tokens"] = to_numpy(n_tokens[p, torch.as_tensor(index["example"].to_numpy().copy())])
        frames.append(index)
    columns = ["prompt", "label", "layer", "head", "example", "answer", "attention", "n_tokens"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


@dataclass(frozen=True)
class AttentionPattern(Result):
    """One head's attention pattern on one prompt, with token labels: ``pattern[q, k]``; ``head`` None:
    the mean over the layer's heads, ``mean_h A[h, q, k]`` (the head-averaged heatmap)."""

    result_layout: ClassVar[ResultLayout] = ResultLayout(headline="to_frame", tensors=("pattern",),
                                                         metadata=("tokens", "layer", "head"))

    pattern: Float[torch.Tensor, "query key"]
    tokens: tuple[str, ...]
    layer: int
    head: int | None

    def to_frame(self) -> pd.DataFrame:
        """One row per (query, key) with ``key <= query``: positions, tokens and ``attention``."""
        q, k = torch.tril_indices(len(self.tokens), len(self.tokens))
        return pd.DataFrame({"query": q.tolist(), "key": k.tolist(),
                             "query_token": [self.tokens[i] for i in q.tolist()],
                             "key_token": [self.tokens[i] for i in k.tolist()],
                             "attention": to_numpy(self.pattern[q, k])})

    @property
    def name(self) -> str:
        """``"L{layer}H{head}"``, or ``"L{layer} mean"`` for the head mean."""
        return f"L{self.layer} mean" if self.head is None else f"L{self.layer}H{self.head}"

    def view(self) -> AttentionView:
        """The pattern as an interactive circuitsvis view (hover a token to see what it attends to),
        rendered offline by :func:`interp.plots.attention_view.attention_view`; needs the ``notebook`` extra.

        Returns:
            An :class:`~interp.plots.attention_view.AttentionView` that displays itself in a notebook.
        """
        from interp.plots.attention_view import attention_view  # the one figure import here: kept lazy

        return attention_view(self.tokens, {self.name: self.pattern[None]}, head_names=[self.name],
                              title=f"attention of {self.name}")


def attention_pattern(
    model: HookedTransformer, prompt: str | Int[torch.Tensor, " pos"], *, layer: int, head: int | None
) -> AttentionPattern:
    """The ``[query, key]`` attention pattern of one head on one prompt or token sequence (only that head is
    kept), or with ``head=None`` the mean over all heads of the layer, ``mean_h A[h, q, k]``."""
    if isinstance(prompt, torch.Tensor):
        if prompt.ndim != 1:
            raise ValueError(f"prompt: expected a string or a 1-d token tensor, got shape {tuple(prompt.shape)}")
        batch = batch_from_tokens(model, prompt)
    else:
        batch = tokenize(model, prompt)
    (layer,) = as_layers(layer, model.cfg.n_layers, name="layer")
    if head is not None:
        (head,) = as_heads(head, model.cfg.n_heads, name="head")
    kept: dict[str, torch.Tensor] = {}

    def keep(pattern: torch.Tensor, hook) -> None:  # noqa: ANN001
        chosen = pattern[0].float().mean(dim=0) if head is None else pattern[0, head]
        kept["pattern"] = chosen.detach().cpu().clone()

    run_batched(model, batch, lambda chunk: [(get_act_name("pattern", layer), keep)],
                stop_at_layer=_stop(model, [layer]), progress=False)
    return AttentionPattern(kept["pattern"], tuple(batch.str_tokens(0)), layer, head)


# ------------------------------------------------------------------------------------------------
# Base vs tuned


@dataclass(frozen=True)
class PairAttentionPattern(Result):
    """One head's attention pattern on one prompt in a pair's base and tuned models."""

    result_layout: ClassVar[ResultLayout] = ResultLayout(headline="to_frame", results=("base", "tuned"))

    base: AttentionPattern
    tuned: AttentionPattern

    def to_frame(self) -> pd.DataFrame:
        """One row per (model, query, key) with ``model`` in "base", "tuned", "delta" (tuned − base)."""
        return with_delta(self.base.to_frame(), self.tuned.to_frame(),
                          keys=["query", "key", "query_token", "key_token"], values=["attention"])

    def view(self) -> AttentionView:
        """Base, tuned and ``tuned − base`` side by side as interactive circuitsvis views (the difference on a
        diverging scale), rendered offline by :func:`interp.plots.attention_view.pair_attention_view`.

        Returns:
            An :class:`~interp.plots.attention_view.AttentionView` that displays itself in a notebook.
        """
        from interp.plots.attention_view import pair_attention_view  # the one figure import here: kept lazy

        return pair_attention_view(self.base.tokens, self.base.pattern[None], self.tuned.pattern[None],
                                   head_names=[self.base.name],
                                   title=f"attention of {self.base.name}: base, tuned, tuned − base")


def pair_attention_pattern(
    pair: ModelPair, prompt: str | Int[torch.Tensor, " pos"], *, layer: int, head: int
) -> PairAttentionPattern:
    """:func:`attention_pattern` of one head in ``pair.base`` and ``pair.tuned`` on the same prompt.

    Args:
        pair: The base/tuned pair (one tokenizer).
        prompt: Text (tokenized as :func:`interp.prompts.tokenize` does) or a 1-d token tensor.
        layer: The head's layer.
        head: The head's index.

    Returns:
        A :class:`PairAttentionPattern`; ``.view()`` shows base, tuned and tuned − base interactively.
    """
    pair = ModelPair.check(pair)
    return PairAttentionPattern(attention_pattern(pair.base, prompt, layer=layer, head=head),
                                attention_pattern(pair.tuned, prompt, layer=layer, head=head))


def with_delta(base: pd.DataFrame, tuned: pd.DataFrame, *, keys: Sequence[str], values: Sequence[str]) -> pd.DataFrame:
    """Stack ``base`` and ``tuned`` with a ``model`` column and add ``model == "delta"`` rows
    (tuned − base of each column in ``values``, matched on ``keys``): :func:`interp.pair.delta_frame`."""
    return delta_frame(base, tuned, keys=keys, values=values, layout="long")


@dataclass(frozen=True)
class PairAttentionMetrics(Result):
    """:class:`AttentionMetrics` of a ModelPair's base and tuned models on the same prompts."""

    result_layout: ClassVar[ResultLayout] = ResultLayout(
        headline="to_frame", derived_tables=("layer_frame", "keyword_frame"), results=("base", "tuned"))

    base: AttentionMetrics
    tuned: AttentionMetrics

    def to_frame(self) -> pd.DataFrame:
        """Head-level frame with ``model`` in "base", "tuned", "delta" (delta = tuned − base)."""
        return with_delta(self.base.to_frame(), self.tuned.to_frame(),
                          keys=["prompt", "label", "n_keys", "layer", "head"], values=list(HEAD_METRICS))

    def layer_frame(self) -> pd.DataFrame:
        return with_delta(self.base.layer_frame(), self.tuned.layer_frame(), keys=["prompt", "label", "n_keys", "layer"],
                          values=[*HEAD_METRICS, "head_mean_entropy", "head_mean_normalized_entropy"])

    def keyword_frame(self) -> pd.DataFrame:
        return with_delta(self.base.keyword_frame(), self.tuned.keyword_frame(),
                          keys=["prompt", "label", "layer", "head", "keyword"], values=["attention"])


def pair_attention_metrics(
    pair: ModelPair,
    prompts: str | Sequence[str] | TokenBatch,
    *,
    layers: int | Sequence[int] | None = None,
    query: Query = "last",
    keywords: Sequence[str] = (),
    case_sensitive: bool = False,
    labels: Sequence[str] | None = None,
    padding_side: Literal["left", "right"] | None = None,
    batch_size: int = 16,
    progress: bool | None = None,
) -> PairAttentionMetrics:
    """:func:`attention_metrics` for ``pair.base`` and ``pair.tuned`` on the same prompts.

    Args:
        pair: The base/tuned :class:`~interp.ModelPair`.
        prompts: One text, several, or a :class:`~interp.prompts.TokenBatch`.
        layers: As in :func:`attention_metrics`.
        query: As in :func:`attention_metrics`.
        keywords: As in :func:`attention_metrics`.
        case_sensitive: As in :func:`attention_metrics`.
        labels: As in :func:`attention_metrics`.
        padding_side: As in :func:`attention_metrics`.
        batch_size: As in :func:`attention_metrics`.
        progress: As in :func:`attention_metrics`.

    Returns:
        A :class:`PairAttentionMetrics`; its frames have ``model`` in "base", "tuned", "delta" (tuned − base).
    """
    pair = ModelPair.check(pair)
    kwargs = dict(layers=layers, query=query, keywords=keywords, case_sensitive=case_sensitive, labels=labels,
                  padding_side=padding_side, batch_size=batch_size, progress=progress)
    return PairAttentionMetrics(attention_metrics(pair.base, prompts, **kwargs),
                                attention_metrics(pair.tuned, prompts, **kwargs))


def pair_few_shot_answer_attention(
    pair: ModelPair,
    prompts: Sequence[str],
    *,
    marker: str = "A:",
    labels: Sequence[str] | None = None,
    layers: int | Sequence[int] | None = None,
    query: Query = "last",
    batch_size: int = 16,
    progress: bool | None = None,
) -> pd.DataFrame:
    """:func:`few_shot_answer_attention` for base and tuned, in the tuned − base layout of :func:`with_delta`."""
    pair = ModelPair.check(pair)
    kwargs = dict(marker=marker, labels=labels, layers=layers, query=query, batch_size=batch_size, progress=progress)
    base = few_shot_answer_attention(pair.base, prompts, **kwargs)
    tuned = few_shot_answer_attention(pair.tuned, prompts, **kwargs)
    return with_delta(base, tuned, keys=["prompt", "label", "layer", "head", "example", "answer"],
                      values=["attention"])
