"""Small helpers shared by the report sections: layer bookkeeping and text formatting."""

from __future__ import annotations

from collections.abc import Iterable

from interp._validate import as_layers
from interp.pair import ModelPair
from interp.report.options import ReportOptions


def analysed_layers(pair: ModelPair, options: ReportOptions) -> list[int]:
    """``options.layers`` checked against the model (sorted, unique), or every layer."""
    return sorted(set(as_layers(options.layers, pair.cfg.n_layers, name="layers")))


def changed_layers(delta: dict) -> list[int]:
    """Layers with at least one parameter in ``delta`` (keys ``blocks.{layer}.…``)."""
    return sorted({int(name.split(".")[1]) for name in delta if name.startswith("blocks.")})


def layer_span(layers: Iterable[int]) -> str:
    """``[9, 10, 11, 14]`` -> ``"9–11, 14"``."""
    layers = sorted(set(int(x) for x in layers))
    if not layers:
        return "none"
    runs, start, prev = [], layers[0], layers[0]
    for layer in layers[1:] + [None]:
        if layer is not None and layer == prev + 1:
            prev = layer
            continue
        runs.append(f"{start}" if start == prev else f"{start}–{prev}")
        if layer is not None:
            start = prev = layer
    return ", ".join(runs)


def head_label(layer: int, head: int) -> str:
    """``L12H3``."""
    return f"L{int(layer)}H{int(head)}"


def layers_text(layers: Iterable[int]) -> str:
    """``"layer 15"`` or ``"layers 9–23"``."""
    layers = sorted(set(int(x) for x in layers))
    return f"layer {layers[0]}" if len(layers) == 1 else f"layers {layer_span(layers)}"
