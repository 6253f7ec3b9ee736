"""Weight diffs and subspace scoring: which residual directions explain what tuning changed.

Modules: :mod:`~interp.subspace.weight_diff` (ΔW per tensor, residual views, diagnostics),
:mod:`~interp.subspace.steering` (``steer``/``apply_delta``), :mod:`~interp.subspace.bases` (the
candidate-basis library), :mod:`~interp.subspace.scores` (R_act, R_w, exact nulls, ceilings,
specificity), :mod:`~interp.subspace.sweep` (the whole sweep on a model pair),
:mod:`~interp.subspace.probes` and :mod:`~interp.subspace.captures` (prompts and captures).
"""

from interp.subspace.bases import (
    ACTIVATION_BASES,
    AXIS_KINDS,
    WEIGHT_BASES,
    Basis,
    activation_bases,
    activation_ceiling,
    complement,
    compound_bases,
    definitions_table,
    intersection,
    project_away,
    random_basis,
    union,
    weight_bases,
    weight_ceiling,
)
from interp.subspace.captures import ProbeActivations, pair_label, probe_activations, steering_label
from interp.subspace.probes import CLAIMS, CRITICAL_SYSTEM, SYCOPHANTIC_SYSTEM, probe_prompts, split_fit_eval
from interp.subspace.scores import (
    activation_target,
    ceiling_curve,
    concentration,
    matrix_target,
    monte_carlo_null,
    null_moments,
    null_std,
    residual_label_target,
    specific_scores,
    weight_targets,
    write_matrices,
    z_score,
)
from interp.subspace.steering import apply_delta, check_delta, steer
from interp.subspace.sweep import SweepResult, score_table, subspace_sweep, summarize
from interp.subspace.targets import Target
from interp.subspace.weight_diff import (
    as_delta,
    delta_diagnostics,
    random_lowrank_delta,
    residual_view,
    stack_kind,
    tensor_kind,
    write_layers,
)

__all__ = [
    "ACTIVATION_BASES", "AXIS_KINDS", "CLAIMS", "CRITICAL_SYSTEM", "SYCOPHANTIC_SYSTEM", "WEIGHT_BASES",
    "Basis", "ProbeActivations", "SweepResult", "Target",
    "activation_bases", "activation_ceiling", "activation_target", "apply_delta", "as_delta", "ceiling_curve",
    "check_delta", "complement", "compound_bases", "concentration", "definitions_table", "delta_diagnostics",
    "intersection", "matrix_target", "monte_carlo_null", "null_moments", "null_std", "pair_label", "probe_activations",
    "probe_prompts", "project_away", "random_basis", "random_lowrank_delta", "residual_label_target", "residual_view", "score_table",
    "specific_scores", "split_fit_eval", "stack_kind", "steer", "steering_label", "subspace_sweep", "summarize",
    "tensor_kind", "union", "weight_bases", "weight_ceiling", "weight_targets", "write_layers", "write_matrices", "z_score",
]
