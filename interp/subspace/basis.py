"""A basis of the residual stream, and the set algebra on bases.

A basis is ``Float[Tensor, "layer d_model k"]`` with orthonormal columns per layer, zero-padded past
that layer's rank, tagged with a family and an axis kind: ``write`` (built from what layers write
into the residual: W_O, W_out, OV, MLP maps), ``read`` (what layers read: W_Q/W_K/W_V/W_in/W_gate,
the unembedding), ``mixed`` (activations, QK, compounds) or ``ceiling`` (built from the tuning delta
itself). A read-side basis scoring high on the weight delta means "this read direction coincides
with a written one", not "this explains the delta", so read-side rows are reported apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import einops
import pandas as pd
import torch
from jaxtyping import Float, Int

from interp.subspace import _linalg as la

AXIS_KINDS = ("write", "read", "mixed", "ceiling")


def check_rank(k: int, d: int, *, name: str = "k") -> None:
    """A basis rank ``k`` must be an int in [1, d] (TypeError / ValueError naming ``name``)."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"{name}: expected an int rank, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"{name}: rank must be at least 1, got {k}")
    if k > d:
        raise ValueError(f"{name}: rank {k} exceeds d_model {d}")


@dataclass(frozen=True, eq=False)
class Basis:
    """A named per-layer orthonormal basis of the residual stream: ``vectors[i]`` spans a subspace at
    model layer ``layers[i]``, with ``ranks[i]`` orthonormal columns (the rest are zero)."""

    name: str
    family: str
    axis_kind: str
    definition: str
    layers: tuple[int, ...]
    vectors: Float[torch.Tensor, "layer d_model k"]
    ranks: tuple[int, ...]
    source: str = "interp"  # where the definition comes from: library, interp (compounds), label, delta, null, user
    atol: float = field(default=1e-3, repr=False)

    def __post_init__(self) -> None:
        if self.axis_kind not in AXIS_KINDS:
            raise ValueError(f"axis_kind: expected one of {AXIS_KINDS}, got {self.axis_kind!r}")
        v = self.vectors
        if not isinstance(v, torch.Tensor) or v.ndim != 3:
            raise ValueError(f"vectors: basis {self.name!r} must be a [layer, d_model, k] tensor")
        n_layers, d, k = v.shape
        if len(self.layers) != n_layers or len(self.ranks) != n_layers:
            raise ValueError(
                f"layers: basis {self.name!r} has {n_layers} layer slices but {len(self.layers)} layers "
                f"and {len(self.ranks)} ranks"
            )
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"vectors: basis {self.name!r} contains NaN or infinite values")
        for layer, r in zip(self.layers, self.ranks, strict=True):
            if r < 1:
                raise ValueError(f"vectors: basis {self.name!r} has rank 0 at layer {layer} (need ≥ 1 direction)")
            if r > d:
                raise ValueError(f"vectors: basis {self.name!r} has rank {r} > d_model {d} at layer {layer}")
        ranks = torch.tensor(self.ranks)
        if k < int(ranks.max()):
            raise ValueError(f"ranks: basis {self.name!r} claims rank {int(ranks.max())} but has {k} columns")
        expected = torch.diag_embed((torch.arange(k)[None] < ranks[:, None]).float())
        err = (einops.einsum(v, v, "layer d i, layer d j -> layer i j") - expected).abs().amax((-2, -1))
        if float(err.max()) > self.atol:
            worst = int(err.argmax())
            raise ValueError(
                f"vectors: basis {self.name!r} is not orthonormal at layer {self.layers[worst]} "
                f"(max |BᵀB − I| = {float(err.max()):.2e}); build it with "
                f"Basis.from_vectors(..., orthonormalize=True) to orthonormalise it (SVD)"
            )

    @classmethod
    def from_vectors(
        cls,
        name: str,
        vectors: torch.Tensor | Sequence[torch.Tensor],
        *,
        layers: Sequence[int],
        family: str = "user",
        axis_kind: str = "mixed",
        definition: str = "user-supplied basis",
        orthonormalize: bool = False,
        source: str = "user",
    ) -> Basis:
        """A basis from ``[d, k]`` (shared by all ``layers``), ``[layer, d, k]`` or a list of ``[d, k_l]``.

        Without ``orthonormalize`` the columns must already be orthonormal (ValueError otherwise);
        with it they are replaced by an orthonormal basis of their span (SVD, dependent columns dropped).
        """
        layers = tuple(int(layer) for layer in layers)
        if isinstance(vectors, torch.Tensor):
            if vectors.ndim == 2:
                vectors = vectors[None].expand(len(layers), -1, -1)
            if vectors.ndim != 3:
                raise ValueError(f"vectors: expected [d_model, k] or [layer, d_model, k], got {tuple(vectors.shape)}")
            mats = list(vectors.float())
        else:
            mats = [torch.as_tensor(m).float() for m in vectors]
        if len(mats) != len(layers):
            raise ValueError(f"vectors: {len(mats)} layer slices for {len(layers)} layers")
        d = mats[0].shape[0]
        for layer, m in zip(layers, mats, strict=True):
            if m.ndim != 2 or m.shape[0] != d:
                raise ValueError(f"vectors: layer {layer} slice has shape {tuple(m.shape)}, expected [{d}, k]")
            if m.shape[1] == 0:
                raise ValueError(f"vectors: rank 0 at layer {layer} (a basis needs at least one direction)")
            if m.shape[1] > d:
                raise ValueError(
                    f"vectors: rank {m.shape[1]} exceeds d_model {d} at layer {layer} "
                    f"(at most {d} orthonormal directions exist)"
                )
            if not bool(torch.isfinite(m).all()):
                raise ValueError(f"vectors: basis {name!r} contains NaN or infinite values at layer {layer}")
        width = max(m.shape[1] for m in mats)
        padded = torch.stack([torch.nn.functional.pad(m, (0, width - m.shape[1])) for m in mats])
        if orthonormalize:
            q, ranks = la.orthonormalize(padded)
            if int(ranks.min()) == 0:
                raise ValueError(f"vectors: basis {name!r} is all zeros at some layer (rank 0)")
            return cls(name, family, axis_kind, definition, layers, q, tuple(ranks.tolist()), source)
        return cls(name, family, axis_kind, definition, layers, padded, tuple(m.shape[1] for m in mats), source)

    @property
    def d_model(self) -> int:
        return self.vectors.shape[1]

    @property
    def rank_tensor(self) -> torch.Tensor:
        """Per-layer ranks as a long tensor."""
        return torch.tensor(self.ranks)

    def at(self, layer: int) -> Float[torch.Tensor, "d_model r"]:
        """The ``[d_model, rank]`` orthonormal basis at model layer ``layer``."""
        if layer not in self.layers:
            raise ValueError(f"layer: basis {self.name!r} covers layers {list(self.layers)}, not {layer}")
        i = self.layers.index(layer)
        return self.vectors[i, :, : self.ranks[i]]

    def select(self, layers: Sequence[int]) -> Basis:
        """The same basis restricted to (a reordering of) its layers."""
        missing = [layer for layer in layers if layer not in self.layers]
        if missing:
            raise ValueError(f"layers: basis {self.name!r} does not cover layers {missing}")
        idx = [self.layers.index(layer) for layer in layers]
        q, _ = la.trim(self.vectors[idx], torch.tensor([self.ranks[i] for i in idx]))
        return dataclasses.replace(self, layers=tuple(layers), vectors=q, ranks=tuple(self.ranks[i] for i in idx))

    @classmethod
    def from_padded(
        cls,
        name: str,
        qr: tuple[Float[torch.Tensor, "layer d c"], Int[torch.Tensor, " layer"]],
        *,
        family: str,
        axis_kind: str,
        definition: str,
        layers: Sequence[int],
        source: str = "library",
    ) -> Basis:
        """A basis from a padded orthonormal ``(Q [layer, d, c], ranks [layer])`` as the builders in
        :mod:`interp.subspace._linalg` return it; a layer of rank 0 is a ValueError (the defining
        matrix is zero there)."""
        q, ranks = qr
        if int(ranks.min()) < 1:
            bad = [layer for layer, r in zip(layers, ranks.tolist(), strict=True) if r < 1]
            raise ValueError(f"basis {name!r} has rank 0 at layers {bad}: its defining matrix is zero there")
        q, ranks = la.trim(q, ranks)
        return cls(name, family, axis_kind, definition, tuple(int(x) for x in layers), q,
                   tuple(int(r) for r in ranks.tolist()), source)


