"""The exact null of the concentration ratio against plain Monte-Carlo loops of random QR bases.

Seeds: every generator below is ``torch.Generator().manual_seed(<literal>)``; the literal is the seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from interp.subspace.scores import monte_carlo_null, null_moments, specific_scores
from interp.subspace.targets import Target


def _matrix_gram(m: torch.Tensor) -> torch.Tensor:
    """Plain-torch M Mᵀ / ‖M‖²_F per layer (float64)."""
    m = m.double()
    return torch.einsum("ldc,lec->lde", m, m) / m.pow(2).sum((-2, -1))[:, None, None]


def _samples_gram(x: torch.Tensor) -> torch.Tensor:
    """Plain-torch (1/n) Σ x̂ x̂ᵀ per layer (float64)."""
    unit = x.double() / x.double().norm(dim=-1, keepdim=True)
    return torch.einsum("lnd,lne->lde", unit, unit) / x.shape[1]


def _loop_null(target: torch.Tensor, k: int, n: int, seed: int, ambient_projector: torch.Tensor | None = None) -> np.ndarray:
    """R for n random QR bases, one at a time (the seed notebook's way), in float64 numpy."""
    gen = torch.Generator().manual_seed(seed)
    t = target.double().numpy()
    d = t.shape[0]
    out = []
    for _ in range(n):
        q, _ = np.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64).numpy())
        dim = d
        if ambient_projector is not None:
            q, _ = np.linalg.qr(ambient_projector @ q)
            dim = int(round(np.trace(ambient_projector)))
        out.append(np.trace(q.T @ t @ q) * dim / k)
    return np.array(out)


def _check(samples: np.ndarray, mean: float, std: float, label: str, std_rtol: float = 0.1) -> None:
    n = len(samples)
    se_mean = std / math.sqrt(n)
    assert abs(samples.mean() - mean) < 4 * se_mean, (
        f"{label}: Monte-Carlo mean {samples.mean():.5f} vs exact {mean:.5f} (4 SE = {4 * se_mean:.5f})"
    )
    rel = abs(samples.std(ddof=1) / std - 1)
    assert rel < std_rtol, f"{label}: Monte-Carlo std {samples.std(ddof=1):.5f} vs exact {std:.5f} ({rel:.1%} off)"


def test_rank_one_target_matches_beta_distribution():
    """For T = x xᵀ, R·k/d = ‖Bᵀx‖² ~ Beta(k/2, (d−k)/2): the closed form must give Beta's variance."""
    d, k = 40, 5
    x = torch.randn(d, generator=torch.Generator().manual_seed(1)).double()
    x = x / x.norm()
    t = (x[:, None] * x[None])[None]
    mean, std = null_moments(Target.from_gram(t), k)
    a, b = k / 2, (d - k) / 2
    beta_var = a * b / ((a + b) ** 2 * (a + b + 1))
    assert float(mean) == 1.0
    assert math.isclose(float(std), math.sqrt(beta_var) * d / k, rel_tol=1e-5)
    _check(_loop_null(t[0], k, 4000, seed=2), 1.0, float(std), "rank-1 target")


@pytest.mark.parametrize("d,k", [(10, 3), (64, 1), (64, 16)])
def test_closed_form_matches_qr_loop_on_skewed_spectra(d, k):
    gen = torch.Generator().manual_seed(3)
    m = torch.randn(d, 6, generator=gen) * torch.tensor([8.0, 4, 2, 1, 0.5, 0.1])
    t = _matrix_gram(m[None])
    mean, std = null_moments(Target.from_matrix(m[None].double()), k)
    _check(_loop_null(t[0], k, 3000, seed=4), float(mean), float(std), f"d={d} k={k}")


