"""Is an activation change real? Paired tests of per-unit tuned − base differences over prompts or sequences.

Each unit (a prompt variant, a repeated-token sequence) gives a difference ``d[u, i] = tuned − base``
for every item ``i`` (a head, a (head, type) pair...); items are pooled into groups (a layer, or each
item on its own). Per group ``G`` with ``m_i = mean_u d[u, i]``:

* ``mean_delta = mean_{i∈G} m_i`` (signed), with a bootstrap CI over units;
* ``mean_abs_delta = mean_{i∈G} mean_u |d[u, i]|`` (the size of the change, whatever its sign), with a
  bootstrap CI over units;
* ``consistent_change = mean_{i∈G} |m_i|`` and its sign-flip ``p_value``: the chance, if tuning moved
  each unit up or down at random, of a change at least this consistent across units.

Base = tuned gives ``d = 0``, every statistic 0, CIs ``[0, 0]`` and ``p = 1``. With ``n`` units the
sign-flip p-value is at least ``1 / 2^(n−1)`` (a sign flip of every unit leaves ``|m_i|`` unchanged):
two prompts can never show a distinguishable change. Resampling is :mod:`interp._stats`'s, seeded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from interp._stats import bootstrap_ci, sign_flip_p_value
from interp._validate import require_columns

__all__ = ["PAIRED_COLUMNS", "paired_change"]

#: The columns of :func:`paired_change` after the group keys.
PAIRED_COLUMNS = (
    "mean_delta", "mean_delta_low", "mean_delta_high", "mean_abs_delta", "mean_abs_delta_low",
    "mean_abs_delta_high", "consistent_change", "p_value", "exact", "n_units", "n_items", "level",
)


def paired_change(
    deltas: pd.DataFrame,
    value: str,
    *,
    unit: str,
    items: Sequence[str],
    groups: Sequence[str] = (),
    n_resamples: int = 2000,
    n_permutations: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Paired bootstrap CIs and sign-flip p-values of the tuned − base ``value`` per group (see the module).

    ``deltas``: one row per (``unit``, ``items``...) holding ``value`` = tuned − base, e.g. the
    ``model == "delta"`` rows of :attr:`AttentionStudy.heads` with ``unit="label"``,
    ``items=["layer", "head"]``. ``groups``: the item keys a group shares (``["layer"]``: one row per
    layer, pooling its heads; default: the items themselves, one row each). One row per group with
    :data:`PAIRED_COLUMNS`: ``exact`` says whether the p-value enumerated every sign vector.
    """
    items, groups = list(items), list(groups) or list(items)
    require_columns(deltas, (unit, *items, value), "deltas")
    if not items:
        raise ValueError("items: expected at least one item column")
    extra = [g for g in groups if g not in items]
    if extra:
        raise ValueError(f"groups: {extra} are not item columns {items}")
    if deltas.duplicated([unit, *items]).any():
        raise ValueError(f"deltas: more than one row per ({unit}, {', '.join(items)}); pass only the delta rows")
    matrix = deltas.pivot_table(index=unit, columns=items, values=value, aggfunc="first", dropna=False)
    if matrix.isna().to_numpy().any():
        raise ValueError(f"deltas: not every {unit} has every ({', '.join(items)}) (or {value} has NaN)")
    columns = matrix.columns.to_frame(index=False)
    keys = columns[groups].drop_duplicates(ignore_index=True)
    group_of = columns.merge(keys.reset_index(names="_group"), on=groups, how="left")["_group"].to_numpy()
    weights = np.zeros((len(columns), len(keys)))
    weights[np.arange(len(columns)), group_of] = 1.0
    weights /= weights.sum(0, keepdims=True)
    n_groups = len(keys)

    def statistics(d: np.ndarray) -> np.ndarray:  # [batch, unit, item] -> [batch, 3 · group]
        m = d.mean(1)
        return np.concatenate([m @ weights, np.abs(d).mean(1) @ weights, np.abs(m) @ weights], axis=1)

    def consistency(d: np.ndarray) -> np.ndarray:
        return np.abs(d.mean(1)) @ weights

    d = matrix.to_numpy(dtype=np.float64)
    observed = statistics(d[None])[0]
    low, high = bootstrap_ci(d, statistics, n_resamples=n_resamples, seed=seed, level=level)
    p, exact = sign_flip_p_value(d, consistency, n_permutations=n_permutations, seed=seed)
    out = keys.copy()
    for k, name in enumerate(("mean_delta", "mean_abs_delta")):
        part = slice(k * n_groups, (k + 1) * n_groups)
        out[name], out[f"{name}_low"], out[f"{name}_high"] = observed[part], low[part], high[part]
    out["consistent_change"] = observed[2 * n_groups:]
    out["p_value"] = p
    out["exact"] = exact
    out["n_units"] = d.shape[0]
    out["n_items"] = np.bincount(group_of, minlength=n_groups)
    out["level"] = level
    return out[[*groups, *PAIRED_COLUMNS]]
