"""The weight-circuit study of a pair in one call: named directions → QK/VO circuits → Δz → MLP pass.

:func:`circuit_study` runs the whole pipeline that the report section, the CLI and
``examples/weight_circuits.py`` share and returns a :class:`CircuitStudy` holding every table they
show (and what the figures in :mod:`interp.plots.circuits` need):

1. probes = the directions, their negations and ``n_random`` seeded random unit directions;
2. :func:`~interp.circuits.weight_circuits` over the analysed layers of base and tuned (one table of
   the probes and the random directions' negations), reduced to self/opposite series and
   ``Δz = z_tuned − z_base`` (:func:`~interp.circuits.tuned_minus_base`);
3. per direction, the mean ``|Δz|`` over the tuned layers (:func:`~interp.circuits.mean_abs_delta`);
4. the MLP pass of ±(first direction) through base and tuned (one pass of every direction, named and
   random, shared with the nulls), and (given ``semantic`` vectors) what
   tuning adds to it read against them (:func:`~interp.circuits.delta_projections`);
5. the nulls (:mod:`interp.circuits.nulls`): every named direction's mean ``|Δz|`` and MLP-output
   ``‖Δ‖`` against the same statistic of the ``n_random`` random directions (random probes scaled to
   the named direction's norm for the MLP), over the tuned layers and per layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch

from interp._stats import describe_against_random, verdict
from interp._validate import as_layers
from interp.circuits.baselines import mean_abs_delta, self_opposite, tuned_minus_base
from interp.circuits.mlp_pass import MLPPassComparison, compare_mlp_pass, delta_projections, top_bottom
from interp.circuits.nulls import delta_null_table, mlp_null_table
from interp.circuits.weight_table import weight_circuits
from interp.directions import DirectionSet
from interp.pair import ModelPair, is_streamed
from interp.results import Result, ResultLayout
from interp.subspace.weight_diff import changed_layers

__all__ = ["CIRCUIT_LABELS", "CircuitStudy", "circuit_study"]

#: Display names of the ``circuit`` column values.
CIRCUIT_LABELS = {"qk": "QK", "vo": "VO"}


@dataclass(frozen=True, eq=False)
class CircuitStudy(Result):
    """Everything :func:`circuit_study` computed.

    ``table``: the :func:`weight_circuits` table of all probes; ``series``: its self/opposite rows of
    the named directions; ``deltas``: those in the wide tuned − base layout (``z_base``, ``z_tuned``,
    ``delta_z``...); ``summary``: mean ``|Δz|`` over ``tuned_layers`` per (direction, circuit,
    relation); ``mlp``/``mlp_table``: the MLP pass of ±``mlp_direction``; ``peak_layer``: where its
    MLP output changed most; ``projections``/``projection_ends``: what tuning adds to it at
    ``projection_layer`` read against the semantic vectors (None without them).

    Nulls (:mod:`interp.circuits.nulls`, ``n_random`` random directions, verdicts at ``alpha``):
    ``random_deltas`` is :attr:`deltas` of the random probes (self: ``[r, r]``, opposite: ``[r, −r]``);
    ``nulls``/``layer_nulls`` place each direction's mean ``|Δz|`` over ``tuned_layers`` / each
    layer's ``|Δz|`` among the random directions'; ``mlp_nulls``/``mlp_layer_nulls`` do the same for
    the MLP-output ``‖Δ‖`` of every named direction against random directions of the same norm.
    """

    result_layout: ClassVar[ResultLayout] = ResultLayout(
        headline="summary_wide", tables=("table", "series", "deltas", "summary", "mlp_table", "projections",
                                         "projection_ends", "random_deltas", "nulls", "layer_nulls", "mlp_nulls",
                                         "mlp_layer_nulls"),
        objects=(("directions", DirectionSet), ("probes", DirectionSet)), results=("mlp",),
        metadata=("layers", "tuned_layers", "explained_variance", "mlp_direction", "peak_layer", "projection_layer",
                  "alpha"),
        derived_tables=("largest_changes", "mlp_peak_rows"))

    directions: DirectionSet
    probes: DirectionSet
    layers: tuple[int, ...]
    tuned_layers: tuple[int, ...]
    explained_variance: list[float] | None
    table: pd.DataFrame
    series: pd.DataFrame
    deltas: pd.DataFrame
    summary: pd.DataFrame
    mlp_direction: str
    mlp: MLPPassComparison
    mlp_table: pd.DataFrame
    peak_layer: int
    projection_layer: int | None
    projections: pd.DataFrame | None
    projection_ends: pd.DataFrame | None
    random_deltas: pd.DataFrame
    nulls: pd.DataFrame
    layer_nulls: pd.DataFrame
    mlp_nulls: pd.DataFrame
    mlp_layer_nulls: pd.DataFrame
    alpha: float

    @property
    def names(self) -> list[str]:
        """The named directions (without negations and random probes)."""
        return list(self.directions.names)

    def summary_wide(self) -> pd.DataFrame:
        """:attr:`summary` with one row per direction and one column per ``"{circuit} {relation}"``
        (e.g. ``"QK self"``), ordered by the direction's number, with ``explained_variance`` when known."""
        wide = self.summary.pivot_table(index=["direction", "number"], columns=["circuit", "relation"],
                                        values="mean_abs_delta_z").sort_index(level="number")
        wide.columns = [f"{CIRCUIT_LABELS.get(c, c)} {r}" for c, r in wide.columns]
        wide = wide.reset_index().drop(columns="number")
        if self.explained_variance is not None:
            wide.insert(1, "explained_variance", self.explained_variance[: len(wide)])
        return wide

    def largest_changes(self, n: int = 8) -> pd.DataFrame:
        """The ``n`` single-layer rows of :attr:`deltas` with the largest ``|Δz|``."""
        top = self.deltas.assign(abs_delta_z=self.deltas["delta_z"].abs()).nlargest(n, "abs_delta_z")
        top = top[["circuit", "relation", "query", "layer", "z_base", "z_tuned", "delta_z"]]
        return top.assign(circuit=top["circuit"].map(CIRCUIT_LABELS)).rename(columns={"query": "direction"})

    def strongest(self, circuit: str) -> pd.Series | None:
        """The :attr:`summary` row with the largest mean ``|Δz|`` of ``circuit`` ("qk"/"vo"), or None."""
        rows = self.summary[self.summary["circuit"] == circuit]
        return None if rows.empty else rows.loc[rows["mean_abs_delta_z"].idxmax()]

    def delta_by_layer(self, circuit: str) -> pd.Series:
        """Mean ``|Δz|`` over directions and relations per tuned layer, for ``circuit``."""
        rows = self.deltas[(self.deltas["circuit"] == circuit) & self.deltas["layer"].isin(self.tuned_layers)]
        return rows.groupby("layer")["delta_z"].apply(lambda s: s.abs().mean())

    def null_summary(self) -> pd.DataFrame:
        """The named directions' rows of :attr:`nulls` (mean ``|Δz|`` over the tuned layers against the
        random directions'), circuits by display name, with a ``verdict`` at :attr:`alpha`."""
        rows = self.nulls[self.nulls["probe"] == "named"].drop(columns=["probe", "n_layers"])
        return rows.assign(circuit=rows["circuit"].map(CIRCUIT_LABELS),
                           verdict=[verdict(p, self.alpha) for p in rows["p_value"]]).reset_index(drop=True)

    def mlp_null_summary(self) -> pd.DataFrame:
        """The named directions' rows of :attr:`mlp_nulls` (mean MLP-output ``‖Δ‖`` over the tuned
        layers against random directions of the same norm), with a ``verdict`` at :attr:`alpha`."""
        rows = self.mlp_nulls[self.mlp_nulls["probe"] == "named"].drop(columns=["probe", "n_layers"])
        return rows.assign(verdict=[verdict(p, self.alpha) for p in rows["p_value"]]).reset_index(drop=True)

    def random_layer_mean(self, circuit: str, layer: int) -> float:
        """Mean ``|Δz|`` of the random directions (both relations) of ``circuit`` at ``layer``."""
        rows = self.layer_nulls
        rows = rows[(rows["probe"] == "random") & (rows["circuit"] == circuit) & (rows["layer"] == layer)]
        return float(rows["abs_delta_z"].mean())

    def null_of(self, direction: str, circuit: str | None = None, relation: str | None = None,
                layer: int | None = None) -> pd.Series:
        """The null row of a named direction: of its mean ``|Δz|`` over the tuned layers (``circuit`` and
        ``relation`` given) or its MLP ``‖Δ‖`` (both None); at one ``layer`` when given."""
        if circuit is None:
            frame = self.mlp_nulls if layer is None else self.mlp_layer_nulls
        else:
            frame = self.nulls if layer is None else self.layer_nulls
            frame = frame[(frame["circuit"] == circuit) & (frame["relation"] == relation)]
        frame = frame[(frame["probe"] == "named") & (frame["direction"] == direction)]
        if layer is not None:
            frame = frame[frame["layer"] == layer]
        if len(frame) != 1:
            raise ValueError(f"direction: no single null row for {direction!r} ({circuit}, {relation}, layer {layer})")
        return frame.iloc[0]

    def null_phrase(self, row: pd.Series) -> str:
        """A null row said in words: ``"62nd percentile of 20 random directions (p = 0.43): not distinguishable"``."""
        return describe_against_random(row["percentile"], row["p_value"], int(row["n_random"]), self.alpha)

    def mlp_peak_rows(self, n: int = 5) -> pd.DataFrame:
        """The ``n`` layers where :attr:`mlp_direction`'s MLP output changed most."""
        rows = self.mlp_table[self.mlp_table["direction"] == self.mlp_direction]
        return rows.sort_values("delta_norm", ascending=False).head(n)


