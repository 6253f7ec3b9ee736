"""Random baselines, z-scores, self/opposite series, deltas and the per-PC table (interp.circuits),
checked against numpy written out here, plus weight_circuits on the default pair."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from interp import DirectionSet
from interp.circuits import (
    circuit_table,
    mean_abs_delta,
    qk_affinity,
    random_baseline,
    reduce_heads,
    self_opposite,
    tuned_minus_base,
    vo_decomposition,
    weight_circuits,
)

NAMES = ["PC1", "-PC1", "PC2", "-PC2", "Random1", "Random2", "Random3"]


def _values(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float()


def test_random_baseline_self_uses_random_diagonal():
    values = _values((4, 7, 7), seed=401)
    mean, std = random_baseline(values, NAMES)
    diag = values.numpy()[:, [4, 5, 6], [4, 5, 6]]
    np.testing.assert_allclose(mean.numpy(), diag.mean(1), rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), diag.std(1), rtol=1e-5)  # numpy default: ddof = 0


def test_random_baseline_offdiag_uses_distinct_random_pairs():
    values = _values((2, 3, 7, 7), seed=402)  # with a head axis
    mean, std = random_baseline(values, NAMES, baseline="offdiag")
    block = values.numpy()[..., 4:, 4:]
    off = block[..., ~np.eye(3, dtype=bool)]
    assert mean.shape == (2, 3)
    np.testing.assert_allclose(mean.numpy(), off.mean(-1), rtol=1e-5)
    np.testing.assert_allclose(std.numpy(), off.std(-1), rtol=1e-5)


def test_circuit_table_rows_and_zscores():
    values = _values((3, 7, 7), seed=403)
    table = circuit_table(values, layers=[5, 6, 9], query_names=NAMES)
    assert len(table) == 3 * 7 * 7
    assert list(table.columns) == ["layer", "query", "key", "value", "baseline_mean", "baseline_std", "z"]
    row = table[(table["layer"] == 6) & (table["query"] == "PC2") & (table["key"] == "-PC1")].iloc[0]
    diag = values.numpy()[1, [4, 5, 6], [4, 5, 6]]
    expected_z = (values[1, 2, 1].item() - diag.mean()) / (diag.std() + 1e-8)
    assert row["value"] == pytest.approx(values[1, 2, 1].item())
    assert row["z"] == pytest.approx(expected_z, rel=1e-5)
    self_random = table[(table["query"] == table["key"]) & table["query"].str.startswith("Random")]
    assert self_random.groupby("layer")["z"].mean().abs().max() < 1e-6  # mean-zero by construction


def test_circuit_table_per_head_and_separate_key_names():
    values = _values((2, 4, 7, 3), seed=404)
    keys = ["PC1", "Random2", "Random1"]
    table = circuit_table(values, layers=[0, 1], query_names=NAMES, key_names=keys, baseline="self")
    assert "head" in table.columns and len(table) == 2 * 4 * 7 * 3
    entries = values.numpy()[:, :, [4, 5], [2, 1]]  # Random1 and Random2 with themselves
    row = table[(table["layer"] == 1) & (table["head"] == 2) & (table["query"] == "PC1") & (table["key"] == "PC1")]
    assert row["baseline_mean"].item() == pytest.approx(entries[1, 2].mean(), rel=1e-5)


def test_self_opposite_and_deltas_and_mean_abs_delta():
    base_values, tuned_values = _values((4, 7, 7), seed=405), _values((4, 7, 7), seed=406)
    layers = [10, 11, 12, 13]
    table = pd.concat(
        [
            circuit_table(base_values, layers=layers, query_names=NAMES).assign(model="base", circuit="qk"),
            circuit_table(tuned_values, layers=layers, query_names=NAMES).assign(model="tuned", circuit="qk"),
        ],
        ignore_index=True,
    )
    series = self_opposite(table)
    assert set(series["query"]) == {"PC1", "PC2"} and set(series["relation"]) == {"self", "opposite"}
    opp = series[(series["query"] == "PC2") & (series["relation"] == "opposite") & (series["model"] == "tuned")]
    assert list(opp["key"].unique()) == ["-PC2"]
    assert opp.sort_values("layer")["value"].tolist() == pytest.approx(tuned_values[:, 2, 3].tolist())

    deltas = tuned_minus_base(series)
    assert len(deltas) == 2 * 2 * 4  # directions x relations x layers
    z = {}
    for label, values in (("base", base_values), ("tuned", tuned_values)):
        diag = values.numpy()[:, [4, 5, 6], [4, 5, 6]]
        z[label] = (values.numpy()[:, 0, 0] - diag.mean(1)) / (diag.std(1) + 1e-8)  # PC1 -> PC1
    pc1_self = deltas[(deltas["query"] == "PC1") & (deltas["relation"] == "self")].sort_values("layer")
    np.testing.assert_allclose(pc1_self["delta_z"], z["tuned"] - z["base"], rtol=1e-5)

    summary = mean_abs_delta(deltas, [11, 12], explained_variance=[0.5, 0.2])
    row = summary[(summary["direction"] == "PC1") & (summary["relation"] == "self")].iloc[0]
    assert row["mean_abs_delta_z"] == pytest.approx(np.abs((z["tuned"] - z["base"])[1:3]).mean(), rel=1e-5)
    assert row["number"] == 1 and row["n_layers"] == 2 and row["explained_variance"] == 0.5
    assert summary[summary["direction"] == "PC2"]["explained_variance"].tolist() == [0.2, 0.2]


def test_baseline_bad_inputs_name_the_argument():
    values = _values((2, 7, 7), seed=407)
    with pytest.raises(ValueError, match="random_prefix.*at least 2"):
        random_baseline(values, NAMES, random_prefix="Noise")
    with pytest.raises(ValueError, match="baseline"):
        random_baseline(values, NAMES, baseline="median")
    with pytest.raises(ValueError, match="values.*does not match"):
        circuit_table(values, layers=[0, 1], query_names=NAMES[:5])
    with pytest.raises(ValueError, match="layers.*2 layers"):
        circuit_table(values, layers=[0], query_names=NAMES)
    table = circuit_table(values, layers=[0, 1], query_names=NAMES)
    with pytest.raises(ValueError, match="directions"):
        self_opposite(table, ["PC7"])
    with pytest.raises(ValueError, match="table.*model"):
        tuned_minus_base(table)
    with pytest.raises(ValueError, match="deltas.*missing"):
        mean_abs_delta(table, [0])
    with pytest.raises(TypeError, match="table.*DataFrame"):
        self_opposite(values)


def test_weight_circuits_on_default_pair(default_pair):
    """The one-call table equals the kernels' values, per model; seeded probes (DirectionSet.random)."""
    d_model = default_pair.cfg.d_model
    pcs = DirectionSet.random(2, d_model, seed=408, prefix="PC").with_negations()
    probes = pcs.concat(DirectionSet.random(4, d_model, seed=409))
    layers = [8, 16]
    table = weight_circuits(default_pair, probes, layers=layers)
    assert set(table["circuit"]) == {"qk", "vo"} and set(table["model"]) == {"base", "tuned"}
    assert len(table) == 2 * 2 * len(layers) * len(probes) ** 2
    qk = reduce_heads(qk_affinity(default_pair.tuned, probes, layers=layers), "mean")
    rows = table[(table["circuit"] == "qk") & (table["model"] == "tuned") & (table["layer"] == 16)]
    got = rows.pivot(index="query", columns="key", values="value").loc[list(probes.names), list(probes.names)]
    np.testing.assert_allclose(got.to_numpy(), qk[1].numpy(), rtol=1e-5, atol=1e-6)
    vo = vo_decomposition(default_pair.base, probes, layers=layers).sum_cos
    rows = table[(table["circuit"] == "vo") & (table["model"] == "base") & (table["layer"] == 8)]
    got = rows.pivot(index="query", columns="key", values="value").loc[list(probes.names), list(probes.names)]
    np.testing.assert_allclose(got.to_numpy(), vo[0].numpy(), rtol=1e-5, atol=1e-6)  # heads summed in another order
    # layer 8 is outside the LoRA (layers 9-23): base and tuned circuits agree exactly there
    deltas = tuned_minus_base(table)
    assert deltas[deltas["layer"] == 8]["delta_value"].abs().max() == 0
    assert deltas[deltas["layer"] == 16]["delta_value"].abs().max() > 0
    per_head = weight_circuits(default_pair.base, probes, layers=[16], per_head=True)
    assert set(per_head["model"]) == {"model"} and per_head["head"].nunique() == default_pair.cfg.n_heads
    with pytest.raises(ValueError, match="vo_metric"):
        weight_circuits(default_pair, probes, layers=layers, vo_metric="angle")


