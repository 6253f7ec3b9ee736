"""examples/weight_circuits.py (seeds 000 and 001 end to end) runs, quickly, on the default pair.

The example is run with runpy in a temporary directory; the session's already loaded default pair is
handed in (the example loads ``ModelPair.default()`` itself when run on its own). The time limit is
on the CPU time the run uses (all threads of this process): wall time on a shared machine measures
what else is running.
"""

from __future__ import annotations

import runpy
import time
from pathlib import Path

import plotly.graph_objects as go

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "weight_circuits.py"
TIME_LIMIT_S = 60.0


def test_weight_circuits_example_reproduces_seeds_000_and_001(default_pair, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start, start_cpu = time.perf_counter(), time.process_time()
    ns = runpy.run_path(str(EXAMPLE), init_globals={"pair": default_pair}, run_name="__main__")
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    assert cpu < TIME_LIMIT_S, f"the example used {cpu:.1f} s of CPU ({wall:.1f} s wall; limit {TIME_LIMIT_S} s)"

    pcs = [f"PC{i}" for i in range(1, ns["N_PCS"] + 1)]
    n_layers = default_pair.cfg.n_layers
    assert len(ns["probes"]) == 2 * len(pcs) + ns["N_RANDOM"]
    assert len(ns["table"]) == 2 * 2 * n_layers * len(ns["probes"]) ** 2  # circuits x models x layers x pairs

    # seed 000: the self/opposite deltas vanish exactly outside the LoRA's layers and not inside them
    deltas = ns["deltas"]
    tuned_layers = deltas["layer"].isin(ns["COMPARISON_LAYERS"])
    assert deltas.loc[~tuned_layers, "delta_z"].abs().max() == 0
    assert deltas.loc[tuned_layers, "delta_z"].abs().max() > 0
    summary = ns["summary"]
    assert sorted(summary["direction"].unique()) == pcs
    assert len(summary) == len(pcs) * 2 * 2 and (summary["n_layers"] == len(ns["COMPARISON_LAYERS"])).all()

    # seed 001: the MLP pass of +-PC1 through every layer, and the projection table at the PCA layer
    mlp_table = ns["mlp_table"]
    assert len(mlp_table) == 2 * n_layers
    assert mlp_table.loc[~mlp_table["layer"].isin(ns["COMPARISON_LAYERS"]), "delta_norm"].max() == 0
    assert ns["PEAK_LAYER"] in ns["COMPARISON_LAYERS"]
    assert len(ns["projections"]) == len(ns["persona"].roles) + len(ns["persona"].traits)
    assert isinstance(ns["zscore_lines"](ns["series"], ns["PLOT_PCS"]), go.Figure)
    assert list(tmp_path.iterdir()) == []  # the example writes no files
