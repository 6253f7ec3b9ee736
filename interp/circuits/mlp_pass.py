"""MLP pass: a block's whole MLP applied to directions, exactly as the model runs it.

For layer l (gated MLP; TransformerLens adds ``b_in`` after the gate)::

    mlp(x) = post( (act(ln2(x) W_gate) * (ln2(x) W_in) + b_in) W_out + b_out )
    mlp(x) = post( act(ln2(x) W_in + b_in) W_out + b_out )                      (plain MLP)

with ``ln2`` the pre-MLP norm, ``act`` the block's own activation and ``post`` the post-MLP norm
where the model has one (Gemma's ``ln2_post``): ``mlp(x)`` is ``blocks.l.hook_mlp_out`` when
``resid_mid = x``. Base vs tuned: output norms, ``|Δ|``, ``1 − cos`` and Δ projected on named directions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import einops
import pandas as pd
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer
from transformer_lens.components import MLP, GatedMLP

from interp._validate import as_directions, as_layers
from interp.circuits.checks import check_pair, names_of, prepare
from interp.circuits.norms import norm_stack
from interp.circuits.stacking import layer_chunks, param_bytes, stack_blocks
from interp.pair import ModelPair, is_streamed
from interp.results import Result, ResultLayout

__all__ = ["MLPPassComparison", "compare_mlp_pass", "delta_projections", "mlp_pass", "top_bottom"]


def mlp_pass(
    model: HookedTransformer,
    directions: object,
    *,
    layers: int | Iterable[int] | None = None,
    post_norm: bool = True,
) -> Float[torch.Tensor, "layer n d_model"]:
    """Each layer's MLP (pre-norm, gate/in, activation, out, post-norm) applied to each direction.

    ``out[k, i] = post(act(ln2(x_i) W_gate) * (ln2(x_i) W_in) + b_in) W_out + b_out)`` at layer
    ``layers[k]`` (default all): ``blocks.l.hook_mlp_out`` for a token whose ``resid_mid`` is
    ``x_i``. ``post_norm=False`` leaves out the post-MLP norm. Float32 whatever the model's dtype.
    """
    model, x, layer_list = prepare(model, directions, layers)
    mlp0 = model.blocks[0].mlp
    if not isinstance(mlp0, (MLP, GatedMLP)) or model.cfg.is_layer_norm_activation():
        raise ValueError(
            f"model: MLP type {type(mlp0).__name__} (act_fn {model.cfg.act_fn!r}) is not supported; "
            "expected a dense MLP or gated MLP with an elementwise activation"
        )
    weights = [mlp0.W_in, mlp0.W_out] + ([mlp0.W_gate] if isinstance(mlp0, GatedMLP) else [])
    chunks = layer_chunks(layer_list, param_bytes(*weights), x.device)
    return torch.cat([_mlp_chunk(model, x, chunk, post_norm=post_norm) for chunk in chunks])


def _mlp_chunk(model: HookedTransformer, x: torch.Tensor, layers: list[int], *, post_norm: bool) -> torch.Tensor:
    blocks = [model.blocks[layer] for layer in layers]
    x_hat = norm_stack([b.ln2 for b in blocks], name="model")(x.expand(len(layers), *x.shape))
    act = blocks[0].mlp.act_fn
    W_in = stack_blocks(model, layers, lambda b: b.mlp.W_in)
    b_in = stack_blocks(model, layers, lambda b: b.mlp.b_in)[:, None, :]
    pre_linear = einops.einsum(x_hat, W_in, "layer n d, layer d m -> layer n m")
    if isinstance(blocks[0].mlp, GatedMLP):
        W_gate = stack_blocks(model, layers, lambda b: b.mlp.W_gate)
        gate = einops.einsum(x_hat, W_gate, "layer n d, layer d m -> layer n m")
        hidden = act(gate) * pre_linear + b_in
    else:
        hidden = act(pre_linear + b_in)
    W_out = stack_blocks(model, layers, lambda b: b.mlp.W_out)
    out = einops.einsum(hidden, W_out, "layer n m, layer m d -> layer n d")
    out = out + stack_blocks(model, layers, lambda b: b.mlp.b_out)[:, None, :]
    if post_norm and model.cfg.use_normalization_before_and_after:
        out = norm_stack([b.ln2_post for b in blocks], name="model")(out)
    return out


@dataclass(frozen=True)
class MLPPassComparison(Result):
    """The MLP pass of the same directions through a base model and its tuned sibling.

    ``base[k, i]`` / ``tuned[k, i]`` are the outputs for direction ``names[i]`` at layer ``layers[k]``.
    """

    result_layout: ClassVar[ResultLayout] = ResultLayout(headline="table", tensors=("base", "tuned"),
                                                         metadata=("layers", "names"))

    layers: tuple[int, ...]
    names: tuple[str, ...]
    base: Float[torch.Tensor, "layer n d_model"]
    tuned: Float[torch.Tensor, "layer n d_model"]

    @property
    def delta(self) -> Float[torch.Tensor, "layer n d_model"]:
        """``tuned − base`` output per layer and direction."""
        return self.tuned - self.base

    def table(self) -> pd.DataFrame:
        """One row per (layer, direction): ``base_norm``, ``tuned_norm``, ``delta_norm`` = |tuned − base|,
        ``one_minus_cos`` = 1 − cos(base, tuned)."""
        base_norm = self.base.norm(dim=-1)
        tuned_norm = self.tuned.norm(dim=-1)
        tiny = torch.finfo(torch.float32).tiny
        cos = einops.einsum(self.base, self.tuned, "layer n d, layer n d -> layer n") / (
            base_norm * tuned_norm
        ).clamp_min(tiny)
        n_layers, n = base_norm.shape
        return pd.DataFrame(
            {
                "layer": [layer for layer in self.layers for _ in range(n)],
                "direction": list(self.names) * n_layers,
                "base_norm": base_norm.flatten().tolist(),
                "tuned_norm": tuned_norm.flatten().tolist(),
                "delta_norm": self.delta.norm(dim=-1).flatten().tolist(),
                "one_minus_cos": (1 - cos).flatten().tolist(),
            }
        )


def compare_mlp_pass(
    pair: ModelPair,
    directions: object,
    *,
    layers: int | Iterable[int] | None = None,
    names: Sequence[str] | None = None,
    post_norm: bool = True,
) -> MLPPassComparison:
    """:func:`mlp_pass` of ``directions`` through ``pair.base`` and ``pair.tuned``.

    ``out_L(x) = W_out^L σ(W_in^L norm(x))`` (gated MLPs: ``σ(W_gate norm(x)) ⊙ W_in norm(x)``) for each
    direction ``x`` and layer ``L``, in both models.

    Args:
        pair: The base/tuned :class:`~interp.ModelPair`, or an :class:`interp.streaming.StreamedPair`
            (:func:`interp.streaming.streamed_compare_mlp_pass`: the same result, read layer by layer).
        directions: ``[n, d_model]`` tensor, one direction, or a :class:`~interp.DirectionSet` (its names
            are used unless ``names`` is given).
        layers: Layers to pass through (default all).
        names: One name per direction.
        post_norm: Apply the post-MLP norm where the model has one (Gemma).

    Returns:
        An :class:`MLPPassComparison`: ``base``/``tuned`` outputs ``[layer, n, d_model]``; ``.table()`` has
        base/tuned norms, ``|tuned − base|`` and ``1 − cos`` per (layer, direction).
    """
    if is_streamed(pair):  # an interp.streaming.StreamedPair: the same result, read layer by layer
        return pair.run("compare_mlp_pass", directions, layers=layers, names=names, post_norm=post_norm)
    base, tuned = check_pair(pair)
    vectors = as_directions(directions, base.cfg.d_model)
    labels = tuple(names_of(directions, names, vectors.shape[0]))  # bad names fail before the passes
    out_base = mlp_pass(base, vectors, layers=layers, post_norm=post_norm)
    out_tuned = mlp_pass(tuned, vectors, layers=layers, post_norm=post_norm)
    return MLPPassComparison(
        layers=tuple(as_layers(layers, base.cfg.n_layers)),
        names=labels,
        base=out_base,
        tuned=out_tuned,
    )


def delta_projections(
    comparison: MLPPassComparison,
    probes: object,
    *,
    layer: int,
    direction: str,
    probe_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """``Δ · p̂`` (Δ = tuned − base output for ``direction`` at ``layer``, ``p̂ = p / |p|``) for every
    probe, one row per probe, sorted by projection (largest first), with ``rank_abs`` (1 = largest |Δ·p̂|)."""
    if not isinstance(comparison, MLPPassComparison):
        raise TypeError(f"comparison: expected an MLPPassComparison, got {type(comparison).__name__}")
    if layer not in comparison.layers:
        raise ValueError(f"layer: {layer!r} is not among the compared layers {list(comparison.layers)}")
    if direction not in comparison.names:
        raise ValueError(f"direction: {direction!r} is not among the compared directions {list(comparison.names)[:10]}")
    delta = comparison.delta[comparison.layers.index(layer), comparison.names.index(direction)]
    p = as_directions(probes, delta.shape[-1], name="probes").to(delta.device)
    labels = names_of(probes, probe_names, p.shape[0], name="probe_names")
    projection = einops.einsum(p / p.norm(dim=-1, keepdim=True), delta, "p d, d -> p")
    table = pd.DataFrame({"probe": labels, "projection": projection.tolist()})
    table["abs_projection"] = table["projection"].abs()
    table["rank_abs"] = table["abs_projection"].rank(ascending=False, method="first").astype(int)
    table.insert(0, "direction", direction)
    table.insert(0, "layer", layer)
    return table.sort_values("projection", ascending=False, ignore_index=True)


def top_bottom(table: pd.DataFrame, k: int = 15, *, by: Literal["projection", "abs"] = "projection") -> pd.DataFrame:
    """The ``k`` top and ``k`` bottom rows of a :func:`delta_projections` table, with an ``end`` column.

    ``by="projection"``: most positive and most negative projections. ``by="abs"``: largest and
    smallest ``|projection|`` ("top 15 / bottom 15" lists).
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k: expected a positive int, got {k!r}")
    if by not in ("projection", "abs"):
        raise ValueError(f"by: expected 'projection' or 'abs', got {by!r}")
    column = "projection" if by == "projection" else "abs_projection"
    ordered = table.sort_values(column, ascending=False, ignore_index=True)
    top = ordered.head(k).assign(end="top")
    bottom = ordered.tail(min(k, max(len(ordered) - k, 0))).assign(end="bottom")
    return pd.concat([top, bottom], ignore_index=True)
