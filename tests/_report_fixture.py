"""One quick report on the default pair, built once per test session and shared by test_report.py and
test_report_browser.py (a fixture imported into two modules would otherwise run once per module)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

_BUILT: dict[str, object] = {}


@dataclass(frozen=True)
class BuiltReport:
    report: object  # interp.report.Report
    options: object  # interp.report.ReportOptions
    html: str

    @property
    def path(self) -> Path:
        return self.report.path


@pytest.fixture(scope="session")
def quick_report(default_pair, tmp_path_factory) -> BuiltReport:
    """``build_report(default_pair, options=ReportOptions.quick())`` with persona caching off, run with
    autograd *enabled* (as a CLI user would have it) to check the report turns it off itself."""
    if "quick" not in _BUILT:
        from interp.report import ReportOptions, build_report

        options = ReportOptions.quick(cache_dir=None, progress=False)
        out = tmp_path_factory.mktemp("quick_report")
        threads = torch.get_num_threads()
        # one thread: on a busy 2-core machine LAPACK's eigh (the sweep's bases) is ~20x slower with two
        torch.set_num_threads(1)
        try:
            with torch.enable_grad():
                report = build_report(default_pair, options=options, out_dir=out, quiet=True)
        finally:
            torch.set_num_threads(threads)
        _BUILT["quick"] = BuiltReport(report, options, report.path.read_text(encoding="utf-8"))
    return _BUILT["quick"]  # type: ignore[return-value]


def html_table(document: str, name: str) -> tuple[list[str], list[list[str]]]:
    """Header and body cells (as displayed text) of the ``<table data-table='name'>`` in ``document``."""
    import re
    from html import unescape

    match = re.search(rf"<table data-table='{re.escape(name)}'>(.*?)</table>", document, re.S)
    if match is None:
        raise AssertionError(f"no table {name!r} in the report")
    body = match.group(1)
    header = [unescape(h) for h in re.findall(r"<th(?:\s[^>]*)?>(.*?)</th>", body, re.S)]
    rows = [[unescape(c) for c in re.findall(r"<td(?:\s[^>]*)?>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body.split("</thead>", 1)[1], re.S)]
    return header, rows
