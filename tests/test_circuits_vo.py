"""VO decomposition (interp.circuits.vo) against TransformerLens' forward pass on the real models.

With a one-token sequence whose ``resid_pre`` is the direction, every head attends fully to it, so
``hook_result[.., h]`` is head h's VO output and ``hook_attn_out`` the layer's (after Gemma's
post-attention norm). Random directions: ``torch.Generator().manual_seed(SEED)``, seeds below.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from _circuit_checks import assert_close_to_scale, seeded_directions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interp.circuits import vo_decomposition, vo_outputs
from interp.circuits.stacking import CHUNK_BYTES

SMOL_LAYERS = [0, 14, 29]
GEMMA_LAYERS = [0, 5, 12, 17]



@contextlib.contextmanager
def _attn_result(model):
    previous = model.cfg.use_attn_result
    model.set_use_attn_result(True)
    try:
        yield
    finally:
        model.set_use_attn_result(previous)


def _vo_by_hook(model, layers, directions):
    """(hook_result [layer, head, n, d], hook_attn_out [layer, n, d]) for one-token sequences whose
    resid_pre at each layer in ``layers`` is directions[b] (batch row b)."""
    n = directions.shape[0]
    tokens = torch.full((n, 1), 7)
    results, outs = {}, {}

    def write(resid, hook):
        return directions.to(resid.dtype)[:, None, :].clone()

    def keep_result(x, hook):
        results[hook.layer()] = x[:, 0].float().transpose(0, 1).clone()  # [head, n, d]

    def keep_out(x, hook):
        outs[hook.layer()] = x[:, 0].float().clone()

    hooks = []
    for layer in layers:
        hooks += [
            (f"blocks.{layer}.hook_resid_pre", write),
            (f"blocks.{layer}.attn.hook_result", keep_result),
            (f"blocks.{layer}.hook_attn_out", keep_out),
        ]
    with _attn_result(model):
        model.run_with_hooks(tokens, fwd_hooks=hooks, return_type=None)
    return torch.stack([results[layer] for layer in layers]), torch.stack([outs[layer] for layer in layers])



@pytest.mark.parametrize("budget", [0, 2**40], ids=["per_layer", "stacked"])
@pytest.mark.parametrize(
    "fixture,layers",
    [("smollm2", SMOL_LAYERS), ("smollm2_raw", SMOL_LAYERS), ("gemma", GEMMA_LAYERS), ("gemma_raw", GEMMA_LAYERS)],
)
def test_vo_outputs_equal_hook_result_and_attn_out(request, monkeypatch, fixture, layers, budget):
    monkeypatch.setitem(CHUNK_BYTES, "cpu", budget)
    model = request.getfixturevalue(fixture)
    dirs = seeded_directions(4, model.cfg.d_model, seed=201)
    heads, total = vo_outputs(model, dirs, layers=layers)
    expected_heads, expected_out = _vo_by_hook(model, layers, dirs)
    assert_close_to_scale(heads, expected_heads, what=f"{fixture} per-head VO vs hook_result")
    assert_close_to_scale(total, expected_out, what=f"{fixture} layer VO vs hook_attn_out")



@pytest.mark.parametrize("budget", [0, 2**40], ids=["per_layer", "stacked"])
@pytest.mark.parametrize(
    "fixture,layers", [("smollm2", SMOL_LAYERS), ("smollm2_raw", SMOL_LAYERS), ("gemma", GEMMA_LAYERS)]
)
def test_vo_head_sum_path_reads_hook_attn_out(request, monkeypatch, fixture, layers, budget):
    """``per_head=False`` sums W_O over the query heads of each KV head before projecting (1/g of the
    work for GQA); its readings equal hook_attn_out's cosine and projection with the probes."""
    monkeypatch.setitem(CHUNK_BYTES, "cpu", budget)
    model = request.getfixturevalue(fixture)
    keys = seeded_directions(4, model.cfg.d_model, seed=208)
    probes = seeded_directions(3, model.cfg.d_model, seed=209)
    fast = vo_decomposition(model, keys, probes, layers=layers, per_head=False)
    _, attn_out = _vo_by_hook(model, layers, keys)
    p_hat = probes / probes.norm(dim=-1, keepdim=True)
    dot = torch.einsum("lnd,pd->lnp", attn_out, p_hat)
    assert_close_to_scale(fast.sum_dot, dot, what=f"{fixture} summed VO projection vs hook_attn_out")
    assert_close_to_scale(fast.sum_cos, dot / attn_out.norm(dim=-1, keepdim=True), what=f"{fixture} summed VO cosine")
    assert fast.head_dot is None and fast.head_cos is None

def test_vo_without_post_norm_is_sum_of_head_results(gemma):
    layers = [3, 11]
    dirs = seeded_directions(3, gemma.cfg.d_model, seed=202)
    _, total = vo_outputs(gemma, dirs, layers=layers, post_norm=False)
    expected_heads, post_normed = _vo_by_hook(gemma, layers, dirs)
    b_O = torch.stack([gemma.blocks[layer].attn.b_O for layer in layers])
    assert_close_to_scale(total, expected_heads.sum(1) + b_O[:, None, :], what="sum of hook_result + b_O")
    assert (total - post_normed).abs().max() > 1e-2  # Gemma's ln1_post does change the output


