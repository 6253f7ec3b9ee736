"""Batched linear algebra for bases: every function works on a leading ``layer`` dim at once.

A batch of bases is kept padded: ``Q [layer, d, k]`` plus ``ranks [layer]``; columns at or past a
layer's rank are zero, so quadratic forms ``tr(QᵀTQ)`` need no masking.
"""

from __future__ import annotations

import einops
import torch
from jaxtyping import Float, Int


def pad_mask(q: Float[torch.Tensor, "layer d k"], ranks: Int[torch.Tensor, " layer"]) -> Float[torch.Tensor, "layer d k"]:
    """Zero the columns of ``q`` at or past each layer's rank."""
    keep = torch.arange(q.shape[-1], device=q.device)[None] < ranks[:, None]
    return q * keep[:, None, :].to(q.dtype)


def trim(q: Float[torch.Tensor, "layer d c"], ranks: Int[torch.Tensor, " layer"]) -> tuple[Float[torch.Tensor, "layer d k"], Int[torch.Tensor, " layer"]]:
    """Cut ``q`` to its widest rank (at least one column) and zero the columns past each layer's rank."""
    width = max(int(ranks.max()), 1)
    return pad_mask(q[..., :width], ranks).contiguous(), ranks


def haar_bases(n: int, d: int, k: int, generator: torch.Generator) -> Float[torch.Tensor, "n d k"]:
    """n Haar-distributed d×k orthonormal matrices: QR of Gaussians, columns sign-fixed so diag(R) > 0."""
    g = torch.randn(n, d, k, generator=generator)
    q, r = torch.linalg.qr(g)
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def top_eigvecs(
    gram: Float[torch.Tensor, "layer d d"], k: int, *, rtol: float = 1e-5, largest: bool = True
) -> tuple[Float[torch.Tensor, "layer d k"], Int[torch.Tensor, " layer"]]:
    """The top-k (or bottom-k) eigenvectors of symmetric PSD matrices, with numerical rank per layer.

    For ``gram = M Mᵀ`` these are the top left singular vectors of M. Eigenvalues below
    ``rtol · λ_max`` count as zero and their vectors are dropped (``largest=True`` only). The bottom
    eigenvectors are computed in float64 (a float32 decomposition resolves eigenvalues only to about
    1e-7 · λ_max, which can exceed the gaps at the bottom of the spectrum).
    """
    evals, evecs = torch.linalg.eigh(gram.float() if largest else gram.double())
    if largest:
        evals, evecs = evals.flip(-1), evecs.flip(-1)
        ranks = (evals > rtol * evals[..., :1].clamp_min(1e-300)).sum(-1).clamp(max=k)
    else:
        ranks = torch.full(evals.shape[:-1], min(k, evals.shape[-1]), dtype=torch.long)
    return trim(evecs[..., :k].float(), ranks)


def orthonormalize(
    m: Float[torch.Tensor, "layer d c"], k: int | None = None, *, rtol: float = 1e-4, atol: float = 1e-5
) -> tuple[Float[torch.Tensor, "layer d k"], Int[torch.Tensor, " layer"]]:
    """An orthonormal basis of each layer's column space (SVD; directions with σ ≤ max(atol, rtol·σ_max)
    are dropped), ordered by singular value and cut at ``k``."""
    u, s, _ = torch.linalg.svd(m.double(), full_matrices=False)
    tol = torch.maximum(rtol * s[..., :1], torch.full_like(s[..., :1], atol))
    ranks = (s > tol).sum(-1)
    if k is not None:
        ranks = ranks.clamp(max=k)
        u = u[..., :k]
    return trim(u.float(), ranks)


def pca(
    samples: Float[torch.Tensor, "layer n d"], k: int, *, center: bool = True, rtol: float = 1e-4
) -> tuple[Float[torch.Tensor, "layer d k"], Int[torch.Tensor, " layer"]]:
    """Top-k principal directions of each layer's samples (uncentered: top right singular vectors)."""
    x = samples.double()
    if center:
        x = x - x.mean(-2, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    ranks = (s > rtol * s[..., :1].clamp_min(1e-300)).sum(-1).clamp(max=k)
    q = einops.rearrange(vh[..., :k, :], "layer k d -> layer d k")
    return trim(q.float(), ranks)


def gram(m: Float[torch.Tensor, "layer d c"]) -> Float[torch.Tensor, "layer d d"]:
    """M Mᵀ per layer."""
    return einops.einsum(m, m, "layer d c, layer e c -> layer d e")


def projector_complement(q: Float[torch.Tensor, "layer d k"]) -> Float[torch.Tensor, "layer d d"]:
    """I − QQᵀ per layer (Q orthonormal, zero-padded)."""
    eye = torch.eye(q.shape[-2], dtype=q.dtype, device=q.device)
    return eye - einops.einsum(q, q, "layer d k, layer e k -> layer d e")


def kmeans(
    samples: Float[torch.Tensor, "layer n d"], n_clusters: int, *, iters: int = 8
) -> Float[torch.Tensor, "layer c d"]:
    """Lloyd's k-means per layer on mean-centred samples, initialised at the largest-norm samples
    (deterministic); empty clusters keep their previous centroid."""
    x = samples - samples.mean(-2, keepdim=True)
    order = x.norm(dim=-1).argsort(dim=-1, descending=True)[..., :n_clusters]
    centroids = torch.gather(x, -2, order[..., None].expand(-1, -1, x.shape[-1]))
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(-1)
        onehot = torch.nn.functional.one_hot(assign, n_clusters).to(x.dtype)
        counts = onehot.sum(-2)
        sums = einops.einsum(onehot, x, "layer n c, layer n d -> layer c d")
        centroids = torch.where(counts[..., None] > 0, sums / counts.clamp_min(1)[..., None], centroids)
    return centroids
