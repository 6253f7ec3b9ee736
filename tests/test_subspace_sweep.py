"""The whole sweep on a pair: table structure, a planted ground truth, determinism, bad input.

The planted pair is SmolLM2 with a delta whose residual writes lie inside the model's own
``mlp_write`` subspace (Gaussian coefficients from ``torch.Generator().manual_seed(0)``), so the
right answer is known: ``mlp_write`` must reach the maximum R_w = d/k.
"""

from __future__ import annotations

import types

import einops
import numpy as np
import pandas as pd
import pytest
import torch

from interp.subspace import CLAIMS, subspace_sweep, weight_bases

LAYERS = [10, 11]
K = 8
INCLUDE = ["write", "mlp_write", "mlp_up_read", "qk_circuit", "persona_contrast", "layer_clean_resid_pca",
           "chars_clusters"]
SMALL = {"k": K, "claims": CLAIMS[:8], "include": INCLUDE}


def _planted_delta(model) -> dict[str, torch.Tensor]:  # noqa: ANN001
    gen = torch.Generator().manual_seed(0)
    basis = weight_bases(model, LAYERS, K, include=["mlp_write"])[0]
    n_heads, d_head = model.cfg.n_heads, model.cfg.d_head
    delta = {}
    for layer in LAYERS:
        b = basis.at(layer)
        w_o = b @ torch.randn(K, n_heads * d_head, generator=gen) * 0.02
        w_out = b @ torch.randn(K, model.cfg.d_mlp, generator=gen) * 0.02
        delta[f"blocks.{layer}.attn.W_O"] = einops.rearrange(w_o, "d (head dh) -> head dh d", head=n_heads)
        delta[f"blocks.{layer}.mlp.W_out"] = einops.rearrange(w_out, "d m -> m d")
    return delta


@pytest.fixture(scope="module")
def planted(smollm2):
    delta = _planted_delta(smollm2)
    return types.SimpleNamespace(base=smollm2, delta=lambda: delta)


@pytest.fixture(scope="module")
def result(planted):
    return subspace_sweep(planted, **SMALL)


def test_tables_have_one_row_per_basis_and_layer(result):
    per_layer = result.per_layer
    names = list(result.definitions["name"])
    assert len(per_layer) == len(names) * len(LAYERS)
    assert set(per_layer["basis"]) == set(names)
    assert not per_layer.duplicated(["basis", "layer"]).any()
    assert {"act_ceiling", "weight_ceiling", "random"} <= set(names)
    assert set(result.definitions["axis_kind"]) <= {"write", "read", "mixed", "ceiling"}
    assert result.layers == tuple(LAYERS)
    assert result.config["n_fit"] == 4 and result.config["n_eval"] == 4


def test_summary_is_the_layer_mean_ranked_by_the_geometric_mean(result):
    means = result.per_layer.groupby("basis")[["R_act", "R_w_combined"]].mean()
    both = pd.concat([result.summary, result.read_side])
    for _, row in both.iterrows():
        r_act, r_w = means.loc[row["basis"]]
        assert np.isclose(row["mean_R_act"], r_act) and np.isclose(row["mean_R_w_combined"], r_w)
        assert np.isclose(row["joint"], np.sqrt(r_act * r_w))
    assert (np.diff(result.summary["joint"]) <= 0).all()
    assert (result.read_side["axis_kind"] == "read").all()
    assert (result.summary["axis_kind"] != "read").all()
    assert set(result.read_side["basis"]) == {"mlp_up_read"}


def test_planted_write_subspace_reaches_the_maximum(result):
    d = 576
    rows = result.per_layer[result.per_layer["basis"] == "mlp_write"]
    np.testing.assert_allclose(rows[["R_w_W_O", "R_w_W_out", "R_w_combined"]], d / K, rtol=1e-4)
    np.testing.assert_allclose(rows["pct_w_combined_ceiling"], 100, rtol=1e-4)
    ceiling = result.per_layer[result.per_layer["basis"] == "weight_ceiling"]
    np.testing.assert_allclose(ceiling["pct_w_combined_ceiling"], 100, rtol=1e-4)
    top_w = result.summary.sort_values("mean_R_w_combined", ascending=False)["basis"].head(2)
    assert set(top_w) == {"mlp_write", "weight_ceiling"}
    random = result.per_layer[result.per_layer["basis"] == "random"]
    assert (random["z_w_combined"].abs() < 4).all() and (random["z_act"].abs() < 4).all()


