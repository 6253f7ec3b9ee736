"""z-scores against random directions, the self/opposite series, tuned − base deltas, and the
per-PC mean |Δz| table ("is PC1 special?").

A random baseline is computed per layer (and per head when the values have a head axis) from the
entries that pair random directions, identified by a name prefix:

* ``"self"`` (the default): the diagonal entries ``value[r, r]``, one per random direction r — the
  spread of "a direction with itself" for directions with no special meaning;
* ``"offdiag"``: the entries ``value[r, r']`` with ``r ≠ r'`` — the spread of unrelated pairs.

``z = (value − mean) / (std + eps)`` with the population std (ddof = 0, numpy's default).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from transformer_lens.utilities import to_numpy

from interp._validate import require_columns
from interp.pair import delta_frame

__all__ = [
    "VALUE_COLUMNS",
    "circuit_table",
    "mean_abs_delta",
    "random_baseline",
    "self_opposite",
    "tuned_minus_base",
]

Baseline = Literal["self", "offdiag"]
VALUE_COLUMNS = ("value", "baseline_mean", "baseline_std", "z")


def random_pairs(
    query_names: Sequence[str], key_names: Sequence[str], prefix: str, kind: Baseline
) -> tuple[list[int], list[int]]:
    if kind not in ("self", "offdiag"):
        raise ValueError(f"baseline: expected 'self' or 'offdiag', got {kind!r}")
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"random_prefix: expected a non-empty string, got {prefix!r}")
    rows = [n for n in query_names if n.startswith(prefix)]
    cols = [n for n in key_names if n.startswith(prefix)]
    if kind == "self":
        common = [n for n in rows if n in set(cols)]
        pairs = [(query_names.index(n), key_names.index(n)) for n in common]
    else:
        pairs = [(query_names.index(a), key_names.index(b)) for a in rows for b in cols if a != b]
    if len(pairs) < 2:
        raise ValueError(
            f"random_prefix: need at least 2 {kind!r} entries between directions named {prefix!r}..., found "
            f"{len(pairs)} (add random directions, e.g. DirectionSet.random(20, d_model, seed=42))"
        )
    return [p[0] for p in pairs], [p[1] for p in pairs]


def random_baseline(
    values: Float[torch.Tensor, "*batch query key"],
    query_names: Sequence[str],
    key_names: Sequence[str] | None = None,
    *,
    random_prefix: str = "Random",
    baseline: Baseline = "self",
) -> tuple[Float[torch.Tensor, "*batch"], Float[torch.Tensor, "*batch"]]:
    """``(mean, std)`` over the random-direction entries of ``values`` for every leading index.

    ``baseline="self"``: entries ``[r, r]`` (the seed); ``"offdiag"``: entries ``[r, r']``, ``r ≠ r'``.
    ``std`` is the population standard deviation (ddof = 0).
    """
    query_names = list(query_names)
    key_names = query_names if key_names is None else list(key_names)
    _check_values(values, query_names, key_names)
    rows, cols = random_pairs(query_names, key_names, random_prefix, baseline)
    entries = values[..., rows, cols].double()
    return entries.mean(-1).float(), entries.std(-1, correction=0).float()


def _check_values(values: object, query_names: Sequence[str], key_names: Sequence[str]) -> None:
    if not isinstance(values, torch.Tensor) or values.ndim < 2:
        raise TypeError("values: expected a tensor [..., query, key]")
    if values.shape[-2] != len(query_names) or values.shape[-1] != len(key_names):
        raise ValueError(
            f"values: shape {tuple(values.shape)} does not match {len(query_names)} query names and "
            f"{len(key_names)} key names"
        )


def circuit_table(
    values: Float[torch.Tensor, "layer *head query key"],
    *,
    layers: Sequence[int],
    query_names: Sequence[str],
    key_names: Sequence[str] | None = None,
    random_prefix: str = "Random",
    baseline: Baseline = "self",
    eps: float = 1e-8,
) -> pd.DataFrame:
    """One row per (layer, [head,] query, key): ``value``, the random ``baseline_mean``/``baseline_std``
    of that layer (and head) and ``z = (value − mean) / (std + eps)``.

    ``values`` is ``[layer, query, key]`` or ``[layer, head, query, key]`` (e.g. :func:`qk_affinity`).
    """
    query_names = [str(n) for n in query_names]
    key_names = query_names if key_names is None else [str(n) for n in key_names]
    _check_values(values, query_names, key_names)
    if values.ndim not in (3, 4):
        raise ValueError(f"values: expected [layer, query, key] or [layer, head, query, key], got {tuple(values.shape)}")
    layers = [int(x) for x in layers]
    if len(layers) != values.shape[0]:
        raise ValueError(f"layers: {len(layers)} labels for {values.shape[0]} layers of values")
    mean, std = random_baseline(values, query_names, key_names, random_prefix=random_prefix, baseline=baseline)
    data = to_numpy(values.double())
    mean_np = to_numpy(mean.double())[..., None, None]
    std_np = to_numpy(std.double())[..., None, None]
    z = (data - mean_np) / (std_np + eps)
    grids = np.meshgrid(*[np.arange(s) for s in data.shape], indexing="ij")
    columns: dict[str, object] = {"layer": np.asarray(layers)[grids[0].ravel()]}
    if data.ndim == 4:
        columns["head"] = grids[1].ravel()
    # indexing a small string array (pandas' own dtype) is several times faster than converting 10⁵ objects
    columns["query"] = pd.array(query_names, dtype="str").take(grids[-2].ravel())
    columns["key"] = pd.array(key_names, dtype="str").take(grids[-1].ravel())
    columns["value"] = data.ravel()
    columns["baseline_mean"] = np.broadcast_to(mean_np, data.shape).ravel()
    columns["baseline_std"] = np.broadcast_to(std_np, data.shape).ravel()
    columns["z"] = z.ravel()
    return pd.DataFrame(columns)


def _negation(name: str) -> str:
    return name[1:] if name.startswith("-") else f"-{name}"


def self_opposite(table: pd.DataFrame, directions: Sequence[str] | None = None) -> pd.DataFrame:
    """The "self" (``query = X, key = X``) and "opposite" (``query = X, key = −X``) rows of a circuit
    table, with a ``relation`` column; ``directions`` default to every query ``X`` whose ``−X`` is a key."""
    require_columns(table, ("query", "key"), "table")
    keys = set(table["key"].unique())
    if directions is None:
        directions = [q for q in table["query"].unique() if not q.startswith("-") and _negation(q) in keys]
    else:
        directions = [str(d) for d in directions]
        missing = [d for d in directions if d not in keys or _negation(d) not in keys]
        if missing:
            raise ValueError(f"directions: {missing[:10]} (or their negations '-NAME') are not keys of the table")
    if not directions:
        raise ValueError("directions: none given and no query X has a key -X in the table")
    rows = table[table["query"].isin(set(directions))]
    self_rows = rows[rows["query"] == rows["key"]].assign(relation="self")
    negated = {q: _negation(q) for q in directions}
    opp_rows = rows[rows["key"] == rows["query"].map(negated)].assign(relation="opposite")
    out = pd.concat([self_rows, opp_rows], ignore_index=True)
    order = {d: i for i, d in enumerate(directions)}
    out["_order"] = out["query"].map(order)
    sort = ["_order", "relation"] + [c for c in ("circuit", "model", "layer", "head") if c in out.columns]
    return out.sort_values(sort, ignore_index=True).drop(columns="_order")


def tuned_minus_base(table: pd.DataFrame) -> pd.DataFrame:
    """Base and tuned rows side by side: ``value_base``, ``value_tuned``, ``z_base``, ``z_tuned``,
    ``delta_value`` and ``delta_z`` (tuned − base), one row per remaining id (layer, query, key...):
    the wide layout of :func:`interp.pair.delta_frame`."""
    require_columns(table, ("model", "value", "z"), "table")
    models = set(table["model"].unique())
    if not {"base", "tuned"} <= models:
        raise ValueError(f"table: needs rows with model 'base' and 'tuned', has {sorted(models)}")
    ids = [c for c in table.columns if c not in VALUE_COLUMNS and c != "model"]
    base = table[table["model"] == "base"].drop(columns="model")
    tuned = table[table["model"] == "tuned"].drop(columns="model")
    return delta_frame(base, tuned, keys=ids, values=["value", "z"], layout="wide")


_NUMBER = re.compile(r"(\d+)$")


def mean_abs_delta(
    deltas: pd.DataFrame,
    layers: Sequence[int],
    *,
    explained_variance: Mapping[str, float] | Sequence[float] | None = None,
) -> pd.DataFrame:
    """Mean ``|Δz|`` over ``layers`` per (direction, [circuit,] relation): the per-direction table.

    ``deltas``: a :func:`self_opposite` table passed through :func:`tuned_minus_base` (or the
    reverse). One row per direction and relation with ``number`` (trailing digits of the name, e.g.
    PC3 -> 3), ``mean_abs_delta_z``, ``n_layers`` and, when given, ``explained_variance``
    (a mapping name -> ratio, or a sequence indexed by ``number - 1``).
    """
    require_columns(deltas, ("query", "relation", "layer", "delta_z"), "deltas")
    layers = [int(x) for x in layers]
    if not layers:
        raise ValueError("layers: is empty (expected at least one layer to average over)")
    missing = sorted(set(layers) - set(deltas["layer"].unique()))
    if missing:
        raise ValueError(f"layers: {missing[:10]} are not in the table's layers")
    chosen = deltas[deltas["layer"].isin(layers)].assign(abs_delta_z=lambda d: d["delta_z"].abs())
    keys = ["query"] + (["circuit"] if "circuit" in chosen.columns else []) + ["relation"]
    out = (
        chosen.groupby(keys, sort=False)
        .agg(mean_abs_delta_z=("abs_delta_z", "mean"), n_layers=("layer", "nunique"))
        .reset_index()
        .rename(columns={"query": "direction"})
    )
    numbers = out["direction"].map(lambda n: int(m.group(1)) if (m := _NUMBER.search(n)) else -1)
    out.insert(1, "number", numbers)
    if explained_variance is not None:
        if isinstance(explained_variance, Mapping):
            out["explained_variance"] = out["direction"].map(lambda n: explained_variance.get(n, np.nan))
        else:
            ratios = list(explained_variance)
            out["explained_variance"] = out["number"].map(
                lambda k: ratios[k - 1] if 1 <= k <= len(ratios) else np.nan
            )
    return out


