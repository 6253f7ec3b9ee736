"""Residual views of TL weight tensors and the ΔW diagnostics table.

Synthetic deltas come from ``random_lowrank_delta(seed=...)`` (seeded Gaussian factors).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from interp.subspace.weight_diff import (
    as_delta,
    delta_diagnostics,
    random_lowrank_delta,
    residual_view,
    stack_kind,
    tensor_kind,
    write_layers,
)


def test_residual_views_are_the_maps_the_forward_pass_applies(smollm2):
    """attn_out = view(W_O) · vec(z) + b_O and mlp_out = view(W_out) · post + b_out at every position."""
    layer = 2
    tokens = smollm2.to_tokens("The quick brown fox jumps over the lazy dog")
    names = [f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_attn_out",
             f"blocks.{layer}.mlp.hook_post", f"blocks.{layer}.hook_mlp_out"]
    _, cache = smollm2.run_with_cache(tokens, names_filter=lambda n: n in names, stop_at_layer=layer + 1)
    block = smollm2.blocks[layer]
    z = cache[names[0]][0].reshape(tokens.shape[1], -1)  # [pos, head*d_head], head-major
    attn_out = z @ residual_view(f"blocks.{layer}.attn.W_O", block.attn.W_O).T + block.attn.b_O
    torch.testing.assert_close(attn_out, cache[names[1]][0], rtol=1e-4, atol=1e-4)
    mlp_out = cache[names[2]][0] @ residual_view(f"blocks.{layer}.mlp.W_out", block.mlp.W_out).T + block.mlp.b_out
    torch.testing.assert_close(mlp_out, cache[names[3]][0], rtol=1e-4, atol=1e-4)


def test_read_views_give_the_queries_and_keys(smollm2):
    """q = ln1(x) · view(W_Q) (+ b_Q) and, for GQA, k per KV head = ln1(x) · view(_W_K) with no repeats."""
    layer = 1
    tokens = smollm2.to_tokens("Paris is the capital of France")
    names = [f"blocks.{layer}.ln1.hook_normalized", f"blocks.{layer}.attn.hook_q", f"blocks.{layer}.attn.hook_k"]
    _, cache = smollm2.run_with_cache(tokens, names_filter=lambda n: n in names, stop_at_layer=layer + 1)
    attn = smollm2.blocks[layer].attn
    x = cache[names[0]][0]
    q = x @ residual_view(f"blocks.{layer}.attn.W_Q", attn.W_Q) + attn.b_Q.reshape(-1)
    torch.testing.assert_close(q, cache[names[1]][0].reshape(tokens.shape[1], -1), rtol=1e-4, atol=1e-4)
    k = x @ residual_view(f"blocks.{layer}.attn._W_K", attn._W_K) + attn._b_K.reshape(-1)
    hook_k = cache[names[2]][0]  # [pos, n_kv_heads, d_head]
    assert hook_k.shape[1] == smollm2.cfg.n_key_value_heads
    torch.testing.assert_close(k, hook_k.reshape(tokens.shape[1], -1), rtol=1e-4, atol=1e-4)


def test_tensor_kinds_and_sides():
    assert tensor_kind("blocks.9.attn._W_K") == (9, "attn.W_K", "read")
    assert tensor_kind("blocks.3.attn.W_O") == (3, "attn.W_O", "write")
    assert tensor_kind("blocks.3.mlp.W_out") == (3, "mlp.W_out", "write")
    assert tensor_kind("blocks.3.mlp.W_gate") == (3, "mlp.W_gate", "read")
    assert tensor_kind("blocks.3.mlp.b_in") == (None, "blocks.3.mlp.b_in", "other")
    assert tensor_kind("unembed.W_U") == (None, "unembed.W_U", "read")
    with pytest.raises(ValueError, match="neither a residual read nor"):
        residual_view("blocks.3.ln1.w", torch.zeros(4))


def test_diagnostics_match_numpy_svd(smollm2):
    delta = random_lowrank_delta(smollm2, [7], rank=3, scale=0.1, seed=2)
    delta.update(random_lowrank_delta(smollm2, [8], rank=3, scale=0.1, seed=2, kinds=("attn.W_O",)))
    table = delta_diagnostics(delta, top_k=4)
    assert len(table) == len(delta) and table["name"].is_unique
    assert set(table["side"]) == {"read", "write"}
    assert write_layers(delta) == [7, 8]
    for _, row in table.iterrows():
        t = delta[row["name"]].double().numpy()
        assert math.isclose(row["frobenius"], np.linalg.norm(t), rel_tol=1e-5)
        if row["kind"] == "attn.W_O":
            view = np.concatenate(list(t), axis=0).T  # heads stacked: [d_model, heads*d_head]
        elif row["kind"] == "mlp.W_out":
            view = t.T
        elif row["kind"].startswith("attn."):
            view = np.concatenate(list(t), axis=1)
        else:
            view = t
        s = np.linalg.svd(view, compute_uv=False)
        np.testing.assert_allclose([row[f"sv_{i}"] for i in (1, 2, 3)], s[:3], rtol=1e-4)
        assert row["sv_4"] < 1e-4 * s[0], "a rank-3 delta has a 4th singular value of ~0"
        p = s / s.sum()
        p = p[p > 0]
        assert math.isclose(row["effective_rank"], math.exp(-(p * np.log(p)).sum()), rel_tol=1e-3)
        assert math.isclose(row["participation_ratio"], (s**2).sum() ** 2 / (s**4).sum(), rel_tol=1e-3)
        assert 1.0 <= row["effective_rank"] <= 3.0 + 1e-3


def test_effective_rank_of_equal_singular_values_is_the_rank():
    gen = torch.Generator().manual_seed(3)
    u, _ = torch.linalg.qr(torch.randn(64, 5, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(32, 5, generator=gen))
    row = delta_diagnostics({"blocks.0.mlp.W_in": (u @ v.T)}).iloc[0]
    assert math.isclose(row["effective_rank"], 5.0, rel_tol=1e-4)
    assert math.isclose(row["participation_ratio"], 5.0, rel_tol=1e-4)


def test_random_lowrank_delta_has_the_requested_rank_and_scale(smollm2):
    delta = random_lowrank_delta(smollm2, [3], rank=2, scale=0.05, seed=4)
    params = dict(smollm2.named_parameters())
    for name, value in delta.items():
        view = residual_view(name, value)
        assert torch.linalg.matrix_rank(view.double(), rtol=1e-5) == 2
        assert math.isclose(float(value.norm() / params[name].norm()), 0.05, rel_tol=1e-4)
    assert "blocks.3.attn._W_K" in delta and delta["blocks.3.attn._W_K"].shape == (3, 576, 64)


def test_bad_deltas_are_rejected():
    with pytest.raises(TypeError, match="ModelPair or a mapping"):
        as_delta(42)
    with pytest.raises(ValueError, match="empty"):
        as_delta({})
    with pytest.raises(ValueError, match=r"delta\['blocks.0.mlp.W_in'\]: contains NaN"):
        as_delta({"blocks.0.mlp.W_in": torch.tensor([[float("nan")]])})
    with pytest.raises(TypeError, match="expected a tensor"):
        as_delta({"blocks.0.mlp.W_in": [1.0]})
    with pytest.raises(ValueError, match=r"layers: \[5\] are outside the delta's range for mlp.W_out \(it changes mlp.W_out at layers 1-2\)"):
        stack_kind({f"blocks.{i}.mlp.W_out": torch.zeros(4, 3) for i in (1, 2)}, "mlp.W_out", [1, 5])
    with pytest.raises(ValueError, match="top_k"):
        delta_diagnostics({"blocks.0.mlp.W_in": torch.ones(3, 3)}, top_k=0)
