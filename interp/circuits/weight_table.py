"""QK affinity and VO decomposition of a direction set, for a model or a pair,
as one tidy table of raw values, random baselines and z-scores."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, get_args

import pandas as pd
from transformer_lens import HookedTransformer

from interp._validate import as_directions, as_layers
from interp.circuits.baselines import Baseline, circuit_table, random_pairs
from interp.circuits.checks import check_model, check_pair, names_of
from interp.circuits.qk import HeadReduction, qk_affinity, qk_mean_affinity, reduce_heads
from interp.circuits.vo import vo_decomposition
from interp.pair import ModelPair, is_streamed

__all__ = ["weight_circuits"]

_BYTES_PER_ROW = 90  # measured: pandas memory_usage(deep=True) of a pair's table, per row


def weight_circuits(
    model: HookedTransformer | ModelPair,
    directions: object,
    *,
    names: Sequence[str] | None = None,
    layers: int | Iterable[int] | None = None,
    random_prefix: str = "Random",
    baseline: Baseline = "self",
    per_head: bool = False,
    head_reduction: HeadReduction = "mean",
    vo_metric: Literal["cos", "dot"] = "cos",
    max_rows: int | None = 20_000_000,
) -> pd.DataFrame:
    """QK and VO circuit tables for ``directions`` × ``directions`` in a model or both models of a pair.

    QK: ``(x W_Q)·(y W_K)ᵀ`` scaled as the model scales attention logits, reduced over heads; VO: the
    layer's output ``Σ_h x W_V^h W_O^h`` for key direction ``x`` read against probe ``y`` (cosine or
    unit-probe projection). ``z = (value − baseline_mean) / baseline_std`` over the random directions.
    The table has 2 × models × layers × [heads ×] n² rows (about 90 bytes each); for many directions use
    ``layers=`` or the tensor functions (:func:`qk_mean_affinity`, :func:`vo_decomposition`).

    Args:
        model: A HookedTransformer (``model`` column "model") or an :class:`interp.ModelPair`
            ("base"/"tuned").
        directions: ``[n, d_model]`` tensor or :class:`~interp.DirectionSet`; must include random
            directions named ``{random_prefix}...`` (the baseline).
        names: One name per direction (default the DirectionSet's names).
        layers: Analysed layers (default all).
        random_prefix: Name prefix of the random directions.
        baseline: "self" (the original notebooks': the random directions' diagonal entries) or
            "offdiag" (their off-diagonal entries), see :func:`random_baseline`.
        per_head: Keep a ``head`` column instead of reducing over heads (VO per head, before any
            post-norm).
        head_reduction: How QK is reduced over heads (the original notebook: mean).
        vo_metric: "cos" (the original notebook) or "dot" (projection on the unit probe).
        max_rows: A ValueError is raised before any work when the table would exceed this many rows
            (default 2·10⁷ ≈ 1.8 GB; None: no limit).

    Returns:
        A tidy DataFrame: one row per (circuit, model, layer, [head,] query, key) with ``value``,
        ``baseline_mean``, ``baseline_std`` and ``z`` (see :func:`circuit_table`).
    """
    if is_streamed(model):  # an interp.streaming.StreamedPair: the same table, read layer by layer
        return model.run("weight_circuits", directions, names=names, layers=layers, random_prefix=random_prefix,
                                        baseline=baseline, per_head=per_head, head_reduction=head_reduction,
                                        vo_metric=vo_metric, max_rows=max_rows)
    if isinstance(model, HookedTransformer):
        models = {"model": check_model(model)}
    else:
        base, tuned = check_pair(model, name="model")
        models = {"base": base, "tuned": tuned}
    if vo_metric not in ("cos", "dot"):
        raise ValueError(f"vo_metric: expected 'cos' or 'dot', got {vo_metric!r}")
    if head_reduction not in get_args(HeadReduction):
        raise ValueError(f"head_reduction: expected one of {get_args(HeadReduction)}, got {head_reduction!r}")
    first = next(iter(models.values()))
    layer_list = as_layers(layers, first.cfg.n_layers)
    vectors = as_directions(directions, first.cfg.d_model)
    n = len(vectors)
    labels = names_of(directions, names, n)
    random_pairs(labels, labels, random_prefix, baseline)  # a baseline it cannot form fails before any work
    rows = 2 * len(models) * len(layer_list) * (first.cfg.n_heads if per_head else 1) * n * n
    if max_rows is not None and rows > max_rows:
        raise ValueError(
            f"directions: {n} directions × {n} over {len(layer_list)} layers{' and every head' if per_head else ''} "
            f"for {len(models)} model(s) make a table of {rows:,} rows (~{rows * _BYTES_PER_ROW / 2**30:.1f} GB), above "
            f"max_rows={max_rows:,}. Pass layers=..., fewer directions, max_rows=None, or use qk_mean_affinity / "
            "vo_decomposition for [layer, n, n] tensors."
        )
    tables = []
    for label, m in models.items():
        if not per_head and head_reduction == "mean":
            qk = qk_mean_affinity(m, vectors, layers=layer_list)
        else:
            qk = qk_affinity(m, vectors, layers=layer_list)
        vo = vo_decomposition(m, vectors, layers=layer_list, per_head=per_head)
        if per_head:
            vo_values = vo.head_cos if vo_metric == "cos" else vo.head_dot
        else:
            qk = qk if head_reduction == "mean" else reduce_heads(qk, head_reduction)
            vo_values = vo.sum_cos if vo_metric == "cos" else vo.sum_dot
        for circuit, values in (("qk", qk), ("vo", vo_values)):
            table = circuit_table(
                values, layers=layer_list, query_names=labels, random_prefix=random_prefix, baseline=baseline
            )
            table.insert(0, "model", label)
            table.insert(0, "circuit", circuit)
            tables.append(table)
    return pd.concat(tables, ignore_index=True)
