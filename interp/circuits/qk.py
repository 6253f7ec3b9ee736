"""QK affinity: the pre-softmax attention score a query at direction u gives a key at direction v.

For layer l and query head h (KV head ``h // g`` with ``g = n_heads / n_kv_heads``)::

    score[l, h, i, j] = softcap( qn(ln1(u_i) W_Q[l,h] + b_Q) · kn(ln1(v_j) W_K[l,h//g] + b_K) / attn_scale[l] )

with ``ln1`` the block's attention input norm, ``qn``/``kn`` the per-head qk-norms (Gemma 3; identity
otherwise), ``attn_scale`` the model's own scale (sqrt(d_head), or 16 = sqrt(query_pre_attn_scalar) for
Gemma 3) and ``softcap(x) = c tanh(x / c)`` when the model caps attention scores. Positional rotation is
left out: it is the identity when query and key sit at the same position, which is where
``hook_attn_scores[h, i, i]`` equals ``score[l, h, u, u]`` exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import einops
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer
from transformer_lens.components import GroupedQueryAttention
from transformer_lens.utilities.activation_functions import apply_softcap

from interp._validate import as_directions, as_layers
from interp.circuits.checks import prepare
from interp.circuits.norms import NormStack, norm_stack
from interp.circuits.stacking import layer_chunks, param_bytes, stack_blocks, sum_head_groups

__all__ = ["attention_scales", "qk_affinity", "qk_mean_affinity", "qk_mean_scores", "qk_scores", "reduce_heads"]

HeadReduction = Literal["mean", "max", "min", "abs_mean", "abs_max"]


def qk_affinity(
    model: HookedTransformer,
    queries: object,
    keys: object | None = None,
    *,
    layers: int | Iterable[int] | None = None,
) -> Float[torch.Tensor, "layer head query key"]:
    """Pre-softmax attention logits between query directions and key directions, per layer and head.

    ``score[l, h, i, j] = softcap(qn(ln1(u_i) W_Q + b_Q) · kn(ln1(v_j) W_K[h // g] + b_K) / attn_scale)``:
    what ``blocks.l.attn.hook_attn_scores[h, p, p]`` would be with ``u_i`` as the query input and
    ``v_j`` as the key input at the same position ``p`` (rotary cancels there).

    ``queries``/``keys``: ``[n, d_model]`` tensors or :class:`interp.DirectionSet`s (``keys``
    defaults to ``queries``), used as given (not rescaled). ``layers``: indices (default all); row
    ``k`` of the result is ``layers[k]``. Computed in float32 whatever the model's dtype.

    >>> scores = qk_affinity(model, pcs)              # [n_layers, n_heads, n, n]
    >>> reduce_heads(scores, "mean")                   # the head-averaged matrix
    """
    model, u, layer_list = prepare(model, queries, layers, name="queries")
    v = u if keys is None else as_directions(keys, model.cfg.d_model, name="keys").to(u.device)
    chunks = layer_chunks(layer_list, _qk_bytes_per_layer(model), u.device)
    return torch.cat([_qk_chunk(model, u, v, chunk) for chunk in chunks])


def attention_scales(model: HookedTransformer, layers: Iterable[int] | None = None) -> list[float]:
    """The scale each layer's attention divides ``q·k`` by (the model's own ``attn_scale``): √d_head for
    Llama-style models, √query_pre_attn_scalar for Gemma 2/3 (16 for Gemma 3 270M), 1 without scaling.

    Read from the blocks; a model without them in memory (a streamed model: only ``cfg``) gets the same
    number from its config, as TransformerLens' attention sets it (``cfg.attn_scale``, times ``layer + 1``
    with ``scale_attn_by_inverse_layer_idx``)."""
    cfg = model.cfg
    layer_list = range(cfg.n_layers) if layers is None else as_layers(list(layers), cfg.n_layers)
    if hasattr(model, "blocks"):
        return [float(model.blocks[layer].attn.attn_scale) for layer in layer_list]
    base = float(cfg.attn_scale) if cfg.use_attn_scale else 1.0
    return [base * (layer + 1) if cfg.scale_attn_by_inverse_layer_idx else base for layer in layer_list]


def _qk_bytes_per_layer(model: HookedTransformer) -> int:
    attn = model.blocks[0].attn
    return param_bytes(attn.W_Q, kv_weight(attn, "W_K"))


def kv_weight(attn: torch.nn.Module, which: str) -> torch.Tensor:
    """The per-KV-head tensor (``_W_K``/``_b_K``... for grouped-query attention, else ``W_K``...)."""
    return getattr(attn, f"_{which}") if isinstance(attn, GroupedQueryAttention) else getattr(attn, which)


def _qk_inputs(
    model: HookedTransformer, u: torch.Tensor, v: torch.Tensor, layers: list[int]
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``(ln1(u), ln1(v), weights)`` of a run of layers: the arguments of the QK kernels."""
    blocks = [model.blocks[layer] for layer in layers]
    ln1 = norm_stack([b.ln1 for b in blocks], name="model")
    weights = dict(
        W_Q=stack_blocks(model, layers, lambda b: b.attn.W_Q),
        b_Q=stack_blocks(model, layers, lambda b: b.attn.b_Q),
        W_K=stack_blocks(model, layers, lambda b: kv_weight(b.attn, "W_K")),
        b_K=stack_blocks(model, layers, lambda b: kv_weight(b.attn, "b_K")),
        attn_scale=torch.tensor(attention_scales(model, layers), device=u.device),
    )
    q_in = ln1(u.expand(len(layers), *u.shape))
    k_in = q_in if v is u else ln1(v.expand(len(layers), *v.shape))  # keys default to the queries
    return q_in, k_in, weights


def _qk_chunk(
    model: HookedTransformer, u: torch.Tensor, v: torch.Tensor, layers: list[int]
) -> Float[torch.Tensor, "layer head query key"]:
    q_in, k_in, weights = _qk_inputs(model, u, v, layers)
    qn = kn = None
    if model.cfg.use_qk_norm:
        blocks = [model.blocks[layer] for layer in layers]
        qn = norm_stack([b.attn.q_norm for b in blocks], name="model")
        kn = norm_stack([b.attn.k_norm for b in blocks], name="model")
    return qk_scores(q_in, k_in, **weights, q_norm=qn, k_norm=kn, softcap=model.cfg.attn_scores_soft_cap)


def head_projection(
    x: Float[torch.Tensor, "layer n d_model"],
    W: Float[torch.Tensor, "layer head d_model d_head"],
    b: Float[torch.Tensor, "layer head d_head"],
) -> Float[torch.Tensor, "layer head n d_head"]:
    """``x W[h] + b[h]`` for every head. ``x`` is broadcast over heads (a view), so the contraction is
    a batched matmul over (layer, head) that reads the weights in place, with no permuted copy."""
    x = x[:, None].expand(x.shape[0], W.shape[1], *x.shape[1:])
    return einops.einsum(x, W, "layer head n d, layer head d dh -> layer head n dh") + b[:, :, None, :]


def kv_groups(n_heads: int, n_kv: int, *, name: str = "W_K") -> int:
    """Query heads per KV head, ``g = n_heads / n_kv`` (a ValueError naming ``name`` if it is not whole)."""
    if n_heads % n_kv:
        raise ValueError(f"{name}: {n_kv} key/value heads do not divide {n_heads} query heads")
    return n_heads // n_kv


def qk_scores(
    q_in: Float[torch.Tensor, "layer query d_model"],
    k_in: Float[torch.Tensor, "layer key d_model"],
    *,
    W_Q: Float[torch.Tensor, "layer head d_model d_head"],
    b_Q: Float[torch.Tensor, "layer head d_head"],
    W_K: Float[torch.Tensor, "layer kv_head d_model d_head"],
    b_K: Float[torch.Tensor, "layer kv_head d_head"],
    attn_scale: Float[torch.Tensor, " layer"],
    q_norm: NormStack | None = None,
    k_norm: NormStack | None = None,
    softcap: float | None = None,
) -> Float[torch.Tensor, "layer head query key"]:
    """The QK kernel on already-normalised inputs: ``softcap(qn(x W_Q + b_Q) · kn(y W_K + b_K) / scale)``.

    Query head ``h`` reads KV head ``h // (head / kv_head)`` (TransformerLens' ``repeat_interleave``
    pairing: heads ``0..g-1`` share KV head 0). ``W_K`` may also be per query head (kv_head = head).
    """
    n_kv = W_K.shape[1]
    group = kv_groups(W_Q.shape[1], n_kv)
    q, k = head_projection(q_in, W_Q, b_Q), head_projection(k_in, W_K, b_K)
    if q_norm is not None:
        q = q_norm(q)
    if k_norm is not None:
        k = k_norm(k)
    q = einops.rearrange(q, "layer (kv group) n dh -> layer kv group n dh", kv=n_kv)
    k = einops.repeat(k, "layer kv m dh -> layer kv group m dh", group=group)
    scores = einops.einsum(q, k, "layer kv group n dh, layer kv group m dh -> layer kv group n m")
    scores = einops.rearrange(scores, "layer kv group n m -> layer (kv group) n m")
    scores = scores / attn_scale[:, None, None, None]
    return apply_softcap(scores, softcap)


def qk_mean_affinity(
    model: HookedTransformer,
    queries: object,
    keys: object | None = None,
    *,
    layers: int | Iterable[int] | None = None,
) -> Float[torch.Tensor, "layer query key"]:
    """The head-averaged QK affinity, ``reduce_heads(qk_affinity(...), "mean")``.

    When a head's score is linear in its query (no qk-norm, no softcap), the query heads that share a
    KV head are summed before the projection: ``mean_h q_h · k_(h//g) = (1/H) Σ_kv (x Σ_{h∈kv} W_Q[h]
    + Σ_{h∈kv} b_Q[h]) · k_kv``, which costs 1/g of the per-head query projection. Otherwise the
    per-head scores are computed and averaged.
    """
    model, u, layer_list = prepare(model, queries, layers, name="queries")
    v = u if keys is None else as_directions(keys, model.cfg.d_model, name="keys").to(u.device)
    if model.cfg.use_qk_norm or _softcap_on(model.cfg.attn_scores_soft_cap):
        return reduce_heads(qk_affinity(model, u, v, layers=layer_list), "mean")
    outputs = []
    for chunk in layer_chunks(layer_list, _qk_bytes_per_layer(model), u.device):
        q_in, k_in, weights = _qk_inputs(model, u, v, chunk)
        outputs.append(qk_mean_scores(q_in, k_in, **weights))
    return torch.cat(outputs)


def _softcap_on(softcap: float | None) -> bool:
    return softcap is not None and softcap > 0


def qk_mean_scores(
    q_in: Float[torch.Tensor, "layer query d_model"],
    k_in: Float[torch.Tensor, "layer key d_model"],
    *,
    W_Q: Float[torch.Tensor, "layer head d_model d_head"],
    b_Q: Float[torch.Tensor, "layer head d_head"],
    W_K: Float[torch.Tensor, "layer kv_head d_model d_head"],
    b_K: Float[torch.Tensor, "layer kv_head d_head"],
    attn_scale: Float[torch.Tensor, " layer"],
) -> Float[torch.Tensor, "layer query key"]:
    """The head-mean of :func:`qk_scores` without qk-norm or softcap, one contraction per KV head:
    ``(1/H) Σ_kv (x Σ_{h∈kv} W_Q[h] + Σ_{h∈kv} b_Q[h]) · (y W_K[kv] + b_K[kv]) / scale``."""
    n_heads, n_kv = W_Q.shape[1], W_K.shape[1]
    kv_groups(n_heads, n_kv)
    q = head_projection(q_in, sum_head_groups(W_Q, n_kv), sum_head_groups(b_Q, n_kv))
    k = head_projection(k_in, W_K, b_K)
    q = einops.rearrange(q, "layer kv n dh -> layer n (kv dh)")
    k = einops.rearrange(k, "layer kv m dh -> layer m (kv dh)")
    scores = einops.einsum(q, k, "layer n e, layer m e -> layer n m")
    return scores / (attn_scale[:, None, None] * n_heads)


def reduce_heads(
    scores: Float[torch.Tensor, "layer head n m"], how: HeadReduction = "mean"
) -> Float[torch.Tensor, "layer n m"]:
    """Reduce the head axis (dim -3): ``mean`` (the default), ``max``, ``min``, ``abs_mean`` or
    ``abs_max`` (the largest magnitude over heads, sign kept)."""
    if not isinstance(scores, torch.Tensor) or scores.ndim < 3:
        raise ValueError("scores: expected a tensor [..., head, n, m] with a head axis at dim -3")
    if how == "mean":
        return scores.mean(-3)
    if how == "max":
        return scores.amax(-3)
    if how == "min":
        return scores.amin(-3)
    if how == "abs_mean":
        return scores.abs().mean(-3)
    if how == "abs_max":
        index = scores.abs().argmax(-3, keepdim=True)
        return scores.gather(-3, index).squeeze(-3)
    raise ValueError(f"how: expected one of 'mean', 'max', 'min', 'abs_mean', 'abs_max', got {how!r}")