def test_weight_circuits_refuses_a_table_above_max_rows_before_any_work(default_pair, monkeypatch):
    """2 circuits × 2 models × 2 layers × 8² = 512 rows: max_rows=511 is refused with the row count
    (the kernels are never called), 512 is built; per_head multiplies by the head count."""
    import interp.circuits.weight_table as tables

    d_model = default_pair.cfg.d_model
    probes = DirectionSet.random(2, d_model, seed=1, prefix="PC").with_negations()
    probes = probes.concat(DirectionSet.random(4, d_model, seed=2))
    assert len(weight_circuits(default_pair, probes, layers=[3, 4], max_rows=512)) == 512

    def boom(*args, **kwargs):
        raise AssertionError("the kernels ran before the size check")

    monkeypatch.setattr(tables, "qk_mean_affinity", boom)
    monkeypatch.setattr(tables, "qk_affinity", boom)
    with pytest.raises(ValueError, match=r"directions: 8 directions × 8 over 2 layers.* 512 rows.*max_rows=511"):
        weight_circuits(default_pair, probes, layers=[3, 4], max_rows=511)
    heads = default_pair.cfg.n_heads
    with pytest.raises(ValueError, match=rf"every head.* {512 * heads:,} rows"):
        weight_circuits(default_pair, probes, layers=[3, 4], per_head=True, max_rows=512 * heads - 1)


