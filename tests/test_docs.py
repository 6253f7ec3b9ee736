"""The documentation builds (API reference from docstrings included), so it cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_builds_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "load_model" in api and "ModelPair" in api, "API reference lacks the main entry points"
