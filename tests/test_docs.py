"""The documentation builds (API reference from docstrings included), so it cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built by ``mkdocs build --strict`` (notebooks rendered without executing them)."""
    site_dir = tmp_path_factory.mktemp("docs") / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return site_dir


def test_mkdocs_builds_strict(site):
    api = (site / "api" / "index.html").read_text()
    assert "load_model" in api and "ModelPair" in api, "API reference lacks the main entry points"


def test_material_theme_glossary_and_notebook_pages(site):
    index = (site / "index.html").read_text()
    assert "assets/stylesheets/main" in index and "md-header" in index, "not built with mkdocs-material"
    glossary = (site / "glossary" / "index.html").read_text()
    for seed, name in (("seed 000", "Weight circuits"), ("seed 003", "Weight-delta subspace sweep"),
                       ("seed 004", "Attention patterns")):
        assert re.search(rf"{seed}</td>\s*<td><strong>{name}", glossary), f"glossary lacks {seed} → {name}"
    for notebook in sorted((ROOT / "examples").glob("*.ipynb")):
        page = site / "examples" / notebook.stem / "index.html"
        assert page.is_file(), f"{notebook.name} was not rendered into the docs"
        assert "jp-CodeCell" in page.read_text(), f"{notebook.name}: the page has no notebook cells"


def test_api_pages_have_parameters_and_returns_sections(site):
    """Google-style Args/Returns docstrings render as mkdocstrings' Parameters/Returns sections."""
    api = (site / "api" / "index.html").read_text()
    for name in ("interp.progress.progress_bar", "interp.results.Result.save", "interp.plots.attention_view.pair_attention_view"):
        start = api.index(f'id="{name}"')
        end = api.find('class="doc doc-heading"', start + len(name) + 10)  # the next object's heading
        section = api[start:end if end > 0 else None]
        titles = re.findall(r'doc-section-title">([^<]+)<', section)
        assert "Parameters:" in titles and "Returns:" in titles, f"{name}: sections {titles}"
