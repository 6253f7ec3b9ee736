"""Nulls of the weight circuits and the MLP pass: the empirical p-value against a hand count, and a
pair whose tuned model is SmolLM2 plus a rank-1 edit along a known unit direction u (W_Q reading
along u, W_O and W_out writing along u, in three layers): u's change is flagged, directions not
along u are not, and base = tuned flags nothing."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from interp import ModelPair
from interp._stats import empirical_p_value, leave_one_out_p_values, leave_one_out_percentiles, percentile_of
from interp.circuits import circuit_study
from interp.circuits.nulls import delta_null_table
from interp.directions import DirectionSet

EDITED = [3, 5, 7]
LAYERS = [2, 3, 5, 7]  # layer 2 is before every edit: nothing there changes
N_RANDOM = 19  # smallest p-value 1/20


def test_empirical_p_value_and_percentile_by_hand():
    null = np.array([0.4, 0.1, 0.3, 0.2])
    # 0.3: two null values are >= 0.3 -> (1 + 2) / (1 + 4); below: 0.1, 0.2; equal: 0.3
    assert empirical_p_value(0.3, null) == pytest.approx(3 / 5)
    assert percentile_of(0.3, null) == pytest.approx(100 * (2 + 0.5) / 4)
    assert empirical_p_value(0.5, null) == pytest.approx(1 / 5)  # above all: the +1 floor
    assert percentile_of(0.5, null) == 100.0
    assert empirical_p_value(0.0, null) == pytest.approx(1.0)
    # leave one out: 0.4 has no other value >= it -> 1/4; 0.1 has three -> 4/4
    np.testing.assert_allclose(leave_one_out_p_values(null), [1 / 4, 4 / 4, 2 / 4, 3 / 4])
    # among the other three: 0.4 is above all (100), 0.1 below all (0), 0.3 above one of three
    np.testing.assert_allclose(leave_one_out_percentiles(null), [100, 0, 100 * 2 / 3, 100 / 3])
    np.testing.assert_allclose(empirical_p_value(np.array([0.05, 0.35]), null), [5 / 5, 2 / 5])


def test_delta_null_table_by_hand():
    rows = []
    values = {"PC1": [0.5, -0.7], "Random1": [0.1, 0.3], "Random2": [-0.2, 0.2], "Random3": [0.9, -0.9]}
    for name, (at1, at2) in values.items():
        for layer, value in ((1, at1), (2, at2)):
            rows.append({"circuit": "qk", "relation": "self", "query": name, "layer": layer, "delta_z": value})
    frame = pd.DataFrame(rows)
    named, random = frame[frame["query"] == "PC1"], frame[frame["query"] != "PC1"]
    table = delta_null_table(named, random, layers=[1, 2])
    pc1 = table[table.probe == "named"].iloc[0]
    # mean |Δz| over layers 1, 2: PC1 0.6; randoms 0.2, 0.2, 0.9 -> one of three >= 0.6
    assert pc1["abs_delta_z"] == pytest.approx(0.6)
    assert pc1["p_value"] == pytest.approx((1 + 1) / (1 + 3))
    assert pc1["percentile"] == pytest.approx(100 * 2 / 3)
    assert pc1["n_random"] == 3 and pc1["null_max"] == pytest.approx(0.9)
    rand = table[table.probe == "random"].set_index("direction")
    # leave one out among (0.2, 0.2, 0.9): 0.9 -> 1/3; each 0.2 -> (1 + 2)/3
    assert rand.loc["Random3", "p_value"] == pytest.approx(1 / 3)
    assert rand.loc["Random1", "p_value"] == pytest.approx(1.0)
    assert rand.loc["Random1", "percentile"] == pytest.approx(100 * 0.5 / 2)  # ties the other 0.2, below 0.9
    at2 = delta_null_table(named, random, layers=[2], per_layer=True)
    # layer 2 alone: PC1 0.7; randoms 0.3, 0.2, 0.9
    assert at2[at2.probe == "named"]["p_value"].item() == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="layers: \\[9\\]"):
        delta_null_table(named, random, layers=[9])


def _rank1_edit(model, u: torch.Tensor, layers, eps: float):
    """``model`` + rank-1 edits along unit ``u``: per head W_Q += eps·u ⊗ k̂(u) (q of inputs along u gains
    the direction of u's own key), W_O += eps·v̂(u) ⊗ u and W_out += eps·ĥ(u) ⊗ u (outputs gain u)."""
    tuned = copy.deepcopy(model)
    for layer in layers:
        block = tuned.blocks[layer]
        x = block.ln1(u[None, None])[0, 0]
        keys = torch.einsum("d,hde->he", x, block.attn.W_K) + block.attn.b_K
        values = torch.einsum("d,hde->he", x, block.attn.W_V) + block.attn.b_V
        block.attn.W_Q.data += eps * torch.einsum("d,he->hde", u, keys / keys.norm(dim=-1, keepdim=True))
        block.attn.W_O.data += eps * torch.einsum("he,d->hed", values / values.norm(dim=-1, keepdim=True), u)
        x2 = block.ln2(u[None, None])[0, 0]
        mlp = block.mlp
        hidden = torch.nn.functional.silu(x2 @ mlp.W_gate) * (x2 @ mlp.W_in) + mlp.b_in
        mlp.W_out.data += eps * torch.outer(hidden / hidden.norm(), u)
    return tuned


@pytest.fixture(scope="module")
def planted(smollm2):
    d = smollm2.cfg.d_model
    u = DirectionSet.random(1, d, seed=101, prefix="U").vectors[0]
    tuned = _rank1_edit(smollm2, u, EDITED, eps=0.5)
    controls = DirectionSet.random(3, d, seed=202, prefix="Ctrl")
    named = DirectionSet(("U",), u[None]).concat(controls)
    return circuit_study(ModelPair(smollm2, tuned), named, layers=LAYERS, n_random=N_RANDOM, random_seed=7)


def test_planted_direction_is_flagged_and_others_are_not(planted):
    assert planted.tuned_layers == tuple(EDITED)
    nulls = planted.nulls[planted.nulls.probe == "named"].set_index(["direction", "circuit", "relation"])
    for circuit in ("qk", "vo"):
        row = nulls.loc[("U", circuit, "self")]
        assert row["p_value"] == pytest.approx(1 / (N_RANDOM + 1)) and row["percentile"] == 100
        assert row["abs_delta_z"] > 3 * row["null_max"]
    controls = nulls.loc[["Ctrl1", "Ctrl2", "Ctrl3"]]
    # directions not along u are draws from the same distribution as the random ones
    assert controls["p_value"].median() > 0.2
    assert (controls["p_value"] <= 0.05).sum() <= 2
    mlp = planted.mlp_nulls[planted.mlp_nulls.probe == "named"].set_index("direction")
    assert mlp.loc["U", "p_value"] == pytest.approx(1 / (N_RANDOM + 1))
    assert mlp.loc["U", "delta_norm"] > 3 * mlp.loc["U", "null_max"]
    assert mlp.loc[["Ctrl1", "Ctrl2", "Ctrl3"], "p_value"].median() > 0.2
    # the random directions' leave-one-out p-values are exactly {1/n, ..., 1} (no ties): calibrated
    for frame in (planted.nulls, planted.mlp_nulls):
        keys = [c for c in ("circuit", "relation") if c in frame]
        randoms = frame[frame.probe == "random"]
        for _, part in randoms.groupby(keys) if keys else [((), randoms)]:
            np.testing.assert_allclose(np.sort(part["p_value"]), np.arange(1, N_RANDOM + 1) / N_RANDOM)
    # before the first edit nothing moves, so nothing there is flagged
    layer2 = planted.layer_nulls[planted.layer_nulls.layer == 2]
    assert (layer2["abs_delta_z"] == 0).all() and (layer2["p_value"] == 1).all()
    text = planted.null_phrase(planted.null_of("U", "vo", "self"))
    assert text == f"100th percentile of {N_RANDOM} random directions (p = 0.05): distinguishable"


def test_base_equals_tuned_flags_nothing(smollm2):
    named = DirectionSet.random(2, smollm2.cfg.d_model, seed=3, prefix="PC")
    study = circuit_study(ModelPair(smollm2, smollm2), named, layers=[0, 4], n_random=5, random_seed=1)
    for frame, value in ((study.nulls, "abs_delta_z"), (study.layer_nulls, "abs_delta_z"),
                         (study.mlp_nulls, "delta_norm"), (study.mlp_layer_nulls, "delta_norm")):
        assert (frame[value] == 0).all()
        assert (frame.loc[frame.probe == "named", "p_value"] == 1).all()
        assert (frame["percentile"] == 50).all()
    assert "not distinguishable" in study.null_phrase(study.null_of("PC1", "qk", "opposite"))


def test_circuit_study_rejects_bad_alpha(smollm2):
    with pytest.raises(ValueError, match="alpha: expected a float in \\(0, 1\\)"):
        circuit_study(ModelPair(smollm2, smollm2), DirectionSet.random(1, smollm2.cfg.d_model), alpha=5)


def test_circuit_study_rejects_too_few_random_directions_before_any_pass(smollm2, monkeypatch):
    import interp.circuits.study as study

    monkeypatch.setattr(study, "weight_circuits", lambda *a, **k: pytest.fail("ran before checking n_random"))
    with pytest.raises(ValueError, match="n_random: the z-scores and nulls need at least 2"):
        circuit_study(ModelPair(smollm2, smollm2), DirectionSet.random(1, smollm2.cfg.d_model), n_random=1)
