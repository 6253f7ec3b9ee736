"""Paired nulls of activation changes: the bootstrap against a plain numpy bootstrap with the same seed
and a known distribution, the sign-flip p-value against a hand enumeration, and attention_study on
a pair whose tuned model sharpens one layer's attention (W_Q × 3: lower entropy on every prompt)."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pandas as pd
import pytest

from interp import ModelPair
from interp._stats import bootstrap_ci, sign_flip_p_value
from interp.activations import attention_study
from interp.activations.nulls import paired_change

QUESTIONS = ["What is 15 plus 27?", "Name a large city.", "Why is the sky blue?", "How do birds fly?",
             "What is a prime number?", "Who wrote plays?", "Describe a cat.", "When does winter start?"]
VARIANTS = {f"q{i}": (None, q) for i, q in enumerate(QUESTIONS)}
SHARPENED = 3
LAYERS = [1, SHARPENED, 5]


def _mean(d: np.ndarray) -> np.ndarray:
    return d.mean(1)


def test_bootstrap_matches_a_plain_numpy_bootstrap():
    d = np.random.default_rng(1).normal(size=(12, 3))
    low, high = bootstrap_ci(d, _mean, n_resamples=500, seed=9, level=0.9)
    rng = np.random.default_rng(9)
    draws = rng.integers(0, 12, size=(500, 12))
    means = np.array([[np.mean(d[row, j]) for j in range(3)] for row in draws])
    np.testing.assert_allclose(low, np.quantile(means, 0.05, axis=0), rtol=1e-12)
    np.testing.assert_allclose(high, np.quantile(means, 0.95, axis=0), rtol=1e-12)


def test_bootstrap_ci_of_a_known_distribution():
    # mean of 400 draws of N(1, 2²): the 95% interval is mean ± 1.96 · 2 / 20 = ± 0.196
    d = np.random.default_rng(4).normal(1.0, 2.0, size=(400, 1))
    low, high = bootstrap_ci(d, _mean, n_resamples=4000, seed=0)
    assert high[0] - low[0] == pytest.approx(2 * 1.96 * 2 / 20, rel=0.1)
    assert low[0] < d.mean() < high[0] and low[0] < 1.0 < high[0]


def test_sign_flip_p_value_by_hand():
    d = np.array([[1.0], [2.0], [3.0]])
    p, exact = sign_flip_p_value(d, lambda x: np.abs(x.mean(1)), n_permutations=100)
    # |±1 ±2 ±3| / 3 over the 8 sign vectors: 2, 4/3, 2/3, 0, 0, 2/3, 4/3, 2 -> two are >= 2
    assert exact and p[0] == pytest.approx(2 / 8)
    ones = np.ones((20, 1))  # 2^20 sign vectors > 999: random flips, +1 correction
    p, exact = sign_flip_p_value(ones, lambda x: np.abs(x.mean(1)), n_permutations=999, seed=3)
    assert not exact and 1 / 1000 <= p[0] <= 3 / 1000
    zeros = np.zeros((5, 2))
    p, _ = sign_flip_p_value(zeros, lambda x: np.abs(x.mean(1)))
    np.testing.assert_array_equal(p, [1.0, 1.0])


def test_paired_change_by_hand():
    d = np.array([[[0.5, -0.1], [0.2, 0.0]], [[0.3, 0.1], [0.1, 0.0]], [[0.4, -0.3], [0.3, 0.0]]])  # [unit, layer, head]
    rows = [{"label": f"p{u}", "layer": layer, "head": h, "entropy": d[u, layer, h]}
            for u, layer, h in itertools.product(range(3), range(2), range(2))]
    table = paired_change(pd.DataFrame(rows), "entropy", unit="label", items=["layer", "head"], groups=["layer"],
                          n_resamples=200).set_index("layer")
    m = d.mean(0)  # [layer, head]
    np.testing.assert_allclose(table["mean_delta"], m.mean(1))
    np.testing.assert_allclose(table["mean_abs_delta"], np.abs(d).mean(0).mean(1))
    np.testing.assert_allclose(table["consistent_change"], np.abs(m).mean(1))
    # layer 0 by hand over the 8 sign vectors of the three units
    flips = [np.abs((np.array(s)[:, None] * d[:, 0]).mean(0)).mean() for s in itertools.product((1, -1), repeat=3)]
    observed = np.abs(m[0]).mean()
    assert table.loc[0, "p_value"] == pytest.approx(np.mean([f >= observed - 1e-12 for f in flips]))
    assert table.loc[0, "exact"] and (table["n_units"] == 3).all() and (table["n_items"] == 2).all()
    assert (table["mean_delta_low"] <= table["mean_delta"]).all() and (table["mean_delta"] <= table["mean_delta_high"]).all()
    with pytest.raises(ValueError, match="groups: \\['prompt'\\] are not item columns"):
        paired_change(pd.DataFrame(rows), "entropy", unit="label", items=["layer", "head"], groups=["prompt"])
    with pytest.raises(ValueError, match="deltas: not every label has every"):
        paired_change(pd.DataFrame(rows[1:]), "entropy", unit="label", items=["layer", "head"])


@pytest.fixture(scope="module")
def sharpened(smollm2):
    tuned = copy.deepcopy(smollm2)
    tuned.blocks[SHARPENED].attn.W_Q.data *= 3.0  # larger logits: sharper attention, lower entropy
    return attention_study(ModelPair(smollm2, tuned), VARIANTS, layers=LAYERS, head_type_length=10,
                           head_type_sequences=8, progress=False, n_resamples=500)


def test_sharpened_layer_is_flagged_with_an_interval(sharpened):
    layers = sharpened.entropy_layer_nulls.set_index("layer")
    n = len(VARIANTS)
    # before the edit nothing changes: zero change, zero-width interval, p = 1
    assert layers.loc[1, "mean_abs_delta"] == 0 and layers.loc[1, "p_value"] == 1
    assert layers.loc[1, "mean_delta_low"] == layers.loc[1, "mean_delta_high"] == 0
    # the sharpened layer: entropy falls on every prompt; the smallest exact p is 2 / 2^n
    row = layers.loc[SHARPENED]
    assert row["exact"] and row["p_value"] == pytest.approx(2 / 2**n)
    assert row["mean_delta_high"] < 0 and row["mean_abs_delta_low"] > 0
    # the per-layer numbers are the study's own table's, with the interval around them
    by_layer = sharpened.entropy_change_by_layer().set_index("layer")
    assert row["mean_abs_delta"] == pytest.approx(by_layer.loc[SHARPENED, "mean_abs_delta"], rel=1e-6)
    assert row["mean_abs_delta_low"] <= row["mean_abs_delta"] <= row["mean_abs_delta_high"]
    text = sharpened.null_phrase(row, "prompts")
    assert f"over {n} prompts" in text and text.endswith(": distinguishable from no change")
    heads = sharpened.entropy_head_nulls
    assert (heads.loc[heads.layer == 1, "p_value"] == 1).all()
    assert (heads.loc[heads.layer == SHARPENED, "mean_delta"] < 0).mean() > 0.5


def _sign_flip_p(d: list[float]) -> float:
    """Exact sign-flip p-value of |mean d| in plain python: the share of the 2^n sign vectors whose
    |mean| is at least the observed one."""
    observed = abs(sum(d) / len(d))
    flips = [abs(sum(s * x for s, x in zip(signs, d, strict=True)) / len(d))
             for signs in itertools.product((1, -1), repeat=len(d))]
    return sum(f >= observed * (1 - 1e-9) for f in flips) / len(flips)


def _bootstrap(d: np.ndarray, statistic, n_resamples: int, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap in plain numpy: rows resampled as numpy.random.default_rng(seed).integers."""
    draws = np.random.default_rng(seed).integers(0, len(d), size=(n_resamples, len(d)))
    values = [statistic(d[row]) for row in draws]
    return np.quantile(values, [(1 - level) / 2, (1 + level) / 2])


