"""mkdocs hook: the notebooks in examples/ become pages under examples/ (rendered by mkdocs-jupyter).

The committed notebooks hold no outputs. The docs show outputs when built with
``INTERP_DOCS_EXECUTE=true`` (mkdocs-jupyter executes each notebook during the build); the test
suite's build (tests/test_docs.py) leaves that off, because tests/test_notebooks.py executes them.
"""

from __future__ import annotations

import os
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]  # this file is scripts/mkdocs_hooks.py

# Executed during the build, notebooks' plotly figures also carry HTML with plotly.js inlined once per
# page (the "notebook" renderer), which the static page can show without a CDN; the mimetype alone
# is only drawn by Jupyter. The kernels mkdocs-jupyter starts inherit this variable.
os.environ.setdefault("PLOTLY_RENDERER", "plotly_mimetype+notebook")


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns .ipynb files into pages
def on_files(files: Files, config) -> Files:  # noqa: ANN001 - mkdocs' config object
    for notebook in sorted((ROOT / "examples").glob("*.ipynb")):
        files.append(File(f"examples/{notebook.name}", src_dir=str(ROOT), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files
