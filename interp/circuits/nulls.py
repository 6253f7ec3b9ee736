"""Is a direction's base-vs-tuned change more than a random direction's? Nulls from the random probes.

For a named direction ``d`` and a layer range ``R`` the statistic is ``s_d = mean_{l ∈ R} |Δ_d(l)|``
(Δ = Δz of a circuit and relation, or ‖Δ‖ of the MLP output); the null is the same statistic of each
random direction, ``s_r``, on the same circuit, relation and layers. Per named direction the table
gives ``p = (1 + #{s_r ≥ s_d}) / (1 + n_random)``, the mid-rank percentile of ``s_d`` among the
``s_r`` and ``n_random``; per random direction the leave-one-out p-value against the other random
directions (uniform on ``{1/n, ..., 1}`` when the null is calibrated) and its percentile among them.
See :mod:`interp._stats`.

>>> null = delta_null_table(study.deltas, study.random_deltas, layers=study.tuned_layers)
>>> null.query("probe == 'named'")       # direction, circuit, relation, abs_delta_z, percentile, p_value...
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from interp._stats import empirical_p_value, leave_one_out_p_values, leave_one_out_percentiles, percentile_of
from interp._validate import require_columns
from interp.circuits.mlp_pass import MLPPassComparison

__all__ = ["NULL_COLUMNS", "delta_null_table", "mlp_null_table"]

#: Columns every null table has after its keys.
NULL_COLUMNS = ("probe", "n_layers", "null_median", "null_max", "percentile", "p_value", "n_random")


def _layer_list(layers: int | Iterable[int], available: set[int]) -> list[int]:
    chosen = [int(layers)] if isinstance(layers, (int, np.integer)) else [int(x) for x in layers]
    if not chosen:
        raise ValueError("layers: is empty (expected at least one layer of the range)")
    missing = sorted(set(chosen) - available)
    if missing:
        raise ValueError(f"layers: {missing[:10]} are not in the table's layers {sorted(available)[:30]}")
    return sorted(set(chosen))


def _against_random(
    named: pd.DataFrame, random: pd.DataFrame, *, value: str, keys: Sequence[str], layers: int | Iterable[int],
    per_layer: bool, stat: str,
) -> pd.DataFrame:
    """Shared core: ``named``/``random`` rows (direction, layer, keys..., value) -> the null table."""
    for label, frame in (("named", named), ("random", random)):
        require_columns(frame, ("direction", "layer", *keys, value), label)
    layer_list = _layer_list(layers, set(named["layer"].unique()) & set(random["layer"].unique()))
    groups = list(keys) + (["layer"] if per_layer else [])

    def reduce(frame: pd.DataFrame) -> pd.DataFrame:
        chosen = frame[frame["layer"].isin(layer_list)].assign(_abs=lambda f: f[value].abs())
        return (chosen.groupby(["direction", *groups], sort=False)
                .agg(**{stat: ("_abs", "mean"), "n_layers": ("layer", "nunique")}).reset_index())

    observed, null = reduce(named), reduce(random)
    n_random = null["direction"].nunique()
    if n_random < 2:
        raise ValueError(f"random: need at least 2 random directions for a null, got {n_random}")
    null_parts = dict(iter(null.groupby(groups, sort=False))) if groups else {(): null}
    named_parts = dict(iter(observed.groupby(groups, sort=False))) if groups else {(): observed}
    rows = []
    for key, sample_rows in null_parts.items():
        sample = sample_rows[stat].to_numpy(dtype=float)
        summary = dict(null_median=float(np.median(sample)), null_max=float(sample.max()), n_random=len(sample))
        if key in named_parts:
            part = named_parts[key]
            x = part[stat].to_numpy(dtype=float)
            rows.append(part.assign(probe="named", percentile=percentile_of(x, sample),
                                    p_value=empirical_p_value(x, sample), **summary))
        # each random direction against the other random directions
        rows.append(sample_rows.assign(probe="random", percentile=leave_one_out_percentiles(sample),
                                       p_value=leave_one_out_p_values(sample), **summary))
    table = pd.concat(rows, ignore_index=True).sort_values("probe", kind="stable", ignore_index=True)
    return table[["direction", *groups, stat, *NULL_COLUMNS]]


def delta_null_table(
    deltas: pd.DataFrame,
    random_deltas: pd.DataFrame,
    *,
    layers: int | Iterable[int],
    per_layer: bool = False,
) -> pd.DataFrame:
    """Where each named direction's mean ``|Δz|`` over ``layers`` falls among random directions'.

    ``deltas``/``random_deltas``: :func:`~interp.circuits.tuned_minus_base` tables (``query``,
    ``circuit``, ``relation``, ``layer``, ``delta_z``) of the named and the random directions, e.g.
    :attr:`CircuitStudy.deltas` and :attr:`CircuitStudy.random_deltas`. One row per (direction,
    circuit, relation[, layer with ``per_layer=True``]) with ``abs_delta_z`` (mean ``|Δz|`` over the
    range, or the layer's ``|Δz|``), ``probe`` ("named"/"random"), ``null_median``, ``null_max``,
    ``percentile``, ``p_value`` and ``n_random`` (see the module).
    """
    keys = [k for k in ("circuit", "relation") if k in deltas.columns]
    require_columns(deltas, ("query", "layer", "delta_z"), "deltas")
    require_columns(random_deltas, ("query", "layer", "delta_z", *keys), "random_deltas")
    return _against_random(deltas.rename(columns={"query": "direction"}),
                           random_deltas.rename(columns={"query": "direction"}),
                           value="delta_z", keys=keys, layers=layers, per_layer=per_layer, stat="abs_delta_z")


def mlp_null_table(
    named: MLPPassComparison,
    random: MLPPassComparison,
    *,
    layers: int | Iterable[int],
    per_layer: bool = False,
) -> pd.DataFrame:
    """Where each named direction's MLP-output change ``‖Δ‖`` falls among random directions'.

    ``named``/``random``: :func:`~interp.circuits.compare_mlp_pass` of the named directions and of
    random directions of the same norm, over the same layers. Columns as :func:`delta_null_table` with
    ``delta_norm`` (mean ``‖tuned − base‖`` over ``layers``, or the layer's with ``per_layer=True``).
    """
    for label, comparison in (("named", named), ("random", random)):
        if not isinstance(comparison, MLPPassComparison):
            raise TypeError(f"{label}: expected an MLPPassComparison, got {type(comparison).__name__}")
    if named.layers != random.layers:
        raise ValueError(f"random: compared over layers {list(random.layers)}, named over {list(named.layers)}")
    columns = ["direction", "layer", "delta_norm"]
    return _against_random(named.table()[columns], random.table()[columns], value="delta_norm", keys=[],
                           layers=layers, per_layer=per_layer, stat="delta_norm")
