"""What a basis is asked to explain, stored compactly: a unit-trace PSD operator per layer, T = U S Uᵀ.

``U [layer, d, p]`` has orthonormal columns spanning T's range and ``S [layer, p, p]`` is PSD with
trace 1; ``U = None`` means U = I (a dense ``S = T``). Activation labels (n samples) have p ≤ n and
LoRA deltas (rank r) have p ≤ 2r after an exact range-finding step, so every score and ceiling
costs O(d·p) per basis column instead of O(d²):

* energy   e(B) = tr(BᵀTB) = Σ_cols (UᵀB) ⊙ S(UᵀB)
* null     ‖T‖²_F = ‖S‖²_F   (see :func:`interp.subspace.scores.null_moments`)
* ceiling  Ky Fan sums of eig(S)

Compression of a weight delta is *verified*, not assumed: the residual ‖M − QQᵀM‖²_F must be below
``1e-8·‖M‖²_F`` at every layer, else the dense form is used (see :meth:`Target.from_matrix`).
"""

from __future__ import annotations

from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float, Int

_RANGE_SEED = 0  # Gaussian test matrix of the range finder: torch.Generator().manual_seed(0)
_RANGE_WIDTH = 32
_RESIDUAL_TOL = 1e-8


@dataclass(frozen=True, eq=False)
class Target:
    """T = U S Uᵀ per layer (tr T = 1), or dense T = S when ``u`` is None."""

    s: Float[torch.Tensor, "layer p p"]
    u: Float[torch.Tensor, "layer d p"] | None
    d: int
    scale: Float[torch.Tensor, " layer"] | None = None  # ‖M‖²_F that T was normalised by (from_matrix)

    @classmethod
    def from_samples(cls, samples: Float[torch.Tensor, "layer n d"], *, name: str = "samples") -> Target:
        """T = (1/n) Σᵢ δ̂ᵢδ̂ᵢᵀ (unit-normalised samples); zero or non-finite samples are an error."""
        if samples.ndim != 3 or samples.shape[1] == 0:
            raise ValueError(f"{name}: expected [layer, n, d_model] with n ≥ 1, got {tuple(samples.shape)}")
        if not bool(torch.isfinite(samples).all()):
            raise ValueError(f"{name}: contains NaN or infinite values")
        norms = samples.double().norm(dim=-1, keepdim=True)
        if bool((norms == 0).any()):
            bad = torch.nonzero((norms[..., 0] == 0).any(-1)).flatten().tolist()
            raise ValueError(
                f"{name}: some samples are zero vectors at layer slices {bad} (the label is unchanged there, "
                "e.g. a layer before the first tuned one), so the activation score is undefined"
            )
        f = (samples.double() / norms) / samples.shape[1] ** 0.5  # T = fᵀf
        u, _ = torch.linalg.qr(einops.rearrange(f, "layer n d -> layer d n"))
        c = einops.einsum(f, u, "layer n d, layer d p -> layer n p")
        return cls(einops.einsum(c, c, "layer n p, layer n q -> layer p q"), u, samples.shape[-1])

    @classmethod
    def from_gram(cls, gram: Float[torch.Tensor, "layer d d"], *, name: str = "gram") -> Target:
        """T = G / tr G for a dense symmetric PSD ``G [layer, d, d]`` (kept dense, in float64)."""
        if not isinstance(gram, torch.Tensor) or gram.ndim != 3 or gram.shape[-1] != gram.shape[-2]:
            shape = tuple(gram.shape) if isinstance(gram, torch.Tensor) else type(gram).__name__
            raise ValueError(f"{name}: expected a [layer, d, d] tensor, got {shape}")
        g = gram.double()
        if not bool(torch.isfinite(g).all()):
            raise ValueError(f"{name}: contains NaN or infinite values")
        if not torch.allclose(g, g.mT, rtol=1e-5, atol=1e-8 * float(g.abs().max().clamp_min(1e-300))):
            raise ValueError(f"{name}: is not symmetric")
        tr = torch.diagonal(g, dim1=-2, dim2=-1).sum(-1)
        if bool((tr <= 0).any()):
            raise ValueError(f"{name}: has zero trace at layer slices {torch.nonzero(tr <= 0).flatten().tolist()}")
        return cls(g / tr[:, None, None], None, g.shape[-1], tr)

    @classmethod
    def from_matrix(cls, m: Float[torch.Tensor, "layer d cols"], *, name: str = "delta") -> Target:
        """T = M Mᵀ/‖M‖²_F for a residual view M ``[layer, d, cols]`` (see :meth:`from_rows`)."""
        return cls.from_rows(m.mT, name=name)

    @classmethod
    def from_rows(cls, x: Float[torch.Tensor, "layer rows d"], *, name: str = "delta") -> Target:
        """T = XᵀX/‖X‖²_F: the energy of the rows of X (M = Xᵀ), compressed when X is numerically
        low-rank (a LoRA delta), dense otherwise.

        Compression keeps T_Q = QQᵀ T QQᵀ with Q an orthonormal basis of the row space of Ωᵀ X (Ω
        Gaussian ``[rows, 32]``, seed :data:`_RANGE_SEED`), tried when that sketch is rank-deficient
        (rank(X) < 32), and used only when the residual energy ‖X − XQQᵀ‖²_F ≤ 1e-8·‖X‖²_F at every
        layer, which bounds the error of any energy e(B) by 2√(e(B)·1e-8) + 1e-8 (the float32 rounding
        left in a tuned-minus-base difference sits near 1e-12).
        """
        x = x.float()
        norm2 = torch.linalg.vector_norm(x, dim=(-2, -1)).double().pow(2)
        if bool((norm2 == 0).any()):
            raise ValueError(f"{name}: is zero at layer slices {torch.nonzero(norm2 == 0).flatten().tolist()}")
        if not bool(torch.isfinite(norm2).all()):
            raise ValueError(f"{name}: contains NaN or infinite values")
        rows, d = x.shape[-2:]
        q = None
        if min(d, rows) > _RANGE_WIDTH:
            gen = torch.Generator().manual_seed(_RANGE_SEED)
            sketch = (torch.randn(_RANGE_WIDTH, rows, generator=gen) @ x).double()  # [layer, 32, d]
            # σ_min ≤ 1e-4 σ_max of the sketch, read from the eigenvalues σ² of its 32×32 Gram matrix (in
            # float64 their error, ~1e-15 λ_max, is far below the 1e-8 λ_max threshold; 30× faster than svdvals)
            ev = torch.linalg.eigvalsh(sketch @ sketch.mT)  # ascending
            if bool((ev[:, 0] <= 1e-8 * ev[:, -1]).all()):  # the sketch is rank-deficient: X is low-rank
                q, _ = torch.linalg.qr(sketch.mT)
        elif rows <= d:
            q, _ = torch.linalg.qr(x.mT.double())
        if q is not None:
            qf = q.float()
            c = x @ qf  # [layer, rows, p]: coordinates of the rows in span(Q)
            # one layer at a time: the residual X − CQᵀ is as large as X, a per-layer temporary is not
            residual = torch.stack(
                [torch.linalg.vector_norm(torch.addmm(x[i], c[i], qf[i].T, alpha=-1)) for i in range(x.shape[0])]
            ).double().pow(2)
            if bool((residual <= _RESIDUAL_TOL * norm2).all()):
                c = c.double()
                s = einops.einsum(c, c, "layer r p, layer r q -> layer p q")
                # ‖X‖² = ‖XQ‖² + ‖X − XQQᵀ‖²: accurate, where a float32 norm of a large X is not
                scale = torch.diagonal(s, dim1=-2, dim2=-1).sum(-1) + residual
                return cls(s / scale[:, None, None], q, d, scale)
        dense = einops.einsum(x, x, "layer r d, layer r e -> layer d e").double()
        scale = torch.diagonal(dense, dim1=-2, dim2=-1).sum(-1)
        return cls(dense / scale[:, None, None], None, d, scale)

    @classmethod
    def mean(cls, targets: list[Target]) -> Target:
        """(1/m) Σ_t T_t: the Frobenius-balanced combination of unit-trace targets."""
        if any(t.u is None for t in targets):
            return cls(sum(t.dense() for t in targets) / len(targets), None, targets[0].d)
        q, _ = torch.linalg.qr(torch.cat([t.u for t in targets], dim=-1))
        s = 0
        for t in targets:
            a = einops.einsum(q, t.u, "layer d p, layer d r -> layer p r")
            s = s + einops.einsum(a, t.s, a, "layer p r, layer r t, layer q t -> layer p q")
        return cls(s / len(targets), q, targets[0].d)

    @classmethod
    def cat(cls, targets: list[Target]) -> Target:
        """The targets' layers one after another (e.g. targets built one layer at a time): compressed
        when all are (ranges zero-padded to the widest; zero columns add no energy), else dense."""
        if not targets:
            raise ValueError("targets: expected at least one Target")
        if len({t.d for t in targets}) != 1:
            raise ValueError(f"targets: differ in d_model {sorted({t.d for t in targets})}")
        scale = None if any(t.scale is None for t in targets) else torch.cat([t.scale for t in targets])
        if any(t.u is None for t in targets):
            return cls(torch.cat([t.dense() for t in targets]), None, targets[0].d, scale)
        p = max(t.s.shape[-1] for t in targets)
        s = torch.cat([torch.nn.functional.pad(t.s, (0, p - t.s.shape[-1], 0, p - t.s.shape[-1])) for t in targets])
        u = torch.cat([torch.nn.functional.pad(t.u, (0, p - t.u.shape[-1])) for t in targets])
        return cls(s, u, targets[0].d, scale)

    def dense(self) -> Float[torch.Tensor, "layer d d"]:
        if self.u is None:
            return self.s
        return einops.einsum(self.u, self.s, self.u, "layer d p, layer p q, layer e q -> layer d e")

    def energy(self, cols: Float[torch.Tensor, "layer d k"]) -> Float[torch.Tensor, "layer k"]:
        """Per column b: bᵀ T b (sum over a basis' columns gives tr(BᵀTB))."""
        cols = cols.to(self.s.dtype)
        c = cols if self.u is None else einops.einsum(self.u, cols, "layer d p, layer d k -> layer p k")
        return einops.einsum(c, einops.einsum(self.s, c, "layer p q, layer q k -> layer p k"), "layer p k, layer p k -> layer k")

    def frob2(self) -> Float[torch.Tensor, " layer"]:
        """‖T‖²_F (= ‖S‖²_F since U has orthonormal columns)."""
        return self.s.pow(2).sum((-2, -1))

    def eigvals(self) -> Float[torch.Tensor, "layer p"]:
        """Eigenvalues of T on its range, largest first (the rest are 0)."""
        return torch.linalg.eigvalsh(self.s).flip(-1).clamp_min(0)

    def ky_fan(self, max_rank: int) -> Float[torch.Tensor, "layer r"]:
        """Σ_{i≤r} λᵢ for r = 1..max_rank: the largest energy any rank-r basis can capture."""
        ev = self.eigvals()
        if ev.shape[-1] < max_rank:
            ev = torch.nn.functional.pad(ev, (0, max_rank - ev.shape[-1]))
        return ev[..., :max_rank].cumsum(-1)

    def top_eigvecs(
        self, k: int, *, rtol: float = 0.0
    ) -> tuple[Float[torch.Tensor, "layer d k"], Int[torch.Tensor, " layer"]]:
        """The top-k eigenvectors of T in residual space (float64), zero-padded past each layer's rank:
        eigenvalues ≤ ``rtol · λ_max`` count as zero (T has at most p nonzero eigenvalues)."""
        evals, evecs = torch.linalg.eigh(self.s)
        evals, evecs = evals.flip(-1)[..., :k], evecs.flip(-1)[..., :k]
        if self.u is not None:
            evecs = einops.einsum(self.u, evecs, "layer d p, layer p k -> layer d k")
        keep = evals > rtol * evals[..., :1].clamp_min(1e-300)
        ranks = keep.sum(-1)
        # eigh orders ascending, so after the flip the kept eigenvalues come first
        return evecs * keep[..., None, :].to(evecs.dtype), ranks
