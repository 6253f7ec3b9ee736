"""Nulls for base-vs-tuned changes: empirical p-values against a sample, and paired resampling over units.

Two kinds of null, shared by every analysis that asks "is this change more than chance?":

* **against a sample** (weight circuits, MLP pass): an observed value ``x`` against ``n`` values of the
  same statistic for random directions. ``p = (1 + #{null ≥ x}) / (1 + n)`` (the +1 correction: the
  observed value counts as one draw of the null, so ``p ≥ 1/(n+1)`` and never 0); ``percentile`` =
  ``100 · (#{null < x} + ½ #{null = x}) / n`` (mid-rank, so all-equal values sit at the 50th).
* **paired over units** (prompts, sequences): per-unit differences ``d[u, item]`` (tuned − base).
  :func:`bootstrap_ci` resamples units with replacement (``numpy.random.default_rng(seed)``) and
  takes percentile intervals; :func:`sign_flip_p_value` flips the sign of whole units (the null "tuning
  moves each unit up or down at random") exactly over all ``2^n`` sign vectors when that is at most
  ``n_permutations``, else over ``n_permutations`` seeded random ones with the +1 correction.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

__all__ = [
    "bootstrap_ci",
    "empirical_p_value",
    "leave_one_out_p_values",
    "leave_one_out_percentiles",
    "percentile_of",
    "describe_against_random",
    "describe_paired",
    "sign_flip_p_value",
    "verdict",
]

#: Relative tolerance under which a resampled statistic counts as equal to the observed one.
_TIES = 1e-9

Statistic = Callable[[np.ndarray], np.ndarray]
"""Maps differences ``[batch, unit, item]`` to a statistic ``[batch, group]``."""


def _check_null(null: np.ndarray, name: str) -> np.ndarray:
    null = np.asarray(null, dtype=np.float64)
    if null.ndim < 1 or null.shape[-1] < 1:
        raise ValueError(f"{name}: expected at least one null value along the last axis, got shape {null.shape}")
    if not np.all(np.isfinite(null)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return null


def empirical_p_value(observed: np.ndarray | float, null: np.ndarray) -> np.ndarray:
    """``(1 + #{null ≥ observed}) / (1 + n)`` along the last axis of ``null`` (``observed`` broadcasts)."""
    null = _check_null(null, "null")
    observed = np.asarray(observed, dtype=np.float64)[..., None]
    at_least = (null >= observed - _TIES * np.abs(observed)).sum(-1)
    return (1 + at_least) / (1 + null.shape[-1])


def percentile_of(observed: np.ndarray | float, null: np.ndarray) -> np.ndarray:
    """Mid-rank percentile of ``observed`` in ``null`` (last axis): ``100 (#{<} + ½ #{=}) / n``."""
    null = _check_null(null, "null")
    observed = np.asarray(observed, dtype=np.float64)[..., None]
    tie = _TIES * np.abs(observed)
    below = (null < observed - tie).sum(-1)
    equal = (np.abs(null - observed) <= tie).sum(-1)
    return 100.0 * (below + 0.5 * equal) / null.shape[-1]


def leave_one_out_p_values(null: np.ndarray) -> np.ndarray:
    """Each null value's p-value against the other ``n − 1``: ``(1 + #{others ≥ x_i}) / n``.

    For exchangeable values these are uniform on ``{1/n, ..., 1}``: a check that the null is calibrated.
    """
    null = _check_null(null, "null")
    if null.shape[-1] < 2:
        raise ValueError("null: leave-one-out needs at least 2 values")
    x = null[..., :, None]
    others = null[..., None, :]
    at_least = (others >= x - _TIES * np.abs(x)).sum(-1) - 1  # minus the value itself
    return (1 + at_least) / null.shape[-1]


def leave_one_out_percentiles(null: np.ndarray) -> np.ndarray:
    """Each null value's mid-rank percentile among the other ``n − 1`` (last axis)."""
    null = _check_null(null, "null")
    if null.shape[-1] < 2:
        raise ValueError("null: leave-one-out needs at least 2 values")
    x = null[..., :, None]
    others = null[..., None, :]
    tie = _TIES * np.abs(x)
    below = (others < x - tie).sum(-1)
    equal = (np.abs(others - x) <= tie).sum(-1) - 1  # minus the value itself
    return 100.0 * (below + 0.5 * equal) / (null.shape[-1] - 1)


def _check_deltas(deltas: np.ndarray) -> np.ndarray:
    deltas = np.asarray(deltas, dtype=np.float64)
    if deltas.ndim != 2 or deltas.shape[0] < 1 or deltas.shape[1] < 1:
        raise ValueError(f"deltas: expected a non-empty [unit, item] array, got shape {deltas.shape}")
    if not np.all(np.isfinite(deltas)):
        raise ValueError("deltas: contains NaN or infinite values")
    return deltas


def _check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def bootstrap_ci(
    deltas: np.ndarray,
    statistic: Statistic,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    batch: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of ``statistic`` over units: ``(low, high)``, each ``[group]``.

    Resample ``b`` takes rows ``idx[b]`` of ``deltas [unit, item]`` with
    ``idx = numpy.random.default_rng(seed).integers(0, n_units, size=(n_resamples, n_units))``;
    the bounds are ``numpy.quantile`` (linear) at ``(1 − level)/2`` and ``(1 + level)/2``.
    """
    deltas = _check_deltas(deltas)
    _check_count(n_resamples, "n_resamples")
    if not (isinstance(level, float) and 0.0 < level < 1.0):
        raise ValueError(f"level: expected a float in (0, 1), got {level!r}")
    idx = np.random.default_rng(seed).integers(0, deltas.shape[0], size=(n_resamples, deltas.shape[0]))
    stats = np.concatenate([statistic(deltas[idx[i : i + batch]]) for i in range(0, n_resamples, batch)])
    low, high = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return low, high


def sign_flip_p_value(
    deltas: np.ndarray,
    statistic: Statistic,
    *,
    n_permutations: int = 10_000,
    seed: int = 0,
    batch: int = 256,
) -> tuple[np.ndarray, bool]:
    """p-value of ``statistic(deltas)`` under random sign flips of whole units, and whether it is exact.

    Exact (all ``2^n`` sign vectors, identity included): ``p = #{T* ≥ T} / 2^n``. Otherwise
    ``n_permutations`` sign vectors from ``numpy.random.default_rng(seed)``: ``p = (1 + #{T* ≥ T}) /
    (1 + n_permutations)``. ``statistic`` must be large for a change (e.g. ``|mean Δ|``).
    """
    deltas = _check_deltas(deltas)
    _check_count(n_permutations, "n_permutations")
    n_units = deltas.shape[0]
    observed = statistic(deltas[None])[0]
    exact = 2**n_units <= n_permutations
    if exact:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n_units)))
    else:
        signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(n_permutations, n_units))
    count = np.zeros_like(observed)
    tie = _TIES * np.abs(observed)
    for i in range(0, len(signs), batch):
        flipped = deltas[None] * signs[i : i + batch, :, None]
        count += (statistic(flipped) >= observed - tie).sum(0)
    p = count / len(signs) if exact else (1 + count) / (1 + len(signs))
    return p, exact


def verdict(p: float, alpha: float) -> str:
    """``"distinguishable"`` when ``p ≤ alpha``, else ``"not distinguishable"`` (from the null)."""
    return "distinguishable" if p <= alpha else "not distinguishable"


def _ordinal(x: float) -> str:
    n = int(round(x))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def describe_against_random(percentile: float, p_value: float, n_random: int, alpha: float) -> str:
    """``"62nd percentile of 20 random directions (p = 0.43): not distinguishable"``."""
    return (f"{_ordinal(percentile)} percentile of {n_random} random directions (p = {p_value:.2g}): "
            f"{verdict(p_value, alpha)}")


def describe_paired(low: float, high: float, p_value: float, n_units: int, unit: str, level: float,
                    alpha: float, exact: bool) -> str:
    """``"95% CI 0.08 to 0.15 over 5 prompts; sign-flip p = 0.06 (exact): not distinguishable"``."""
    how = "exact" if exact else "random sign flips"
    return (f"{level:.0%} bootstrap CI {low:.3g} to {high:.3g} over {n_units} {unit}; sign-flip p = {p_value:.2g} "
            f"({how}): {verdict(p_value, alpha)} from no change")
