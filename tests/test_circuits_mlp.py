"""MLP pass (interp.circuits.mlp_pass) against TransformerLens' forward pass on the real models, and
the base-vs-tuned comparison on the default pair. Random directions: seeded torch.Generator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _circuit_checks import assert_close_to_scale, one_token_hooks, seeded_directions

from interp.circuits import compare_mlp_pass, delta_projections, mlp_pass, top_bottom
from interp.circuits.mlp_pass import MLPPassComparison
from interp.circuits.stacking import CHUNK_BYTES

SMOL_LAYERS = [0, 15, 29]
GEMMA_LAYERS = [0, 5, 17]



def _mlp_out_by_hook(model, layers, directions):
    """blocks.L.hook_mlp_out for one-token sequences whose resid_mid at layer L is directions[b]."""
    return one_token_hooks(model, layers, directions, "hook_resid_mid", "hook_mlp_out")


@pytest.mark.parametrize("budget", [0, 2**40], ids=["per_layer", "stacked"])
@pytest.mark.parametrize(
    "fixture,layers",
    [("smollm2", SMOL_LAYERS), ("smollm2_raw", SMOL_LAYERS), ("gemma", GEMMA_LAYERS), ("gemma_raw", GEMMA_LAYERS)],
)
def test_mlp_pass_equals_hook_mlp_out(request, monkeypatch, fixture, layers, budget):
    monkeypatch.setitem(CHUNK_BYTES, "cpu", budget)
    model = request.getfixturevalue(fixture)
    dirs = seeded_directions(4, model.cfg.d_model, seed=301)
    assert_close_to_scale(mlp_pass(model, dirs, layers=layers), _mlp_out_by_hook(model, layers, dirs),
                  what=f"{fixture} MLP pass vs hook_mlp_out")


def test_mlp_pass_without_post_norm(gemma):
    """post_norm=False: the same, minus Gemma's ln2_post (checked against the module applied by hand)."""
    layers = [4]
    dirs = seeded_directions(2, gemma.cfg.d_model, seed=302)
    raw = mlp_pass(gemma, dirs, layers=layers, post_norm=False)
    assert_close_to_scale(gemma.blocks[4].ln2_post(raw[0]), mlp_pass(gemma, dirs, layers=layers)[0], what="ln2_post")


def test_compare_mlp_pass_table_matches_forward_passes(default_pair):
    """Norms, |Δ| and 1 - cos from hook_mlp_out of both models (numpy); LoRA-free layers give Δ = 0."""
    layers = [3, 12, 20, 27]  # the default LoRA touches layers 9-23
    dirs = seeded_directions(3, default_pair.base.cfg.d_model, seed=303)
    comparison = compare_mlp_pass(default_pair, dirs, layers=layers, names=["a", "b", "c"])
    table = comparison.table()
    base = _mlp_out_by_hook(default_pair.base, layers, dirs).double().numpy()
    tuned = _mlp_out_by_hook(default_pair.tuned, layers, dirs).double().numpy()
    expected = pd.DataFrame(
        {
            "layer": np.repeat(layers, 3),
            "direction": ["a", "b", "c"] * len(layers),
            "base_norm": np.linalg.norm(base, axis=-1).ravel(),
            "tuned_norm": np.linalg.norm(tuned, axis=-1).ravel(),
            "delta_norm": np.linalg.norm(tuned - base, axis=-1).ravel(),
            "one_minus_cos": 1 - ((base * tuned).sum(-1) / (np.linalg.norm(base, axis=-1) * np.linalg.norm(tuned, axis=-1))).ravel(),
        }
    )
    pd.testing.assert_frame_equal(table, expected, rtol=1e-4, atol=1e-5, check_dtype=False)
    outside = table[table["layer"].isin([3, 27])]
    inside = table[table["layer"].isin([12, 20])]
    assert (outside["delta_norm"] == 0).all(), "layers without LoRA must be unchanged"
    assert (inside["delta_norm"] > 0).all()


def test_delta_projections_and_top_bottom(default_pair):
    dirs = seeded_directions(2, default_pair.base.cfg.d_model, seed=304)
    probes = seeded_directions(6, default_pair.base.cfg.d_model, seed=305) * 4
    comparison = compare_mlp_pass(default_pair, dirs, layers=[15], names=["x", "y"])
    table = delta_projections(comparison, probes, layer=15, direction="y", probe_names=list("ABCDEF"))
    delta = (_mlp_out_by_hook(default_pair.tuned, [15], dirs) - _mlp_out_by_hook(default_pair.base, [15], dirs))[0, 1]
    expected = {name: float(delta @ p / p.norm()) for name, p in zip("ABCDEF", probes, strict=True)}
    got = dict(zip(table["probe"], table["projection"], strict=True))
    # Δ is a difference of outputs of norm ~10: float32 cancellation leaves ~1e-6 absolute error
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-4)
    assert list(table["probe"]) == sorted(expected, key=lambda k: -expected[k])
    by_abs = sorted(expected, key=lambda k: -abs(expected[k]))
    assert dict(zip(table["probe"], table["rank_abs"], strict=True)) == {k: i + 1 for i, k in enumerate(by_abs)}
    ends = top_bottom(table, 2)
    assert list(ends["end"]) == ["top", "top", "bottom", "bottom"]
    assert list(ends["probe"]) == list(table["probe"].iloc[[0, 1, 4, 5]])
    seed_style = top_bottom(table, 2, by="abs")
    assert list(seed_style["probe"]) == [by_abs[0], by_abs[1], by_abs[4], by_abs[5]]


def test_mlp_bad_inputs_name_the_argument(smollm2, gemma):
    d = smollm2.cfg.d_model
    good = seeded_directions(2, d, seed=306)
    with pytest.raises(ValueError, match="directions.*width 640"):
        mlp_pass(smollm2, torch.ones(1, 640))
    with pytest.raises(ValueError, match="directions.*zero"):
        mlp_pass(smollm2, torch.zeros(2, d))
    with pytest.raises(ValueError, match="layers.*99"):
        mlp_pass(smollm2, good, layers=[0, 99])
    with pytest.raises(ValueError, match="pair.*different architectures.*d_model"):
        compare_mlp_pass((smollm2, gemma), good)
    with pytest.raises(TypeError, match="pair"):
        compare_mlp_pass(smollm2, good)
    with pytest.raises(ValueError, match="names: 3 names for 2 directions"):
        compare_mlp_pass((smollm2, smollm2), good, names=["a", "b", "c"])
    comparison = MLPPassComparison((1,), ("x",), torch.ones(1, 1, d), torch.ones(1, 1, d))
    with pytest.raises(ValueError, match="layer.*not among"):
        delta_projections(comparison, good, layer=2, direction="x")
    with pytest.raises(ValueError, match="direction.*not among"):
        delta_projections(comparison, good, layer=1, direction="z")
    with pytest.raises(ValueError, match="probes.*width"):
        delta_projections(comparison, torch.ones(1, 5), layer=1, direction="x")
    with pytest.raises(ValueError, match="k"):
        top_bottom(pd.DataFrame({"projection": [1.0], "abs_projection": [1.0]}), 0)
