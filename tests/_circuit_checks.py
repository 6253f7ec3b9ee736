"""Shared by the weight-circuit tests: seeded directions and a scale-relative closeness check."""

from __future__ import annotations

import torch


def seeded_directions(n: int, d_model: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    """``n`` Gaussian directions of rms ``scale`` (norm ~ scale * sqrt(d_model)), from ``manual_seed(seed)``."""
    return torch.randn(n, d_model, generator=torch.Generator().manual_seed(seed)) * scale


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4, what: str = "") -> None:
    """max |actual − expected| ≤ rel × max |expected| (one tolerance for a whole per-layer tensor)."""
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= rel * max(scale, 1e-6), f"{what}: max |diff| {err:.3g} vs scale {scale:.3g} (rel tol {rel})"


def diag_scores_by_hook(model, layers, directions: torch.Tensor) -> torch.Tensor:
    """hook_attn_scores[h, p, p] with direction p written into resid_pre at position p of each layer:
    ``[layer, head, n]``."""
    n = directions.shape[0]
    captured = {}

    def write(resid, hook):
        resid = resid.clone()
        resid[0, :n] = directions.to(resid.dtype)
        return resid

    def keep(scores, hook):
        captured[hook.layer()] = scores[0].diagonal(dim1=-2, dim2=-1).float().clone()  # [head, pos]

    hooks = [(f"blocks.{layer}.hook_resid_pre", write) for layer in layers]
    hooks += [(f"blocks.{layer}.attn.hook_attn_scores", keep) for layer in layers]
    model.run_with_hooks(torch.arange(10, 10 + n)[None], fwd_hooks=hooks, return_type=None)
    return torch.stack([captured[layer] for layer in layers])


def one_token_hooks(model, layers, directions: torch.Tensor, write_at: str, keep_at: str) -> torch.Tensor:
    """``blocks.L.{keep_at}`` of one-token sequences (batch row b, the only position) whose
    ``blocks.L.{write_at}`` is set to directions[b], stacked over ``layers``."""
    n = directions.shape[0]
    kept = {}

    def write(resid, hook):
        return directions.to(resid.dtype)[:, None, :].clone()

    def keep(x, hook):
        kept[hook.layer()] = x[:, 0].float().clone()

    hooks = [(f"blocks.{layer}.{write_at}", write) for layer in layers]
    hooks += [(f"blocks.{layer}.{keep_at}", keep) for layer in layers]
    model.run_with_hooks(torch.full((n, 1), 7), fwd_hooks=hooks, return_type=None)
    return torch.stack([kept[layer] for layer in layers])