def test_weight_circuits_checks_its_arguments_before_any_work(default_pair, monkeypatch):
    """Bad names, a random baseline that cannot be formed and an unknown head reduction are refused
    before a kernel runs, each naming its argument."""
    import interp.circuits.weight_table as tables

    def boom(*args, **kwargs):
        raise AssertionError("a kernel ran before the arguments were checked")

    for kernel in ("qk_mean_affinity", "qk_affinity", "vo_decomposition"):
        monkeypatch.setattr(tables, kernel, boom)
    d_model = default_pair.cfg.d_model
    probes = DirectionSet.random(1, d_model, seed=1, prefix="PC").concat(DirectionSet.random(3, d_model, seed=2))
    with pytest.raises(ValueError, match="names: 2 names for 4 directions"):
        weight_circuits(default_pair, probes, names=["a", "b"])
    with pytest.raises(ValueError, match="random_prefix: need at least 2 'self' entries"):
        weight_circuits(default_pair, probes, random_prefix="Noise")
    with pytest.raises(ValueError, match="head_reduction: expected one of"):
        weight_circuits(default_pair, probes, head_reduction="median")


@pytest.mark.parametrize("fixture", ["smollm2", "gemma"])
def test_opposite_series_is_an_exact_function_of_self_in_bias_free_models(request, fixture):
    """Without attention biases (and with odd norms: RMSNorm(−u) = −RMSNorm(u)), QK(u, −u) = −QK(u, u)
    and cos(VO(u), −u) = −cos(VO(u), u), so with the self baseline (μ, σ) of the same layer
    z_opp = −z_self − 2μ/(σ + 1e-8): the opposite series adds no information there."""
    model = request.getfixturevalue(fixture)
    for name in ("b_Q", "b_K", "b_V", "b_O"):
        assert all(float(getattr(block.attn, name).abs().max()) == 0 for block in model.blocks), name
    d_model = model.cfg.d_model
    probes = DirectionSet.random(3, d_model, seed=410, prefix="PC").with_negations()
    probes = probes.concat(DirectionSet.random(6, d_model, seed=411))
    layers = [0, model.cfg.n_layers // 2, model.cfg.n_layers - 1]
    series = self_opposite(weight_circuits(model, probes, layers=layers), ["PC1", "PC2", "PC3"])
    keys = ["circuit", "layer", "query"]
    self_rows = series[series["relation"] == "self"].set_index(keys).sort_index()
    opp_rows = series[series["relation"] == "opposite"].set_index(keys).sort_index()
    assert len(self_rows) == len(opp_rows) == 2 * len(layers) * 3
    assert (opp_rows["baseline_mean"] == self_rows["baseline_mean"]).all()
    np.testing.assert_allclose(opp_rows["value"], -self_rows["value"], rtol=1e-5, atol=1e-6)
    mu, sigma = self_rows["baseline_mean"], self_rows["baseline_std"]
    predicted = -self_rows["z"] - 2 * mu / (sigma + 1e-8)
    np.testing.assert_allclose(opp_rows["z"], predicted, rtol=1e-4, atol=1e-3)
