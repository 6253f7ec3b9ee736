"""The report's sections, one module per analysis; each is ``(pair, options) -> (Section, summary_lines)``."""

from __future__ import annotations

from collections.abc import Callable

from interp.pair import ModelPair
from interp.report.html import Section
from interp.report.options import ReportOptions
from interp.report.sections._common import SECTION_TITLES
from interp.report.sections.activations import activations_section
from interp.report.sections.circuits import circuits_section
from interp.report.sections.subspace import subspace_section
from interp.report.sections.weights import weights_section

SectionBuilder = Callable[[ModelPair, ReportOptions], tuple[Section, list[str]]]

_BUILDERS: dict[str, SectionBuilder] = {
    "weights": weights_section,
    "circuits": circuits_section,
    "activations": activations_section,
    "subspace": subspace_section,
}

#: name -> (title, builder), in report order (titles from :data:`SECTION_TITLES`).
SECTIONS: dict[str, tuple[str, SectionBuilder]] = {name: (SECTION_TITLES[name], _BUILDERS[name]) for name in SECTION_TITLES}

__all__ = ["SECTIONS", "SECTION_TITLES", "SectionBuilder", "activations_section", "circuits_section",
           "subspace_section", "weights_section"]