def test_closed_form_matches_qr_loop_on_real_weight_and_label_targets(smollm2):
    """Targets from SmolLM2's own weights (W_out of layer 3) and activations (last-token residuals)."""
    w_out = smollm2.blocks[3].mlp.W_out.detach().T[None]  # [1, d_model, d_mlp]
    tokens = smollm2.to_tokens(["The cat sat on the mat", "Paris is the capital of France"])
    _, cache = smollm2.run_with_cache(tokens, names_filter="blocks.4.hook_resid_post", stop_at_layer=5)
    acts = cache["blocks.4.hook_resid_post"].reshape(1, -1, smollm2.cfg.d_model)
    for label, target, t in [("W_out", Target.from_matrix(w_out), _matrix_gram(w_out)),
                             ("resid", Target.from_samples(acts), _samples_gram(acts))]:
        mean, std = null_moments(target, 8)
        _check(_loop_null(t[0], 8, 400, seed=5), float(mean), float(std), label, std_rtol=0.15)


def test_batched_monte_carlo_agrees_with_loop_and_exact():
    d, k = 96, 4
    m = torch.randn(2, d, 5, generator=torch.Generator().manual_seed(6)) * torch.tensor([5.0, 3, 1, 1, 0.2])
    t = Target.from_matrix(m)
    mc_mean, mc_std, draws = monte_carlo_null(t, k, n_draws=3000, seed=7)
    exact_mean, exact_std = null_moments(t, k)
    assert draws.shape == (2, 3000)
    for layer in range(2):
        _check(draws[layer].double().numpy(), float(exact_mean[layer]), float(exact_std[layer]), f"batched layer {layer}")
        assert math.isclose(float(mc_mean[layer]), float(draws[layer].mean()), rel_tol=1e-5)
        assert math.isclose(float(mc_std[layer]), float(draws[layer].std()), rel_tol=1e-5)


def test_monte_carlo_null_is_reproducible_from_its_seed():
    t = Target.from_matrix(torch.randn(1, 32, 3, generator=torch.Generator().manual_seed(8)))
    a = monte_carlo_null(t, 2, n_draws=50, seed=11)[2]
    b = monte_carlo_null(t, 2, n_draws=50, seed=11)[2]
    c = monte_carlo_null(t, 2, n_draws=50, seed=12)[2]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_specificity_null_uses_the_complement_dimension():
    """Random bases projected off a clean subspace C (rank c) behave as Haar bases of the d − c complement."""
    d, c, k = 48, 6, 4
    gen = torch.Generator().manual_seed(9)
    clean, _ = torch.linalg.qr(torch.randn(d, c, generator=gen, dtype=torch.float64))
    samples = torch.randn(1, 30, d, generator=gen, dtype=torch.float64) * torch.linspace(3, 0.1, d, dtype=torch.float64)
    p = torch.eye(d, dtype=torch.float64) - clean @ clean.T
    resid_target = _samples_gram(samples @ p)
    _, std = null_moments(Target.from_samples(samples @ p), k, ambient=d - c)
    draws = _loop_null(resid_target[0], k, 3000, seed=10, ambient_projector=p.numpy())
    _check(draws, 1.0, float(std), "specificity null")
    # and specific_scores' z for one random basis uses that same std
    b, _ = torch.linalg.qr(torch.randn(1, d, k, generator=gen, dtype=torch.float64))
    r, z, rank = specific_scores(b.float(), samples.float(), clean[None].float(), torch.tensor([c]))
    bp, _ = np.linalg.qr(p.numpy() @ b[0].numpy())
    r_ref = np.trace(bp.T @ resid_target[0].numpy() @ bp) * (d - c) / k
    assert int(rank) == k
    assert math.isclose(float(r), r_ref, rel_tol=1e-4)
    assert math.isclose(float(z), (r_ref - 1) / float(std), rel_tol=1e-3, abs_tol=1e-4)


def test_monte_carlo_null_rejects_bad_arguments():
    t = Target.from_matrix(torch.randn(1, 16, 2, generator=torch.Generator().manual_seed(13)))
    with pytest.raises(ValueError, match="n_draws"):
        monte_carlo_null(t, 2, n_draws=1)
    with pytest.raises(ValueError, match="k: rank"):
        monte_carlo_null(t, 0)
    with pytest.raises(ValueError, match="k: rank"):
        monte_carlo_null(t, 17)
