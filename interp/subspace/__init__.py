"""Weight diffs and subspace scoring: which residual directions explain what tuning changed.

The entry point is :func:`subspace_sweep` (a :class:`SweepResult` of tidy tables). Modules, each with
one job: :mod:`~interp.subspace.weight_diff` (ΔW per tensor, residual views, diagnostics),
:mod:`~interp.subspace.steering` (``steer``/``apply_delta``), :mod:`~interp.subspace.basis` (the
:class:`Basis` type and its set algebra), :mod:`~interp.subspace.weight_library` and
:mod:`~interp.subspace.activation_library` (the candidate recipes), :mod:`~interp.subspace.library`
(compounds, the known names), :mod:`~interp.subspace.targets` (what a basis is scored against),
:mod:`~interp.subspace.scores` (R_act, R_w, exact nulls, ceilings, specificity),
:mod:`~interp.subspace.sweep` (the whole sweep on a model pair), :mod:`~interp.subspace.probes` and
:mod:`~interp.subspace.captures` (prompts and captures). Kernels not listed in ``__all__`` stay
importable from their modules.
"""

from interp.subspace.activation_library import ACTIVATION_BASES, activation_bases
from interp.subspace.basis import (
    Basis,
    complement,
    definitions_table,
    intersection,
    project_away,
    random_basis,
    union,
)
from interp.subspace.probes import CLAIMS, CRITICAL_SYSTEM, SYCOPHANTIC_SYSTEM, probe_prompts
from interp.subspace.scores import activation_ceiling, concentration, null_moments, weight_ceiling
from interp.subspace.steering import apply_delta, steer
from interp.subspace.sweep import SweepResult, score_table, subspace_sweep
from interp.subspace.targets import Target
from interp.subspace.weight_diff import as_delta, delta_diagnostics, write_layers
from interp.subspace.weight_library import WEIGHT_BASES, weight_bases

__all__ = [
    "ACTIVATION_BASES", "CLAIMS", "CRITICAL_SYSTEM", "SYCOPHANTIC_SYSTEM", "WEIGHT_BASES",
    "Basis", "SweepResult", "Target",
    "activation_bases", "activation_ceiling", "apply_delta", "as_delta", "complement", "concentration",
    "definitions_table", "delta_diagnostics", "intersection", "null_moments", "probe_prompts", "project_away",
    "random_basis", "score_table", "steer", "subspace_sweep", "union", "weight_bases", "weight_ceiling",
    "write_layers",
]
