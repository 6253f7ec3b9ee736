"""examples/activation_analyses.py (seeds 002 and 004 on the offline models) runs end to end, quickly.

The example runs with runpy in a temporary directory; the session's already loaded SmolLM2, Gemma
and default pair are handed in (the example loads them itself when run on its own). The time limit
is on the CPU time the run uses (all threads of this process): wall time on a shared machine
measures what else is running.
"""

from __future__ import annotations

import runpy
import time
from pathlib import Path

import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "activation_analyses.py"
CPU_LIMIT_S = 90.0


def test_example_reproduces_seeds_002_and_004(smollm2, gemma, default_pair, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start, start_cpu = time.perf_counter(), time.process_time()
    ns = runpy.run_path(str(EXAMPLE), init_globals={"smollm2": smollm2, "gemma": gemma, "pair": default_pair},
                        run_name="__main__")
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    assert cpu < CPU_LIMIT_S, f"the example used {cpu:.1f} s of CPU ({wall:.1f} s wall; limit {CPU_LIMIT_S} s)"

    written = sorted(p.name for p in (tmp_path / "activation_analyses_out").glob("*.html"))
    for name in ("entropy_by_layer", "cot_entropy_heads", "sink_heads", "induction_heads", "induction_head_pattern",
                 "pair_entropy_delta", "qkv_densities_smollm2", "qkv_densities_gemma"):
        assert f"{name}.html" in written, f"{name}.html missing from {written}"

    # seed 004
    variants = ns["variants"]
    assert variants.entropy.shape == (4, 30, 9) and variants.labels == ("plain", "cot", "expert", "structured")
    assert set(ns["few"]["label"]) == {"1-shot", "2-shot"}
    assert {(17, 3), (17, 4), (18, 6)} <= set(ns["types"].heads_above("induction", 0.3))
    # base vs tuned: the LoRA starts at layer 9, so nothing before it can change
    delta = ns["delta"]
    assert delta.query("layer < 9")["entropy"].abs().max() == 0
    assert delta.query("9 <= layer <= 23")["entropy"].abs().max() > 0

    # seed 002 on both models (the last study is Gemma's: one KV head of 256 dims)
    study = ns["study"]
    assert study.target.k.shape[1:] == (1, 256)
    assert torch.isfinite(study.target.concatenated()).all()
