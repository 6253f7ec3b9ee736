"""Weights of a HookedTransformer's blocks stacked over layers for the circuit kernels, and the
layer chunking that bounds how much is stacked at once. The kernels always compute in float32."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import einops
import torch
from jaxtyping import Float
from torch import nn
from transformer_lens import HookedTransformer

__all__ = ["CHUNK_BYTES", "layer_chunks", "param_bytes", "stack", "stack_blocks", "sum_head_groups"]


def stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``tensors`` stacked on a new leading ``layer`` dimension, float32 (one copy at most)."""
    if len(tensors) == 1:
        return tensors[0].detach().unsqueeze(0).to(torch.float32)
    return torch.stack([t.detach() for t in tensors]).to(torch.float32)


def sum_head_groups(
    x: Float[torch.Tensor, "layer head *rest"], n_groups: int
) -> Float[torch.Tensor, "layer group *rest"]:
    """``y[:, k] = Σ_{h ∈ group k} x[:, h]`` for ``n_groups`` consecutive head blocks (GQA: the query
    heads that read KV head ``k``). Slices are added in place: a strided ``sum`` over the middle
    axis is several times slower on CPU."""
    heads = einops.rearrange(x, "layer (group member) ... -> member layer group ...", group=n_groups)
    total = heads[0].clone()
    for member in heads[1:]:
        total += member
    return total


def stack_blocks(model: HookedTransformer, layers: Sequence[int], get: Callable[[nn.Module], torch.Tensor]) -> torch.Tensor:
    """``get(model.blocks[l])`` for each layer, stacked as ``[layer, ...]`` in float32."""
    return stack([get(model.blocks[layer]) for layer in layers])


# The kernels take weights stacked over a leading ``layer`` dimension; the drivers feed them runs of
# consecutive layers whose stacked float32 weights fit in this many bytes. A run of one layer is a
# view of the block's own parameters (no copy), so a budget of 0 never copies a float32 weight. On
# CPUs copying costs more than the Python overhead it saves, so the default there is 0; on
# accelerators stacking many layers saves kernel launches. See docs/analyses/weight_circuits.md.
CHUNK_BYTES: dict[str, int] = {"cpu": 0, "default": 256 * 2**20}


def layer_chunks(
    layers: Sequence[int], bytes_per_layer: int, device: torch.device | str = "cpu", budget: int | None = None
) -> list[list[int]]:
    """``layers`` cut into consecutive runs whose stacked float32 weights fit in ``budget`` bytes
    (default :data:`CHUNK_BYTES` for the device type; at least one layer per run)."""
    if budget is None:
        kind = torch.device(device).type
        budget = CHUNK_BYTES.get(kind, CHUNK_BYTES["default"])
    per_chunk = max(1, budget // max(1, bytes_per_layer))
    return [list(layers[i : i + per_chunk]) for i in range(0, len(layers), per_chunk)]


def param_bytes(*tensors: torch.Tensor) -> int:
    """Bytes these tensors take as float32."""
    return 4 * sum(t.numel() for t in tensors)
