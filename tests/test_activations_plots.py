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


@pytest.mark.parametrize("fixture", ["smollm2", "gemma"])
def test_head_averaged_heatmap_equals_the_mean_of_hook_pattern(request, fixture):
    """Seed 004's last-layer heatmap: ``head=None`` gives mean_h hook_pattern[h] of that layer, and the
    figure's cells are those values; any layer works."""
    import torch

    model = request.getfixturevalue(fixture)
    prompt = "Let's think step by step. What is 15 plus 27?"
    last = model.cfg.n_layers - 1
    _, cache = model.run_with_cache(model.to_tokens(prompt), names_filter=lambda n: n.endswith("hook_pattern"))
    for layer in (last, 2):
        pattern = attention_pattern(model, prompt, layer=layer, head=None)
        expected = cache["pattern", layer][0].mean(0)
        assert pattern.head is None and pattern.layer == layer
        torch.testing.assert_close(pattern.pattern, expected, atol=1e-6, rtol=0)
        fig = attention_heatmap(pattern)
        np.testing.assert_allclose(np.asarray(fig.data[0].z), expected.numpy(), atol=1e-6)
        assert "mean over heads" in fig.layout.title.text and f"layer {layer}" in fig.layout.title.text
        np.testing.assert_allclose(np.asarray(fig.data[0].z).sum(-1), 1, atol=1e-5)  # rows are distributions
    one = attention_pattern(model, prompt, layer=last, head=1)
    torch.testing.assert_close(one.pattern, cache["pattern", last][0, 1], atol=1e-6, rtol=0)
    assert "head 1" in attention_heatmap(one).layout.title.text


def test_prompt_sensitivity_ranks_by_normalized_entropy_when_lengths_differ(smollm2, metrics):
    """The spread per layer is max − min over variants of the head-mean (normalised) entropy, recomputed
    here from the metric tensors; with variants of different lengths the ranking is by the normalised
    spread, with equal lengths by the raw one."""
    from interp.activations import attention_metrics, prompt_sensitivity

    assert metrics.n_keys[0] != metrics.n_keys[1]
    table = prompt_sensitivity(metrics.layer_frame())
    assert set(table["ranked_by"]) == {"normalized_entropy_spread"}
    assert np.all(np.diff(table["normalized_entropy_spread"]) <= 0)
    for value, column in (("entropy", "entropy_spread"), ("normalized_entropy", "normalized_entropy_spread")):
        per_variant = getattr(metrics, value).mean(-1)  # [prompt, layer]
        spread = (per_variant.max(0).values - per_variant.min(0).values).numpy()
        got = table.set_index("layer").loc[list(metrics.layers), column].to_numpy()
        np.testing.assert_allclose(got, spread, atol=1e-6)
    same_length = attention_metrics(smollm2, ["What is 15 plus 27?", "What is 16 plus 28?"], labels=["a", "b"],
                                    layers=[0, 1])
    assert same_length.n_keys[0] == same_length.n_keys[1]
    assert set(prompt_sensitivity(same_length.layer_frame())["ranked_by"]) == {"entropy_spread"}
    with pytest.raises(ValueError, match="layer_frame: missing column"):
        prompt_sensitivity(metrics.layer_frame().drop(columns="n_keys"))
