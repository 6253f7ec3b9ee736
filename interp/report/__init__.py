"""``interp report``: every analysis interp has, run on a base/tuned pair, in one self-contained HTML file.

>>> from interp.report import ReportOptions, build_report
>>> report = build_report(pair, options=ReportOptions.quick(), out_dir="reports/quick")
>>> report.path, report.failed          # reports/quick/report.html, () when every section ran

Sections (one module each in :mod:`interp.report.sections`): weight changes, weight circuits of
persona directions, activations (attention metrics and head types), subspace scoring. Each is a
function ``(pair, options) -> (Section, summary_lines)``; :func:`build_report` runs them, catching
each one's errors, and :func:`interp.report.html.render` lays them out.
"""

from interp.report.build import (
    Report,
    ReportInputError,
    SectionOutcome,
    build_report,
    check_options,
    load_pair,
    run_sections,
    write_report,
)
from interp.report.html import Heading, Section, Table, render
from interp.report.options import DEFAULT_SWEEP_BASES, DEFAULT_VARIANTS, SECTION_NAMES, ReportOptions

__all__ = [
    "DEFAULT_SWEEP_BASES", "DEFAULT_VARIANTS", "SECTION_NAMES", "Heading", "Report", "ReportInputError",
    "ReportOptions", "Section", "SectionOutcome", "Table", "build_report", "check_options", "load_pair", "render",
    "run_sections", "write_report",
]
