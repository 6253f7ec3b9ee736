"""The activation-derived basis library: one :class:`~interp.subspace.basis.Recipe` per basis in
:data:`ACTIVATION_BASES`, each built from base-model activations on the *fit* probe prompts
(:class:`~interp.subspace.activations.ProbeActivations`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property, partial
from types import MappingProxyType

import einops
import torch
from transformer_lens import HookedTransformer

from interp.subspace import _linalg as la
from interp.subspace.activations import ProbeActivations
from interp.subspace.basis import Basis, Recipe, check_rank, register, select_recipes
from interp.subspace.weight_library import ModelWeights

QR = tuple[torch.Tensor, torch.Tensor]  # a padded orthonormal basis and its ranks

__all__ = ["ACTIVATION_BASES", "ActivationContext", "activation_bases"]


class ActivationContext:
    """What the activation recipes build from: the captures, the rank ``k`` and (optionally) the model."""

    def __init__(self, acts: ProbeActivations, k: int, model: HookedTransformer | None = None) -> None:
        self.acts, self.k, self.model = acts, k, model
        self.layers = list(acts.layers)
        self.d = acts.clean.shape[-1]

    def format_fields(self) -> dict[str, object]:
        return {"k": self.k}

    def has(self, need: str) -> bool:
        return getattr(self, need, None) is not None

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
        attention to it in the two personas: ``min``, ``max`` or ``|diff|``."""
        acts = self.acts
        diff = acts.positive_tokens - acts.negative_tokens  # [layer, n, t, d]
        a, b = acts.positive_attn, acts.negative_attn
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


@_act("act:MLP", "mixed", "PCA of the clean MLP output (act(x W_gate) ⊙ x W_in) W_out")
def gate_active_written(c: ActivationContext) -> QR:
    return la.pca(c.acts.mlp_out, c.k)


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
    acts: ProbeActivations, k: int = 8, *, model: HookedTransformer | None = None, include: Sequence[str] | None = None
) -> list[Basis]:
    """The activation-derived bases (all of :data:`ACTIVATION_BASES`, or ``include``) from base-model
    activations on the fit prompts.

    Recipes that need ``model`` (``gate_kernel``: its W_in, W_out) are skipped when it is None.
    """
    check_rank(k, acts.clean.shape[-1])
    context = ActivationContext(acts, k, model)
    recipes = select_recipes(ACTIVATION_BASES, include, "activation")
    return [r.make(context, context.layers, **context.format_fields())
            for r in recipes if all(context.has(need) for need in r.needs)]
