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
from interp.subspace.targets import Target as FactoredTarget
from interp.subspace.weight_diff import WRITE_KINDS, stack_kind, tensor_kind

Gram = Float[torch.Tensor, "layer d d"]  # a dense unit-trace target


def activation_target(samples: Float[torch.Tensor, "layer n d"], *, name: str = "samples") -> Gram:
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


def matrix_target(m: Float[torch.Tensor, "layer d cols"], *, name: str = "delta") -> Gram:
    """T = M Mᵀ / ‖M‖²_F per layer, from the residual view of a weight delta."""
    g = la.gram(m.float())
    tr = torch.diagonal(g, dim1=-2, dim2=-1).sum(-1)
    if bool((tr == 0).any()):
        raise ValueError(f"{name}: is zero at layer slices {torch.nonzero(tr == 0).flatten().tolist()}")
    return g / tr[:, None, None]


def write_matrices(
    delta: Mapping[str, torch.Tensor], layers: Sequence[int]
) -> dict[str, Float[torch.Tensor, "layer d cols"]]:
    """Residual views ``[layer, d_model, cols]`` of the write deltas at ``layers``, per write kind present.

    A layer where a present kind is missing is an error (ValueError naming the layers and the
    delta's range); a kind absent from the whole delta (e.g. an adapter without ``o_proj``) is
    left out; a delta with no write tensor at all is an error.
    """
    kinds = {tensor_kind(name)[1] for name in delta}
    present = [kind for kind in WRITE_KINDS if kind in kinds]
    if not present:
        raise ValueError("delta: changes no residual-write tensor (attn.W_O or mlp.W_out), so R_w is undefined")
    return {kind: stack_kind(delta, kind, list(layers))[1].float() for kind in present}


def weight_targets(delta: Mapping[str, torch.Tensor], layers: Sequence[int]) -> dict[str, Gram]:
    """Dense targets of the residual-write deltas at ``layers``: one per write kind present in ``delta``
    (``attn.W_O``, ``mlp.W_out``) plus their Frobenius-balanced ``combined`` (see :func:`write_matrices`)."""
    out = {kind: matrix_target(m, name=f"delta[{kind}]") for kind, m in write_matrices(delta, layers).items()}
    out["combined"] = sum(out.values()) / len(out)
    return out


def energy(vectors: Float[torch.Tensor, "layer d k"], target: Gram) -> Float[torch.Tensor, " layer"]:
    """e(B) = tr(BᵀTB) per layer (zero-padded columns contribute nothing)."""
    return einops.einsum(vectors, target, vectors, "layer d k, layer d e, layer e k -> layer")


def concentration(
    vectors: Float[torch.Tensor, "layer d k"], ranks: torch.Tensor, target: Gram
) -> Float[torch.Tensor, " layer"]:
    """R = tr(BᵀTB) / (k/d): 1 for a random subspace on average, d/k at most."""
    d = vectors.shape[-2]
    return energy(vectors, target) * d / ranks.to(vectors.dtype)


