"""VO decomposition: what each attention head writes when it attends fully to direction v.

For layer l and head h (KV head ``h // g``)::

    out[l, h, j]  = (ln1(v_j) W_V[l, h//g] + b_V) W_O[l, h]                    (= hook_result)
    attn[l, j]    = post( sum_h out[l, h, j] + b_O[l] )                          (= hook_attn_out)

with ``ln1`` the attention input norm and ``post`` the post-attention norm where the model has one
(Gemma's ``ln1_post``; it acts on the sum, so per-head outputs are read before it). Each output is
then read against probe directions p: ``dot = out · p / |p|`` and ``cos = dot / |out|``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from interp._validate import as_directions, as_layers
from interp.circuits.checks import prepare
from interp.circuits.norms import norm_stack
from interp.circuits.qk import head_projection, kv_groups, kv_weight
from interp.circuits.stacking import layer_chunks, param_bytes, stack_blocks, sum_head_groups

__all__ = ["VODecomposition", "vo_decomposition", "vo_outputs", "vo_write"]


@dataclass(frozen=True)
class VODecomposition:
    """What attention writes when it attends to each key direction, read against probe directions.

    ``head_*[l, h, j, p]`` reads head ``h``'s output (before any post-attention norm) for key ``j``
    against probe ``p``; ``sum_*[l, j, p]`` reads the whole layer's output (sum over heads plus
    ``b_O``, then the post-attention norm when ``post_norm``), which is what the seed computes.
    ``*_dot`` is the projection on the unit probe, ``*_cos`` the cosine. Row ``k`` is ``layers[k]``.
    ``head_*`` are None when computed with ``per_head=False``.
    """

    layers: tuple[int, ...]
    head_dot: Float[torch.Tensor, "layer head key probe"] | None
    head_cos: Float[torch.Tensor, "layer head key probe"] | None
    sum_dot: Float[torch.Tensor, "layer key probe"]
    sum_cos: Float[torch.Tensor, "layer key probe"]
    post_norm: bool


def vo_outputs(
    model: HookedTransformer,
    keys: object,
    *,
    layers: int | Iterable[int] | None = None,
    post_norm: bool = True,
) -> tuple[Float[torch.Tensor, "layer head key d_model"], Float[torch.Tensor, "layer key d_model"]]:
    """``(per-head outputs, layer output)`` when every head attends fully to each key direction.

    Per head: ``(ln1(v) W_V[h // g] + b_V) W_O[h]`` (``hook_result``); layer:
    ``post(sum_h + b_O)`` (``hook_attn_out``; ``post`` is the post-attention norm if the model has
    one and ``post_norm``). Float32, rows in ``layers`` order (default all layers).
    """
    heads, total = _vo(model, keys, layers, post_norm=post_norm, per_head=True)
    return heads, total


def _vo(
    model: HookedTransformer, keys: object, layers: object, *, post_norm: bool, per_head: bool
) -> tuple[torch.Tensor | None, torch.Tensor]:
    model, v, layer_list = prepare(model, keys, layers, name="keys")
    attn0 = model.blocks[0].attn
    per_layer = param_bytes(kv_weight(attn0, "W_V"), attn0.W_O)
    heads, sums = [], []
    for chunk in layer_chunks(layer_list, per_layer, v.device):
        h, s = _vo_chunk(model, v, chunk, post_norm=post_norm, per_head=per_head)
        heads.append(h)
        sums.append(s)
    return (torch.cat(heads) if per_head else None), torch.cat(sums)


def _vo_chunk(
    model: HookedTransformer, v: torch.Tensor, layers: list[int], *, post_norm: bool, per_head: bool
) -> tuple[torch.Tensor | None, torch.Tensor]:
    blocks = [model.blocks[layer] for layer in layers]
    ln1 = norm_stack([b.ln1 for b in blocks], name="model")
    weights = dict(
        W_V=stack_blocks(model, layers, lambda b: kv_weight(b.attn, "W_V")),
        b_V=stack_blocks(model, layers, lambda b: kv_weight(b.attn, "b_V")),
        W_O=stack_blocks(model, layers, lambda b: b.attn.W_O),
    )
    v_in = ln1(v.expand(len(layers), *v.shape))
    heads = vo_write(v_in, **weights) if per_head else None
    if heads is not None:
        total = einops.reduce(heads, "layer head n d -> layer n d", "sum")
    else:
        total = vo_write(v_in, **weights, sum_heads=True)
    total = total + stack_blocks(model, layers, lambda b: b.attn.b_O)[:, None, :]
    if post_norm and model.cfg.use_normalization_before_and_after:
        total = norm_stack([b.ln1_post for b in blocks], name="model")(total)
    return heads, total


def vo_write(
    v_in: Float[torch.Tensor, "layer key d_model"],
    *,
    W_V: Float[torch.Tensor, "layer kv_head d_model d_head"],
    b_V: Float[torch.Tensor, "layer kv_head d_head"],
    W_O: Float[torch.Tensor, "layer head d_head d_model"],
    sum_heads: bool = False,
) -> Float[torch.Tensor, "layer head key d_model"] | Float[torch.Tensor, "layer key d_model"]:
    """The OV kernel on already-normalised inputs: ``(x W_V[h // g] + b_V) W_O[h]`` per head, or its
    sum over heads (``sum_heads``: ``Σ_kv values_kv Σ_{h∈kv} W_O[h]``, 1/g of the per-head work)."""
    n_kv = W_V.shape[1]
    group = kv_groups(W_O.shape[1], n_kv, name="W_V")
    values = head_projection(v_in, W_V, b_V)  # per KV head; then each query head's W_O on its values
    if sum_heads:
        # heads that share a KV head read the same values: Σ_{h∈kv} values_kv W_O[h] = values_kv Σ_{h∈kv} W_O[h]
        W_O = einops.rearrange(sum_head_groups(W_O, n_kv), "layer kv dh d -> layer (kv dh) d")
        values = einops.rearrange(values, "layer kv n dh -> layer n (kv dh)")
        return einops.einsum(values, W_O, "layer n e, layer e d -> layer n d")
    values = einops.repeat(values, "layer kv n dh -> layer kv group n dh", group=group)
    W_O = einops.rearrange(W_O, "layer (kv group) dh d -> layer kv group dh d", kv=n_kv)
    out = einops.einsum(values, W_O, "layer kv group n dh, layer kv group dh d -> layer kv group n d")
    return einops.rearrange(out, "layer kv group n d -> layer (kv group) n d")


def vo_decomposition(
    model: HookedTransformer,
    keys: object,
    probes: object | None = None,
    *,
    layers: int | Iterable[int] | None = None,
    post_norm: bool = True,
    per_head: bool = True,
) -> VODecomposition:
    """Per-head and summed VO outputs of ``keys`` read against ``probes`` (default: the keys).

    ``dot[.., j, p] = out_j · p̂`` and ``cos[.., j, p] = out_j · p̂ / |out_j|`` with ``p̂ = p / |p|``;
    ``out`` as in :func:`vo_outputs`. ``sum_cos`` sums the per-head cosines.
    ``per_head=False`` skips the per-head readings (``head_dot``/``head_cos`` are then None).
    """
    heads, total = _vo(model, keys, layers, post_norm=post_norm, per_head=per_head)
    p = as_directions(keys if probes is None else probes, model.cfg.d_model, name="probes").to(total.device)
    p_hat = p / p.norm(dim=-1, keepdim=True)
    sum_dot = einops.einsum(total, p_hat, "layer n d, p d -> layer n p")
    tiny = torch.finfo(torch.float32).tiny
    head_dot = head_cos = None
    if per_head:
        head_dot = einops.einsum(heads, p_hat, "layer head n d, p d -> layer head n p")
        head_cos = head_dot / heads.norm(dim=-1).clamp_min(tiny)[..., None]
    return VODecomposition(
        layers=tuple(as_layers(layers, model.cfg.n_layers)),
        head_dot=head_dot,
        head_cos=head_cos,
        sum_dot=sum_dot,
        sum_cos=sum_dot / total.norm(dim=-1).clamp_min(tiny)[..., None],
        post_norm=bool(post_norm and model.cfg.use_normalization_before_and_after),
    )