def circuit_study(
    pair: ModelPair,
    directions: DirectionSet,
    *,
    semantic: DirectionSet | None = None,
    layers: int | Iterable[int] | None = None,
    tuned_layers: Sequence[int] | None = None,
    n_random: int = 20,
    random_seed: int = 42,
    n_projections: int = 8,
    alpha: float = 0.05,
) -> CircuitStudy:
    """Weight circuits, Δz and the MLP pass of the named ``directions`` in ``pair`` (see the module).

    ``Δz = z_tuned − z_base`` of each direction's QK/VO self and opposite entries, z-scored against the
    random probes; the summary averages ``|Δz|`` over ``tuned_layers``.

    Args:
        pair: The base/tuned :class:`~interp.ModelPair`, or an :class:`interp.streaming.StreamedPair`
            (every table the same, read one layer of both models at a time).
        directions: The named directions to study (e.g. ``persona_directions(...).pcs``).
        semantic: Vectors to read the MLP change against (e.g. role and trait vectors), at the
            directions' own layer when analysed, else at the MLP peak layer; None skips the projections.
        layers: Analysed layers (default all).
        tuned_layers: Layers Δz is averaged over (default: the analysed layers whose weights differ, or
            all analysed layers if none does).
        n_random: Random unit probes, ``DirectionSet.random(n_random, d_model, seed=random_seed)``.
        random_seed: Seed of the random probes.
        n_projections: Rows kept at each end of the projection ranking (at most half the semantic vectors).
        alpha: The p-value at or below which a change is called distinguishable from the random
            directions'. The same random directions (and their negations, for the opposite relation)
            are the nulls; ask for more with ``n_random`` (the smallest p-value is ``1 / (n_random + 1)``).

    Returns:
        A :class:`CircuitStudy` with every table (``table``, ``series``, ``deltas``, ``summary``,
        ``mlp_table``, ``projections``..., and the nulls ``nulls``, ``layer_nulls``,
        ``mlp_nulls``...); it displays itself in a notebook and saves with ``save``.

    Raises:
        TypeError: ``pair`` is not a ModelPair or ``directions``/``semantic`` not DirectionSets.
    """
    streamed = is_streamed(pair)  # an interp.streaming.StreamedPair: every step below reads it layer by layer
    pair = pair if streamed else ModelPair.check(pair)
    if not isinstance(directions, DirectionSet):
        raise TypeError(f"directions: expected a DirectionSet, got {type(directions).__name__}")
    if semantic is not None and not isinstance(semantic, DirectionSet):
        raise TypeError(f"semantic: expected a DirectionSet or None, got {type(semantic).__name__}")
    layer_list = sorted(set(as_layers(layers, pair.cfg.n_layers, name="layers")))
    if tuned_layers is None:
        changed = pair.run("changed_layers") if streamed else changed_layers(pair.delta())
        tuned = [layer for layer in changed if layer in layer_list] or layer_list
    else:
        tuned = sorted(set(as_layers(list(tuned_layers), pair.cfg.n_layers, name="tuned_layers")))
    if not (isinstance(alpha, float) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha: expected a float in (0, 1), got {alpha!r}")
    if not isinstance(n_random, int) or isinstance(n_random, bool) or n_random < 2:
        raise ValueError(f"n_random: the z-scores and nulls need at least 2 random directions, got {n_random!r}")
    randoms = DirectionSet.random(n_random, pair.cfg.d_model, seed=random_seed)
    probes = directions.with_negations().concat(randoms)
    names = list(directions.names)

    # one table of every probe and the random directions' negations; the baseline (the diagonal of the
    # directions named Random...) is the same for both parts, so each part equals its own table
    random_probes = randoms.with_negations()
    full = weight_circuits(pair, probes.concat(random_probes.subset(random_probes.names[1::2])), layers=layer_list)
    table = _rows_among(full, probes.names)
    series = self_opposite(table, names)
    deltas = tuned_minus_base(series)
    ratios = directions.metadata.get("explained_variance_ratio")
    explained = list(ratios) if isinstance(ratios, list) and len(ratios) == len(directions) else None
    summary = mean_abs_delta(deltas, tuned, explained_variance=explained)
    # the random directions with their negations (self: [r, r], opposite: [r, −r])
    random_deltas = tuned_minus_base(self_opposite(_rows_among(full, random_probes.names), list(randoms.names)))
    nulls = delta_null_table(deltas, random_deltas, layers=tuned)
    layer_nulls = delta_null_table(deltas, random_deltas, layers=layer_list, per_layer=True)

    first = names[0]
    mlp, mlp_nulls, mlp_layer_nulls = _mlp_pass_and_nulls(pair, directions, randoms, layer_list, tuned)
    mlp_table = mlp.table()
    first_rows = mlp_table[mlp_table["direction"] == first].sort_values("delta_norm", ascending=False)
    peak_layer = int(first_rows.iloc[0]["layer"])
    projection_layer = projections = ends = None
    if semantic is not None:
        projection_layer = directions.layer if directions.layer in mlp.layers else peak_layer
        projections = delta_projections(mlp, semantic, layer=projection_layer, direction=first)
        ends = top_bottom(projections, min(n_projections, max(1, len(projections) // 2)))
    return CircuitStudy(
        directions=directions, probes=probes, layers=tuple(layer_list), tuned_layers=tuple(tuned),
        explained_variance=explained, table=table, series=series, deltas=deltas, summary=summary,
        mlp_direction=first, mlp=mlp, mlp_table=mlp_table, peak_layer=peak_layer,
        projection_layer=projection_layer, projections=projections, projection_ends=ends,
        random_deltas=random_deltas, nulls=nulls, layer_nulls=layer_nulls,
        mlp_nulls=mlp_nulls, mlp_layer_nulls=mlp_layer_nulls, alpha=alpha,
    )


def _rows_among(table: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """The rows of a :func:`weight_circuits` table whose query and key are both among ``names``."""
    keep = set(names)
    return table[table["query"].isin(keep) & table["key"].isin(keep)].reset_index(drop=True)


def _mlp_pass_and_nulls(pair: ModelPair, directions: DirectionSet, randoms: DirectionSet, layers: list[int],
                        tuned: list[int]) -> tuple[MLPPassComparison, pd.DataFrame, pd.DataFrame]:
    """One MLP pass of ±(first direction), the other named directions and the random directions scaled
    to each named norm, split into the comparison of ±(first direction) and the MLP-output nulls over
    ``tuned`` and per layer: the named directions of each norm (unit, as a rule: one group) against the
    random directions scaled to that norm."""
    vectors = directions.vectors
    norms = [round(float(n), 5) for n in vectors.norm(dim=-1)]
    groups = list(dict.fromkeys(norms))
    # rows: the named directions, −(first direction), then n_random random rows per norm group
    stacked = torch.cat([vectors, -vectors[:1], *(randoms.vectors * norm for norm in groups)])
    every = compare_mlp_pass(pair, stacked, layers=layers, names=[f"probe{i}" for i in range(len(stacked))])
    n, n_random = len(directions), len(randoms)
    first = directions.subset([directions.names[0]]).with_negations()
    mlp = _comparison_rows(every, [0, n], first.names)
    ranges, per_layer = [], []
    for g, norm in enumerate(groups):
        members = [i for i, m in enumerate(norms) if m == norm]
        named = _comparison_rows(every, members, [directions.names[i] for i in members])
        start = n + 1 + g * n_random
        random = _comparison_rows(every, list(range(start, start + n_random)), randoms.names)
        ranges.append(mlp_null_table(named, random, layers=tuned))
        per_layer.append(mlp_null_table(named, random, layers=layers, per_layer=True))
    mlp_nulls, mlp_layer_nulls = (pd.concat(f, ignore_index=True).sort_values("probe", kind="stable", ignore_index=True)
                                  for f in (ranges, per_layer))
    return mlp, mlp_nulls, mlp_layer_nulls


def _comparison_rows(comparison: MLPPassComparison, rows: list[int], names: Sequence[str]) -> MLPPassComparison:
    """The directions at positions ``rows`` of ``comparison``, named ``names`` (copies, not views)."""
    index = torch.tensor(rows, dtype=torch.long, device=comparison.base.device)
    return MLPPassComparison(layers=comparison.layers, names=tuple(names),
                             base=comparison.base[:, index], tuned=comparison.tuned[:, index])