def test_vo_matches_factored_matrix_ov(smollm2):
    """No biases in SmolLM2: head output = ln1(v) W_V[h] W_O[h], TransformerLens' FactoredMatrix model.OV."""
    layers = [4, 21]
    v = seeded_directions(5, smollm2.cfg.d_model, seed=203)
    v_hat = v / (v.pow(2).mean(-1, keepdim=True) + smollm2.cfg.eps).sqrt()
    expected = (v_hat @ smollm2.OV[layers]).AB  # [layer, head, n, d_model]
    heads, _ = vo_outputs(smollm2, v, layers=layers)
    assert_close_to_scale(heads, expected, what="VO vs model.OV")


@pytest.mark.parametrize("fixture", ["smollm2", "gemma"])
def test_vo_decomposition_reads_outputs_against_probes(request, fixture):
    """dot = out · p/|p| and cos = dot/|out|, computed here from the hook outputs with numpy."""
    model = request.getfixturevalue(fixture)
    layers = [1, 5]
    keys = seeded_directions(3, model.cfg.d_model, seed=204)
    probes = seeded_directions(4, model.cfg.d_model, seed=205) * 3.0
    result = vo_decomposition(model, keys, probes, layers=layers)
    heads, out = (t.double().numpy() for t in _vo_by_hook(model, layers, keys))
    p_hat = (probes / probes.norm(dim=-1, keepdim=True)).double().numpy()
    sum_dot = out @ p_hat.T
    head_dot = heads @ p_hat.T
    assert_close_to_scale(result.sum_dot.double(), torch.from_numpy(sum_dot), what="sum_dot")
    assert_close_to_scale(result.head_dot.double(), torch.from_numpy(head_dot), what="head_dot")
    sum_cos = sum_dot / torch.from_numpy(out).norm(dim=-1, keepdim=True).numpy()
    head_cos = head_dot / torch.from_numpy(heads).norm(dim=-1, keepdim=True).numpy()
    torch.testing.assert_close(result.sum_cos.double(), torch.from_numpy(sum_cos), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(result.head_cos.double(), torch.from_numpy(head_cos), atol=1e-5, rtol=1e-4)
    assert result.layers == tuple(layers)
    assert result.post_norm == model.cfg.use_normalization_before_and_after
    # per_head=False sums the heads in one contraction and skips the per-head readings
    summed = vo_decomposition(model, keys, probes, layers=layers, per_head=False)
    assert summed.head_dot is None and summed.head_cos is None
    assert_close_to_scale(summed.sum_dot.double(), torch.from_numpy(sum_dot), what="sum_dot (per_head=False)")
    torch.testing.assert_close(summed.sum_cos.double(), torch.from_numpy(sum_cos), atol=1e-5, rtol=1e-4)


def test_vo_default_probes_are_the_keys(smollm2):
    keys = seeded_directions(3, smollm2.cfg.d_model, seed=206)
    a = vo_decomposition(smollm2, keys, layers=[2])
    b = vo_decomposition(smollm2, keys, keys, layers=[2])
    torch.testing.assert_close(a.sum_cos, b.sum_cos)
    assert a.sum_cos.shape == (1, 3, 3) and a.head_cos.shape == (1, smollm2.cfg.n_heads, 3, 3)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), log_scale=st.floats(0.0, 3.0))
@pytest.mark.parametrize("fixture", ["smollm2", "gemma"])
def test_vo_sign_and_scale_identities(request, fixture, seed, log_scale):
    """No biases: VO(-v) = -VO(v) per head and for the layer (RMS post-norm is odd), so the opposite
    probe reads cos(out(v), -p) = -cos(out(v), p); RMS pre-norm makes VO invariant to |v|."""
    model = request.getfixturevalue(fixture)
    layers = [6, 17]
    v = seeded_directions(3, model.cfg.d_model, seed=seed)
    probes = seeded_directions(2, model.cfg.d_model, seed=seed + 1)
    ref = vo_decomposition(model, v, probes, layers=layers)
    neg = vo_decomposition(model, -v, probes, layers=layers)
    for field in ("head_dot", "head_cos", "sum_dot", "sum_cos"):
        torch.testing.assert_close(getattr(neg, field), -getattr(ref, field), rtol=1e-5, atol=1e-5)
    opposite = vo_decomposition(model, v, -probes, layers=layers)
    torch.testing.assert_close(opposite.sum_cos, -ref.sum_cos, rtol=1e-5, atol=1e-6)
    scaled = vo_decomposition(model, v * 10.0**log_scale, probes, layers=layers)
    torch.testing.assert_close(scaled.sum_cos, ref.sum_cos, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scaled.head_dot, ref.head_dot, rtol=1e-4, atol=1e-4)


def test_vo_bad_inputs_name_the_argument(smollm2):
    d = smollm2.cfg.d_model
    good = seeded_directions(2, d, seed=207)
    with pytest.raises(ValueError, match="keys.*width 3"):
        vo_outputs(smollm2, torch.ones(1, 3))
    with pytest.raises(ValueError, match="probes.*width"):
        vo_decomposition(smollm2, good, torch.ones(2, d - 1))
    with pytest.raises(ValueError, match="probes.*zero"):
        vo_decomposition(smollm2, good, torch.zeros(1, d))
    with pytest.raises(ValueError, match="keys.*infinite"):
        vo_outputs(smollm2, torch.full((1, d), float("inf")))
    with pytest.raises(ValueError, match="layers.*-31 is out of range"):
        vo_outputs(smollm2, good, layers=-31)
