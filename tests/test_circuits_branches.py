"""Code paths no offline real model has: LayerNorm / LayerNormPre, non-grouped attention, nonzero
biases everywhere, a plain (non-gated) MLP. The real-model tests (SmolLM2, Gemma 3) are the main
evidence; this file checks the remaining branches against TransformerLens' forward pass on a tiny
randomly initialised HookedTransformer (seeded: torch.manual_seed(701) for init, Generator 702/703).
"""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from interp.circuits import mlp_pass, qk_affinity, vo_outputs


def _tiny(normalization_type: str) -> HookedTransformer:
    torch.manual_seed(701)
    cfg = HookedTransformerConfig(
        n_layers=3, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=16, d_vocab=50, act_fn="gelu_new",
        normalization_type=normalization_type, positional_embedding_type="standard", seed=701,
    )
    model = HookedTransformer(cfg)
    gen = torch.Generator().manual_seed(702)
    for name, param in model.named_parameters():
        if name.split(".")[-1].startswith("b_") or name.endswith((".w", ".b")):
            param.data.add_(torch.randn(param.shape, generator=gen) * 0.3)
    return model.eval()


@pytest.fixture(scope="module", params=["LN", "LNPre"])
def tiny(request):
    return _tiny(request.param)


def _assert_close(actual, expected, rel=1e-4, what=""):
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= rel * max(scale, 1e-6), f"{what}: max |diff| {err:.3g} vs scale {scale:.3g}"


def test_branches_match_transformer_lens_forward(tiny):
    dirs = torch.randn(5, 32, generator=torch.Generator().manual_seed(703))
    layers = [0, 1, 2]
    n = dirs.shape[0]
    scores, results, attn_outs, mlp_outs = {}, {}, {}, {}

    def write(resid, hook):
        resid = resid.clone()
        resid[0, :n] = dirs
        return resid

    hooks = [(f"blocks.{layer}.hook_resid_pre", write) for layer in layers]
    hooks += [(f"blocks.{layer}.attn.hook_attn_scores",
               lambda x, hook: scores.__setitem__(hook.layer(), x[0].diagonal(dim1=-2, dim2=-1))) for layer in layers]
    tiny.run_with_hooks(torch.arange(n)[None], fwd_hooks=hooks, return_type=None)
    _assert_close(qk_affinity(tiny, dirs, layers=layers).diagonal(dim1=-2, dim2=-1),
                  torch.stack([scores[layer] for layer in layers]), what="QK diagonal")

    def write_one_token(resid, hook):
        return dirs[:, None, :].clone()

    hooks = [(f"blocks.{layer}.hook_resid_pre", write_one_token) for layer in layers]
    hooks += [(f"blocks.{layer}.attn.hook_result", lambda x, hook: results.__setitem__(hook.layer(), x[:, 0].transpose(0, 1)))
              for layer in layers]
    hooks += [(f"blocks.{layer}.hook_attn_out", lambda x, hook: attn_outs.__setitem__(hook.layer(), x[:, 0]))
              for layer in layers]
    previous = tiny.cfg.use_attn_result
    tiny.set_use_attn_result(True)
    try:
        tiny.run_with_hooks(torch.zeros(n, 1, dtype=torch.long), fwd_hooks=hooks, return_type=None)
    finally:
        tiny.set_use_attn_result(previous)
    heads, total = vo_outputs(tiny, dirs, layers=layers)
    _assert_close(heads, torch.stack([results[layer] for layer in layers]), what="VO per head")
    _assert_close(total, torch.stack([attn_outs[layer] for layer in layers]), what="VO layer output")

    hooks = [(f"blocks.{layer}.hook_resid_mid", write_one_token) for layer in layers]
    hooks += [(f"blocks.{layer}.hook_mlp_out", lambda x, hook: mlp_outs.__setitem__(hook.layer(), x[:, 0]))
              for layer in layers]
    tiny.run_with_hooks(torch.zeros(n, 1, dtype=torch.long), fwd_hooks=hooks, return_type=None)
    _assert_close(mlp_pass(tiny, dirs, layers=layers), torch.stack([mlp_outs[layer] for layer in layers]), what="MLP")