def null_moments(
    target: Gram, ranks: torch.Tensor | int, *, ambient: torch.Tensor | int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean and standard deviation of R under Haar-random rank-k bases, per layer.

    ``E[R] = 1``; ``Var R = 2d(d−k)/(k(d−1)(d+2)) · (‖T‖²_F − (tr T)²/d) / (tr T)²``, with d the ambient
    dimension (``ambient``, default d_model; smaller when the target lives in a subspace).
    """
    t = target.double()
    frob2 = t.pow(2).sum((-2, -1))
    tr = torch.diagonal(t, dim1=-2, dim2=-1).sum(-1)
    d = target.shape[-1] if ambient is None else ambient
    return torch.ones_like(frob2).float(), null_std(frob2 / tr.pow(2), d, ranks)


def null_std(frob2: torch.Tensor, d: torch.Tensor | int, k: torch.Tensor | int) -> torch.Tensor:
    """σ of R for a unit-trace target with ‖T‖²_F = ``frob2`` in ambient dimension d, Haar rank-k bases:
    √(2d(d−k)/(k(d−1)(d+2)) · (‖T‖²_F − 1/d))."""
    d = torch.as_tensor(d, dtype=torch.float64)
    k = torch.as_tensor(k, dtype=torch.float64)
    spread = (frob2.double() - 1 / d).clamp_min(0)
    return (2 * d * (d - k) / (k * (d - 1) * (d + 2)) * spread).sqrt().float()


def monte_carlo_null(
    target: Gram | FactoredTarget, k: int, *, n_draws: int = 120, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, std (unbiased) and the draws ``[layer, n_draws]`` of R over ``n_draws`` Haar-random rank-k
    bases, all layers at once. Bases: QR of Gaussians from ``torch.Generator().manual_seed(seed)``;
    the same draws serve every layer (reproducible across runs and processes)."""
    from interp.subspace.bases import haar_bases

    if n_draws < 2:
        raise ValueError(f"n_draws: need at least 2 draws for a standard deviation, got {n_draws}")
    if not isinstance(target, FactoredTarget):
        target = FactoredTarget(target.double(), None, target.shape[-1])
    d = target.d
    if not 1 <= k <= d:
        raise ValueError(f"k: rank must be in [1, {d}], got {k}")
    gen = torch.Generator().manual_seed(seed)
    b = einops.rearrange(haar_bases(n_draws, d, k, gen), "draw d k -> d (draw k)")
    n_layers = target.s.shape[0]
    e = target.energy(b.expand(n_layers, -1, -1))
    r = (einops.reduce(e, "layer (draw k) -> layer draw", "sum", k=k) * d / k).float()
    return r.mean(-1), r.std(-1, unbiased=True), r


def z_score(r: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(R − mean)/std, NaN where std is 0."""
    return torch.where(std > 0, (r - mean) / std.clamp_min(1e-30), torch.full_like(r, float("nan")))


def ceiling_curve(fit_target: Gram, eval_target: Gram | None = None, max_rank: int = 8) -> Float[torch.Tensor, "layer rank"]:
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


def residual_label_target(
    samples: Float[torch.Tensor, "layer n d"], clean: Float[torch.Tensor, "layer d c"]
) -> FactoredTarget:
    """The label with the clean-residual PCs C projected out, δ' = (I − CCᵀ)δ, as a target."""
    coef = einops.einsum(samples, clean, "layer n d, layer d c -> layer n c")
    resid = samples - einops.einsum(coef, clean, "layer n c, layer d c -> layer n d")
    return FactoredTarget.from_samples(resid, name="label (clean PCs removed)")


def specific_scores(
    vectors: Float[torch.Tensor, "layer d k"],
    samples: Float[torch.Tensor, "layer n d"],
    clean: Float[torch.Tensor, "layer d c"],
    clean_ranks: torch.Tensor,
    *,
    target: FactoredTarget | None = None,
    group: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Residualised specificity: R_act after projecting the clean-residual PCs C out of both the label
    and the basis, against a null of random subspaces of the complement (ambient d − c).

    Returns ``(R, z, rank)`` per layer; R and z are NaN where the basis lies inside span(C) (its
    directions keep less than 0.1% of their norm outside it).
    ``target``: :func:`residual_label_target` of ``samples``, when already computed. ``group``: score
    several bases at once, ``vectors`` holding consecutive groups of ``group`` columns (results get a
    trailing basis dim).
    """
    t = residual_label_target(samples, clean) if target is None else target
    single = group is None
    group = vectors.shape[-1] if group is None else group
    # span((I − CCᵀ)B) is never formed: with A = CᵀB, its Gram is G = BᵀB − AᵀA, and since the residual
    # label lives in range(I − CCᵀ), its energy there is H = (U'ᵀB)ᵀ S' (U'ᵀB); e = tr(G⁺H) on G's range.
    a = einops.einsum(clean, vectors, "layer d c, layer d k -> layer c k").double()
    w = (einops.einsum(t.u.to(vectors.dtype), vectors, "layer d p, layer d k -> layer p k") if t.u is not None
         else vectors).double()
    a = einops.rearrange(a, "layer c (basis k) -> layer basis c k", k=group)
    w = einops.rearrange(w, "layer p (basis k) -> layer basis p k", k=group)
    # each basis has orthonormal columns (zero past its rank), so BᵀB is the diagonal of its column mask
    present = einops.rearrange(vectors.pow(2).sum(-2) > 0.5, "layer (basis k) -> layer basis k", k=group)
    g = torch.diag_embed(present.double()) - einops.einsum(a, a, "layer basis c i, layer basis c j -> layer basis i j")
    sw = einops.einsum(t.s, w, "layer p q, layer basis q j -> layer basis p j")
    h = einops.einsum(w, sw, "layer basis p i, layer basis p j -> layer basis i j")
    lam, vec = torch.linalg.eigh(g)
    sv = lam.clamp_min(0).sqrt()
    # directions with < 0.1% of their norm outside span(C) count as inside it (float32 inputs: the
    # Gram route resolves singular values only down to ~3e-4)
    keep = sv > torch.maximum(1e-4 * sv.amax(-1, keepdim=True), torch.full_like(sv, 1e-3))
    hv = (vec * (h @ vec)).sum(-2)  # vᵀ H v per eigenvector
    e = (hv / lam.clamp_min(1e-300) * keep).sum(-1)
    ranks = keep.sum(-1)
    ambient = (vectors.shape[-2] - clean_ranks)[:, None]
    safe = ranks.clamp_min(1)
    r = (e * ambient / safe).float()
    std = null_std(t.frob2()[:, None], ambient, safe)
    nan = torch.full_like(r, float("nan"))
    z = torch.where(ranks > 0, z_score(r, torch.ones_like(std), std), nan)
    r = torch.where(ranks > 0, r, nan)
    if single:
        return r[:, 0], z[:, 0], ranks[:, 0]
    return r, z, ranks