def test_two_runs_with_the_same_seed_give_identical_tables(planted):
    a = subspace_sweep(planted, null="monte_carlo", n_null=40, seed=3, **SMALL)
    b = subspace_sweep(planted, null="monte_carlo", n_null=40, seed=3, **SMALL)
    pd.testing.assert_frame_equal(a.per_layer, b.per_layer)
    pd.testing.assert_frame_equal(a.summary, b.summary)
    pd.testing.assert_frame_equal(a.read_side, b.read_side)


def test_layers_outside_the_adapter_and_bad_options_are_rejected(planted):
    with pytest.raises(ValueError, match=r"layers: \[3\] are outside the adapter's range"):
        subspace_sweep(planted, layers=[3, 10], **SMALL)
    with pytest.raises(ValueError, match="label"):
        subspace_sweep(planted, label="diff", **SMALL)
    with pytest.raises(ValueError, match="null"):
        subspace_sweep(planted, null="bootstrap", **SMALL)
    with pytest.raises(ValueError, match="k: rank must be at least 1"):
        subspace_sweep(planted, **{**SMALL, "k": 0})
    with pytest.raises(ValueError, match="fit_fraction"):
        subspace_sweep(planted, fit_fraction=0.95, **SMALL)
    with pytest.raises(TypeError, match="pair"):
        subspace_sweep(object(), **SMALL)
    reads = types.SimpleNamespace(base=planted.base, delta=lambda: {"blocks.10.mlp.W_in": torch.ones(576, 1536)})
    with pytest.raises(ValueError, match="no residual-write tensor"):
        subspace_sweep(reads, **SMALL)


def test_labels_on_the_default_pair(default_pair):
    """pair_label is tuned − base resid_post at the last token (checked against unpadded single runs);
    at the first tuned layer the steering label (+ΔW minus −ΔW) is, to first order, twice it."""
    from interp.subspace.captures import pair_label, steering_label
    from interp.subspace.probes import chat_texts, probe_prompts

    texts = chat_texts(default_pair.base.tokenizer, probe_prompts()[:4])
    pair = pair_label(default_pair, texts, [9])
    for i in (0, 3):
        tokens = default_pair.base.to_tokens(texts[i], prepend_bos=False)
        resid = [m.run_with_cache(tokens, names_filter="blocks.9.hook_resid_post", stop_at_layer=10)[1]
                 ["blocks.9.hook_resid_post"][0, -1] for m in (default_pair.tuned, default_pair.base)]
        torch.testing.assert_close(pair[0, i], resid[0] - resid[1], rtol=1e-3, atol=1e-4)
    steer = steering_label(default_pair.base, default_pair.delta(), texts, [9])
    cos = torch.nn.functional.cosine_similarity(steer, pair, dim=-1)
    ratio = steer.norm(dim=-1) / pair.norm(dim=-1)
    assert (cos > 0.99).all(), f"cosines {cos}"
    assert ((ratio - 2).abs() < 0.2).all(), f"norm ratios {ratio}"


def test_unknown_basis_names_are_refused_listing_the_known_ones(planted):
    with pytest.raises(ValueError, match=r"include: unknown bases \['no_such_basis'\]; known bases are .*'write'.*"
                                         r"'persona_contrast'"):
        subspace_sweep(planted, include=["no_such_basis"], claims=CLAIMS[:8])
    with pytest.raises(ValueError, match="qk_x_chars_clusters is built when qk_circuit and chars_clusters are included"):
        subspace_sweep(planted, include=["write", "qk_x_chars_clusters"], claims=CLAIMS[:8])
    with pytest.raises(TypeError, match="include: expected a sequence of basis names"):
        subspace_sweep(planted, include="write", claims=CLAIMS[:8])


NOTEBOOK_BASES = ["global_write_not_global_read", "causally_isolated", "input_super_not_lm_read", "suppressed",
                  "amplified", "added_features", "global_persona_resid_pca", "attn_min_x_diffnorm_taskdiff",
                  "up_proj_input_contrast", "up_proj_output_written_contrast"]


def test_the_sweep_builds_and_scores_the_notebook_bases_with_their_definitions(planted):
    result = subspace_sweep(planted, k=K, claims=CLAIMS[:8], include=NOTEBOOK_BASES)
    definitions = result.definitions.set_index("name")
    assert set(NOTEBOOK_BASES) <= set(definitions.index)
    assert (definitions.loc[NOTEBOOK_BASES, "definition"].str.len() > 40).all()
    rows = result.per_layer[result.per_layer["basis"].isin(NOTEBOOK_BASES)]
    assert len(rows) == len(NOTEBOOK_BASES) * len(LAYERS)
    assert np.isfinite(rows[["R_act", "R_w_combined"]].to_numpy()).all()
    assert set(result.read_side["basis"]) == {"input_super_not_lm_read"}


