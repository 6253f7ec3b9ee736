"""Every notebook in examples/ runs top to bottom on the offline models, is committed without outputs,
and opens by saying what question it answers."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from _notebooks import ROOT, execute

NOTEBOOKS = sorted((ROOT / "examples").glob("*.ipynb"))


def unstripped_cells(notebook: nbformat.NotebookNode) -> list[int]:
    """Indices of code cells that carry outputs or an execution count."""
    return [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
            and (cell.outputs or cell.execution_count is not None)]


def test_the_quickstart_is_among_the_notebooks():
    assert ROOT / "examples" / "quickstart.ipynb" in NOTEBOOKS, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path: Path):
    """A check, not a rewrite: clear outputs before committing (e.g. `jupyter nbconvert --clear-output`)."""
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = unstripped_cells(notebook)
    assert not dirty, f"{path.name}: code cells {dirty} have outputs or execution counts; clear them before committing"
    assert "widgets" not in notebook.metadata, f"{path.name}: saved widget state in the notebook metadata"
    # nbformat's own writer layout, so a diff shows only real changes
    assert path.read_text(encoding="utf-8").rstrip("\n") == nbformat.writes(notebook).rstrip("\n"), (
        f"{path.name}: not in nbformat's layout (write it with nbformat.write)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_opens_with_its_question(path: Path):
    notebook = nbformat.read(path, as_version=4)
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), f"{path.name}: no title cell first"
    assert "?" in first.source, f"{path.name}: the first cell should state the question the notebook answers"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_executes_top_to_bottom(path: Path):
    notebook = execute(nbformat.read(path, as_version=4), cwd=path.parent)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code)
    errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert not errors, errors
    shown = [o for cell in code for o in cell.outputs if o.output_type in ("execute_result", "display_data")]
    assert shown, f"{path.name} displayed nothing"
    # the stripped-output check above would refuse this executed copy
    assert unstripped_cells(notebook) == [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
