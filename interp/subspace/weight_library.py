"""The weight-derived basis library: one :class:`~interp.subspace.basis.Recipe` per basis in
:data:`WEIGHT_BASES`, each the top-k eigenvectors of a PSD "energy" matrix in residual space built from
the base model's weights (for M Mᵀ: the top-k left singular vectors of M).

Residual views of weights follow :mod:`interp.subspace.weight_diff`; models whose norms are not
folded (``processed=False``) or that normalise after attention/MLP (Gemma's ``ln*_post``) have the
norm's elementwise weight applied on the residual side, so a basis names the same residual
directions either way. GQA: the per-query-head tensors ``model.W_K``/``model.W_V`` (TL's
``repeat_interleave`` over the *head* axis: query head h uses KV head ``h // (n_heads // n_kv_heads)``)
are used for per-head circuits; raw per-KV-head ``_W_K``/``_W_V`` for read subspaces. Rows of a fused
``[n_kv·d_head, d]`` matrix are never repeated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cached_property, partial
from types import MappingProxyType

import einops
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from interp.pair import is_streamed
from interp.subspace import _linalg as la
from interp.subspace.basis import Basis, Recipe, check_rank, register, select_recipes

READ_KINDS = ("attn.W_Q", "attn.W_K", "attn.W_V", "mlp.W_in", "mlp.W_gate")


def read_kinds(cfg: object) -> tuple[str, ...]:
    """The weight kinds that read the residual stream in a model with config ``cfg`` (no ``W_gate``
    without a gated MLP)."""
    return READ_KINDS if getattr(cfg, "gated_mlp", False) else tuple(k for k in READ_KINDS if k != "mlp.W_gate")


QR = tuple[torch.Tensor, torch.Tensor]  # a padded orthonormal basis and its ranks
_VOCAB_CHUNK = 8192  # unembedding columns per float64 block of the unembedding Gram

__all__ = ["WEIGHT_BASES", "ModelWeights", "WeightContext", "context_bases", "default_weight_bases", "post_norm_gains",
           "weight_bases"]


# --------------------------------------------------------------------------------------------
# residual views of the model's weights (norm weights applied on the residual side)


def _norm_w(module: torch.nn.Module) -> torch.Tensor | None:
    w = getattr(module, "w", None)
    return w.detach().float() if isinstance(w, torch.Tensor) else None


def _stack_scale(w: list[torch.Tensor | None], d: int) -> torch.Tensor | None:
    if all(x is None for x in w):
        return None
    return torch.stack([x if x is not None else torch.ones(d) for x in w])


def _scale_rows(m: torch.Tensor, w: list[torch.Tensor | None]) -> torch.Tensor:
    """Scale the d_model rows of ``[layer, d_model, x]`` by a per-layer norm weight."""
    scale = _stack_scale(w, m.shape[-2])
    return m if scale is None else m * scale[:, :, None]


def _scale_rows_heads(a: torch.Tensor, w: list[torch.Tensor | None]) -> torch.Tensor:
    """Scale the d_model rows of ``[layer, head, d_model, x]`` by a per-layer norm weight."""
    scale = _stack_scale(w, a.shape[-2])
    return a if scale is None else a * scale[:, None, :, None]


def _scale_gram(g: torch.Tensor, w: list[torch.Tensor | None]) -> torch.Tensor:
    scale = _stack_scale(w, g.shape[-1])
    return g if scale is None else g * scale[:, :, None] * scale[:, None, :]


def _finite(name: str, t: torch.Tensor) -> torch.Tensor:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"model: weight {name} contains NaN or infinite values")
    return t


class ModelWeights:
    """Lazily computed residual views and Gram matrices of one model's weights at some layers.

    What the recipes read of it: per-layer Grams (:meth:`gram`, :meth:`read_gram`, :meth:`write_gram`)
    and views at ``layers``, the sums over every layer (:meth:`read_gram_total`,
    :meth:`write_gram_total`, :meth:`read_gram_after`) and :meth:`unembed_gram`; a streamed model
    supplies the same quantities accumulated layer by layer (:mod:`interp.streaming.subspace`).
    """

    def __init__(self, model: HookedTransformer, layers: Sequence[int]) -> None:
        self.model, self.layers, self.cfg = model, list(layers), model.cfg
        self.all_layers = list(range(model.cfg.n_layers))
        self._cache: dict[str, torch.Tensor] = {}

    def _memo(self, key: str, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def read_scale(self, layers: Sequence[int], norm: str) -> list[torch.Tensor | None]:
        """The pre-norm weight (``ln1``/``ln2``) of each layer, None where it is folded in."""
        return [_norm_w(getattr(self.model.blocks[layer], norm)) for layer in layers]

    def write_scale(self, layers: Sequence[int], norm: str) -> list[torch.Tensor | None]:
        """The post-norm weight (``ln1_post``/``ln2_post``) of each layer; None without post-norms."""
        if not getattr(self.cfg, "use_normalization_before_and_after", False):
            return [None] * len(layers)
        return [_norm_w(getattr(self.model.blocks[layer], norm)) for layer in layers]

    def view(self, kind: str, layers: Sequence[int] | None = None) -> Float[torch.Tensor, "layer d c"]:
        """Residual view ``[layer, d_model, cols]`` of a weight kind (``attn.W_O`` etc.)."""
        layers = self.layers if layers is None else list(layers)
        return self._memo(f"{kind}@{layers}", lambda: self._view(kind, layers))

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
            if kind not in read_kinds(self.cfg):
                raise ValueError("model: has no gated MLP (no W_gate), so the gate's read subspace is undefined")
            attr = kind.split(".")[1]
            m = torch.stack([getattr(b.mlp, attr).detach() for b in blocks]).float()
            return _finite(kind, _scale_rows(m, self.read_scale(layers, "ln2")))
        raise ValueError(f"kind: unknown weight kind {kind!r}")

    def gram(self, kind: str, layers: Sequence[int] | None = None) -> Float[torch.Tensor, "layer d d"]:
        layers = self.layers if layers is None else list(layers)
        return self._memo(f"G{kind}@{layers}", lambda: la.gram(self.view(kind, layers)))

    def read_gram(self, layers: Sequence[int] | None = None) -> Float[torch.Tensor, "layer d d"]:
        """Σ over the read kinds (W_Q, W_K, W_V, W_in, W_gate) of their Gram matrices."""
        layers = self.layers if layers is None else list(layers)
        return self._memo(f"R@{layers}", lambda: sum(self.gram(kind, layers) for kind in read_kinds(self.cfg)))

    def write_gram(self, layers: Sequence[int] | None = None) -> Float[torch.Tensor, "layer d d"]:
        """W_O W_Oᵀ + W_outᵀ W_out in residual space."""
        layers = self.layers if layers is None else list(layers)
        return self._memo(f"W@{layers}", lambda: self.gram("attn.W_O", layers) + self.gram("mlp.W_out", layers))

    def read_gram_total(self) -> Float[torch.Tensor, "d d"]:
        """Σ over every layer of the model of the read Gram."""
        return self._memo("R total", lambda: self.read_gram(self.all_layers).sum(0))

    def write_gram_total(self) -> Float[torch.Tensor, "d d"]:
        """Σ over every layer of the model of the write Gram."""
        return self._memo("W total", lambda: self.write_gram(self.all_layers).sum(0))

    def read_gram_after(self, layers: Sequence[int]) -> Float[torch.Tensor, "layer d d"]:
        """Σ_{l' > l} of the read Gram, for each ``l`` in ``layers``."""
        reads = self.read_gram(self.all_layers)  # [all layers, d, d]
        return (reads.flip(0).cumsum(0).flip(0) - reads)[list(layers)]

    def unembed_view(self) -> Float[torch.Tensor, "d vocab"]:
        """W_U with the final norm's weight on the residual side."""
        w_u = self.model.W_U.detach().float()
        w = _norm_w(self.model.ln_final) if hasattr(self.model, "ln_final") else None
        return w_u * w[:, None] if w is not None else w_u

    def unembed_gram(self) -> Float[torch.Tensor, "d d"]:
        """W_U W_Uᵀ (with the final norm's weight on the residual side), summed in float64 over blocks of
        the vocabulary and kept in float64: the bottom of its spectrum (``logits_null``) lies far below
        the float32 rounding of its largest entries."""

        def compute() -> torch.Tensor:
            w_u = self.unembed_view()
            blocks = (b.double() for b in w_u.split(_VOCAB_CHUNK, 1))
            gram = sum((einops.einsum(b, b, "d vocab, e vocab -> d e") for b in blocks),
                       torch.zeros(w_u.shape[0], w_u.shape[0], dtype=torch.float64))
            return _finite("unembed.W_U", gram)

        return self._memo("unembed", compute)


def post_norm_gains(model: HookedTransformer, layers: Sequence[int]) -> dict[str, torch.Tensor] | None:
    """The elementwise gains ``[layer, d_model]`` of the norms applied after attention (``ln1_post``) and
    after the MLP (``ln2_post``), keyed by the write kind they scale (``attn.W_O``, ``mlp.W_out``); None
    for models without post-norms. Residual += gain ⊙ norm(x W_O): a write direction v of W_O lands on
    gain ⊙ v in the residual stream (up to the norm's per-token scalar)."""
    weights = ModelWeights(model, layers)
    out = {}
    for kind, norm in (("attn.W_O", "ln1_post"), ("mlp.W_out", "ln2_post")):
        scale = _stack_scale(weights.write_scale(layers, norm), model.cfg.d_model)
        if scale is not None:
            out[kind] = scale
    return out or None


# --------------------------------------------------------------------------------------------
# the library


class WeightContext:
    """What the weight recipes build from: the model's weights at ``layers``, the rank ``k`` and the
    rank ``k_broad`` of the broad read subspaces that ``write_not_*`` bases are projected away from.

    ``weights``: where the Grams come from (default ``ModelWeights(model, layers)``; a streamed model
    passes its accumulated ones)."""

    def __init__(self, model: HookedTransformer | None, layers: Sequence[int], k: int, k_broad: int, *,
                 weights: ModelWeights | None = None) -> None:
        self.model, self.layers, self.k, self.k_broad = model, list(layers), k, k_broad
        self.weights = ModelWeights(model, layers) if weights is None else weights
        self.all_layers = list(self.weights.all_layers)

    def format_fields(self) -> dict[str, object]:
        return {"k": self.k, "k_broad": self.k_broad}

    def top(self, g: torch.Tensor, k: int | None = None, *, largest: bool = True) -> QR:
        """Top-k (or bottom-k) eigenvectors of per-layer PSD matrices."""
        return la.top_eigvecs(g, self.k if k is None else k, largest=largest)

    def same(self, g: torch.Tensor, k: int | None = None, *, largest: bool = True) -> QR:
        """Top-k eigenvectors of one ``[d, d]`` matrix, the same at every layer."""
        q, r = self.top(g[None], k, largest=largest)
        n = len(self.layers)
        return q.expand(n, -1, -1), r.expand(n)

    def projected(self, g: torch.Tensor, forbid: torch.Tensor) -> QR:
        """Top-k eigenvectors of (I − FFᵀ) G (I − FFᵀ) per layer."""
        p = la.projector_complement(forbid)
        return self.top(einops.einsum(p, g, p, "layer d e, layer e f, layer g f -> layer d g"))

    @cached_property
    def lm_broad(self) -> torch.Tensor:
        """Top-``k_broad`` read directions of the unembedding."""
        return self.same(self.weights.unembed_gram(), self.k_broad)[0]

    def bos_embedding(self) -> Float[torch.Tensor, " d"]:
        """The embedding of the BOS token (ValueError for a model without one)."""
        model = self.model
        bos = model.tokenizer.bos_token_id if model.tokenizer is not None else None
        if bos is None:
            raise ValueError("model: has no BOS token, so the attention_sink basis is undefined")
        return model.W_E[bos].detach().float()

    @cached_property
    def global_read_gram(self) -> torch.Tensor:
        """Σ over all layers of the read Gram, plus W_U W_Uᵀ."""
        return self.weights.read_gram_total() + self.weights.unembed_gram()

    @cached_property
    def global_broad(self) -> torch.Tensor:
        """Top-``k_broad`` global read directions (all layers + W_U)."""
        return self.same(self.global_read_gram, self.k_broad)[0]

    @cached_property
    def downstream_broad(self) -> torch.Tensor:
        """Top-``k_broad`` read directions of all layers after each layer, plus W_U."""
        after = self.weights.read_gram_after(self.layers)  # Σ_{l' > l} R_l'
        return self.top(after + self.weights.unembed_gram(), self.k_broad)[0]


_LIBRARY: dict[str, Recipe] = {}
_weight = partial(register, _LIBRARY)  # @_weight(family, axis_kind, definition) registers the function below it


def _top_of(name: str, family: str, axis_kind: str, definition: str, *kinds: str) -> Callable[[WeightContext], QR]:
    """Register the basis "top-k left singular vectors of the weight kinds side by side" (Σ of their Grams)."""
    return _weight(family, axis_kind, definition, name=name)(
        lambda c: c.top(sum(c.weights.gram(kind) for kind in kinds))
    )


@_weight("W:write", "write", "top left singular vectors of [W_O | W_outᵀ] (residual writes of the layer)")
def write(c: WeightContext) -> QR:
    return c.top(c.weights.write_gram())


_top_of("attn_write", "W:write", "write", "top left singular vectors of W_O viewed as [d_model, heads·d_head]",
        "attn.W_O")
_top_of("mlp_write", "W:write", "write", "top left singular vectors of W_outᵀ [d_model, d_mlp]", "mlp.W_out")


@_weight("W:write", "write", "top eigenvectors of Σ over all layers of the write Gram W Wᵀ")
def global_write(c: WeightContext) -> QR:
    return c.same(c.weights.write_gram_total())


def _write_not(name: str, forbidden: str, what: str) -> None:
    """Register "the layer's write with the broad read subspace ``WeightContext.<forbidden>`` projected out"."""
    _weight("W:write-not-read", "write", f"layer write with the top-{{k_broad}} {what} projected out", name=name)(
        lambda c: c.projected(c.weights.write_gram(), getattr(c, forbidden))
    )


_write_not("write_not_lm_head_read", "lm_broad", "unembedding read directions")
_write_not("write_not_global_read", "global_broad", "global read (all layers + W_U)")
_write_not("write_not_downstream_read", "downstream_broad", "read directions of all later layers + W_U")


@_weight("W:write-not-read", "write",
         "top left singular vectors of all layers' writes [W_O | W_outᵀ] with the top-{k_broad} global read "
         "(all layers + W_U) projected out (the same at every layer)")
def global_write_not_global_read(c: WeightContext) -> QR:
    p = la.projector_complement(c.global_broad[:1])[0]
    return c.same(p @ c.weights.write_gram_total() @ p)


@_weight("W:write-not-read", "write",
         "layer write with span(input_super ∪ kv_super (top-{k} each) ∪ top-{k_broad} unembedding read) projected out")
def causally_isolated(c: WeightContext) -> QR:
    forbid, _ = la.orthonormalize(torch.cat([input_super(c)[0], kv_super_basis(c)[0], c.lm_broad], dim=-1))
    return c.projected(c.weights.write_gram(), forbid)


@_weight("W:OV", "write",
         "top output singular vectors of the per-head OV maps W_V^h W_O^h stacked over heads (GQA-paired)")
def attn_ov_write(c: WeightContext) -> QR:
    ov = c.model.OV  # FactoredMatrix [layer, head, d, d] = W_V W_O per query head (GQA-expanded W_V)
    a, b = ov.A[c.layers].detach().float(), ov.B[c.layers].detach().float()
    a = _scale_rows_heads(a, c.weights.read_scale(c.layers, "ln1"))
    vtv = einops.einsum(a, a, "layer head d i, layer head d j -> layer head i j")
    g = einops.einsum(b, vtv, b, "layer head i d, layer head i j, layer head j e -> layer d e")
    return c.top(_scale_gram(g, c.weights.write_scale(c.layers, "ln1_post")))


@_weight("W:OV", "write", "span of ln1(e_BOS) W_V^h W_O^h over heads h (what each head writes from BOS)")
def attention_sink(c: WeightContext) -> QR:
    model = c.model
    e_bos = c.bos_embedding()
    vecs = []
    for layer in c.layers:  # one tiny matmul per layer: ln1(e_bos) through every head's OV
        attn = model.blocks[layer].attn  # W_V: per query head (GQA-expanded), W_O: per head
        x = model.blocks[layer].ln1(e_bos[None, None])[0, 0].detach().float()
        v = einops.einsum(x, attn.W_V.detach().float(), attn.W_O.detach().float(), "d, head d i, head i e -> head e")
        vecs.append(v)
    s = einops.rearrange(torch.stack(vecs), "layer head d -> layer d head")
    return la.orthonormalize(_scale_rows(s, c.weights.write_scale(c.layers, "ln1_post")), c.k)


@_weight("W:MLP", "write", "top output singular vectors of the linearised MLP map W_in W_out (gate ignored)")
def mlp_roundtrip_write(c: WeightContext) -> QR:
    m = einops.einsum(c.weights.view("mlp.W_in"), c.weights.view("mlp.W_out"), "layer d m, layer e m -> layer d e")
    return c.top(einops.einsum(m, m, "layer d e, layer d f -> layer e f"))


@_weight("W:QK", "mixed",
         "top query-side singular vectors of the per-head QK maps W_Q^h W_K^hᵀ stacked over heads")
def qk_circuit(c: WeightContext) -> QR:
    fm = c.model.QK  # FactoredMatrix [layer, head, d, d] = W_Q W_Kᵀ per query head
    a, b = fm.A[c.layers].detach().float(), fm.B[c.layers].detach().float()
    scale = c.weights.read_scale(c.layers, "ln1")
    a = _scale_rows_heads(a, scale)
    b = _scale_rows_heads(b.transpose(-1, -2), scale).transpose(-1, -2)
    kkt = einops.einsum(b, b, "layer head i d, layer head j d -> layer head i j")
    return c.top(einops.einsum(a, kkt, a, "layer head d i, layer head i j, layer head e j -> layer d e"))


_top_of("mlp_up_read", "W:read", "read", "top left singular vectors of W_in [d_model, d_mlp] (up_proj reads)",
        "mlp.W_in")
_top_of("mlp_gate_read", "W:read", "read", "top left singular vectors of W_gate (gate_proj reads)", "mlp.W_gate")
_top_of("attn_qkv_read", "W:read", "read", "top left singular vectors of [W_Q | W_K | W_V] (per-KV-head K, V)",
        "attn.W_Q", "attn.W_K", "attn.W_V")
kv_super_basis = _top_of("kv_super", "W:read", "read", "top left singular vectors of [W_K | W_V] (per-KV-head)",
                         "attn.W_K", "attn.W_V")


@_weight("W:read", "read", "top left singular vectors of [W_Q | W_K | W_V | W_in | W_gate]")
def input_super(c: WeightContext) -> QR:
    return c.top(c.weights.read_gram())


@_weight("W:read", "read", "input_super with the top-{k_broad} unembedding read directions projected out")
def input_super_not_lm_read(c: WeightContext) -> QR:
    q, _ = input_super(c)
    p = la.projector_complement(c.lm_broad)
    return la.orthonormalize(einops.einsum(p, q, "layer d e, layer e k -> layer d k"), c.k)


@_weight("W:read", "read", "top eigenvectors of Σ over all layers of the read Gram + W_U W_Uᵀ")
def global_read(c: WeightContext) -> QR:
    return c.same(c.global_read_gram)


@_weight("W:unembed", "read", "top left singular vectors of W_U (what the logits read)")
def lm_head_read(c: WeightContext) -> QR:
    return c.same(c.weights.unembed_gram())


@_weight("W:unembed", "read", "bottom left singular vectors of W_U (directions the logits barely read)")
def logits_null(c: WeightContext) -> QR:
    return c.same(c.weights.unembed_gram(), largest=False)


WEIGHT_BASES: Mapping[str, Recipe] = MappingProxyType(_LIBRARY)
"""The weight-derived library, name → recipe, in table order."""


def default_weight_bases(cfg: object) -> list[str]:
    """The bases :func:`weight_bases` builds when ``include`` is None: every recipe of
    :data:`WEIGHT_BASES` the model defines (``mlp_gate_read`` needs a gated MLP)."""
    return [name for name in WEIGHT_BASES if name != "mlp_gate_read" or getattr(cfg, "gated_mlp", False)]


def weight_bases(
    model: HookedTransformer,
    layers: Sequence[int],
    k: int = 8,
    *,
    k_broad: int = 64,
    include: Sequence[str] | None = None,
) -> list[Basis]:
    """The weight-derived bases at ``layers``: every recipe of :data:`WEIGHT_BASES` the model defines
    (:func:`default_weight_bases`: no ``mlp_gate_read`` without a gated MLP), or those in ``include``.

    Each is the top-k eigenvectors of a PSD "energy" matrix in residual space (for M Mᵀ: the top-k
    left singular vectors of M); the definition column states which. ``k_broad`` is the rank of the
    read subspaces that the ``write_not_*`` bases are projected away from. ``model`` may be an
    :class:`interp.streaming.StreamedModel`: the same bases, read layer by layer
    (:func:`interp.streaming.streamed_weight_bases`).
    """
    if is_streamed(model):  # an interp.streaming.StreamedModel: Grams accumulated layer by layer
        return model.run("weight_bases", layers, k, k_broad=k_broad, include=include)
    d = model.cfg.d_model
    check_rank(k, d)
    check_rank(k_broad, max(k_broad, 1), name="k_broad")
    recipes = select_recipes(WEIGHT_BASES, default_weight_bases(model.cfg) if include is None else include, "weight")
    return context_bases(WeightContext(model, layers, k, min(k_broad, d)), [r.name for r in recipes])


def context_bases(context: WeightContext, names: Sequence[str]) -> list[Basis]:
    """The bases ``names`` of :data:`WEIGHT_BASES` built from ``context``, at its layers."""
    return [WEIGHT_BASES[name].make(context, context.layers, **context.format_fields()) for name in names]
