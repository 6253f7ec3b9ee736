"""QK affinity (interp.circuits.qk) against TransformerLens' own forward pass on the real models.

Expectations come from ``blocks.L.attn.hook_attn_scores`` with directions written into the residual
stream by hooks, from TransformerLens' ``FactoredMatrix`` ``model.QK``, or from plain algebra.
Random directions use ``torch.Generator().manual_seed(SEED)`` with the seeds written below.
"""

from __future__ import annotations

import contextlib

import einops
import pytest
import torch
from _circuit_checks import assert_close_to_scale, diag_scores_by_hook, seeded_directions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interp.circuits import qk_affinity, qk_mean_affinity, reduce_heads
from interp.circuits.stacking import CHUNK_BYTES

SMOL_LAYERS = [0, 13, 29]
GEMMA_LAYERS = [0, 3, 5, 17]  # 5 and 17 are global-attention layers, 0 and 3 local



@contextlib.contextmanager
def _split_qkv_input(model):
    previous = model.cfg.use_split_qkv_input
    model.cfg.use_split_qkv_input = True
    try:
        yield
    finally:
        model.cfg.use_split_qkv_input = previous


def _cross_scores_by_hook(model, layers, queries, keys):
    """hook_attn_scores[h, p, p] with queries[p] as the query input and keys[p] as the key input."""
    n = queries.shape[0]
    tokens = torch.arange(10, 10 + n)[None]
    captured = {}

    def write(values):
        def hook(x, hook):  # [batch, pos, heads, d_model]
            x = x.clone()
            x[0, :n] = values.to(x.dtype)[:, None, :]
            return x

        return hook

    def keep(scores, hook):
        captured[hook.layer()] = scores[0].diagonal(dim1=-2, dim2=-1).float().clone()

    hooks = []
    for layer in layers:
        hooks += [
            (f"blocks.{layer}.hook_q_input", write(queries)),
            (f"blocks.{layer}.hook_k_input", write(keys)),
            (f"blocks.{layer}.attn.hook_attn_scores", keep),
        ]
    with _split_qkv_input(model):
        model.run_with_hooks(tokens, fwd_hooks=hooks, return_type=None)
    return torch.stack([captured[layer] for layer in layers])



@pytest.mark.parametrize("budget", [0, 2**40], ids=["per_layer", "stacked"])
@pytest.mark.parametrize(
    "fixture,layers",
    [("smollm2", SMOL_LAYERS), ("smollm2_raw", SMOL_LAYERS), ("gemma", GEMMA_LAYERS), ("gemma_raw", GEMMA_LAYERS)],
)
def test_qk_self_affinity_equals_attn_scores_diagonal(request, monkeypatch, fixture, layers, budget):
    monkeypatch.setitem(CHUNK_BYTES, "cpu", budget)
    model = request.getfixturevalue(fixture)
    dirs = seeded_directions(5, model.cfg.d_model, seed=101)
    ours = qk_affinity(model, dirs, layers=layers)  # [layer, head, n, n]
    expected = diag_scores_by_hook(model, layers, dirs)
    assert_close_to_scale(ours.diagonal(dim1=-2, dim2=-1), expected, what=f"{fixture} QK diagonal")


@pytest.mark.parametrize("budget", [0, 2**40], ids=["per_layer", "stacked"])
@pytest.mark.parametrize("fixture,layers", [("smollm2", [2, 29]), ("gemma", [4, 5]), ("gemma_raw", [11, 17])])
def test_qk_cross_affinity_equals_split_input_scores(request, monkeypatch, fixture, layers, budget):
    """u as query input and v as key input at the same position: the off-diagonal entries (tests the
    GQA head pairing, since keys now differ from queries)."""
    monkeypatch.setitem(CHUNK_BYTES, "cpu", budget)
    model = request.getfixturevalue(fixture)
    u = seeded_directions(4, model.cfg.d_model, seed=102)
    v = seeded_directions(4, model.cfg.d_model, seed=103)
    ours = qk_affinity(model, u, v, layers=layers)
    expected = _cross_scores_by_hook(model, layers, u, v)
    assert_close_to_scale(ours.diagonal(dim1=-2, dim2=-1), expected, what=f"{fixture} QK(u_i, v_i)")


