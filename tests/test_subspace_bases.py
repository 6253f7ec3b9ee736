"""The candidate-basis library: GQA pairing, weight bases against independent numpy builds and forward
passes, norm handling (processed vs raw weights), activation captures, set operations, bad input.

Random matrices use ``torch.Generator().manual_seed(<literal>)``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from interp.subspace.activation_library import activation_bases
from interp.subspace.basis import Basis, complement, definitions_table, intersection, project_away, union
from interp.subspace.captures import probe_activations
from interp.subspace.probes import CRITICAL_SYSTEM, SYCOPHANTIC_SYSTEM, chat_texts, probe_prompts
from interp.subspace.weight_library import weight_bases

K = 8


def _top_eigvecs(g: np.ndarray, k: int) -> np.ndarray:
    vals, vecs = np.linalg.eigh(g)
    return vecs[:, ::-1][:, :k]


def _proj_dist(a: np.ndarray, b: np.ndarray) -> float:
    """‖P_A − P_B‖_F / √(2k): 0 for equal spans, 1 for orthogonal ones."""
    pa, pb = a @ a.T, b @ b.T
    return float(np.linalg.norm(pa - pb) / np.sqrt(2 * a.shape[1]))


def _per_head(model: HookedTransformer, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Raw per-KV-head W_K, W_V, per-query-head W_Q, W_O and the KV head each query head uses."""
    attn = model.blocks[layer].attn
    n_heads = model.cfg.n_heads
    n_kv = model.cfg.n_key_value_heads or n_heads
    w_k = (attn._W_K if hasattr(attn, "_W_K") else attn.W_K).detach().double().numpy()
    w_v = (attn._W_V if hasattr(attn, "_W_V") else attn.W_V).detach().double().numpy()
    kv_of = [h // (n_heads // n_kv) for h in range(n_heads)]
    return w_k, w_v, kv_of, [attn.W_Q.detach().double().numpy(), attn.W_O.detach().double().numpy()]


@pytest.mark.parametrize("model_name", ["smollm2", "gemma"])
def test_ov_and_qk_bases_pair_each_query_head_with_its_kv_head(model_name, request):
    model = request.getfixturevalue(model_name)
    layer = 1
    w_k, w_v, kv_of, (w_q, w_o) = _per_head(model, layer)
    d = model.cfg.d_model
    ov_gram, qk_gram = np.zeros((d, d)), np.zeros((d, d))
    for h, kv in enumerate(kv_of):  # plain loop over heads, HF pairing: kv = h // (n_heads / n_kv)
        ov = w_v[kv] @ w_o[h]  # [d, d]: x ↦ x W_V W_O
        ov_gram += ov.T @ ov
        qk = w_q[h] @ w_k[kv].T
        qk_gram += qk @ qk.T
    post = getattr(model.blocks[layer], "ln1_post", None)
    if post is not None:  # Gemma: the attention output is RMS-normalised with weight w before the residual
        w = post.w.detach().double().numpy()
        ov_gram = w[:, None] * ov_gram * w[None, :]
    bases = {b.name: b for b in weight_bases(model, [layer], K, include=["attn_ov_write", "qk_circuit"])}
    assert _proj_dist(bases["attn_ov_write"].at(layer).double().numpy(), _top_eigvecs(ov_gram, K)) < 1e-3
    assert _proj_dist(bases["qk_circuit"].at(layer).double().numpy(), _top_eigvecs(qk_gram, K)) < 1e-3


def test_seed_row_repeat_mispairs_gqa_heads(smollm2):
    """Seed 003's ``expand_rows_to`` repeats *rows* of the fused [n_kv·d_head, d] V (``repeat_interleave``
    on dim 0); correct pairing repeats whole KV-head blocks. The seed's map keeps the right KV head
    for every query head but gives it only ≈ d_head / g distinct dimensions of it, each repeated g
    times and out of order; the two OV maps differ, so the repeat is a real bug."""
    layer = 1
    w_k, w_v, kv_of, (w_q, w_o) = _per_head(smollm2, layer)
    n_kv, d, d_head = w_v.shape
    group = len(kv_of) // n_kv
    v_fused = np.concatenate([w_v[j].T for j in range(n_kv)], axis=0)  # HF v_proj.weight [n_kv·d_head, d]
    o_fused = np.concatenate(list(w_o), axis=0).T  # HF o_proj.weight [d, n_heads·d_head]
    seed_v = np.repeat(v_fused, group, axis=0)
    for h, kv in enumerate(kv_of):
        rows = seed_v[h * d_head:(h + 1) * d_head]
        source = [int(np.nonzero((v_fused == row).all(axis=1))[0][0]) for row in rows]
        assert {r // d_head for r in source} == {kv}  # the right KV head ...
        assert len(set(source)) <= -(-d_head // group) + 1  # ... but a 1/g slice of its dimensions
    seed_ov = o_fused @ seed_v
    right_ov = o_fused @ np.concatenate([w_v[kv].T for kv in kv_of], axis=0)
    assert np.linalg.norm(seed_ov - right_ov) > 0.5 * np.linalg.norm(right_ov)
    summed = sum(w_v[kv] @ w_o[h] for h, kv in enumerate(kv_of))  # TL: x W_V^h W_O^h summed over heads
    np.testing.assert_allclose(right_ov, summed.T, rtol=1e-6, atol=1e-8)


def test_write_bases_are_top_singular_vectors_of_the_stacked_writes(smollm2):
    layer = 6
    block = smollm2.blocks[layer]
    w_o = np.concatenate(list(block.attn.W_O.detach().double().numpy()), axis=0).T  # [d, heads·d_head]
    w_out = block.mlp.W_out.detach().double().numpy().T
    bases = {b.name: b for b in weight_bases(smollm2, [layer], K, include=["write", "attn_write", "mlp_write"])}
    for name, m in [("attn_write", w_o), ("mlp_write", w_out), ("write", np.concatenate([w_o, w_out], axis=1))]:
        u = np.linalg.svd(m, full_matrices=False)[0][:, :K]
        assert _proj_dist(bases[name].at(layer).double().numpy(), u) < 1e-3, name


def test_attention_sink_basis_spans_what_each_head_writes_from_bos(smollm2):
    """With a BOS-only prompt, every head at layer 0 attends to BOS alone, so its hook_result is
    ln1(e_BOS) W_V^h W_O^h: all of them must lie in the attention_sink span (k = n_heads)."""
    n_heads = smollm2.cfg.n_heads
    sink = weight_bases(smollm2, [0], n_heads, include=["attention_sink"])[0].at(0)
    previous = smollm2.cfg.use_attn_result
    smollm2.set_use_attn_result(True)
    try:
        tokens = torch.tensor([[smollm2.tokenizer.bos_token_id]])
        _, cache = smollm2.run_with_cache(tokens, names_filter="blocks.0.attn.hook_result", stop_at_layer=1)
    finally:
        smollm2.set_use_attn_result(previous)
    results = cache["blocks.0.attn.hook_result"][0, 0]  # [head, d_model]
    inside = results @ sink @ sink.T
    torch.testing.assert_close(inside, results, rtol=1e-3, atol=1e-4)


def test_weight_bases_do_not_depend_on_norm_folding(smollm2, smollm2_raw):
    """Processed weights fold the RMSNorm weights in; raw weights apply them in ln1/ln2. Bases apply
    the norm weight on the residual side, so both give the same subspaces."""
    names = ["write", "attn_ov_write", "qk_circuit", "mlp_up_read", "input_super", "attention_sink"]
    a = {b.name: b for b in weight_bases(smollm2, [5], K, include=names)}
    b = {b.name: b for b in weight_bases(smollm2_raw, [5], K, include=names)}
    for name in names:
        dist = _proj_dist(a[name].at(5).double().numpy(), b[name].at(5).double().numpy())
        assert dist < 1e-2, f"{name}: processed vs raw subspaces differ (distance {dist:.3g})"


@pytest.fixture(scope="module")
def acts(smollm2):
    return probe_activations(
        smollm2, probe_prompts()[:4], [3, 4], positive_system=SYCOPHANTIC_SYSTEM, negative_system=CRITICAL_SYSTEM,
        chat_template=True,
    )


def test_probe_activations_match_unpadded_single_prompt_runs(smollm2, acts):
    prompts = probe_prompts()[:4]
    for i in (0, 3):
        for system, captured in [(SYCOPHANTIC_SYSTEM, acts.positive), (None, acts.clean)]:
            text = chat_texts(smollm2.tokenizer, [prompts[i]], system)[0]
            _, cache = smollm2.run_with_cache(smollm2.to_tokens(text, prepend_bos=False),
                                              names_filter=lambda n: n.endswith("hook_resid_post"), stop_at_layer=5)
            for j, layer in enumerate((3, 4)):
                torch.testing.assert_close(captured[j, i], cache[f"blocks.{layer}.hook_resid_post"][0, -1],
                                           rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(acts.positive_tokens[:, :, -1], acts.positive)
    attn_total = acts.positive_attn.sum(-1)
    assert ((attn_total > 0) & (attn_total <= 1 + 1e-5)).all()


def test_activation_bases_are_built_from_the_captures(acts, smollm2):
    built = {b.name: b for b in activation_bases(acts, 3, model=smollm2)}
    assert set(built) == {
        "layer_clean_resid_pca", "global_clean_resid_pca", "persona_contrast", "attn_min_taskdiff",
        "attn_max_taskdiff", "attn_diff_taskdiff", "chars_clusters", "rotation_contrast", "churn",
        "gate_active_written", "gate_kernel",
        # built from the same captures (the bases that need ExtraCaptures are skipped without them)
        "global_persona_resid_pca", "attn_min_x_diffnorm_taskdiff",
    }
    for j, layer in enumerate(acts.layers):
        diff = (acts.positive[j] - acts.negative[j]).double().numpy()
        u = np.linalg.svd(diff.T, full_matrices=False)[0][:, :3]  # uncentred PCA of the contrast
        assert _proj_dist(built["persona_contrast"].at(layer).double().numpy(), u) < 1e-3
        clean = acts.clean[j].double().numpy()
        u = np.linalg.svd((clean - clean.mean(0)).T, full_matrices=False)[0][:, :3]
        assert _proj_dist(built["layer_clean_resid_pca"].at(layer).double().numpy(), u) < 1e-3
    # k + 1 centroids give a rank-k cluster basis (seed 003's k centroids collapsed to k − 1)
    assert built["chars_clusters"].ranks == (3, 3)


def test_set_operations():
    gen = torch.Generator().manual_seed(0)
    layers = [0, 1]
    qa, _ = torch.linalg.qr(torch.randn(2, 20, 3, generator=gen))
    qb, _ = torch.linalg.qr(torch.randn(2, 20, 2, generator=gen))
    a = Basis.from_vectors("a", qa, layers=layers)
    b = Basis.from_vectors("b", qb, layers=layers)
    both = union(a, b)
    assert both.ranks == (5, 5)
    for layer in layers:
        p = both.at(layer) @ both.at(layer).T
        torch.testing.assert_close(p @ a.at(layer), a.at(layer), atol=1e-5, rtol=0)
        torch.testing.assert_close(p @ b.at(layer), b.at(layer), atol=1e-5, rtol=0)
        away = project_away(a, b).at(layer)
        assert away.shape[1] == 3 and float((b.at(layer).T @ away).abs().max()) < 1e-5
        comp = complement(a).at(layer)
        assert comp.shape[1] == 17
        torch.testing.assert_close(comp @ comp.T + a.at(layer) @ a.at(layer).T, torch.eye(20), atol=1e-5, rtol=0)
    same = intersection(a, a)
    assert _proj_dist(same.at(0).double().numpy(), a.at(0).double().numpy()) < 1e-5
    # a shared direction is recovered; the strict version keeps only it
    shared = torch.cat([qa[..., :1], qb], dim=-1)
    c = Basis.from_vectors("c", shared, layers=layers, orthonormalize=True)
    strict = intersection(a, c, min_cos=0.999)
    assert strict.ranks == (1, 1)
    torch.testing.assert_close((strict.at(0).T @ qa[0, :, 0]).abs(), torch.ones(1), atol=1e-4, rtol=0)
    e = torch.eye(20)
    with pytest.raises(ValueError, match="rank 0"):
        intersection(Basis.from_vectors("x", e[:, :2], layers=[0]), Basis.from_vectors("y", e[:, 2:4], layers=[0]),
                     min_cos=0.5)
    with pytest.raises(ValueError, match="different layers"):
        union(a, Basis.from_vectors("z", qa[0], layers=[5, 6]))


def test_definitions_table_lists_every_basis(smollm2):
    bases = weight_bases(smollm2, [2], 4, include=["write", "mlp_up_read", "qk_circuit"])
    table = definitions_table(bases)
    assert list(table["name"]) == ["write", "mlp_up_read", "qk_circuit"]
    assert list(table["axis_kind"]) == ["write", "read", "mixed"]
    assert table["definition"].str.len().min() > 20


def test_bad_library_requests_are_rejected(smollm2):
    with pytest.raises(ValueError, match="include: unknown weight bases"):
        weight_bases(smollm2, [0], 4, include=["write", "telepathy"])
    with pytest.raises(ValueError, match="k: rank must be at least 1"):
        weight_bases(smollm2, [0], 0)
    with pytest.raises(ValueError, match="exceeds d_model"):
        weight_bases(smollm2, [0], 10_000)


def test_nan_weights_are_rejected():
    """Validation only (no numerics): a tiny random-init model with a NaN in W_O."""
    cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_ctx=8, d_head=4, n_heads=2, d_vocab=11, act_fn="gelu")
    model = HookedTransformer(cfg)
    with torch.no_grad():
        model.blocks[0].attn.W_O[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="model: weight attn.W_O contains NaN"):
        weight_bases(model, [0], 2, include=["attn_write"])


def test_probe_activations_feed_raw_clean_text_by_default_and_the_template_on_request(smollm2):
    """Seed 003 fed the clean prompts as raw text; ``chat_template=True`` feeds the chat template.
    The token ids the model receives (read at hook_embed's input) are compared with tokenize()
    of the raw prompts and of the templated prompts."""
    from interp.prompts import tokenize

    prompts = probe_prompts()[:2]
    seen: list[torch.Tensor] = []
    handle = smollm2.embed.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().cpu()))
    try:
        runs = {}
        for flag in (False, True):
            seen.clear()
            kwargs = {} if not flag else {"chat_template": True}
            probe_activations(smollm2, prompts, [1], positive_system=SYCOPHANTIC_SYSTEM,
                              negative_system=CRITICAL_SYSTEM, **kwargs)
            runs[flag] = seen[0]  # the clean pass comes first
    finally:
        handle.remove()
    for flag, texts in ((False, list(prompts)), (True, chat_texts(smollm2.tokenizer, prompts))):
        expected = tokenize(smollm2, texts, padding_side="right")
        got = runs[flag]
        assert got.shape == expected.tokens.shape, flag
        mask = expected.mask.cpu()
        assert torch.equal(got[mask], expected.tokens.cpu()[mask]), flag
    # the raw texts really differ from the templated ones (SmolLM2 has a chat template)
    assert runs[False].shape[1] < runs[True].shape[1]
    # and the raw clean capture is the last-token resid_post of the raw prompt run alone
    acts = probe_activations(smollm2, prompts, [1], positive_system=SYCOPHANTIC_SYSTEM, negative_system=CRITICAL_SYSTEM)
    _, cache = smollm2.run_with_cache(smollm2.to_tokens(prompts[1]), names_filter="blocks.1.hook_resid_post",
                                      stop_at_layer=2)
    torch.testing.assert_close(acts.clean[0, 1], cache["blocks.1.hook_resid_post"][0, -1], rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="chat_template: expected a bool"):
        probe_activations(smollm2, prompts, [1], positive_system="a", negative_system="b", chat_template="yes")


def test_logits_null_is_the_bottom_of_the_unembedding_spectrum(smollm2):
    """logits_null against a float64 numpy eigendecomposition of W_U W_Uᵀ (the final norm's weight on
    the residual side): its bottom eigenvalues lie ~1e-4 · λ_max, closer together than a float32
    Gram or decomposition resolves, so both are float64."""
    w_u = smollm2.W_U.detach().double().numpy()
    norm = getattr(smollm2.ln_final, "w", None)
    if norm is not None:
        w_u = w_u * norm.detach().double().numpy()[:, None]
    vals, vecs = np.linalg.eigh(w_u @ w_u.T)
    assert vals[K] - vals[K - 1] < 1e-3 * vals[-1]  # the premise: a gap of 1e-4 · λ_max
    basis = weight_bases(smollm2, [0], K, include=["logits_null"])[0].at(0).double().numpy()
    assert _proj_dist(basis, vecs[:, :K]) < 1e-6  # float32 Gram and decomposition: 1.7e-5
