"""Run the analyses on a pair and write the report."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from tqdm.auto import tqdm

from interp.pair import DEFAULT_BASE, ModelPair, default_adapter_path
from interp.report.html import Section, render


def load_pair(base: str, tuned: str | None, adapter: str | None) -> ModelPair:
    """The pair the report is about: ``--tuned`` model, or ``--base`` + ``--adapter`` (default LoRA)."""
    if tuned is not None:
        return ModelPair.from_names(base, tuned)
    if adapter is None and base != DEFAULT_BASE:
        raise ValueError("--adapter/--tuned: give one of them when --base is not the default model")
    return ModelPair.from_lora(base, adapter or default_adapter_path())


def delta_norms(pair: ModelPair) -> pd.DataFrame:
    """One row per changed parameter: layer, tensor, ‖ΔW‖_F and ‖ΔW‖_F / ‖W‖_F."""
    base_params = dict(pair.base.named_parameters())
    rows = []
    for name, delta in pair.delta().items():
        parts = name.split(".")
        layer = int(parts[1]) if parts[0] == "blocks" else -1
        weight_norm = base_params[name].norm().item()
        rows.append({
            "layer": layer,
            "tensor": ".".join(parts[2:]) if layer >= 0 else name,
            "delta_fro": delta.norm().item(),
            "relative": delta.norm().item() / weight_norm if weight_norm else float("nan"),
        })
    return pd.DataFrame(rows).sort_values(["layer", "tensor"]).reset_index(drop=True)


def _weights_section(pair: ModelPair) -> tuple[Section, list[str]]:
    table = delta_norms(pair)
    section = Section("What changed in the weights")
    if table.empty:
        section.paragraphs.append("The two models have identical weights.")
        return section, ["The two models have identical weights."]
    grid = table.pivot(index="tensor", columns="layer", values="relative")
    figure = go.Figure(go.Heatmap(z=grid.values, x=list(grid.columns), y=list(grid.index), colorscale="Viridis",
                                  colorbar={"title": "‖ΔW‖/‖W‖"}))
    figure.update_layout(title="Relative weight change per layer and tensor", xaxis_title="layer",
                         yaxis_title="tensor", height=380)
    section.paragraphs.append(
        f"{len(table)} tensors differ, in layers {table.layer.min()}–{table.layer.max()}. "
        "Relative change is ‖ΔW‖_F / ‖W_base‖_F in TransformerLens' (processed) layout."
    )
    section.tables.append(("Largest relative changes", table.nlargest(10, "relative")))
    section.figures.append(figure)
    top = table.loc[table.relative.idxmax()]
    summary = [
        f"{len(table)} weight tensors changed (layers {table.layer.min()}–{table.layer.max()}); the largest "
        f"relative change is {top.relative:.3%} in layer {top.layer} {top.tensor}."
    ]
    return section, summary


SectionBuilder = Callable[[ModelPair], tuple[Section, list[str]]]
SECTIONS: list[tuple[str, SectionBuilder]] = [("weights", _weights_section)]


def build_report(
    *,
    base: str = DEFAULT_BASE,
    tuned: str | None = None,
    adapter: str | None = None,
    directions: str | None = None,
    layers: Sequence[int] | None = None,
    out_dir: str | Path = "reports",
    quiet: bool = False,
) -> Path:
    """Run every analysis on the pair and write ``out_dir/report.html``; returns its path."""
    started = time.time()
    pair = load_pair(base, tuned, adapter)
    sections, summary = [], []
    for _name, builder in tqdm(SECTIONS, desc="report", disable=quiet):
        section, lines = builder(pair)
        sections.append(section)
        summary += lines
    summary.append(f"Built in {time.time() - started:.0f} s.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    path.write_text(render(f"interp report: {pair.name}", summary, sections))
    return path
