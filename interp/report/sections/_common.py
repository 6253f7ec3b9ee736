"""Small helpers shared by the report sections: layer bookkeeping and text formatting."""

from __future__ import annotations

from collections.abc import Iterable

from interp._validate import as_layers
from interp.pair import ModelPair
from interp.report.options import ReportOptions

#: Section key -> title, in report order: the one place section names and titles are defined.
SECTION_TITLES: dict[str, str] = {
    "weights": "What changed in the weights",
    "circuits": "Weight circuits: QK, VO and MLP of persona directions",
    "activations": "Activations: attention entropy, head metrics and head types",
    "subspace": "Which subspaces explain the weight delta?",
}


def section_title(key: str) -> str:
    """The title of section ``key`` (see :data:`SECTION_TITLES`)."""
    return SECTION_TITLES[key]


def analysed_layers(pair: ModelPair, options: ReportOptions) -> list[int]:
    """``options.layers`` checked against the model (sorted, unique), or every layer."""
    return sorted(set(as_layers(options.layers, pair.cfg.n_layers, name="layers")))


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