@dataclass(frozen=True)
class Recipe:
    """One entry of a basis library: a name, its metadata and the builder that computes it.

    ``build(context)`` returns a padded orthonormal ``(Q [layer, d, c], ranks [layer])``; the context
    is the library's (:class:`interp.subspace.weight_library.WeightContext` or
    :class:`interp.subspace.activation_library.ActivationContext`). ``definition`` may hold
    ``{fields}`` of the context's ``format_fields()`` (e.g. ``{k_broad}``). ``needs``: optional inputs
    of the context the builder cannot do without (e.g. ``("model",)``); the library skips the recipe
    when the context lacks one.
    """

    name: str
    family: str
    axis_kind: str
    definition: str
    build: Callable[..., tuple[torch.Tensor, torch.Tensor]] = field(repr=False)
    needs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.axis_kind not in AXIS_KINDS:
            raise ValueError(f"axis_kind: expected one of {AXIS_KINDS}, got {self.axis_kind!r}")

    def make(self, context: object, layers: Sequence[int], **fields: object) -> Basis:
        """Build the basis at ``layers`` from ``context``."""
        return Basis.from_padded(self.name, self.build(context), family=self.family, axis_kind=self.axis_kind,
                                 definition=self.definition.format(**fields), layers=layers)


def register(library: dict[str, Recipe], family: str, axis_kind: str, definition: str, *,
             name: str | None = None, needs: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Decorator: add the decorated builder to ``library`` under ``name`` (default: the function's name)."""

    def add(fn: Callable) -> Callable:
        key = name or fn.__name__
        if key in library:
            raise ValueError(f"name: basis {key!r} is registered twice")
        library[key] = Recipe(key, family, axis_kind, definition, fn, needs)
        return fn

    return add


def select_recipes(library: Mapping[str, Recipe], include: Sequence[str] | None, what: str) -> list[Recipe]:
    """The recipes named in ``include`` (in that order), or all in library order; an unknown name is a
    ValueError listing the known ones."""
    if include is None:
        return list(library.values())
    if isinstance(include, str):
        raise TypeError(f"include: expected a sequence of basis names, got the string {include!r}")
    unknown = [n for n in include if n not in library]
    if unknown:
        raise ValueError(f"include: unknown {what} bases {unknown}; choose from {tuple(library)}")
    return [library[n] for n in dict.fromkeys(include)]


def random_basis(
    layers: Sequence[int], d_model: int, k: int, *, seed: int = 0, name: str = "random"
) -> Basis:
    """A Haar-random rank-k orthonormal basis per layer: QR of a Gaussian ``[layer, d, k]`` drawn from
    ``torch.Generator().manual_seed(seed)`` (signs fixed by ``diag(R) > 0``)."""
    check_rank(k, d_model)
    gen = torch.Generator().manual_seed(seed)
    q = la.haar_bases(len(layers), d_model, k, gen)
    return Basis(name, "random", "mixed", f"Haar-random rank-{k} basis (seed {seed})", tuple(layers), q,
                 (k,) * len(layers), source="null")


# --------------------------------------------------------------------------------------------
# set operations


def union(a: Basis, b: Basis, *, name: str | None = None, k: int | None = None) -> Basis:
    """span(A) + span(B): orthonormal basis of the concatenated columns (rank ≤ k_A + k_B, or ``k``)."""
    _same_layers(a, b)
    q, ranks = la.orthonormalize(torch.cat([a.vectors, b.vectors], dim=-1), k)
    return _compound(name or f"{a.name}_union_{b.name}", "mixed",
                     f"orthonormal union span({a.name}) + span({b.name})", a.layers, (q, ranks))


def intersection(a: Basis, b: Basis, *, k: int | None = None, min_cos: float = 0.0, name: str | None = None) -> Basis:
    """Approximate span(A) ∩ span(B): bisectors (A uᵢ + B vᵢ)/‖·‖ of the principal-vector pairs
    (SVD AᵀB = U diag(cos θ) Vᵀ) with cos θᵢ ≥ ``min_cos``, the k most aligned (Björck–Golub).

    The bisectors are mutually orthogonal. ``min_cos=0`` is the plain bisector construction,
    which returns k directions even when the subspaces barely overlap; raise ``min_cos`` for a
    stricter intersection (ValueError if some layer keeps no direction).
    """
    _same_layers(a, b)
    if not 0.0 <= min_cos <= 1.0:
        raise ValueError(f"min_cos: expected a cosine in [0, 1], got {min_cos}")
    u, cos, vh = torch.linalg.svd(einops.einsum(a.vectors, b.vectors, "layer d i, layer d j -> layer i j"))
    kk = min(cos.shape[-1], k if k is not None else min(a.vectors.shape[-1], b.vectors.shape[-1]))
    bis = einops.einsum(a.vectors, u[..., :kk], "layer d i, layer i r -> layer d r") + einops.einsum(
        b.vectors, vh[..., :kk, :], "layer d j, layer r j -> layer d r"
    )
    keep = cos[..., :kk] >= max(min_cos, 1e-6)
    bis = bis / bis.norm(dim=-2, keepdim=True).clamp_min(1e-12) * keep[..., None, :]
    ranks = keep.sum(-1)
    return _compound(name or f"{a.name}_x_{b.name}", "mixed",
                     f"principal-vector bisectors of {a.name} and {b.name} with cos ≥ {min_cos}",
                     a.layers, (bis, ranks))


def project_away(a: Basis, forbidden: Basis, *, name: str | None = None) -> Basis:
    """span((I − FFᵀ) A): the part of A orthogonal to ``forbidden`` (directions of A inside F vanish)."""
    _same_layers(a, forbidden)
    p = la.projector_complement(forbidden.vectors)
    q, ranks = la.orthonormalize(einops.einsum(p, a.vectors, "layer d e, layer e k -> layer d k"))
    axis_kind = a.axis_kind if a.axis_kind != "ceiling" else "mixed"
    return _compound(name or f"{a.name}_not_{forbidden.name}", axis_kind,
                     f"{a.name} with span({forbidden.name}) projected out", a.layers, (q, ranks))


def complement(a: Basis, *, name: str | None = None) -> Basis:
    """The orthogonal complement of span(A) (rank d − k per layer)."""
    p = la.projector_complement(a.vectors)
    q, ranks = la.top_eigvecs(p, a.d_model, rtol=0.5)  # eigenvalues of a projector are 0 or 1
    return _compound(name or f"{a.name}_complement", "mixed", f"orthogonal complement of {a.name}",
                     a.layers, (q, ranks))


def _same_layers(a: Basis, b: Basis) -> None:
    if a.layers != b.layers:
        raise ValueError(f"b: bases {a.name!r} and {b.name!r} cover different layers ({a.layers} vs {b.layers})")
    if a.d_model != b.d_model:
        raise ValueError(f"b: bases {a.name!r} and {b.name!r} have different d_model")


def _compound(name: str, axis_kind: str, definition: str, layers: Sequence[int], qr: tuple) -> Basis:
    return Basis.from_padded(name, qr, family="compound", axis_kind=axis_kind, definition=definition,
                             layers=layers, source="interp")


def definitions_table(bases: Sequence[Basis]) -> pd.DataFrame:
    """One row per basis: name, family, axis_kind, source, definition, mean rank."""
    return pd.DataFrame(
        [
            {"name": b.name, "family": b.family, "axis_kind": b.axis_kind, "source": b.source,
             "definition": b.definition, "mean_rank": sum(b.ranks) / len(b.ranks)}
            for b in bases
        ]
    )
