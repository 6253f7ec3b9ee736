"""The activation-analyses example runs end to end (seeds 002 and 004 on the offline models)."""

from __future__ import annotations

import runpy
import time
from pathlib import Path

import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "activation_analyses.py"


def test_example_runs_and_writes_its_figures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    namespace = runpy.run_path(str(EXAMPLE), run_name="__main__")
    elapsed = time.perf_counter() - started
    written = sorted(p.name for p in (tmp_path / "activation_analyses_out").glob("*.html"))
    for name in ("entropy_by_layer", "cot_entropy_heads", "induction_heads", "induction_head_pattern",
                 "qkv_densities_smollm2", "qkv_densities_gemma"):
        assert f"{name}.html" in written, f"{name}.html missing from {written}"
    variants = namespace["variants"]
    assert variants.entropy.shape == (4, 30, 9) and variants.labels == ("plain", "cot", "expert", "structured")
    assert {(17, 3), (17, 4), (18, 6)} <= set(namespace["types"].heads_above("induction", 0.3))
    study = namespace["study"]  # the last one: Gemma, K/V with a single KV head
    assert study.target.k.shape[1:] == (1, 256)
    assert torch.isfinite(study.target.concatenated()).all()
    print(f"example ran in {elapsed:.1f} s")
