"""``interp report``: every analysis interp has, run on a base/tuned pair, in one self-contained HTML file.

>>> from interp.report import ReportOptions, build_report
>>> report = build_report(pair, options=ReportOptions.quick(), out_dir="reports/quick")
>>> report.path, report.failed          # reports/quick/report.html, () when every section ran

Sections (one module each in :mod:`interp.report.sections`): weight changes, weight circuits of
persona directions, activations (attention metrics and head types), subspace scoring.
"""

from interp.report.build import Report, SectionOutcome, build_report, check_options, load_pair
from interp.report.html import Section, Table, render
from interp.report.options import SECTION_NAMES, ReportOptions

__all__ = ["SECTION_NAMES", "Report", "ReportOptions", "Section", "SectionOutcome", "Table", "build_report",
           "check_options", "load_pair", "render"]
