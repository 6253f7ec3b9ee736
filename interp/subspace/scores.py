"""Concentration scores of a basis on what tuning changed, their exact null, ceilings and specificity.

Every score here is one quadratic form. A *target* is a per-layer PSD matrix T with tr T = 1; the
fraction of the target's energy a rank-k orthonormal basis B captures is ``e(B) = tr(BᵀTB)`` and its
concentration ratio is ``R = e(B) / (k/d)`` (R = 1: no better than a random subspace; R ≤ d/k):

* activations: T = (1/n) Σᵢ δ̂ᵢδ̂ᵢᵀ with δ̂ = δ/‖δ‖, so e(B) = mean_i ‖Bᵀδᵢ‖²/‖δᵢ‖²  (R_act)
* a weight delta M (``[d_model, cols]`` residual view): T = M Mᵀ/‖M‖²_F, so e(B) = ‖BᵀM‖²_F/‖M‖²_F  (R_w)
* Frobenius-balanced combination of write tensors M₁..M_m: T = (1/m) Σ_t M_t M_tᵀ/‖M_t‖²_F, i.e. the
  score of the concatenation [M₁/‖M₁‖ | … | M_m/‖M_m‖]  (R_w_combined)

Null (exact, :func:`null_moments`): for B Haar-random of rank k in R^d, E[R] = 1 and
``Var R = 2d(d−k) / (k(d−1)(d+2)) · (‖T‖²_F − 1/d)``. See ``docs/analyses/subspace.md`` for the
derivation; :func:`monte_carlo_null` is the batched sampling check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import einops
import torch
from jaxtyping import Float

from interp.subspace import _linalg as la
from interp.subspace.weight_diff import WRITE_KINDS, stack_kind, tensor_kind

Target = Float[torch.Tensor, "layer d d"]


def activation_target(samples: Float[torch.Tensor, "layer n d"], *, name: str = "samples") -> Target:
    """T = (1/n) Σᵢ δ̂ᵢδ̂ᵢᵀ per layer, from activation deltas δ (zero deltas are an error)."""
    if samples.ndim != 3:
        raise ValueError(f"{name}: expected [layer, n, d_model], got {tuple(samples.shape)}")
    if samples.shape[1] == 0:
        raise ValueError(f"{name}: has no samples")
    if not bool(torch.isfinite(samples).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    norms = samples.norm(dim=-1, keepdim=True)
    if bool((norms == 0).any()):
        layer_idx = torch.nonzero((norms[..., 0] == 0).any(-1)).flatten().tolist()
        raise ValueError(
            f"{name}: some samples are zero vectors at layer slices {layer_idx} (the label is unchanged "
            "there, e.g. a layer before the first tuned one), so the activation score is undefined"
        )
    unit = samples / norms
    return einops.einsum(unit, unit, "layer n d, layer n e -> layer d e") / samples.shape[1]


def matrix_target(m: Float[torch.Tensor, "layer d cols"], *, name: str = "delta") -> Target:
    """T = M Mᵀ / ‖M‖²_F per layer, from the residual view of a weight delta."""
    g = la.gram(m.float())
    tr = torch.diagonal(g, dim1=-2, dim2=-1).sum(-1)
    if bool((tr == 0).any()):
        raise ValueError(f"{name}: is zero at layer slices {torch.nonzero(tr == 0).flatten().tolist()}")
    return g / tr[:, None, None]


def weight_targets(delta: Mapping[str, torch.Tensor], layers: Sequence[int]) -> dict[str, Target]:
    """Targets of the residual-write deltas at ``layers``: one per write kind present in ``delta``
    (``attn.W_O``, ``mlp.W_out``) plus their Frobenius-balanced ``combined``.

    A layer where a present kind is missing is an error (ValueError naming the layers and the
    delta's range); a kind absent from the whole delta (e.g. an adapter without ``o_proj``) is
    left out.
    """
    kinds = {tensor_kind(name)[1] for name in delta}
    present = [kind for kind in WRITE_KINDS if kind in kinds]
    if not present:
        raise ValueError("delta: changes no residual-write tensor (attn.W_O or mlp.W_out), so R_w is undefined")
    out = {}
    for kind in present:
        _, m = stack_kind(delta, kind, list(layers))
        out[kind] = matrix_target(m, name=f"delta[{kind}]")
    out["combined"] = sum(out[kind] for kind in present) / len(present)
    return out


def energy(vectors: Float[torch.Tensor, "layer d k"], target: Target) -> Float[torch.Tensor, " layer"]:
    """e(B) = tr(BᵀTB) per layer (zero-padded columns contribute nothing)."""
    return einops.einsum(vectors, target, vectors, "layer d k, layer d e, layer e k -> layer")


def concentration(
    vectors: Float[torch.Tensor, "layer d k"], ranks: torch.Tensor, target: Target
) -> Float[torch.Tensor, " layer"]:
    """R = tr(BᵀTB) / (k/d): 1 for a random subspace on average, d/k at most."""
    d = vectors.shape[-2]
    return energy(vectors, target) * d / ranks.to(vectors.dtype)


def null_moments(
    target: Target, ranks: torch.Tensor | int, *, ambient: torch.Tensor | int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean and standard deviation of R under Haar-random rank-k bases, per layer.

    ``E[R] = 1``; ``Var R = 2d(d−k)/(k(d−1)(d+2)) · (‖T‖²_F − (tr T)²/d)``, with d the ambient
    dimension (``ambient``, default d_model; smaller when the target lives in a subspace).
    """
    d_model = target.shape[-1]
    d = torch.as_tensor(d_model if ambient is None else ambient, dtype=torch.float64)
    k = torch.as_tensor(ranks, dtype=torch.float64)
    t = target.double()
    frob2 = t.pow(2).sum((-2, -1))
    tr = torch.diagonal(t, dim1=-2, dim2=-1).sum(-1)
    spread = (frob2 - tr.pow(2) / d).clamp_min(0)
    var = 2 * d * (d - k) / (k * (d - 1) * (d + 2)) * spread / tr.pow(2)
    return torch.ones_like(var).float(), var.sqrt().float()


def monte_carlo_null(
    target: Target, k: int, *, n_draws: int = 120, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, std (unbiased) and the draws ``[layer, n_draws]`` of R over ``n_draws`` Haar-random rank-k
    bases, all layers at once. Bases: QR of Gaussians from ``torch.Generator().manual_seed(seed)``;
    the same draws serve every layer (reproducible across runs and processes)."""
    from interp.subspace.bases import haar_bases

    if n_draws < 2:
        raise ValueError(f"n_draws: need at least 2 draws for a standard deviation, got {n_draws}")
    d = target.shape[-1]
    if not 1 <= k <= d:
        raise ValueError(f"k: rank must be in [1, {d}], got {k}")
    gen = torch.Generator().manual_seed(seed)
    b = haar_bases(n_draws, d, k, gen)
    # one layer at a time: T·B for all draws is [draw, d, k] per layer, which stays small for any k
    r = torch.stack([einops.einsum(b, t @ b, "draw d k, draw d k -> draw") for t in target.float()]) * d / k
    return r.mean(-1), r.std(-1, unbiased=True), r


def z_score(r: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(R − mean)/std, NaN where std is 0."""
    return torch.where(std > 0, (r - mean) / std.clamp_min(1e-30), torch.full_like(r, float("nan")))


def ceiling_curve(fit_target: Target, eval_target: Target | None = None, max_rank: int = 8) -> Float[torch.Tensor, "layer rank"]:
    """R at every rank r = 1..max_rank of the top-r eigenvectors of ``fit_target``, scored on
    ``eval_target`` (default: the same target). For the same target this is the exact maximum of R
    over rank-r bases (Ky Fan): Σ_{i≤r} λᵢ / (r/d)."""
    d = fit_target.shape[-1]
    if not 1 <= max_rank <= d:
        raise ValueError(f"max_rank: expected 1..{d}, got {max_rank}")
    evals, evecs = torch.linalg.eigh(fit_target.float())
    evals, evecs = evals.flip(-1)[..., :max_rank], evecs.flip(-1)[..., :max_rank]
    if eval_target is None:
        captured = evals
    else:
        captured = einops.einsum(evecs, eval_target.float(), evecs, "layer d r, layer d e, layer e r -> layer r")
    r = torch.arange(1, max_rank + 1, dtype=captured.dtype)
    return captured.cumsum(-1) * d / r


def specific_scores(
    vectors: Float[torch.Tensor, "layer d k"],
    samples: Float[torch.Tensor, "layer n d"],
    clean: Float[torch.Tensor, "layer d c"],
    clean_ranks: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Residualised specificity: R_act after projecting the clean-residual PCs C out of both the label
    and the basis, against a null of random subspaces of the complement (ambient d − c).

    Returns ``(R, z, rank)`` per layer; R and z are NaN where the basis lies inside span(C).
    """
    p = la.projector_complement(clean)
    resid = einops.einsum(samples, p, "layer n d, layer d e -> layer n e")
    t = activation_target(resid, name="label (clean PCs removed)")
    q, ranks = la.orthonormalize(einops.einsum(p, vectors, "layer d e, layer e k -> layer d k"))
    ambient = vectors.shape[-2] - clean_ranks
    safe = ranks.clamp_min(1)
    r = energy(q, t) * ambient / safe
    mean, std = null_moments(t, safe, ambient=ambient)
    nan = torch.full_like(r, float("nan"))
    r = torch.where(ranks > 0, r, nan)
    return r, torch.where(ranks > 0, z_score(r, mean, std), nan), ranks
