"""``interp report``: every analysis interp has, run on a base/tuned pair, in one self-contained HTML file."""

from interp.report.build import build_report

__all__ = ["build_report"]
