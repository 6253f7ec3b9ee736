"""examples/subspace_sweep.py (seed 003's v7 sweep) runs end to end on the default pair.

It runs in its reduced configuration (``INTERP_EXAMPLE_SMALL=1``: 4 layers, 8 claims, 14 library bases) in a
temporary directory, with the session's already loaded default pair handed in.
"""

from __future__ import annotations

import runpy
import time
from pathlib import Path

import numpy as np

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "subspace_sweep.py"
TIME_LIMIT_S = 120.0


def test_subspace_sweep_example_runs_and_writes_its_outputs(default_pair, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INTERP_EXAMPLE_SMALL", "1")
    start = time.perf_counter()
    ns = runpy.run_path(str(EXAMPLE), init_globals={"pair": default_pair}, run_name="__main__")
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_LIMIT_S, f"the example took {elapsed:.1f} s (limit {TIME_LIMIT_S} s)"

    written = sorted(p.name for p in (tmp_path / "subspace_sweep_out").iterdir())
    assert written == ["layer_curves.html", "per_layer.csv", "scatter.html", "summary.csv"]

    # the LoRA changes 7 tensor kinds at layers 9-23, rank 8 each
    diagnostics = ns["diagnostics"]
    assert len(diagnostics) == 7 * 15 and set(diagnostics["layer"]) == set(range(9, 24))
    assert (diagnostics["sv_4"] > 0).all()

    result = ns["result"]
    assert result.layers == (12, 15, 18, 21)
    per_layer = result.per_layer
    ceiling = per_layer[per_layer["basis"] == "weight_ceiling"]
    np.testing.assert_allclose(ceiling["pct_w_combined_ceiling"], 100, rtol=1e-4)
    random = per_layer[per_layer["basis"] == "random"]
    assert (random[["z_act", "z_w_combined"]].abs() < 4).all().all()
    # the label is concentrated: its fit-half PCs capture most of the eval half (R near d/k = 72)
    assert (per_layer.loc[per_layer["basis"] == "act_ceiling", "R_act"] > 30).all()
    assert set(result.read_side["axis_kind"]) == {"read"}
