"""Figures for the activation analyses show exactly the numbers of the frames they are built from."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from interp.activations import attention_pattern, compare_prompt_variants, qkv_similarity_study
from interp.plots.activations import (
    attention_heatmap,
    entropy_by_layer,
    head_metric_heatmap,
    similarity_densities,
)

VARIANTS = {"plain": "What is 15 plus 27?", "cot": "Let's think step by step.\n\nWhat is 15 plus 27?"}


@pytest.fixture(scope="module")
def metrics(smollm2):
    return compare_prompt_variants(smollm2, VARIANTS, layers=[0, 1, 2])


def test_attention_heatmap_labels_every_token_once(smollm2):
    pattern = attention_pattern(smollm2, "the cat and the dog and the cat", layer=1, head=0)
    fig = attention_heatmap(pattern)
    assert isinstance(fig, go.Figure)
    heat = fig.data[0]
    assert len(set(heat.x)) == len(pattern.tokens)  # repeated tokens keep separate columns
    np.testing.assert_array_equal(np.asarray(heat.z), pattern.pattern.numpy())
    assert np.asarray(attention_heatmap(pattern, max_tokens=3).data[0].z).shape == (3, 3)


def test_entropy_by_layer_draws_one_curve_per_variant(metrics):
    frame = metrics.layer_frame()
    fig = entropy_by_layer(frame, value="head_mean_entropy")
    assert [t.name for t in fig.data] == list(VARIANTS)
    cot = frame[frame["label"] == "cot"].sort_values("layer")
    np.testing.assert_allclose(np.asarray(fig.data[1].y), cot["head_mean_entropy"].to_numpy())
    assert "nats" in fig.layout.title.text


def test_head_metric_heatmap_is_layer_by_head_mean(metrics):
    frame = metrics.to_frame()
    fig = head_metric_heatmap(frame, "sink")
    z = np.asarray(fig.data[0].z)
    assert z.shape == (3, 9)
    expected = frame.query("layer == 2 and head == 5")["sink"].mean()
    assert z[2, 5] == pytest.approx(expected)


def test_similarity_densities_has_the_seed_panels(smollm2):
    sentences = ["I saw her at the market.", "She gave her the book.", "They asked her for advice."]
    study = qkv_similarity_study(smollm2, sentences, " her", layer=1, bins=20)
    fig = similarity_densities(study.histograms)
    names = [t.name for t in fig.data]
    assert names.count("QQ") == 2 and names.count("KV") == 2 and names.count("shuffled") == 2
    qk_target = study.histograms.query("condition == 'target' and block == 'QK'")
    first_qk = next(t for t in fig.data if t.name == "QK")
    np.testing.assert_allclose(np.asarray(first_qk.y), qk_target["density"].to_numpy())


def test_plots_reject_bad_frames(metrics):
    with pytest.raises(ValueError, match=r"missing column\(s\) \['entropy_x'\]"):
        head_metric_heatmap(metrics.to_frame(), "entropy_x")
    with pytest.raises(TypeError, match="frame: expected a pandas DataFrame"):
        head_metric_heatmap({"layer": [0]}, "entropy")
    with pytest.raises(TypeError, match="pattern: expected an AttentionPattern"):
        attention_heatmap(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="histograms: missing"):
        similarity_densities(metrics.to_frame())
