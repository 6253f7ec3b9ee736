"""bf16 models: the circuit kernels compute in float32 from the bf16 weights, so results stay within
the documented tolerance of the float32 model's (weights rounded to 8 mantissa bits: ~0.2-0.4%).

Documented tolerance (docs/analyses/weight_circuits.md): per layer, max |bf16 − fp32| ≤ 1% of
max |fp32|. Directions: torch.Generator().manual_seed(501).
"""

from __future__ import annotations

import pytest
import torch

from interp import load_model
from interp.circuits import mlp_pass, qk_affinity, vo_decomposition

BF16_TOLERANCE = 0.01
LAYERS = [0, 9, 21, 29]


@pytest.fixture(scope="module")
def smollm2_bf16():
    return load_model("smollm2-135m-instruct", dtype=torch.bfloat16)


def _per_layer_relative_error(ours, reference):
    dims = tuple(range(1, reference.ndim))
    return ((ours - reference).abs().amax(dim=dims) / reference.abs().amax(dim=dims)).max().item()


@pytest.mark.parametrize(
    "analysis",
    [
        lambda m, x: qk_affinity(m, x, layers=LAYERS),
        lambda m, x: vo_decomposition(m, x, layers=LAYERS).sum_cos,
        lambda m, x: vo_decomposition(m, x, layers=LAYERS).head_dot,
        lambda m, x: mlp_pass(m, x, layers=LAYERS),
    ],
    ids=["qk", "vo_sum_cos", "vo_head_dot", "mlp"],
)
def test_bf16_model_results_are_float32_and_close_to_fp32(smollm2, smollm2_bf16, analysis):
    x = torch.randn(6, smollm2.cfg.d_model, generator=torch.Generator().manual_seed(501))
    reference = analysis(smollm2, x)
    ours = analysis(smollm2_bf16, x.to(torch.bfloat16))
    assert ours.dtype == torch.float32
    err = _per_layer_relative_error(ours, reference)
    assert err <= BF16_TOLERANCE, f"bf16 vs fp32: {err:.4f} of the per-layer scale (tolerance {BF16_TOLERANCE})"
    assert err > 0, "the bf16 model should not have identical weights (is it really bf16?)"
