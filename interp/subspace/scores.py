"""Concentration scores of a basis on what tuning changed, their exact null, ceilings and specificity.

Every score here is one quadratic form. A *target* (:class:`~interp.subspace.targets.Target`) is a
per-layer PSD matrix T with tr T = 1; the
fraction of the target's energy a rank-k orthonormal basis B captures is ``e(B) = tr(BᵀTB)`` and its
concentration ratio is ``R = e(B) / (k/d)`` (R = 1: no better than a random subspace; R ≤ d/k):

* activations (``Target.from_samples``): T = (1/n) Σᵢ δ̂ᵢδ̂ᵢᵀ with δ̂ = δ/‖δ‖, so
  e(B) = mean_i ‖Bᵀδᵢ‖²/‖δᵢ‖²  (R_act)
* a weight delta M (``[d_model, cols]`` residual view, ``Target.from_matrix``): T = M Mᵀ/‖M‖²_F, so
  e(B) = ‖BᵀM‖²_F/‖M‖²_F  (R_w)
* Frobenius-balanced combination of write tensors M₁..M_m: T = (1/m) Σ_t M_t M_tᵀ/‖M_t‖²_F, i.e. the
  score of the concatenation [M₁/‖M₁‖ | … | M_m/‖M_m‖]  (R_w_combined)

Null (exact, :func:`null_moments`): for B Haar-random of rank k in R^d, E[R] = 1 and
``Var R = 2d(d−k) / (k(d−1)(d+2)) · (‖T‖²_F − 1/d)``. See ``docs/analyses/subspace.md`` for the
derivation; :func:`monte_carlo_null` is the batched sampling check.

Ceilings are the bases that maximise a score: the top eigenvectors of its target (Ky Fan).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import einops
import torch
from jaxtyping import Float, Int

from interp.subspace import _linalg as la
from interp.subspace.basis import Basis, check_rank
from interp.subspace.targets import Target
from interp.subspace.weight_diff import WRITE_KINDS, stack_kind, tensor_kind


def _check_target(target: object, name: str = "target") -> Target:
    if not isinstance(target, Target):
        raise TypeError(
            f"{name}: expected an interp.subspace.targets.Target (Target.from_samples / from_matrix / "
            f"from_gram), got {type(target).__name__}"
        )
    return target


def write_matrices(
    delta: Mapping[str, torch.Tensor], layers: Sequence[int], *, gains: Mapping[str, torch.Tensor] | None = None
) -> dict[str, Float[torch.Tensor, "layer d cols"]]:
    """Residual views ``[layer, d_model, cols]`` of the write deltas at ``layers``, per write kind present.

    ``gains``: per write kind, the ``[layer, d_model]`` elementwise gain between that tensor's output
    and the residual stream (a post-norm's weight, :func:`interp.subspace.weight_library.post_norm_gains`);
    the views' rows are scaled by it, so that ΔW is in the residual coordinates the bases and the
    activation label use.

    A layer where a present kind is missing is an error (ValueError naming the layers and the
    delta's range); a kind absent from the whole delta (e.g. an adapter without ``o_proj``) is
    left out; a delta with no write tensor at all is an error.
    """
    kinds = {tensor_kind(name)[1] for name in delta}
    present = [kind for kind in WRITE_KINDS if kind in kinds]
    if not present:
        raise ValueError("delta: changes no residual-write tensor (attn.W_O or mlp.W_out), so R_w is undefined")
    out = {kind: stack_kind(delta, kind, list(layers))[1].float() for kind in present}
    for kind, gain in (gains or {}).items():
        if kind not in WRITE_KINDS:
            raise ValueError(f"gains: keys must be write kinds {WRITE_KINDS}, got {kind!r}")
        if kind in out:
            if tuple(gain.shape) != (len(layers), out[kind].shape[1]):
                raise ValueError(f"gains[{kind!r}]: expected shape [{len(layers)}, {out[kind].shape[1]}], "
                                 f"got {tuple(gain.shape)}")
            out[kind] = out[kind] * gain.float()[:, :, None]
    return out


def write_targets(
    delta: Mapping[str, torch.Tensor], layers: Sequence[int], *, gains: Mapping[str, torch.Tensor] | None = None
) -> dict[str, Target]:
    """Targets of the residual-write deltas at ``layers``: one per write kind present in ``delta``
    (``attn.W_O``, ``mlp.W_out``) plus their Frobenius-balanced ``combined`` (see :func:`write_matrices`,
    also for ``gains``)."""
    views = write_matrices(delta, layers, gains=gains)
    out = {kind: Target.from_matrix(m, name=f"delta[{kind}]") for kind, m in views.items()}
    out["combined"] = Target.mean(list(out.values()))
    return out


def concentration(
    vectors: Float[torch.Tensor, "layer d k"], ranks: torch.Tensor, target: Target
) -> Float[torch.Tensor, " layer"]:
    """R = tr(BᵀTB) / (k/d): 1 for a random subspace on average, d/k at most."""
    d = vectors.shape[-2]
    return (_check_target(target).energy(vectors).sum(-1) * d / ranks.to(torch.float64)).float()


def null_moments(
    target: Target, ranks: torch.Tensor | int, *, ambient: torch.Tensor | int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean and standard deviation of R under Haar-random rank-k bases, per layer.

    ``E[R] = 1``; ``Var R = 2d(d−k)/(k(d−1)(d+2)) · (‖T‖²_F − (tr T)²/d) / (tr T)²``, with d the ambient
    dimension (``ambient``, default d_model; smaller when the target lives in a subspace).
    """
    t = _check_target(target)
    tr = torch.diagonal(t.s, dim1=-2, dim2=-1).sum(-1).double()
    frob2 = t.frob2().double()
    d = t.d if ambient is None else ambient
    return torch.ones_like(frob2).float(), null_std(frob2 / tr.pow(2), d, ranks)


def null_std(frob2: torch.Tensor, d: torch.Tensor | int, k: torch.Tensor | int) -> torch.Tensor:
    """σ of R for a unit-trace target with ‖T‖²_F = ``frob2`` in ambient dimension d, Haar rank-k bases:
    √(2d(d−k)/(k(d−1)(d+2)) · (‖T‖²_F − 1/d))."""
    d = torch.as_tensor(d, dtype=torch.float64)
    k = torch.as_tensor(k, dtype=torch.float64)
    spread = (frob2.double() - 1 / d).clamp_min(0)
    return (2 * d * (d - k) / (k * (d - 1) * (d + 2)) * spread).sqrt().float()


def monte_carlo_null(
    target: Target, k: int, *, n_draws: int = 120, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, std (unbiased) and the draws ``[layer, n_draws]`` of R over ``n_draws`` Haar-random rank-k
    bases, all layers at once. Bases: QR of Gaussians from ``torch.Generator().manual_seed(seed)``;
    the same draws serve every layer (reproducible across runs and processes)."""
    target = _check_target(target)
    if n_draws < 2:
        raise ValueError(f"n_draws: need at least 2 draws for a standard deviation, got {n_draws}")
    d = target.d
    if not 1 <= k <= d:
        raise ValueError(f"k: rank must be in [1, {d}], got {k}")
    gen = torch.Generator().manual_seed(seed)
    b = einops.rearrange(la.haar_bases(n_draws, d, k, gen), "draw d k -> d (draw k)")
    n_layers = target.s.shape[0]
    e = target.energy(b.expand(n_layers, -1, -1))
    r = (einops.reduce(e, "layer (draw k) -> layer draw", "sum", k=k) * d / k).float()
    return r.mean(-1), r.std(-1, unbiased=True), r


def z_score(r: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(R − mean)/std, NaN where std is 0."""
    return torch.where(std > 0, (r - mean) / std.clamp_min(1e-30), torch.full_like(r, float("nan")))


# --------------------------------------------------------------------------------------------
# ceilings


def ceiling_energy(fit: Target, evaluate: Target | None = None, max_rank: int = 8, *, rtol: float = 1e-12
                   ) -> Float[torch.Tensor, "layer rank"]:
    """Energy that the top-r eigenvectors of ``fit`` capture of ``evaluate`` (default: ``fit`` itself),
    for r = 1..max_rank. For the same target this is the Ky Fan sum Σ_{i≤r} λᵢ, the most any rank-r
    basis captures. Eigenvectors with λ ≤ ``rtol``·λ_max (past the target's rank) capture nothing."""
    _check_target(fit, "fit")
    if not 1 <= max_rank <= fit.d:
        raise ValueError(f"max_rank: expected 1..{fit.d}, got {max_rank}")
    if evaluate is None:
        return fit.ky_fan(max_rank)
    vecs, _ = fit.top_eigvecs(max_rank, rtol=rtol)
    captured = _check_target(evaluate, "evaluate").energy(vecs)
    if captured.shape[-1] < max_rank:  # fewer eigenvectors than ranks: the extra ranks add nothing
        captured = torch.nn.functional.pad(captured, (0, max_rank - captured.shape[-1]))
    return captured.cumsum(-1)


def ceiling_curve(fit: Target, evaluate: Target | None = None, max_rank: int = 8) -> Float[torch.Tensor, "layer rank"]:
    """R at every rank r = 1..max_rank of the top-r eigenvectors of ``fit``, scored on ``evaluate``
    (default: the same target, where it is the exact maximum of R over rank-r bases, Σ_{i≤r} λᵢ / (r/d))."""
    captured = ceiling_energy(fit, evaluate, max_rank)
    return (captured * fit.d / torch.arange(1, max_rank + 1, dtype=captured.dtype)).float()


def activation_ceiling(
    label_fit: Float[torch.Tensor, "layer n d"], layers: Sequence[int], k: int = 8
) -> Basis:
    """Top-k eigenvectors of the fit-half label's normalised second moment (1/n) Σ δ̂ δ̂ᵀ: the exact
    maximiser of R_act on the fit prompts (an uncentred PCA of the unit-normalised label). The label
    spans at most n directions, so with n < k fit prompts the ceiling has rank n."""
    check_rank(k, label_fit.shape[-1])
    t = Target.from_samples(label_fit, name="label_fit")
    q, ranks = t.top_eigvecs(k)
    return Basis.from_padded("act_ceiling", (q.float(), ranks), family="ceiling", axis_kind="ceiling",
                             definition="top-k eigenvectors of the fit-half label's normalised Gram (maximises fit R_act)",
                             layers=layers, source="label")


def weight_ceiling(
    delta: Mapping[str, torch.Tensor],
    layers: Sequence[int],
    k: int = 8,
    *,
    gains: Mapping[str, torch.Tensor] | None = None,
) -> Basis:
    """Top-k left singular vectors of the Frobenius-balanced write delta [ΔW_O/‖ΔW_O‖ | ΔW_outᵀ/‖ΔW_out‖]
    (in residual coordinates with ``gains``, see :func:`write_matrices`): the exact maximiser of
    R_w_combined (Ky Fan)."""
    t = write_targets(delta, layers, gains=gains)["combined"]
    check_rank(k, t.d)
    q, ranks = t.top_eigvecs(k, rtol=1e-5)
    return Basis.from_padded("weight_ceiling", (q.float(), ranks), family="ceiling", axis_kind="ceiling",
                             definition="top-k left singular vectors of the Frobenius-balanced residual-write ΔW "
                                        "(maximises R_w_combined)",
                             layers=layers, source="delta")


def principal_cosines(
    vectors: Float[torch.Tensor, "*batch layer d k"], ranks: Int[torch.Tensor, "*batch layer"], reference: Basis
) -> Float[torch.Tensor, "*batch layer"]:
    """Mean cosine of the principal angles between span(B) and span(``reference``) per layer: the
    singular values of BᵀR (clamped to [0, 1]) summed and divided by min(rank B, rank R), the number
    of principal angles (B zero-padded past its rank; leading batch dims allowed)."""
    s = torch.linalg.svdvals(vectors.double().mT @ reference.vectors.double()).clamp(0, 1)  # [..., layer, r]
    return (s.sum(-1) / torch.minimum(ranks, reference.rank_tensor).double()).float()


# --------------------------------------------------------------------------------------------
# specificity


def residual_label_target(
    samples: Float[torch.Tensor, "layer n d"], clean: Float[torch.Tensor, "layer d c"]
) -> Target:
    """The label with the clean-residual PCs C projected out, δ' = (I − CCᵀ)δ, as a target."""
    coef = einops.einsum(samples, clean, "layer n d, layer d c -> layer n c")
    resid = samples - einops.einsum(coef, clean, "layer n c, layer d c -> layer n d")
    return Target.from_samples(resid, name="label (clean PCs removed)")


def specific_scores(
    vectors: Float[torch.Tensor, "layer d k"],
    samples: Float[torch.Tensor, "layer n d"],
    clean: Float[torch.Tensor, "layer d c"],
    clean_ranks: torch.Tensor,
    *,
    target: Target | None = None,
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
