"""Analyses in a notebook's default mode: autograd on and the model's parameters requiring grad.

The rest of the suite runs with ``torch.set_grad_enabled(False)`` (conftest); here every call is
made under ``torch.enable_grad()``. Measurements (forward-pass analyses, tables) must work and keep
no graph; the weight kernels stay differentiable in the directions, checked against a central
finite difference.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from interp import DirectionSet
from interp.activations import (
    attention_metrics,
    cache_positions,
    head_type_scores,
    target_positions,
    tokenize,
)
from interp.circuits import (
    compare_mlp_pass,
    mlp_pass,
    qk_affinity,
    qk_mean_affinity,
    vo_outputs,
    weight_circuits,
)
from interp.subspace import CLAIMS, subspace_sweep

PROMPTS = ["The capital of France is Paris.", "Two plus two makes four, not Paris, said the teacher."]


def test_parameters_require_grad_as_in_a_notebook(smollm2):
    assert smollm2.blocks[0].attn.W_Q.requires_grad  # the situation these tests are about


def test_forward_pass_analyses_work_with_autograd_on(smollm2):
    with torch.enable_grad():
        metrics = attention_metrics(smollm2, PROMPTS, keywords=["Paris", "teacher"])
        frame = metrics.to_frame()
        keywords = metrics.keyword_frame()
        types = head_type_scores(smollm2, length=12, n_sequences=2, seed=0)
        batch = tokenize(smollm2, PROMPTS)
        cache = cache_positions(smollm2, batch, target_positions(batch, " Paris"), "blocks.3.attn.hook_q")
    assert len(frame) == len(PROMPTS) * smollm2.cfg.n_layers * smollm2.cfg.n_heads
    assert frame["entropy"].notna().all() and len(keywords) > 0
    assert not metrics.entropy.requires_grad and not types.induction.requires_grad
    assert not cache.acts["blocks.3.attn.hook_q"].requires_grad
    assert len(types.to_frame()) == smollm2.cfg.n_layers * smollm2.cfg.n_heads


def test_pair_tables_work_with_autograd_on(default_pair):
    d_model = default_pair.cfg.d_model
    probes = DirectionSet.random(4, d_model, seed=0, prefix="PC").with_negations().concat(
        DirectionSet.random(6, d_model, seed=42)
    )
    with torch.enable_grad():
        circuits = weight_circuits(default_pair, probes, layers=[9, 10])
        mlp = compare_mlp_pass(default_pair, probes, layers=[9, 10]).table()
        sweep = subspace_sweep(default_pair, k=4, layers=[10], claims=CLAIMS[:6], include=["write", "mlp_write"])
    assert isinstance(circuits, pd.DataFrame) and circuits["z"].notna().all()
    assert isinstance(mlp, pd.DataFrame) and (mlp["delta_norm"] >= 0).all()
    assert len(sweep.per_layer) > 0


KERNELS = {
    "qk_affinity": lambda model, u, v: qk_affinity(model, u, v, layers=[4]),
    "qk_mean_affinity": lambda model, u, v: qk_mean_affinity(model, u, v, layers=[4]),
    "vo_outputs": lambda model, u, v: vo_outputs(model, u, layers=[4])[1] @ v.T,
    "mlp_pass": lambda model, u, v: mlp_pass(model, u, layers=[4]) @ v.T,
}


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_weight_kernels_are_differentiable_in_the_directions(smollm2, kernel):
    """d/du Σ kernel(u) · v by autograd equals a central difference along a random direction."""
    fn = KERNELS[kernel]
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(3, smollm2.cfg.d_model, generator=gen, dtype=torch.float32)
    v = torch.randn(2, smollm2.cfg.d_model, generator=gen, dtype=torch.float32)
    step = torch.randn(u.shape, generator=gen)
    step = step / step.norm()
    with torch.enable_grad():
        u_var = u.clone().requires_grad_(True)
        fn(smollm2, u_var, v).sum().backward()
        grad = u_var.grad
    with torch.no_grad():
        eps = 1e-2
        numeric = (fn(smollm2, u + eps * step, v).sum() - fn(smollm2, u - eps * step, v).sum()) / (2 * eps)
    analytic = (grad * step).sum()
    assert analytic.abs() > 1e-3  # not a vacuous zero gradient
    torch.testing.assert_close(analytic, numeric, rtol=2e-2, atol=1e-3)
