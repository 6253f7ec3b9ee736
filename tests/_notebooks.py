"""Execute a notebook the way Jupyter would (nbclient, the python3 kernel of this interpreter), offline,
with this checkout's interp first on the kernel's path."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def execute(notebook: nbformat.NotebookNode, *, cwd: Path = ROOT, timeout: int = 600) -> nbformat.NotebookNode:
    """Run every cell of ``notebook`` in a fresh kernel (in place) and return it; a cell that raises
    fails with nbclient's ``CellExecutionError``, which shows the cell and the traceback."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved["PYTHONPATH"]) if p)
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:  # the kernel is a subprocess: it inherits this environment
        NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return notebook
