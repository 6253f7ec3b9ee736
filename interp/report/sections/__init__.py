"""The report's sections, one module per analysis; each is ``(pair, options) -> (Section, summary_lines)``."""

from __future__ import annotations

from collections.abc import Callable

from interp.pair import ModelPair
from interp.report.html import Section
from interp.report.options import ReportOptions
from interp.report.sections.activations import activations_section
from interp.report.sections.circuits import circuits_section
from interp.report.sections.subspace import subspace_section
from interp.report.sections.weights import delta_norms, weights_section

SectionBuilder = Callable[[ModelPair, ReportOptions], tuple[Section, list[str]]]

#: name -> (title, builder), in report order.
SECTIONS: dict[str, tuple[str, SectionBuilder]] = {
    "weights": ("What changed in the weights", weights_section),
    "circuits": ("Weight circuits: QK, VO and MLP of persona directions", circuits_section),
    "activations": ("Activations: attention entropy, head metrics and head types", activations_section),
    "subspace": ("Which subspaces explain the weight delta?", subspace_section),
}

__all__ = ["SECTIONS", "SectionBuilder", "activations_section", "circuits_section", "delta_norms",
           "subspace_section", "weights_section"]