def test_cos_with_dw_ratio_of_means_and_conclusion(result):
    per_layer, summary = result.per_layer, result.summary
    # the planted delta writes inside mlp_write, so the ΔW basis lies in it: every principal cosine is 1
    for name in ("mlp_write", "weight_ceiling"):
        np.testing.assert_allclose(per_layer.loc[per_layer["basis"] == name, "cos_with_dW"], 1.0, atol=1e-4)
    random = per_layer.loc[per_layer["basis"] == "random", "cos_with_dW"]
    assert (random < 0.5).all() and (random > 0).all()
    # ratio of layer means vs mean of per-layer percentages: two columns, each its own definition
    means = per_layer.groupby("basis")[["R_act", "R_w_combined", "pct_w_combined_ceiling"]].mean()
    both = pd.concat([summary, result.read_side]).set_index("basis")
    np.testing.assert_allclose(both["pct_w_combined_ceiling_of_means"],
                               100 * means.loc[both.index, "R_w_combined"] / means.loc["weight_ceiling", "R_w_combined"],
                               rtol=1e-6)
    np.testing.assert_allclose(both["pct_act_ceiling_of_means"],
                               100 * means.loc[both.index, "R_act"] / means.loc["act_ceiling", "R_act"], rtol=1e-6)
    np.testing.assert_allclose(both["mean_pct_w_combined_ceiling"], means.loc[both.index, "pct_w_combined_ceiling"],
                               rtol=1e-6)
    # winner and top-5 overlap, from the summary table by hand
    hypotheses = summary[(summary["axis_kind"] != "ceiling") & (summary["basis"] != "random")]
    assert result.winner == hypotheses.sort_values("joint", ascending=False)["basis"].iloc[0] == "mlp_write"
    all_hyp = pd.concat([hypotheses, result.read_side])
    top_act = set(all_hyp.nlargest(5, "mean_R_act")["basis"])
    top_w = set(hypotheses.nlargest(5, "mean_R_w_combined")["basis"])
    assert result.top5_overlap == sorted(top_act & top_w)
    lines = result.conclusion()
    assert lines[0].startswith("Best joint write/mixed basis: mlp_write") and "100.0% of the weight ceiling" in lines[0]
    assert lines[1].startswith("Per-tensor R_w of mlp_write: W_O ") and lines[2].startswith("Top-5 by R_act")


def test_post_norm_deltas_are_scored_in_residual_coordinates(gemma):
    """Gemma 3 writes gain ⊙ norm(x W_O) into the residual. A ΔW_O, ΔW_out planted so that *after the
    post-norm gain* it lies in the attn_write / mlp_write bases (which include that gain) must reach the
    maximum R_w = d/k; the raw ΔW (the old comparison) does not."""
    layers, k = [2, 3], K
    bases = {b.name: b for b in weight_bases(gemma, layers, k, include=["attn_write", "mlp_write"])}
    gen = torch.Generator().manual_seed(5)
    cfg = gemma.cfg
    delta = {}
    for layer in layers:
        g1 = gemma.blocks[layer].ln1_post.w.detach().float()
        g2 = gemma.blocks[layer].ln2_post.w.detach().float()
        # 1/gain, 0 where the gain is 0 (the bases, built through the gain, are 0 on those coordinates too)
        inv1 = torch.where(g1 != 0, 1 / g1, torch.zeros_like(g1))
        inv2 = torch.where(g2 != 0, 1 / g2, torch.zeros_like(g2))
        w_o = (bases["attn_write"].at(layer) @ torch.randn(k, cfg.n_heads * cfg.d_head, generator=gen)) * inv1[:, None]
        w_out = (bases["mlp_write"].at(layer) @ torch.randn(k, cfg.d_mlp, generator=gen)) * inv2[:, None]
        delta[f"blocks.{layer}.attn.W_O"] = einops.rearrange(w_o * 0.01, "d (head dh) -> head dh d", head=cfg.n_heads)
        delta[f"blocks.{layer}.mlp.W_out"] = einops.rearrange(w_out * 0.01, "d m -> m d")
    pair = types.SimpleNamespace(base=gemma, delta=lambda: delta)
    result = subspace_sweep(pair, k=k, claims=CLAIMS[:8], include=["attn_write", "mlp_write"])
    rows = result.per_layer.set_index(["basis", "layer"])
    d = cfg.d_model
    np.testing.assert_allclose(rows.loc["attn_write", "R_w_W_O"], d / k, rtol=1e-3)
    np.testing.assert_allclose(rows.loc["mlp_write", "R_w_W_out"], d / k, rtol=1e-3)
    # independent plain-torch R_w in residual coordinates, and the raw-ΔW score the sweep no longer uses
    for layer in layers:
        b = bases["attn_write"].at(layer).double()
        raw = einops.rearrange(delta[f"blocks.{layer}.attn.W_O"], "head dh d -> d (head dh)").double()
        scaled = gemma.blocks[layer].ln1_post.w.detach().double()[:, None] * raw
        r_scaled = float((b.T @ scaled).pow(2).sum() / scaled.pow(2).sum()) * d / k
        r_raw = float((b.T @ raw).pow(2).sum() / raw.pow(2).sum()) * d / k
        assert abs(float(rows.loc[("attn_write", layer), "R_w_W_O"]) - r_scaled) < 1e-3 * r_scaled
        assert r_raw < 0.9 * r_scaled, f"layer {layer}: raw {r_raw:.1f} vs residual {r_scaled:.1f}"