def test_qk_matches_factored_matrix_qk(smollm2):
    """No biases and no qk-norm in SmolLM2: score = ln1(u) (W_Q W_K^T) ln1(v)^T / attn_scale, with
    TransformerLens' FactoredMatrix model.QK (whose W_K is already expanded per query head)."""
    layers = [3, 20]
    u = seeded_directions(6, smollm2.cfg.d_model, seed=104)
    v = seeded_directions(5, smollm2.cfg.d_model, seed=105)
    u_hat = u / (u.pow(2).mean(-1, keepdim=True) + smollm2.cfg.eps).sqrt()
    v_hat = v / (v.pow(2).mean(-1, keepdim=True) + smollm2.cfg.eps).sqrt()
    qk = smollm2.QK[layers]  # FactoredMatrix [layer, head, d_model, d_model]
    expected = (u_hat @ qk @ v_hat.T).AB / smollm2.cfg.attn_scale
    assert_close_to_scale(qk_affinity(smollm2, u, v, layers=layers), expected, what="QK vs model.QK")


def test_qk_gqa_query_head_pairs_with_kv_head_block(smollm2):
    """Query head h reads KV head h // 3 (9 query heads, 3 KV heads), all of its d_head dimensions in order.

    Seed 003's ``expand_rows_to`` (``repeat_interleave`` of the *rows* of the fused
    ``k_proj.weight [n_kv·d_head, d]``) keeps the right KV head for every query head, but gives it
    only about d_head / g distinct dimensions of that head, each repeated g times, out of order
    (query dim j meets KV dim ((h mod g)·d_head + j) // g): the scores differ from the right ones."""
    layer = 7
    attn = smollm2.blocks[layer].attn
    n_heads, n_kv, d_head = smollm2.cfg.n_heads, smollm2.cfg.n_key_value_heads, smollm2.cfg.d_head
    group = n_heads // n_kv
    x = seeded_directions(4, smollm2.cfg.d_model, seed=106)
    x_hat = x / (x.pow(2).mean(-1, keepdim=True) + smollm2.cfg.eps).sqrt()
    q = torch.einsum("nd,hde->hne", x_hat, attn.W_Q)
    k_kv = torch.einsum("nd,kde->kne", x_hat, attn._W_K)  # per KV head
    ours = qk_affinity(smollm2, x, layers=[layer])[0]
    blocks = torch.stack([q[h] @ k_kv[h // group].T for h in range(n_heads)]) / attn.attn_scale
    assert_close_to_scale(ours, blocks, what="GQA block pairing")

    # the seed's construction, verbatim: HF k_proj.weight rows repeated in place
    k_fused = torch.cat([attn._W_K[kv].T for kv in range(n_kv)], dim=0).detach()  # [n_kv·d_head, d]
    seed_k = k_fused.repeat_interleave(group, dim=0)  # [n_heads·d_head, d]
    for h in range(n_heads):
        rows = seed_k[h * d_head:(h + 1) * d_head]
        source = [int(torch.nonzero((k_fused == row).all(dim=1))[0]) for row in rows]
        assert {r // d_head for r in source} == {h // group}, "the seed keeps the right KV head"
        assert len(set(source)) <= -(-d_head // group) + 1  # ≈ d_head / g distinct dims, each g times
        assert source != [(h // group) * d_head + j for j in range(d_head)]
    k_seed = einops.rearrange(x_hat @ seed_k.T, "n (head e) -> head n e", head=n_heads)
    seed_scores = torch.stack([q[h] @ k_seed[h].T for h in range(n_heads)]) / attn.attn_scale
    wrong = (ours - seed_scores).abs().max().item()
    assert wrong > 0.1 * ours.abs().max().item(), "the seed's row repeat should give different scores"


@contextlib.contextmanager
def _temporarily(obj, **values):
    previous = {k: getattr(obj, k) for k in values}
    for k, v in values.items():
        setattr(obj, k, v)
    try:
        yield
    finally:
        for k, v in previous.items():
            setattr(obj, k, v)


def test_qk_softcap_matches_model_when_configured(gemma):
    """Gemma 3 has no attention-logit softcap; switching cfg.attn_scores_soft_cap on (Gemma 2's mechanism)
    makes the model cap hook_attn_scores, and qk_affinity must cap identically."""
    layers = [5, 9]
    dirs = seeded_directions(4, gemma.cfg.d_model, seed=107)
    uncapped = qk_affinity(gemma, dirs, layers=layers)
    cap = 0.5 * uncapped.abs().max().item()
    with _temporarily(gemma.cfg, attn_scores_soft_cap=cap):
        ours = qk_affinity(gemma, dirs, layers=layers)
        expected = diag_scores_by_hook(gemma, layers, dirs)
    assert_close_to_scale(ours.diagonal(dim1=-2, dim2=-1), expected, what="softcapped QK diagonal")
    torch.testing.assert_close(ours, cap * torch.tanh(uncapped / cap), rtol=1e-5, atol=1e-6)
    assert ours.abs().max().item() < cap


@contextlib.contextmanager
def _perturbed_biases(model, layer, seed):
    """Give one layer random nonzero b_Q/b_K (restored afterwards): SmolLM2 and Gemma have none."""
    attn = model.blocks[layer].attn
    saved = {name: getattr(attn, name).detach().clone() for name in ("b_Q", "_b_K", "_b_V")}
    gen = torch.Generator().manual_seed(seed)
    try:
        for name, value in saved.items():
            getattr(attn, name).data.copy_(torch.randn(value.shape, generator=gen) * 0.5)
        yield attn
    finally:
        for name, value in saved.items():
            getattr(attn, name).data.copy_(value)


def test_qk_biases_and_negation_identity(smollm2):
    """With biases: the hook diagonal still matches, and QK(u, v) + QK(u, -v) = 2 q(u) · b_K / scale."""
    layer = 11
    u = seeded_directions(3, smollm2.cfg.d_model, seed=108)
    v = seeded_directions(3, smollm2.cfg.d_model, seed=109)
    with _perturbed_biases(smollm2, layer, seed=110) as attn:
        ours = qk_affinity(smollm2, u, layers=[layer])
        expected = diag_scores_by_hook(smollm2, [layer], u)
        both = qk_affinity(smollm2, u, v, layers=[layer]) + qk_affinity(smollm2, u, -v, layers=[layer])
        u_hat = u / (u.pow(2).mean(-1, keepdim=True) + smollm2.cfg.eps).sqrt()
        q = torch.einsum("nd,hde->hne", u_hat, attn.W_Q) + attn.b_Q[:, None, :]
        bias_term = 2 * torch.einsum("hne,he->hn", q, attn.b_K) / attn.attn_scale  # b_K expanded per head
    assert_close_to_scale(ours.diagonal(dim1=-2, dim2=-1), expected, what="QK diagonal with biases")
    assert_close_to_scale(both[0], bias_term[:, :, None].expand_as(both[0]), what="QK(u,v)+QK(u,-v)")
    assert bias_term.abs().max() > 1e-2  # the identity is not vacuous



@pytest.mark.parametrize("budget", [0, 2**40], ids=["per_layer", "stacked"])
@pytest.mark.parametrize(
    "fixture,layers", [("smollm2", SMOL_LAYERS), ("smollm2_raw", SMOL_LAYERS), ("gemma", GEMMA_LAYERS)]
)
def test_qk_mean_affinity_equals_head_mean_of_attn_scores(request, monkeypatch, fixture, layers, budget):
    """The grouped head-mean (SmolLM2: 3 query heads per KV head summed before projecting; Gemma:
    qk-norm, so per-head then mean) equals the mean over heads of hook_attn_scores' diagonal, and
    ``reduce_heads(qk_affinity(...), "mean")`` off the diagonal."""
    monkeypatch.setitem(CHUNK_BYTES, "cpu", budget)
    model = request.getfixturevalue(fixture)
    u = seeded_directions(4, model.cfg.d_model, seed=111)
    v = seeded_directions(3, model.cfg.d_model, seed=112)
    ours = qk_mean_affinity(model, u, layers=layers)
    expected = diag_scores_by_hook(model, layers, u).mean(1)
    assert_close_to_scale(ours.diagonal(dim1=-2, dim2=-1), expected, what=f"{fixture} head-mean QK diagonal")
    cross = qk_mean_affinity(model, u, v, layers=layers)
    assert_close_to_scale(cross, reduce_heads(qk_affinity(model, u, v, layers=layers), "mean"), what="head-mean QK")


def test_qk_mean_affinity_with_biases(smollm2):
    """Summing grouped query heads carries their biases: still the mean of the per-head scores."""
    layer = 11
    u = seeded_directions(3, smollm2.cfg.d_model, seed=113)
    v = seeded_directions(5, smollm2.cfg.d_model, seed=114)
    with _perturbed_biases(smollm2, layer, seed=115):
        ours = qk_mean_affinity(smollm2, u, v, layers=[layer])
        expected = qk_affinity(smollm2, u, v, layers=[layer]).mean(1)
        diagonal = diag_scores_by_hook(smollm2, [layer], u).mean(1)
        own_diagonal = qk_mean_affinity(smollm2, u, layers=[layer]).diagonal(dim1=-2, dim2=-1)
    assert_close_to_scale(ours, expected, what="head-mean QK with biases")
    assert_close_to_scale(own_diagonal, diagonal, what="head-mean QK diagonal with biases vs hook")

@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), log_scale=st.floats(0.0, 3.0))
def test_qk_sign_and_scale_identities_smollm2(smollm2, seed, log_scale):
    """No biases: QK(u, -v) = -QK(u, v) = QK(-u, v); and RMS pre-norm makes QK invariant to |u|
    (for rms(u) >> sqrt(eps))."""
    _sign_and_scale(smollm2, seed, 10.0**log_scale, layers=[1, 17])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), log_scale=st.floats(0.0, 3.0))
def test_qk_sign_and_scale_identities_gemma(gemma, seed, log_scale):
    """Same identities through Gemma's qk-norm (RMS is odd: kn(-k) = -kn(k))."""
    _sign_and_scale(gemma, seed, 10.0**log_scale, layers=[2, 5])


def _sign_and_scale(model, seed, scale, layers):
    u = seeded_directions(3, model.cfg.d_model, seed=seed)
    v = seeded_directions(2, model.cfg.d_model, seed=seed + 1)
    ref = qk_affinity(model, u, v, layers=layers)
    torch.testing.assert_close(qk_affinity(model, u, -v, layers=layers), -ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(qk_affinity(model, -u, v, layers=layers), -ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(qk_affinity(model, u * scale, v, layers=layers), ref, rtol=1e-4, atol=1e-4)


def test_qk_layers_order_and_default(smollm2):
    dirs = seeded_directions(2, smollm2.cfg.d_model, seed=111)
    everything = qk_affinity(smollm2, dirs)
    assert everything.shape == (smollm2.cfg.n_layers, smollm2.cfg.n_heads, 2, 2)
    assert everything.dtype == torch.float32
    torch.testing.assert_close(qk_affinity(smollm2, dirs, layers=[29, -30, 4]), everything[[29, 0, 4]])


def test_reduce_heads():
    scores = torch.tensor([[[[1.0]], [[-3.0]], [[2.0]]]])  # [layer 1, head 3, 1, 1]
    assert reduce_heads(scores, "mean").item() == pytest.approx(0.0)
    assert reduce_heads(scores, "max").item() == 2.0
    assert reduce_heads(scores, "min").item() == -3.0
    assert reduce_heads(scores, "abs_mean").item() == pytest.approx(2.0)
    assert reduce_heads(scores, "abs_max").item() == -3.0  # largest magnitude, sign kept
    with pytest.raises(ValueError, match="how"):
        reduce_heads(scores, "median")


def test_qk_bad_inputs_name_the_argument(smollm2):
    d = smollm2.cfg.d_model
    good = seeded_directions(2, d, seed=112)
    with pytest.raises(ValueError, match="queries.*width 10"):
        qk_affinity(smollm2, torch.ones(2, 10))
    with pytest.raises(ValueError, match="keys.*width"):
        qk_affinity(smollm2, good, torch.ones(2, d + 1))
    with pytest.raises(ValueError, match="queries.*zero"):
        qk_affinity(smollm2, torch.zeros(1, d))
    bad = good.clone()
    bad[1, 3] = float("nan")
    with pytest.raises(ValueError, match="queries.*NaN"):
        qk_affinity(smollm2, bad)
    with pytest.raises(ValueError, match="queries.*empty"):
        qk_affinity(smollm2, torch.ones(0, d))
    with pytest.raises(ValueError, match="layers.*30 is out of range"):
        qk_affinity(smollm2, good, layers=[30])
    with pytest.raises(ValueError, match="layers.*empty"):
        qk_affinity(smollm2, good, layers=[])
    with pytest.raises(TypeError, match="model.*HookedTransformer"):
        qk_affinity("smollm2", good)


def test_attention_scales_are_the_models_own_and_the_report_says_so(smollm2, gemma):
    """SmolLM2 divides by √d_head = √64 = 8; Gemma 3 270M by √query_pre_attn_scalar = √256 = 16. The
    report's QK text names that scale (not a blanket √d_head) and Gemma's qk-norm."""
    from interp.circuits import attention_scales
    from interp.report.sections.circuits import qk_formula

    assert attention_scales(smollm2) == [8.0] * smollm2.cfg.n_layers
    assert attention_scales(gemma) == [16.0] * gemma.cfg.n_layers
    assert attention_scales(smollm2, [0, 29]) == [8.0, 8.0]
    # the QK kernel divides by exactly that scale: score × s = the raw bilinear form (layer 3)
    x = seeded_directions(3, smollm2.cfg.d_model, seed=107)
    x_hat = x / (x.pow(2).mean(-1, keepdim=True) + smollm2.cfg.eps).sqrt()
    attn = smollm2.blocks[3].attn
    raw = torch.einsum("nd,hde->hne", x_hat, attn.W_Q) @ torch.einsum("nd,hde->hne", x_hat, attn.W_K).transpose(1, 2)
    assert_close_to_scale(qk_affinity(smollm2, x, layers=[3])[0] * 8.0, raw, what="score × attention scale")
    text = qk_formula(smollm2)
    assert "s = 8," in text and "√d_head" in text and "q_norm" not in text
    gemma_text = qk_formula(gemma)
    assert "s = 16," in gemma_text and "q_norm(q(x))·k_norm(k(y))" in gemma_text and "d_head = 256" in gemma_text


def test_attention_scales_from_the_config_equal_the_blocks(smollm2, gemma):
    """A model without blocks in memory (a streamed model carries only its cfg) gets the scales from the
    config; they equal what the loaded blocks divide by."""
    from types import SimpleNamespace

    from interp.circuits import attention_scales

    for model in (smollm2, gemma):
        assert attention_scales(SimpleNamespace(cfg=model.cfg)) == attention_scales(model)
