"""Open the report as a user would: headless Chromium renders every plotly figure with no console errors.

Chromium and the console filter come from tests/_chromium.py (shared with the attention-view test); the
report itself needs no network.
"""

from __future__ import annotations

import struct
from pathlib import Path

import _chromium
import _report_fixture
import pytest
from _chromium import console_messages, run_chromium

quick_report = _report_fixture.quick_report  # the session's one quick report, shared with test_report.py
chromium = _chromium.chromium  # the session's Chromium fixture (installed with apt-get when missing)


@pytest.fixture(scope="module")
def rendered(chromium, quick_report, tmp_path_factory):
    """The DOM after plotly ran (``--dump-dom``, 10 s of virtual time) and Chromium's console log."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    result = run_chromium(chromium, profile, "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0",
                          "--dump-dom", quick_report.path.resolve().as_uri())
    assert result.returncode == 0, f"chromium --dump-dom failed ({result.returncode}):\n{result.stderr[-3000:]}"
    return result.stdout, result.stderr


def test_every_figure_rendered_plotly_svg(rendered, quick_report):
    dom, _ = rendered
    n_figures = quick_report.html.count('class="plotly-graph-div"')
    assert n_figures >= 12
    # once plotly has drawn a figure its div gets the class js-plotly-plot and holds <svg class="main-svg"> layers
    figures = dom.split('class="plotly-graph-div')[1:]
    assert len(figures) == n_figures
    not_drawn = [i for i, chunk in enumerate(figures) if not chunk.startswith(" js-plotly-plot")
                 or 'class="main-svg"' not in chunk.split('class="plotly-graph-div', 1)[0]]
    assert not not_drawn, f"figures {not_drawn} of {n_figures} have no plotly SVG"
    assert dom.count('class="main-svg"') >= 2 * n_figures
    # weights (1), entropy and Δ entropy (2), max attention and sink (2), head types base and Δ (3 + 3)
    assert dom.count('class="hm"') >= 11, "heatmaps were not drawn"
    assert 'class="scatterlayer' in dom, "no scatter traces were drawn"


def test_no_console_errors(rendered):
    _, log = rendered
    messages = console_messages(log)
    assert not messages, "console messages while rendering the report:\n" + "\n".join(messages[:20])


def test_console_check_catches_a_script_error(chromium, tmp_path):
    """The console check above would see an error: a page that throws is caught by the same filter."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>throw new Error('deliberate')</script></body></html>")
    result = run_chromium(chromium, tmp_path / "profile", "--virtual-time-budget=2000",
                          "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri())
    assert any("Uncaught Error: deliberate" in line for line in console_messages(result.stderr)), result.stderr[-2000:]


def test_screenshot_looks_like_a_page(chromium, quick_report, tmp_path):
    shot = tmp_path / "report.png"
    result = run_chromium(chromium, tmp_path / "profile", "--virtual-time-budget=10000", f"--screenshot={shot}",
                          "--window-size=1400,3000", quick_report.path.resolve().as_uri())
    assert result.returncode == 0 and shot.is_file(), f"no screenshot:\n{result.stderr[-3000:]}"
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "the screenshot is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1400, 3000)
    # a blank or error page compresses to a few kB; a page of text, tables and figures does not
    assert len(data) > 150_000, f"the screenshot is suspiciously small ({len(data)} bytes)"
    kept = Path(quick_report.path).with_name("report.png")
    kept.write_bytes(data)  # next to the report, for a person to look at