def test_a_sweep_without_hypotheses_has_no_winner(planted):
    result = subspace_sweep(planted, k=K, claims=CLAIMS[:8], include=[])
    assert set(result.definitions["name"]) == {"random", "act_ceiling", "weight_ceiling"}
    with pytest.raises(ValueError, match="no candidate hypothesis"):
        result.conclusion()


def test_label_and_clean_prompts_are_raw_text_by_default_and_templated_on_request(planted, monkeypatch):
    """Seed 003 fed the label and clean prompts as raw text: the sweep does so by default, feeds the
    chat template with ``chat_template=True`` (persona prompts are templated either way), and records
    the choice in its config. Spies wrap the real capture functions and record what they were given."""
    import interp.subspace.sweep as sweep_module
    from interp.subspace.probes import chat_texts, probe_prompts

    seen: dict[str, list] = {"label": [], "probe": [], "extra": []}
    real_label, real_probe = sweep_module.steering_label, sweep_module.probe_activations

    def label_spy(model, delta, texts, layers, alpha=1.0):  # noqa: ANN001, ANN202
        seen["label"].append(list(texts))
        return real_label(model, delta, texts, layers, alpha)

    def probe_spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen["probe"].append(kwargs.get("chat_template"))
        acts = real_probe(*args, **kwargs)
        if acts.extra.clean_all is not None:  # the extra captures come from the same passes, same flag
            seen["extra"].append(kwargs.get("chat_template"))
        return acts

    monkeypatch.setattr(sweep_module, "steering_label", label_spy)
    monkeypatch.setattr(sweep_module, "probe_activations", probe_spy)
    claims = CLAIMS[:4]
    prompts = probe_prompts(claims)
    for flag in (False, True):
        kwargs = {"chat_template": True} if flag else {}
        result = subspace_sweep(planted, k=K, claims=claims, include=["write", "suppressed"], **kwargs)
        assert result.config["chat_template"] is flag
    raw, templated = seen["label"]
    assert raw == list(prompts)
    assert templated == chat_texts(planted.base.tokenizer, prompts)
    assert raw != templated
    assert seen["probe"] == [False, True] and seen["extra"] == [False, True]
    with pytest.raises(TypeError, match="chat_template: expected a bool"):
        subspace_sweep(planted, k=K, claims=claims, include=["write"], chat_template=1)


def test_sweep_runs_each_text_set_through_the_model_once(planted):
    """With bases that need every extra capture (clean_all, persona_mlp) selected, the base model runs
    the label texts twice (+αΔW and −αΔW) and each fit text set (clean, positive, negative) once."""
    model = planted.base
    passes: list[torch.Tensor] = []
    # every forward pass embeds its tokens once (run_with_hooks calls forward directly, not the module)
    handle = model.embed.register_forward_pre_hook(lambda module, args: passes.append(args[0].detach().cpu().clone()))
    try:
        result = subspace_sweep(planted, k=K, claims=CLAIMS[:8], include=["write", "suppressed", "up_proj_input_contrast",
                                                                           "up_proj_output_written_contrast"])
    finally:
        handle.remove()
    assert {"suppressed", "up_proj_input_contrast", "up_proj_output_written_contrast"} <= set(result.definitions["name"])
    assert len(passes) == 2 + 3, f"{len(passes)} forward passes (expected 2 label + 3 fit)"
    label_plus, label_minus, *fit = passes
    assert torch.equal(label_plus, label_minus)  # the same texts under +αΔW and −αΔW
    batches = [label_plus, *fit]
    for i in range(len(batches)):
        for j in range(i + 1, len(batches)):
            assert not (batches[i].shape == batches[j].shape and torch.equal(batches[i], batches[j])), \
                f"token batches {i} and {j} are the same texts run twice"
