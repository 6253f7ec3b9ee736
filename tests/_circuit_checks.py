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
