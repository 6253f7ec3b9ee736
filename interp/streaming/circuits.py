"""Weight circuits of a streamed pair: the in-memory kernels, fed one converted layer at a time.

:func:`streamed_weight_circuits` runs :func:`interp.circuits.weight_circuits` on the one-block
(attention-only) models of layer ``l`` of base and tuned, restores the layer label and orders the
rows as the in-memory call does, so both return the same DataFrame. :func:`streamed_compare_mlp_pass`
runs :func:`interp.circuits.mlp_pass` on blocks of neurons of each layer's MLP: before the post-MLP
norm the MLP's output is a sum over neurons,

    out = Σ_blocks (hidden_block W_out[block] + b_out) − (n_blocks − 1) b_out,

and the post-norm (Gemma 2's ``ln2_post``) is applied to the sum, so one layer of a model never has
to be in memory whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import pandas as pd
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from interp._validate import as_directions, as_layers
from interp.circuits import MLPPassComparison, mlp_pass, weight_circuits
from interp.circuits.baselines import Baseline
from interp.circuits.checks import names_of
from interp.circuits.norms import norm_stack
from interp.circuits.qk import HeadReduction
from interp.streaming.model import StreamedModel, StreamedPair, as_streamed_pair

__all__ = ["DEFAULT_BLOCK_BYTES", "neuron_blocks", "streamed_compare_mlp_pass", "streamed_mlp_pass", "streamed_weight_circuits"]

# Float32 bytes of each MLP weight matrix converted at once (neuron_block="auto"): 24 MiB, under
# glibc's largest dynamic mmap threshold (32 MiB), so the allocator reuses the memory of the last
# block instead of mapping (and zeroing) fresh pages for every block. At gemma-2-27b's shapes (1365
# neurons a block) the MLP pass of a layer pair took 3.1-3.3 s warm against 3.9-4.5 s with
# 256 MiB blocks (4854 neurons), and peak memory falls with the block (benchmarks/RESULTS.md).
DEFAULT_BLOCK_BYTES = 24 * 2**20


def streamed_weight_circuits(
    pair: StreamedPair,
    directions: object,
    *,
    names: Sequence[str] | None = None,
    layers: int | Iterable[int] | None = None,
    random_prefix: str = "Random",
    baseline: Baseline = "self",
    per_head: bool = False,
    head_reduction: HeadReduction = "mean",
    vo_metric: Literal["cos", "dot"] = "cos",
    max_rows: int | None = 20_000_000,
    progress: bool = True,
) -> pd.DataFrame:
    """:func:`interp.circuits.weight_circuits` of a :class:`StreamedPair`: the same table, read layer by layer.

    Arguments as there. Only the attention weights of layer ``l`` of each model are converted (and
    dropped before layer ``l + 1``); ``pair.stats`` reports memory and bytes read.
    """
    pair = as_streamed_pair(pair, name="model")
    layer_list = as_layers(layers, pair.n_layers)
    vectors = as_directions(directions, pair.d_model)
    labels = names_of(directions, names, len(vectors))
    tables = []
    for i, layer in enumerate(pair.layers(layer_list, progress=progress, desc="weight circuits")):
        base = pair.base.layer(layer, part="attn")
        tuned = pair.tuned.layer(layer, part="attn")
        table = weight_circuits(
            (base, tuned), vectors, names=labels, layers=[0], random_prefix=random_prefix, baseline=baseline,
            per_head=per_head, head_reduction=head_reduction, vo_metric=vo_metric,
            max_rows=None if max_rows is None else max(1, max_rows // len(layer_list)),
        )
        table["layer"] = layer
        table["_order"] = i
        tables.append(table)
        del base, tuned
    table = pd.concat(tables, ignore_index=True)
    # the in-memory table is ordered model, circuit, then layer: the same stable order here
    model_rank = table["model"].map({"base": 0, "tuned": 1})
    circuit_rank = table["circuit"].map({"qk": 0, "vo": 1})
    order = pd.DataFrame({"m": model_rank, "c": circuit_rank, "l": table["_order"]}).sort_values(
        ["m", "c", "l"], kind="stable").index
    return table.loc[order].drop(columns="_order").reset_index(drop=True)


def neuron_blocks(model: StreamedModel, neuron_block: int | Literal["auto"] | None) -> list[tuple[int, int] | None]:
    """The ``(start, stop)`` neuron ranges of ``model``'s MLP taken ``neuron_block`` at a time (``[None]``: whole)."""
    d_mlp, d_model = int(model.cfg_dict["d_mlp"]), model.d_model
    if neuron_block is None:
        return [None]
    if neuron_block == "auto":
        neuron_block = max(1, DEFAULT_BLOCK_BYTES // (4 * d_model))
    if not isinstance(neuron_block, int) or isinstance(neuron_block, bool) or neuron_block < 1:
        raise ValueError(f"neuron_block: expected a positive int, 'auto' or None, got {neuron_block!r}")
    if neuron_block >= d_mlp:
        return [None]
    return [(start, min(start + neuron_block, d_mlp)) for start in range(0, d_mlp, neuron_block)]


def streamed_mlp_pass(
    model: StreamedModel,
    directions: Float[torch.Tensor, "n d_model"],
    layer: int,
    *,
    post_norm: bool = True,
    neuron_block: int | Literal["auto"] | None = "auto",
) -> Float[torch.Tensor, "n d_model"]:
    """:func:`interp.circuits.mlp_pass` of one streamed layer, its MLP read in blocks of ``neuron_block`` neurons."""
    total = None
    last: HookedTransformer | None = None
    blocks = neuron_blocks(model, neuron_block)
    for neurons in blocks:
        last = model.layer(layer, part="mlp", neurons=neurons)
        out = mlp_pass(last, directions, layers=[0], post_norm=False)[0]
        total = out if total is None else total + out
    assert total is not None and last is not None
    if len(blocks) > 1:  # every block added b_out once
        total = total - (len(blocks) - 1) * last.blocks[0].mlp.b_out.detach().float()
    if post_norm and last.cfg.use_normalization_before_and_after:
        total = norm_stack([last.blocks[0].ln2_post], name="model")(total[None])[0]
    return total


def streamed_compare_mlp_pass(
    pair: StreamedPair,
    directions: object,
    *,
    layers: int | Iterable[int] | None = None,
    names: Sequence[str] | None = None,
    post_norm: bool = True,
    neuron_block: int | Literal["auto"] | None = "auto",
    progress: bool = True,
) -> MLPPassComparison:
    """:func:`interp.circuits.compare_mlp_pass` of a :class:`StreamedPair` (same :class:`MLPPassComparison`).

    ``neuron_block``: MLP neurons converted at once (``"auto"``: 24 MiB of float32 per weight matrix;
    None: the whole MLP).
    """
    pair = as_streamed_pair(pair)
    vectors = as_directions(directions, pair.d_model)
    labels = tuple(names_of(directions, names, vectors.shape[0]))
    layer_list = as_layers(layers, pair.n_layers)
    neuron_blocks(pair.base, neuron_block)  # a bad block size fails before any weight is read
    base_out, tuned_out = [], []
    for layer in pair.layers(layer_list, progress=progress, desc="MLP pass"):
        base_out.append(streamed_mlp_pass(pair.base, vectors, layer, post_norm=post_norm, neuron_block=neuron_block))
        tuned_out.append(streamed_mlp_pass(pair.tuned, vectors, layer, post_norm=post_norm, neuron_block=neuron_block))
    return MLPPassComparison(
        layers=tuple(layer_list), names=labels, base=torch.stack(base_out), tuned=torch.stack(tuned_out)
    )
