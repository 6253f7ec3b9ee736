"""The candidate-basis library: per-layer orthonormal bases of the residual stream, each a hypothesis
for *where* tuning wrote, tagged with a family and an axis kind.

Axis kinds (seed 003, v7): ``write`` (built from what layers write into the residual: W_O, W_out,
OV, MLP maps), ``read`` (what layers read: W_Q/W_K/W_V/W_in/W_gate, the unembedding), ``mixed``
(activations, QK, compounds) and ``ceiling`` (built from the tuning delta itself). A read-side
basis scoring high on the weight delta means "this read direction coincides with a written one",
not "this explains the delta", so read-side rows are reported apart.

Conventions: a basis is ``Float[Tensor, "layer d_model k"]`` with orthonormal columns per layer,
zero-padded past that layer's rank. Residual views of weights follow
:mod:`interp.subspace.weight_diff`; models whose norms are not folded (``processed=False``) or that
normalise after attention/MLP (Gemma's ``ln*_post``) have the norm's elementwise weight applied
on the residual side, so a basis names the same residual directions either way. GQA: the
per-query-head tensors ``model.W_K``/``model.W_V`` (TL's ``repeat_interleave`` over the *head* axis:
query head h uses KV head ``h // (n_heads // n_kv_heads)``) are used for per-head circuits; raw
per-KV-head ``_W_K``/``_W_V`` for read subspaces. Rows of a fused ``[n_kv·d_head, d]`` matrix are
never repeated (seed 003's ``expand_rows_to`` mis-paired head dimensions).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import einops
import pandas as pd
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from interp.subspace import _linalg as la
from interp.subspace.captures import ProbeActivations

AXIS_KINDS = ("write", "read", "mixed", "ceiling")


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
    source: str = "interp"
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
        return _make(self, self.vectors[idx], torch.tensor([self.ranks[i] for i in idx]), layers=tuple(layers))


def _make(
    template: Basis | None,
    q: torch.Tensor,
    ranks: torch.Tensor,
    *,
    name: str | None = None,
    family: str | None = None,
    axis_kind: str | None = None,
    definition: str | None = None,
    layers: Sequence[int] | None = None,
    source: str | None = None,
) -> Basis:
    def pick(value, attr):  # noqa: ANN001, ANN202
        return value if value is not None else getattr(template, attr)

    q, ranks = la._trim(q, ranks)
    return Basis(
        name=pick(name, "name"),
        family=pick(family, "family"),
        axis_kind=pick(axis_kind, "axis_kind"),
        definition=pick(definition, "definition"),
        layers=tuple(pick(layers, "layers")),
        vectors=q,
        ranks=tuple(int(r) for r in ranks.tolist()),
        source=pick(source, "source") if (source is not None or template is not None) else "interp",
    )


def _new(name, family, axis_kind, definition, layers, qr, source="seed 003"):  # noqa: ANN001, ANN202
    q, ranks = qr
    if int(ranks.min()) < 1:
        bad = [layer for layer, r in zip(layers, ranks.tolist(), strict=True) if r < 1]
        raise ValueError(f"basis {name!r} has rank 0 at layers {bad}: its defining matrix is zero there")
    return _make(None, q, ranks, name=name, family=family, axis_kind=axis_kind, definition=definition,
                 layers=layers, source=source)


def random_basis(
    layers: Sequence[int], d_model: int, k: int, *, seed: int = 0, name: str = "random"
) -> Basis:
    """A Haar-random rank-k orthonormal basis per layer: QR of a Gaussian ``[layer, d, k]`` drawn from
    ``torch.Generator().manual_seed(seed)`` (signs fixed by ``diag(R) > 0``)."""
    _check_rank(k, d_model)
    gen = torch.Generator().manual_seed(seed)
    q = haar_bases(len(layers), d_model, k, gen)
    return Basis(name, "random", "mixed", f"Haar-random rank-{k} basis (seed {seed})", tuple(layers), q,
                 (k,) * len(layers), source="null")


def haar_bases(n: int, d: int, k: int, generator: torch.Generator) -> Float[torch.Tensor, "n d k"]:
    """n Haar-distributed d×k orthonormal matrices: QR of Gaussians, columns sign-fixed so diag(R) > 0."""
    g = torch.randn(n, d, k, generator=generator)
    q, r = torch.linalg.qr(g)
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def _check_rank(k: int, d: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k: expected an int rank, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k: rank must be at least 1, got {k}")
    if k > d:
        raise ValueError(f"k: rank {k} exceeds d_model {d}")


# --------------------------------------------------------------------------------------------
# residual views of the model's weights (norm weights applied on the residual side)


def _norm_w(module: torch.nn.Module) -> torch.Tensor | None:
    w = getattr(module, "w", None)
    return w.detach().float() if isinstance(w, torch.Tensor) else None


def _scale_rows(m: torch.Tensor, w: list[torch.Tensor | None]) -> torch.Tensor:
    if all(x is None for x in w):
        return m
    scale = torch.stack([x if x is not None else torch.ones(m.shape[-2]) for x in w])
    return m * scale[:, :, None]


def _finite(name: str, t: torch.Tensor) -> torch.Tensor:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"model: weight {name} contains NaN or infinite values")
    return t


class _Weights:
    """Lazily computed residual views and Gram matrices of one model's weights at some layers."""

    def __init__(self, model: HookedTransformer, layers: Sequence[int]) -> None:
        self.model, self.layers, self.cfg = model, list(layers), model.cfg
        self._cache: dict[str, torch.Tensor] = {}

    def _memo(self, key: str, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def read_scale(self, layers: Sequence[int], norm: str) -> list[torch.Tensor | None]:
        return [_norm_w(getattr(self.model.blocks[layer], norm)) for layer in layers]

    def write_scale(self, layers: Sequence[int], norm: str) -> list[torch.Tensor | None]:
        if not getattr(self.cfg, "use_normalization_before_and_after", False):
            return [None] * len(layers)
        return [_norm_w(getattr(self.model.blocks[layer], norm)) for layer in layers]

    def view(self, kind: str, layers: Sequence[int] | None = None) -> Float[torch.Tensor, "layer d c"]:
        """Residual view ``[layer, d_model, cols]`` of a weight kind (``attn.W_O`` etc.)."""
        layers = self.layers if layers is None else list(layers)
        key = f"{kind}@{layers}"
        return self._memo(key, lambda: self._view(kind, layers))

    def _view(self, kind: str, layers: list[int]) -> torch.Tensor:
        blocks = [self.model.blocks[layer] for layer in layers]
        if kind == "attn.W_O":
            w = torch.stack([b.attn.W_O.detach() for b in blocks]).float()
            m = einops.rearrange(w, "layer head d_head d_model -> layer d_model (head d_head)")
            return _finite(kind, _scale_rows(m, self.write_scale(layers, "ln1_post")))
        if kind == "mlp.W_out":
            w = torch.stack([b.mlp.W_out.detach() for b in blocks]).float()
            m = einops.rearrange(w, "layer d_mlp d_model -> layer d_model d_mlp")
            return _finite(kind, _scale_rows(m, self.write_scale(layers, "ln2_post")))
        if kind in ("attn.W_Q", "attn.W_K", "attn.W_V"):
            attr = kind.split(".")[1]
            raw = "_" + attr if attr != "W_Q" and hasattr(blocks[0].attn, "_" + attr) else attr
            w = torch.stack([getattr(b.attn, raw).detach() for b in blocks]).float()
            m = einops.rearrange(w, "layer head d_model d_head -> layer d_model (head d_head)")
            return _finite(kind, _scale_rows(m, self.read_scale(layers, "ln1")))
        if kind in ("mlp.W_in", "mlp.W_gate"):
            attr = kind.split(".")[1]
            m = torch.stack([getattr(b.mlp, attr).detach() for b in blocks]).float()
            return _finite(kind, _scale_rows(m, self.read_scale(layers, "ln2")))
        raise ValueError(f"kind: unknown weight kind {kind!r}")

    def gram(self, kind: str, layers: Sequence[int] | None = None) -> Float[torch.Tensor, "layer d d"]:
        layers = self.layers if layers is None else list(layers)
        return self._memo(f"G{kind}@{layers}", lambda: la.gram(self.view(kind, layers)))

    def read_gram(self, layers: Sequence[int] | None = None) -> Float[torch.Tensor, "layer d d"]:
        kinds = ("attn.W_Q", "attn.W_K", "attn.W_V", "mlp.W_in", "mlp.W_gate")
        layers = self.layers if layers is None else list(layers)
        return self._memo(f"R@{layers}", lambda: sum(self.gram(kind, layers) for kind in kinds))

    def write_gram(self, layers: Sequence[int] | None = None) -> Float[torch.Tensor, "layer d d"]:
        layers = self.layers if layers is None else list(layers)
        return self._memo(f"W@{layers}", lambda: self.gram("attn.W_O", layers) + self.gram("mlp.W_out", layers))

    def unembed_gram(self) -> Float[torch.Tensor, "d d"]:
        def compute() -> torch.Tensor:
            w_u = self.model.W_U.detach().float()
            w = _norm_w(self.model.ln_final) if hasattr(self.model, "ln_final") else None
            if w is not None:
                w_u = w_u * w[:, None]
            return _finite("unembed.W_U", einops.einsum(w_u, w_u, "d vocab, e vocab -> d e"))

        return self._memo("unembed", compute)


# --------------------------------------------------------------------------------------------
# weight-derived bases

WEIGHT_BASES = (
    "write", "attn_write", "mlp_write", "global_write",
    "write_not_lm_head_read", "write_not_global_read", "write_not_downstream_read",
    "attn_ov_write", "attention_sink", "mlp_roundtrip_write", "qk_circuit",
    "mlp_up_read", "mlp_gate_read", "attn_qkv_read", "kv_super", "input_super",
    "global_read", "lm_head_read", "logits_null",
)


def weight_bases(
    model: HookedTransformer,
    layers: Sequence[int],
    k: int = 8,
    *,
    k_broad: int = 64,
    include: Sequence[str] | None = None,
) -> list[Basis]:
    """The weight-derived bases of seed 003 at ``layers`` (all of :data:`WEIGHT_BASES`, or ``include``).

    Each is the top-k eigenvectors of a PSD "energy" matrix in residual space (for M Mᵀ: the top-k
    left singular vectors of M); the definition column states which. ``k_broad`` is the rank of the
    read subspaces that the ``write_not_*`` bases are projected away from.
    """
    d = model.cfg.d_model
    _check_rank(k, d)
    _check_rank(k_broad, max(k_broad, 1))
    k_broad = min(k_broad, d)
    layers = list(layers)
    names = WEIGHT_BASES if include is None else tuple(include)
    unknown = [n for n in names if n not in WEIGHT_BASES]
    if unknown:
        raise ValueError(f"include: unknown weight bases {unknown}; choose from {WEIGHT_BASES}")
    w = _Weights(model, layers)
    n_all = model.cfg.n_layers
    L = len(layers)
    out = []

    def top(g: torch.Tensor, kk: int = k, largest: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        return la.top_eigvecs(g, kk, largest=largest)

    def same(g: torch.Tensor, kk: int = k, largest: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        q, r = top(g[None], kk, largest)
        return q.expand(L, -1, -1), r.expand(L)

    def projected(g: torch.Tensor, forbid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = la.projector_complement(forbid)
        return top(einops.einsum(p, g, p, "layer d e, layer e f, layer g f -> layer d g"))

    lazy: dict[str, Callable[[], tuple[torch.Tensor, torch.Tensor]]] = {}
    lazy["write"] = lambda: top(w.write_gram())
    lazy["attn_write"] = lambda: top(w.gram("attn.W_O"))
    lazy["mlp_write"] = lambda: top(w.gram("mlp.W_out"))
    lazy["global_write"] = lambda: same(w.write_gram(range(n_all)).sum(0))
    lazy["global_read"] = lambda: same(w.read_gram(range(n_all)).sum(0) + w.unembed_gram())
    lazy["lm_head_read"] = lambda: same(w.unembed_gram())
    lazy["logits_null"] = lambda: same(w.unembed_gram(), largest=False)

    def lm_broad() -> torch.Tensor:
        return same(w.unembed_gram(), k_broad)[0]

    def global_broad() -> torch.Tensor:
        return same(w.read_gram(range(n_all)).sum(0) + w.unembed_gram(), k_broad)[0]

    def downstream_broad() -> torch.Tensor:
        reads = w.read_gram(range(n_all))  # [all layers, d, d]
        after = reads.flip(0).cumsum(0).flip(0) - reads  # Σ_{l' > l} R_l'
        return top(after[layers] + w.unembed_gram(), k_broad)[0]

    lazy["write_not_lm_head_read"] = lambda: projected(w.write_gram(), lm_broad())
    lazy["write_not_global_read"] = lambda: projected(w.write_gram(), global_broad())
    lazy["write_not_downstream_read"] = lambda: projected(w.write_gram(), downstream_broad())

    def ov_write() -> tuple[torch.Tensor, torch.Tensor]:
        ov = model.OV  # FactoredMatrix [layer, head, d, d] = W_V W_O per query head (GQA-expanded W_V)
        a, b = ov.A[layers].float(), ov.B[layers].float()
        a = _scale_rows_heads(a, w.read_scale(layers, "ln1"))
        vtv = einops.einsum(a, a, "layer head d i, layer head d j -> layer head i j")
        g = einops.einsum(b, vtv, b, "layer head i d, layer head i j, layer head j e -> layer d e")
        return top(_scale_gram(g, w.write_scale(layers, "ln1_post")))

    def qk() -> tuple[torch.Tensor, torch.Tensor]:
        fm = model.QK  # FactoredMatrix [layer, head, d, d] = W_Q W_Kᵀ per query head
        a, b = fm.A[layers].float(), fm.B[layers].float()
        a = _scale_rows_heads(a, w.read_scale(layers, "ln1"))
        b = _scale_rows_heads(b.transpose(-1, -2), w.read_scale(layers, "ln1")).transpose(-1, -2)
        kkt = einops.einsum(b, b, "layer head i d, layer head j d -> layer head i j")
        return top(einops.einsum(a, kkt, a, "layer head d i, layer head i j, layer head e j -> layer d e"))

    def sink() -> tuple[torch.Tensor, torch.Tensor]:
        bos = model.tokenizer.bos_token_id if model.tokenizer is not None else None
        if bos is None:
            raise ValueError("model: has no BOS token, so the attention_sink basis is undefined")
        e_bos = model.W_E[bos].detach().float()
        vecs = []
        for layer in layers:  # one tiny matmul per layer: ln1(e_bos) through every head's OV
            attn = model.blocks[layer].attn  # W_V: per query head (GQA-expanded), W_O: per head
            x = model.blocks[layer].ln1(e_bos[None, None])[0, 0].float()
            v = einops.einsum(x, attn.W_V.detach().float(), attn.W_O.detach().float(), "d, head d i, head i e -> head e")
            vecs.append(v)
        s = einops.rearrange(torch.stack(vecs), "layer head d -> layer d head")
        return la.orthonormalize(_scale_rows(s, w.write_scale(layers, "ln1_post")), k)

    def roundtrip() -> tuple[torch.Tensor, torch.Tensor]:
        m = einops.einsum(w.view("mlp.W_in"), w.view("mlp.W_out"), "layer d m, layer e m -> layer d e")
        return top(einops.einsum(m, m, "layer d e, layer d f -> layer e f"))

    lazy["attn_ov_write"] = ov_write
    lazy["qk_circuit"] = qk
    lazy["attention_sink"] = sink
    lazy["mlp_roundtrip_write"] = roundtrip
    lazy["mlp_up_read"] = lambda: top(w.gram("mlp.W_in"))
    lazy["mlp_gate_read"] = lambda: top(w.gram("mlp.W_gate"))
    lazy["attn_qkv_read"] = lambda: top(w.gram("attn.W_Q") + w.gram("attn.W_K") + w.gram("attn.W_V"))
    lazy["kv_super"] = lambda: top(w.gram("attn.W_K") + w.gram("attn.W_V"))
    lazy["input_super"] = lambda: top(w.read_gram())

    for name in names:
        family, axis, definition = _WEIGHT_META[name]
        out.append(_new(name, family, axis, definition.format(k_broad=k_broad), layers, lazy[name]()))
    return out


def _scale_rows_heads(a: torch.Tensor, w: list[torch.Tensor | None]) -> torch.Tensor:
    """Scale the d_model rows of ``[layer, head, d_model, x]`` by a per-layer norm weight."""
    if all(x is None for x in w):
        return a
    scale = torch.stack([x if x is not None else torch.ones(a.shape[-2]) for x in w])
    return a * scale[:, None, :, None]


def _scale_gram(g: torch.Tensor, w: list[torch.Tensor | None]) -> torch.Tensor:
    if all(x is None for x in w):
        return g
    scale = torch.stack([x if x is not None else torch.ones(g.shape[-1]) for x in w])
    return g * scale[:, :, None] * scale[:, None, :]


_WEIGHT_META = {
    "write": ("W:write", "write", "top left singular vectors of [W_O | W_outᵀ] (residual writes of the layer)"),
    "attn_write": ("W:write", "write", "top left singular vectors of W_O viewed as [d_model, heads·d_head]"),
    "mlp_write": ("W:write", "write", "top left singular vectors of W_outᵀ [d_model, d_mlp]"),
    "global_write": ("W:write", "write", "top eigenvectors of Σ over all layers of the write Gram W Wᵀ"),
    "write_not_lm_head_read": (
        "W:write-not-read", "write", "layer write with the top-{k_broad} unembedding read directions projected out"
    ),
    "write_not_global_read": (
        "W:write-not-read", "write", "layer write with the top-{k_broad} global read (all layers + W_U) projected out"
    ),
    "write_not_downstream_read": (
        "W:write-not-read", "write",
        "layer write with the top-{k_broad} read directions of all later layers + W_U projected out",
    ),
    "attn_ov_write": (
        "W:OV", "write", "top output singular vectors of the per-head OV maps W_V^h W_O^h stacked over heads (GQA-paired)"
    ),
    "attention_sink": ("W:OV", "write", "span of ln1(e_BOS) W_V^h W_O^h over heads h (what each head writes from BOS)"),
    "mlp_roundtrip_write": (
        "W:MLP", "write", "top output singular vectors of the linearised MLP map W_in W_out (gate ignored)"
    ),
    "qk_circuit": (
        "W:QK", "mixed", "top query-side singular vectors of the per-head QK maps W_Q^h W_K^hᵀ stacked over heads"
    ),
    "mlp_up_read": ("W:read", "read", "top left singular vectors of W_in [d_model, d_mlp] (up_proj reads)"),
    "mlp_gate_read": ("W:read", "read", "top left singular vectors of W_gate (gate_proj reads)"),
    "attn_qkv_read": ("W:read", "read", "top left singular vectors of [W_Q | W_K | W_V] (per-KV-head K, V)"),
    "kv_super": ("W:read", "read", "top left singular vectors of [W_K | W_V] (per-KV-head)"),
    "input_super": ("W:read", "read", "top left singular vectors of [W_Q | W_K | W_V | W_in | W_gate]"),
    "global_read": ("W:read", "read", "top eigenvectors of Σ over all layers of the read Gram + W_U W_Uᵀ"),
    "lm_head_read": ("W:unembed", "read", "top left singular vectors of W_U (what the logits read)"),
    "logits_null": ("W:unembed", "read", "bottom left singular vectors of W_U (directions the logits barely read)"),
}


# --------------------------------------------------------------------------------------------
# activation-derived bases

ACTIVATION_BASES = (
    "layer_clean_resid_pca", "global_clean_resid_pca", "persona_contrast",
    "attn_min_taskdiff", "attn_max_taskdiff", "attn_diff_taskdiff",
    "chars_clusters", "rotation_contrast", "churn", "gate_active_written", "gate_kernel",
)


def activation_bases(
    acts: ProbeActivations, k: int = 8, *, model: HookedTransformer | None = None, include: Sequence[str] | None = None
) -> list[Basis]:
    """The activation-derived bases of seed 003 from base-model activations on the fit prompts.

    ``gate_kernel`` needs ``model`` (its W_in, W_out); it is skipped when ``model`` is None.
    """
    d = acts.clean.shape[-1]
    _check_rank(k, d)
    names = ACTIVATION_BASES if include is None else tuple(include)
    unknown = [n for n in names if n not in ACTIVATION_BASES]
    if unknown:
        raise ValueError(f"include: unknown activation bases {unknown}; choose from {ACTIVATION_BASES}")
    layers = list(acts.layers)
    L = len(layers)
    lazy: dict[str, Callable[[], tuple[torch.Tensor, torch.Tensor]]] = {}
    contrast = acts.positive - acts.negative

    lazy["layer_clean_resid_pca"] = lambda: la.pca(acts.clean, k)

    def global_clean() -> tuple[torch.Tensor, torch.Tensor]:
        q, r = la.pca(einops.rearrange(acts.clean, "layer n d -> 1 (layer n) d"), k)
        return q.expand(L, -1, -1), r.expand(L)

    lazy["global_clean_resid_pca"] = global_clean
    lazy["persona_contrast"] = lambda: la.pca(contrast, k, center=False)

    def attn_weighted(kind: str) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        def build() -> tuple[torch.Tensor, torch.Tensor]:
            diff = acts.positive_tokens - acts.negative_tokens  # [layer, n, t, d]
            a, b = acts.positive_attn, acts.negative_attn
            weight = {"min": torch.minimum(a, b), "max": torch.maximum(a, b), "diff": (a - b).abs()}[kind]
            samples = diff * weight.clamp_min(0).sqrt()[..., None]
            return la.pca(einops.rearrange(samples, "layer n t d -> layer (n t) d"), k, center=False)

        return build

    for kind in ("min", "max", "diff"):
        lazy[f"attn_{kind}_taskdiff"] = attn_weighted(kind)

    def clusters() -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.cat([acts.clean, acts.positive, acts.negative], dim=1)
        centroids = la.kmeans(pooled, min(k + 1, pooled.shape[1]))
        return la.pca(centroids, k)

    lazy["chars_clusters"] = clusters

    def rotation() -> tuple[torch.Tensor, torch.Tensor]:
        x, y = acts.negative, acts.positive
        joint, _ = la.pca(torch.cat([x, y], dim=1), min(32, x.shape[1] + y.shape[1] - 1, d))
        xr = einops.einsum(x - x.mean(1, keepdim=True), joint, "layer n d, layer d r -> layer n r")
        yr = einops.einsum(y - y.mean(1, keepdim=True), joint, "layer n d, layer d r -> layer n r")
        u, _, vh = torch.linalg.svd(einops.einsum(xr, yr, "layer n a, layer n b -> layer a b"))
        rot = u @ vh
        u_skew, _, _ = torch.linalg.svd(rot - rot.transpose(-1, -2))
        return la.orthonormalize(einops.einsum(joint, u_skew[..., :k], "layer d r, layer r k -> layer d k"), k)

    lazy["rotation_contrast"] = rotation
    lazy["churn"] = lambda: la.pca(acts.clean - acts.clean_pre, k)
    lazy["gate_active_written"] = lambda: la.pca(acts.mlp_out, k)

    def gate_kernel() -> tuple[torch.Tensor, torch.Tensor]:
        w = _Weights(model, layers)
        w_in = w.view("mlp.W_in")
        w_out = w.view("mlp.W_out")
        m = einops.einsum(w_in, acts.gate_mean, w_out, "layer d m, layer m, layer e m -> layer d e")
        return la.top_eigvecs(einops.einsum(m, m, "layer d e, layer d f -> layer e f"), k)

    lazy["gate_kernel"] = gate_kernel
    out = []
    for name in names:
        if name == "gate_kernel" and model is None:
            continue
        family, axis, definition = _ACT_META[name]
        out.append(_new(name, family, axis, definition, layers, lazy[name]()))
    return out


_ACT_META = {
    "layer_clean_resid_pca": ("act:baseline", "mixed", "per-layer PCA (centred) of clean last-token resid_post"),
    "global_clean_resid_pca": ("act:baseline", "mixed", "PCA of clean last-token resid_post pooled over the swept layers"),
    "persona_contrast": (
        "act:persona", "mixed", "uncentred PCA of sycophantic − critical persona resid_post at the last token"
    ),
    "attn_min_taskdiff": (
        "act:attn-selected", "mixed",
        "uncentred PCA of token-level persona diffs weighted by min(pos, neg) last-token attention",
    ),
    "attn_max_taskdiff": (
        "act:attn-selected", "mixed",
        "uncentred PCA of token-level persona diffs weighted by max(pos, neg) last-token attention",
    ),
    "attn_diff_taskdiff": (
        "act:attn-selected", "mixed",
        "uncentred PCA of token-level persona diffs weighted by |pos − neg| last-token attention",
    ),
    "chars_clusters": (
        "act:cluster", "mixed", "PCA of k+1 k-means centroids of clean + persona activations (rank k, not k−1)"
    ),
    "rotation_contrast": (
        "act:rotation", "mixed", "top singular vectors of the skew part R − Rᵀ of the critical→sycophantic Procrustes rotation"
    ),
    "churn": ("act:clean", "mixed", "PCA of the layer's own update resid_post − resid_pre on clean prompts"),
    "gate_active_written": ("act:MLP", "mixed", "PCA of the clean MLP output (act(x W_gate) ⊙ x W_in) W_out"),
    "gate_kernel": ("W:MLP", "write", "top output singular vectors of W_in diag(E[act(x W_gate)]) W_out on clean prompts"),
}


# --------------------------------------------------------------------------------------------
# set operations


def union(a: Basis, b: Basis, *, name: str | None = None, k: int | None = None) -> Basis:
    """span(A) + span(B): orthonormal basis of the concatenated columns (rank ≤ k_A + k_B, or ``k``)."""
    _same_layers(a, b)
    q, ranks = la.orthonormalize(torch.cat([a.vectors, b.vectors], dim=-1), k)
    return _new(name or f"{a.name}_union_{b.name}", "compound", "mixed",
                f"orthonormal union span({a.name}) + span({b.name})", a.layers, (q, ranks), source="interp")


def intersection(a: Basis, b: Basis, *, k: int | None = None, min_cos: float = 0.0, name: str | None = None) -> Basis:
    """Approximate span(A) ∩ span(B): bisectors (A uᵢ + B vᵢ)/‖·‖ of the principal-vector pairs
    (SVD AᵀB = U diag(cos θ) Vᵀ) with cos θᵢ ≥ ``min_cos``, the k most aligned (Björck–Golub).

    The bisectors are mutually orthogonal. ``min_cos=0`` reproduces seed 003's bisector construction,
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
    return _new(name or f"{a.name}_x_{b.name}", "compound", "mixed",
                f"principal-vector bisectors of {a.name} and {b.name} with cos ≥ {min_cos}",
                a.layers, (bis, ranks), source="interp")


def project_away(a: Basis, forbidden: Basis, *, name: str | None = None) -> Basis:
    """span((I − FFᵀ) A): the part of A orthogonal to ``forbidden`` (directions of A inside F vanish)."""
    _same_layers(a, forbidden)
    p = la.projector_complement(forbidden.vectors)
    q, ranks = la.orthonormalize(einops.einsum(p, a.vectors, "layer d e, layer e k -> layer d k"))
    return _new(name or f"{a.name}_not_{forbidden.name}", "compound", a.axis_kind if a.axis_kind != "ceiling" else "mixed",
                f"{a.name} with span({forbidden.name}) projected out", a.layers, (q, ranks), source="interp")


def complement(a: Basis, *, name: str | None = None) -> Basis:
    """The orthogonal complement of span(A) (rank d − k per layer)."""
    p = la.projector_complement(a.vectors)
    q, ranks = la.top_eigvecs(p, a.d_model, rtol=0.5)  # eigenvalues of a projector are 0 or 1
    return _new(name or f"{a.name}_complement", "compound", "mixed", f"orthogonal complement of {a.name}",
                a.layers, (q, ranks), source="interp")


def _same_layers(a: Basis, b: Basis) -> None:
    if a.layers != b.layers:
        raise ValueError(f"b: bases {a.name!r} and {b.name!r} cover different layers ({a.layers} vs {b.layers})")
    if a.d_model != b.d_model:
        raise ValueError(f"b: bases {a.name!r} and {b.name!r} have different d_model")


def compound_bases(by_name: Mapping[str, Basis], k: int = 8) -> list[Basis]:
    """The compound hypotheses of seed 003 (and one complement), from bases already built."""
    out = []
    if {"write_not_downstream_read", "persona_contrast"} <= set(by_name):
        out.append(union(by_name["write_not_downstream_read"], by_name["persona_contrast"],
                         name="WNR_union_persona_contrast"))
    if {"qk_circuit", "chars_clusters"} <= set(by_name):
        out.append(intersection(by_name["qk_circuit"], by_name["chars_clusters"], k=k, name="qk_x_chars_clusters"))
    if {"persona_contrast", "layer_clean_resid_pca"} <= set(by_name):
        out.append(project_away(by_name["persona_contrast"], by_name["layer_clean_resid_pca"],
                                name="persona_contrast_not_clean_pca"))
    return out


# --------------------------------------------------------------------------------------------
# ceilings


def activation_ceiling(
    label_fit: Float[torch.Tensor, "layer n d"], layers: Sequence[int], k: int = 8
) -> Basis:
    """Top-k eigenvectors of the fit-half label's normalised second moment (1/n) Σ δ̂ δ̂ᵀ: the exact
    maximiser of R_act on the fit prompts (an uncentred PCA of the unit-normalised label)."""
    from interp.subspace.scores import activation_target

    _check_rank(k, label_fit.shape[-1])
    t = activation_target(label_fit, name="label_fit")
    return _new("act_ceiling", "ceiling", "ceiling",
                "top-k eigenvectors of the fit-half label's normalised Gram (maximises fit R_act)",
                layers, la.top_eigvecs(t, k, rtol=0.0), source="label")


def weight_ceiling(delta: Mapping[str, torch.Tensor], layers: Sequence[int], k: int = 8) -> Basis:
    """Top-k left singular vectors of the Frobenius-balanced write delta [ΔW_O/‖ΔW_O‖ | ΔW_outᵀ/‖ΔW_out‖]:
    the exact maximiser of R_w_combined (Ky Fan)."""
    from interp.subspace.scores import weight_targets

    t = weight_targets(delta, layers)["combined"]
    _check_rank(k, t.shape[-1])
    return _new("weight_ceiling", "ceiling", "ceiling",
                "top-k left singular vectors of the Frobenius-balanced residual-write ΔW (maximises R_w_combined)",
                layers, la.top_eigvecs(t, k), source="delta")


def definitions_table(bases: Sequence[Basis]) -> pd.DataFrame:
    """One row per basis: name, family, axis_kind, source, definition, mean rank."""
    return pd.DataFrame(
        [
            {"name": b.name, "family": b.family, "axis_kind": b.axis_kind, "source": b.source,
             "definition": b.definition, "mean_rank": sum(b.ranks) / len(b.ranks)}
            for b in bases
        ]
    )


__all__ = [
    "ACTIVATION_BASES", "AXIS_KINDS", "WEIGHT_BASES", "Basis", "activation_bases",
    "activation_ceiling", "complement", "compound_bases", "definitions_table", "haar_bases",
    "intersection", "project_away", "random_basis", "union", "weight_bases", "weight_ceiling",
]
