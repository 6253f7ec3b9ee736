"""The documentation builds (API reference from docstrings included), so it cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
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


PLOTS = {"circuits": ["zscore_lines", "zscore_delta_lines", "pc_comparison", "circuit_heatmap", "mlp_delta_by_layer",
                      "projection_bars"],
         "activations": ["attention_heatmap", "entropy_by_layer", "head_metric_heatmap", "similarity_densities",
                         "entropy_lines_by_model"],
         "subspace": ["subspace_scatter", "subspace_layer_curves"], "weights": ["relative_change_heatmap"]}


def test_api_pages_have_parameters_and_returns_sections(site):
    """Google-style Args/Returns docstrings render as mkdocstrings' Parameters/Returns sections."""
    api = (site / "api" / "index.html").read_text()
    for name in ("interp.progress.progress_bar", "interp.results.Result.save", "interp.plots.attention_view.pair_attention_view",
                 "interp.prompts.tokenize", "interp.prompts.run_batched", "interp.prompts.format_prompts",
                 "interp.pair.ModelPair.check", "interp.pair.ModelPair.delta", "interp.loading.load_model",
                 "interp.pair.ModelPair.from_lora", "interp.pair.ModelPair.from_names", "interp.pair.ModelPair.default",
                 "interp.circuits.weight_table.weight_circuits", "interp.circuits.mlp_pass.compare_mlp_pass",
                 "interp.circuits.study.circuit_study", "interp.activations.study.attention_study",
                 "interp.activations.attention_metrics.attention_metrics",
                 "interp.activations.attention_metrics.pair_attention_metrics",
                 "interp.activations.attention_metrics.pair_attention_pattern",
                 "interp.activations.head_types.head_type_scores",
                 "interp.activations.qkv_structure.qkv_similarity_study", "interp.personas.persona_directions",
                 "interp.subspace.sweep.subspace_sweep", "interp.report.build.build_report",
                 *(f"interp.plots.{module}.{name}" for module, names in PLOTS.items() for name in names)):
        start = api.index(f'id="{name}"')
        end = api.find('class="doc doc-heading"', start + len(name) + 10)  # the next object's heading
        section = api[start:end if end > 0 else None]
        titles = re.findall(r'doc-section-title">([^<]+)<', section)
        assert "Parameters:" in titles and "Returns:" in titles, f"{name}: sections {titles}"


def python_blocks(markdown: str) -> list[str]:
    """The fenced ```python blocks of a markdown page, in order."""
    return [block.strip("\n") for block in re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.S | re.M)]


def test_python_blocks_reads_fences():
    page = "Text\n\n```python\nx = 1\n\ny = 2\n```\n\n```bash\nmake test\n```\n\n```python\nprint(x)\n```\n"
    assert python_blocks(page) == ["x = 1\n\ny = 2", "print(x)"]


@pytest.mark.parametrize(("page", "notebook"), [("index.md", "quickstart.ipynb"),
                                                ("own_analysis.md", "own_hook_analysis.ipynb")])
def test_page_runs_as_its_notebook(page, notebook):
    """The page's Python is its notebook's code, cell for cell, so the page runs top to bottom exactly as
    tests/test_notebooks.py runs the notebook."""
    cells = [cell.source.strip("\n") for cell in nbformat.read(ROOT / "examples" / notebook, as_version=4).cells
             if cell.cell_type == "code"]
    blocks = python_blocks((ROOT / "docs" / page).read_text(encoding="utf-8"))
    assert len(blocks) == len(cells), f"{page}: {len(blocks)} python blocks, {notebook}: {len(cells)} code cells"
    for i, (block, cell) in enumerate(zip(blocks, cells, strict=True)):
        assert block == cell, f"{page}: python block {i} differs from code cell {i} of {notebook}"
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8").split("\nnav:\n", 1)[1].split("\nplugins:", 1)[0]
    assert f": {page}" in nav and f": examples/{notebook}" in nav, f"{page} or {notebook} missing from the mkdocs nav"
