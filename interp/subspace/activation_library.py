"""The activation-derived basis library: one :class:`~interp.subspace.basis.Recipe` per basis in
:data:`ACTIVATION_BASES`, each built from base-model activations on the *fit* probe prompts
(:class:`~interp.subspace.captures.ProbeActivations`, plus the :class:`ExtraCaptures` a few
recipes need: clean residuals at every layer, the persona MLP inputs; both are defined, and captured,
in :mod:`interp.subspace.captures`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property, partial
from types import MappingProxyType

import einops
import torch
from transformer_lens import HookedTransformer

from interp.subspace import _linalg as la
from interp.subspace.basis import Basis, Recipe, check_rank, register, select_recipes
from interp.subspace.captures import ExtraCaptures, ProbeActivations, extra_captures
from interp.subspace.weight_library import ModelWeights

QR = tuple[torch.Tensor, torch.Tensor]  # a padded orthonormal basis and its ranks

__all__ = ["ACTIVATION_BASES", "ActivationContext", "ExtraCaptures", "activation_bases", "extra_captures"]


class ActivationContext:
    """What the activation recipes build from: the captures, the rank ``k``, and optionally the model and
    the :class:`ExtraCaptures` (default ``acts.extra``)."""

    def __init__(
        self, acts: ProbeActivations, k: int, model: HookedTransformer | None = None, extra: ExtraCaptures | None = None
    ) -> None:
        self.acts, self.k, self.model = acts, k, model
        self.extra = acts.extra if extra is None else extra
        self.layers = list(acts.layers)
        self.d = acts.clean.shape[-1]

    def format_fields(self) -> dict[str, object]:
        return {"k": self.k}

    def has(self, need: str) -> bool:
        """Whether the input a recipe ``needs`` is present (``model``, ``clean_all``, ``persona_mlp``)."""
        if need == "model":
            return self.model is not None
        if need == "persona_mlp":
            return self.extra.positive_mlp_in is not None and self.extra.positive_up is not None
        return getattr(self.extra, need) is not None

    def magnitude_steps(self) -> torch.Tensor:
        """|h_{l+1}| − |h_l| elementwise over consecutive model layers of the clean captures ``[n, L−1, d]``."""
        mag = einops.rearrange(self.extra.clean_all.abs(), "layer n d -> n layer d")
        return mag[:, 1:] - mag[:, :-1]

    def same(self, qr: QR) -> QR:
        """A ``[1, d, k]`` basis repeated at every layer."""
        q, r = qr
        n = len(self.layers)
        return q.expand(n, -1, -1), r.expand(n)

    @cached_property
    def contrast(self) -> torch.Tensor:
        """Sycophantic − critical persona resid_post at the last token, ``[layer, n, d]``."""
        return self.acts.positive - self.acts.negative

    def attn_weighted(self, kind: str) -> QR:
        """Uncentred PCA of token-level persona diffs, each weighted by √w with w from the last token's
        attention to it in the two personas: ``min``, ``max``, ``|diff|`` or ``min_x_diffnorm``
        (min(pos, neg) · ‖diff‖ / the layer's mean ‖diff‖ over its nonzero token diffs)."""
        acts = self.acts
        diff = acts.positive_tokens - acts.negative_tokens  # [layer, n, t, d]
        a, b = acts.positive_attn, acts.negative_attn
        if kind == "min_x_diffnorm":
            norm = diff.norm(dim=-1)  # [layer, n, t]
            scale = norm.sum((1, 2), keepdim=True) / (norm > 0).sum((1, 2), keepdim=True).clamp_min(1)
            weight = torch.minimum(a, b) * norm / scale.clamp_min(1e-30)
        else:
            weight = {"min": torch.minimum(a, b), "max": torch.maximum(a, b), "diff": (a - b).abs()}[kind]
        samples = diff * weight.clamp_min(0).sqrt()[..., None]
        return la.pca(einops.rearrange(samples, "layer n t d -> layer (n t) d"), self.k, center=False)


_LIBRARY: dict[str, Recipe] = {}
_act = partial(register, _LIBRARY)  # @_act(family, axis_kind, definition) registers the function below it


@_act("act:baseline", "mixed", "per-layer PCA (centred) of clean last-token resid_post")
def layer_clean_resid_pca(c: ActivationContext) -> QR:
    return la.pca(c.acts.clean, c.k)


@_act("act:baseline", "mixed", "PCA of clean last-token resid_post pooled over the swept layers")
def global_clean_resid_pca(c: ActivationContext) -> QR:
    return c.same(la.pca(einops.rearrange(c.acts.clean, "layer n d -> 1 (layer n) d"), c.k))


@_act("act:baseline", "mixed",
      "PCA of sycophantic and critical persona last-token resid_post (not differenced) pooled over the swept layers")
def global_persona_resid_pca(c: ActivationContext) -> QR:
    pooled = torch.cat([c.acts.positive, c.acts.negative], dim=1)
    return c.same(la.pca(einops.rearrange(pooled, "layer n d -> 1 (layer n) d"), c.k))


@_act("act:persona", "mixed", "uncentred PCA of sycophantic − critical persona resid_post at the last token")
def persona_contrast(c: ActivationContext) -> QR:
    return la.pca(c.contrast, c.k, center=False)


@_act("act:attn-selected", "mixed",
      "uncentred PCA of token-level persona diffs weighted by min(pos, neg) last-token attention")
def attn_min_taskdiff(c: ActivationContext) -> QR:
    return c.attn_weighted("min")


@_act("act:attn-selected", "mixed",
      "uncentred PCA of token-level persona diffs weighted by max(pos, neg) last-token attention")
def attn_max_taskdiff(c: ActivationContext) -> QR:
    return c.attn_weighted("max")


@_act("act:attn-selected", "mixed",
      "uncentred PCA of token-level persona diffs weighted by |pos − neg| last-token attention")
def attn_diff_taskdiff(c: ActivationContext) -> QR:
    return c.attn_weighted("diff")


@_act("act:attn-selected", "mixed",
      "uncentred PCA of token-level persona diffs weighted by min(pos, neg) last-token attention × ‖diff‖ "
      "(normalised by the layer's mean ‖diff‖)")
def attn_min_x_diffnorm_taskdiff(c: ActivationContext) -> QR:
    return c.attn_weighted("min_x_diffnorm")


@_act("act:cluster", "mixed", "PCA of k+1 k-means centroids of clean + persona activations (rank k, not k−1)")
def chars_clusters(c: ActivationContext) -> QR:
    pooled = torch.cat([c.acts.clean, c.acts.positive, c.acts.negative], dim=1)
    centroids = la.kmeans(pooled, min(c.k + 1, pooled.shape[1]))
    return la.pca(centroids, c.k)


@_act("act:rotation", "mixed",
      "top singular vectors of the skew part R − Rᵀ of the critical→sycophantic Procrustes rotation")
def rotation_contrast(c: ActivationContext) -> QR:
    x, y = c.acts.negative, c.acts.positive
    joint, _ = la.pca(torch.cat([x, y], dim=1), min(32, x.shape[1] + y.shape[1] - 1, c.d))
    xr = einops.einsum(x - x.mean(1, keepdim=True), joint, "layer n d, layer d r -> layer n r")
    yr = einops.einsum(y - y.mean(1, keepdim=True), joint, "layer n d, layer d r -> layer n r")
    u, _, vh = torch.linalg.svd(einops.einsum(xr, yr, "layer n a, layer n b -> layer a b"))
    rot = u @ vh
    u_skew, _, _ = torch.linalg.svd(rot - rot.transpose(-1, -2))
    return la.orthonormalize(einops.einsum(joint, u_skew[..., : c.k], "layer d r, layer r k -> layer d k"), c.k)


@_act("act:clean", "mixed", "PCA of the layer's own update resid_post − resid_pre on clean prompts")
def churn(c: ActivationContext) -> QR:
    return la.pca(c.acts.clean - c.acts.clean_pre, c.k)


@_act("act:clean", "mixed",
      "PCA of min(Σ_l relu(Δ|h|), Σ_l relu(−Δ|h|)) over consecutive layers of clean last-token resid_post "
      "(magnitude turnover; the same at every layer)", needs=("clean_all",))
def suppressed(c: ActivationContext) -> QR:
    step = c.magnitude_steps()
    return c.same(la.pca(torch.minimum(step.clamp_min(0).sum(1), (-step).clamp_min(0).sum(1))[None], c.k))


@_act("act:clean", "mixed",
      "PCA of relu(|h_last layer| − |h_first layer|) of clean last-token resid_post (magnitudes that persist "
      "and grow; the same at every layer)", needs=("clean_all",))
def amplified(c: ActivationContext) -> QR:
    mag = c.extra.clean_all.abs()
    return c.same(la.pca((mag[-1] - mag[0]).clamp_min(0)[None], c.k))


@_act("act:clean", "mixed",
      "PCA of Σ_l relu(|h_(l+1)| − |h_l|) of clean last-token resid_post (positive magnitude additions; the "
      "same at every layer)", needs=("clean_all",))
def added_features(c: ActivationContext) -> QR:
    return c.same(la.pca(c.magnitude_steps().clamp_min(0).sum(1)[None], c.k))


@_act("act:MLP", "mixed", "PCA of the clean MLP output (act(x W_gate) ⊙ x W_in) W_out")
def gate_active_written(c: ActivationContext) -> QR:
    return la.pca(c.acts.mlp_out, c.k)


@_act("act:up_proj", "mixed",
      "uncentred PCA of sycophantic − critical persona inputs to the MLP up projection (normalised residual x̂) "
      "at the last token", needs=("persona_mlp",))
def up_proj_input_contrast(c: ActivationContext) -> QR:
    return la.pca(c.extra.positive_mlp_in - c.extra.negative_mlp_in, c.k, center=False)


@_act("act:up_proj", "mixed",
      "uncentred PCA of the sycophantic − critical persona up-projection outputs x̂ W_in mapped back by W_out "
      "(with the post-norm gain where the model has one) at the last token", needs=("persona_mlp", "model"))
def up_proj_output_written_contrast(c: ActivationContext) -> QR:
    w_out = ModelWeights(c.model, c.layers).view("mlp.W_out")  # [layer, d, d_mlp]
    diff = c.extra.positive_up - c.extra.negative_up
    return la.pca(einops.einsum(diff, w_out, "layer n m, layer d m -> layer n d"), c.k, center=False)


@_act("W:MLP", "write", "top output singular vectors of W_in diag(E[act(x W_gate)]) W_out on clean prompts",
      needs=("model",))
def gate_kernel(c: ActivationContext) -> QR:
    w = ModelWeights(c.model, c.layers)
    m = einops.einsum(w.view("mlp.W_in"), c.acts.gate_mean, w.view("mlp.W_out"),
                      "layer d m, layer m, layer e m -> layer d e")
    return la.top_eigvecs(einops.einsum(m, m, "layer d e, layer d f -> layer e f"), c.k)


ACTIVATION_BASES: Mapping[str, Recipe] = MappingProxyType(_LIBRARY)
"""The activation-derived library, name → recipe, in table order."""


def activation_bases(
    acts: ProbeActivations,
    k: int = 8,
    *,
    model: HookedTransformer | None = None,
    include: Sequence[str] | None = None,
    extra: ExtraCaptures | None = None,
) -> list[Basis]:
    """The activation-derived bases (all of :data:`ACTIVATION_BASES`, or ``include``) from base-model
    activations on the fit prompts.

    A recipe whose inputs (``Recipe.needs``: ``model``, or a field of ``extra``, default ``acts.extra``:
    :func:`~interp.subspace.captures.probe_activations` with ``needs``, or :func:`extra_captures`) are missing is skipped when ``include`` is None and a ValueError when
    ``include`` names it.
    """
    check_rank(k, acts.clean.shape[-1])
    context = ActivationContext(acts, k, model, extra)
    recipes = select_recipes(ACTIVATION_BASES, include, "activation")
    missing = {r.name: [n for n in r.needs if not context.has(n)] for r in recipes}
    if include is not None and any(missing.values()):
        named = {name: needs for name, needs in missing.items() if needs}
        raise ValueError(f"include: these bases need inputs that were not passed (model= or extra=): {named}")
    return [r.make(context, context.layers, **context.format_fields()) for r in recipes if not missing[r.name]]
