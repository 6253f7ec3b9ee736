"""Weight circuits of probe directions: QK affinity, VO decomposition and the MLP
pass, for every layer at once, in one model or a base/tuned pair, with random-direction z-scores.

>>> from interp.circuits import weight_circuits, self_opposite, tuned_minus_base, mean_abs_delta
>>> table = weight_circuits(pair, probes)                       # probes include "Random1".."RandomN"
>>> deltas = tuned_minus_base(self_opposite(table, ["PC1", "PC2"]))
>>> mean_abs_delta(deltas, layers=range(9, 24))                  # "is PC1 special?"
>>> circuit_study(pair, pcs).null_summary()                      # ... more than a random direction?
"""

from interp.circuits.baselines import (
    circuit_table,
    mean_abs_delta,
    random_baseline,
    self_opposite,
    tuned_minus_base,
)
from interp.circuits.mlp_pass import (
    MLPPassComparison,
    compare_mlp_pass,
    delta_projections,
    mlp_pass,
    top_bottom,
)
from interp.circuits.nulls import delta_null_table, mlp_null_table
from interp.circuits.qk import attention_scales, qk_affinity, qk_mean_affinity, reduce_heads
from interp.circuits.study import CircuitStudy, circuit_study
from interp.circuits.vo import VODecomposition, vo_decomposition, vo_outputs
from interp.circuits.weight_table import weight_circuits

__all__ = [
    "CircuitStudy",
    "MLPPassComparison",
    "VODecomposition",
    "attention_scales",
    "circuit_study",
    "circuit_table",
    "compare_mlp_pass",
    "delta_null_table",
    "delta_projections",
    "mean_abs_delta",
    "mlp_null_table",
    "mlp_pass",
    "qk_affinity",
    "qk_mean_affinity",
    "random_baseline",
    "reduce_heads",
    "self_opposite",
    "top_bottom",
    "tuned_minus_base",
    "vo_decomposition",
    "vo_outputs",
    "weight_circuits",
]