def test_normalized_entropy_change_has_its_own_paired_null(sharpened):
    """The normalised entropy H / ln n_keys gets the raw entropy's paired null on its own per-variant
    values: p-values equal a plain-python sign-flip enumeration and intervals a plain numpy bootstrap,
    per layer (the layer table and its summary columns) and per head."""
    labels = sorted(VARIANTS)  # the units, in the order paired_change pivots them
    layer_delta = sharpened.layer_frame[sharpened.layer_frame.model == "delta"]
    nulls = sharpened.normalized_entropy_layer_nulls.set_index("layer")
    by_layer = sharpened.entropy_change_by_layer().set_index("layer")
    for layer in LAYERS:
        d = layer_delta[layer_delta.layer == layer].set_index("label").loc[labels, "normalized_entropy"].to_numpy(float)
        p = _sign_flip_p(d.tolist())
        low, high = _bootstrap(d, lambda x: np.abs(x).mean(), n_resamples=500)
        row = nulls.loc[layer]
        assert row["p_value"] == pytest.approx(p, abs=1e-12) and row["exact"]
        assert row["mean_abs_delta"] == pytest.approx(np.abs(d).mean(), abs=1e-12)
        assert (row["mean_abs_delta_low"], row["mean_abs_delta_high"]) == pytest.approx((low, high), abs=1e-12)
        table = by_layer.loc[layer]
        assert table["mean_abs_delta_normalized"] == pytest.approx(np.abs(d).mean(), rel=1e-9, abs=1e-15)
        assert (table["ci_low_normalized"], table["ci_high_normalized"], table["p_value_normalized"]) == \
            pytest.approx((low, high, p), abs=1e-12)
    # the raw entropy's own columns are untouched, and the sharpened layer is flagged in both
    assert by_layer.loc[SHARPENED, "p_value"] == sharpened.entropy_layer_nulls.set_index("layer").loc[SHARPENED, "p_value"]
    assert by_layer.loc[SHARPENED, "p_value_normalized"] == pytest.approx(2 / 2 ** len(VARIANTS))
    assert by_layer.loc[1, "p_value_normalized"] == 1 and by_layer.loc[1, "ci_high_normalized"] == 0
    head_delta = sharpened.heads[sharpened.heads.model == "delta"]
    heads = sharpened.entropy_head_changes().set_index(["layer", "head"])
    head_nulls = sharpened.normalized_entropy_head_nulls.set_index(["layer", "head"])
    for head in (0, 4):
        rows = head_delta[(head_delta.layer == SHARPENED) & (head_delta["head"] == head)]
        d = rows.set_index("label").loc[labels, "normalized_entropy"].to_numpy(float)
        p = _sign_flip_p(d.tolist())
        low, high = _bootstrap(d, np.mean, n_resamples=500)
        assert head_nulls.loc[(SHARPENED, head), "p_value"] == pytest.approx(p, abs=1e-12)
        row = heads.loc[(SHARPENED, head)]
        assert row["normalized_delta"] == pytest.approx(d.mean(), abs=1e-7)
        assert (row["normalized_ci_low"], row["normalized_ci_high"], row["normalized_p_value"]) == \
            pytest.approx((low, high, p), abs=1e-12)


def test_head_type_changes_are_tested_over_sequences(sharpened):
    nulls = sharpened.head_type_nulls
    assert set(nulls["type"]) == {"previous_token", "duplicate_token", "induction"}
    assert (nulls["n_units"] == 8).all() and nulls["exact"].all()
    assert (nulls.loc[nulls.layer == 1, "p_value"] == 1).all()
    # the per-sequence scores average to the study's own head-type table
    seq = sharpened.head_type_by_sequence
    mean = seq.groupby(["model", "layer", "head"])["induction"].mean()
    table = sharpened.head_types.set_index(["model", "layer", "head"])["induction"].sort_index()
    np.testing.assert_allclose(mean.loc[table.index], table, atol=1e-6)
    # the mean over sequences of each head's Δ is the table's Δ
    at3 = nulls[(nulls.layer == SHARPENED) & (nulls.type == "induction")].set_index("head")["mean_delta"]
    np.testing.assert_allclose(at3, table.loc["delta", SHARPENED].loc[at3.index], atol=1e-6)
    assert (nulls.loc[nulls.layer == SHARPENED, "p_value"] <= 2 / 2**8).any()


def test_base_equals_tuned_has_no_change(smollm2):
    study = attention_study(ModelPair(smollm2, smollm2), dict(list(VARIANTS.items())[:3]), layers=[0, 2],
                            head_type_length=6, head_type_sequences=3, progress=False, n_resamples=50)
    for frame in (study.entropy_layer_nulls, study.entropy_head_nulls, study.normalized_entropy_layer_nulls,
                  study.normalized_entropy_head_nulls, study.head_type_nulls):
        assert (frame[["mean_delta", "mean_delta_low", "mean_delta_high", "consistent_change"]] == 0).all().all()
        assert (frame["p_value"] == 1).all()
    with pytest.raises(ValueError, match="alpha: expected a float"):
        attention_study(ModelPair(smollm2, smollm2), VARIANTS, alpha=0)
