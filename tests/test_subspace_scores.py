"""R_act, R_w, ceilings, specificity and the bad-input checks of interp.subspace.scores / bases.

The weight delta is a seeded synthetic low-rank delta on SmolLM2 (``random_lowrank_delta(seed=0)``);
the activation label is a real forward pass (+α minus −α steering at the last token).
Random bases use ``torch.Generator().manual_seed(<literal>)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from interp.subspace.basis import Basis, random_basis
from interp.subspace.captures import steering_label
from interp.subspace.probes import chat_texts, probe_prompts
from interp.subspace.scores import activation_ceiling, concentration, weight_ceiling, write_targets
from interp.subspace.sweep import score_table
from interp.subspace.targets import Target
from interp.subspace.weight_diff import random_lowrank_delta
from interp.subspace.weight_library import weight_bases

LAYERS = [10, 11]
K = 8


@pytest.fixture(scope="module")
def setup(smollm2):
    delta = random_lowrank_delta(smollm2, LAYERS, rank=4, scale=0.1, seed=0)
    texts = chat_texts(smollm2.tokenizer, probe_prompts()[:8])
    label = steering_label(smollm2, delta, texts, LAYERS)
    bases = weight_bases(smollm2, LAYERS, K, include=["attn_write", "mlp_write"])
    return {"delta": delta, "label": label, "bases": bases, "d": smollm2.cfg.d_model}


def _proj_energy(b: np.ndarray, m: np.ndarray) -> float:
    return float(np.sum((b.T @ m) ** 2) / np.sum(m**2))


def test_r_act_equals_mean_energy_ratio_over_samples(setup):
    basis = setup["bases"][0]
    r = concentration(basis.vectors, basis.rank_tensor, Target.from_samples(setup["label"]))
    for i, layer in enumerate(LAYERS):
        b = basis.at(layer).double().numpy()
        deltas = setup["label"][i].double().numpy()
        ratios = [np.sum((b.T @ x) ** 2) / np.sum(x**2) for x in deltas]
        expected = np.mean(ratios) / (b.shape[1] / setup["d"])
        assert math.isclose(float(r[i]), expected, rel_tol=1e-4), f"layer {layer}: {float(r[i])} vs {expected}"


def test_r_w_equals_frobenius_ratio_of_the_tl_tensors(setup):
    basis = setup["bases"][1]
    targets = write_targets(setup["delta"], LAYERS)
    d = setup["d"]
    for i, layer in enumerate(LAYERS):
        b = basis.at(layer).double().numpy()
        w_o = setup["delta"][f"blocks.{layer}.attn.W_O"].double().numpy()  # [head, d_head, d_model]
        w_out = setup["delta"][f"blocks.{layer}.mlp.W_out"].double().numpy()  # [d_mlp, d_model]
        e_o = float(np.sum(np.einsum("hjd,dk->hjk", w_o, b) ** 2) / np.sum(w_o**2))
        e_out = float(np.sum((w_out @ b) ** 2) / np.sum(w_out**2))
        bal = np.concatenate([w_o.reshape(-1, d).T / np.linalg.norm(w_o), w_out.T / np.linalg.norm(w_out)], axis=1)
        for key, expected in [("attn.W_O", e_o), ("mlp.W_out", e_out), ("combined", _proj_energy(b, bal))]:
            r = concentration(basis.vectors, basis.rank_tensor, targets[key])[i]
            assert math.isclose(float(r), expected * d / K, rel_tol=1e-4), f"{key} layer {layer}"


def test_weight_ceiling_scores_exactly_its_own_100_percent_and_bounds_every_other_basis(setup):
    ceiling = weight_ceiling(setup["delta"], LAYERS, K)
    others = [*setup["bases"], *(random_basis(LAYERS, setup["d"], K, seed=s, name=f"random{s}") for s in range(3))]
    table = score_table(
        [ceiling, *others], label_eval=setup["label"], label_fit=setup["label"],
        delta=setup["delta"],
    )
    own = table[table["basis"] == "weight_ceiling"]
    np.testing.assert_allclose(own["pct_w_combined_ceiling"], 100.0, atol=1e-3)
    assert (table["pct_w_combined_ceiling"] <= 100.0 + 1e-3).all()
    # the ceiling's R_w is the Ky Fan sum of the balanced delta's top-k squared singular values
    d = setup["d"]
    for i, layer in enumerate(LAYERS):
        w_o = setup["delta"][f"blocks.{layer}.attn.W_O"].double().numpy().reshape(-1, d).T
        w_out = setup["delta"][f"blocks.{layer}.mlp.W_out"].double().numpy().T
        bal = np.concatenate([w_o / np.linalg.norm(w_o), w_out / np.linalg.norm(w_out)], axis=1)
        s2 = np.linalg.svd(bal, compute_uv=False) ** 2
        expected = s2[:K].sum() / s2.sum() * d / K
        assert math.isclose(float(own["R_w_combined"].iloc[i]), expected, rel_tol=1e-4)


def test_random_bases_score_about_one_with_small_z(setup):
    bases = [random_basis(LAYERS, setup["d"], K, seed=s, name=f"random{s}") for s in range(100, 106)]
    table = score_table(
        bases, label_eval=setup["label"], label_fit=setup["label"], delta=setup["delta"]
    )
    for col in ["z_act", "z_w_W_O", "z_w_W_out", "z_w_combined"]:
        assert (table[col].abs() < 4).all(), f"{col}: {table[col].tolist()}"
    for col in ["R_act", "R_w_combined"]:
        assert abs(table[col].mean() - 1) < 0.5, f"{col} mean {table[col].mean()}"


def test_maximum_concentration_is_d_over_k(setup):
    """A basis containing the whole (rank-4) column space of ΔW_O scores R = d/k; nothing scores more."""
    d, k = setup["d"], 4
    spans = []
    for layer in LAYERS:
        w_o = setup["delta"][f"blocks.{layer}.attn.W_O"].double().reshape(-1, d).T
        u, _, _ = torch.linalg.svd(w_o, full_matrices=False)
        spans.append(u[:, :k].float())
    planted = Basis.from_vectors("planted", torch.stack(spans), layers=LAYERS, axis_kind="write")
    table = score_table(
        [planted, random_basis(LAYERS, d, k, seed=7)], label_eval=setup["label"], label_fit=setup["label"],
        delta=setup["delta"],
    )
    row = table[table["basis"] == "planted"]
    np.testing.assert_allclose(row["R_w_W_O"], d / k, rtol=1e-4)
    for col in ["R_act", "R_w_W_O", "R_w_W_out", "R_w_combined"]:
        assert (table[col] <= d / table["rank"] * (1 + 1e-5)).all(), f"{col} exceeds d/k"


def test_scores_are_invariant_to_the_orientation_within_the_span(setup):
    basis = setup["bases"][0]
    q, _ = torch.linalg.qr(torch.randn(len(LAYERS), K, K, generator=torch.Generator().manual_seed(21)))
    rotated = Basis.from_vectors("rotated", torch.einsum("ldk,lkj->ldj", basis.vectors, q), layers=LAYERS)
    targets = {"act": Target.from_samples(setup["label"]), **write_targets(setup["delta"], LAYERS)}
    for key, t in targets.items():
        a = concentration(basis.vectors, basis.rank_tensor, t)
        b = concentration(rotated.vectors, rotated.rank_tensor, t)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"{key} changed under rotation")


def test_activation_ceiling_is_the_fit_maximum(setup):
    """Scored on the fit half itself, the activation ceiling is 100% and beats every other rank-k basis."""
    ceiling = activation_ceiling(setup["label"], LAYERS, K)
    others = [*setup["bases"], random_basis(LAYERS, setup["d"], K, seed=3)]
    table = score_table(
        [ceiling, *others], label_eval=setup["label"], label_fit=setup["label"],
        delta=setup["delta"],
    )
    np.testing.assert_allclose(table.loc[table["basis"] == "act_ceiling", "pct_act_ceiling"], 100.0, atol=1e-3)
    assert (table["pct_act_ceiling"] <= 100.0 + 1e-3).all()


def test_residualised_specificity_matches_a_manual_projection(setup):
    basis = setup["bases"][1]
    clean_vecs = torch.linalg.qr(torch.randn(len(LAYERS), setup["d"], 5, generator=torch.Generator().manual_seed(4)))[0]
    clean = Basis.from_vectors("clean", clean_vecs, layers=LAYERS)
    table = score_table(
        [basis], label_eval=setup["label"], label_fit=setup["label"],
        delta=setup["delta"], clean=clean,
    )
    d = setup["d"]
    for i, layer in enumerate(LAYERS):
        c = clean.at(layer).double().numpy()
        p = np.eye(d) - c @ c.T
        bp, _ = np.linalg.qr(p @ basis.at(layer).double().numpy())
        x = setup["label"][i].double().numpy() @ p
        ratios = [np.sum((bp.T @ v) ** 2) / np.sum(v**2) for v in x]
        expected = np.mean(ratios) * (d - 5) / K
        assert math.isclose(float(table["R_act_specific"].iloc[i]), expected, rel_tol=1e-4)
    # a basis inside the clean span has no specific part: NaN, rank 0
    inside = score_table([clean], label_eval=setup["label"], label_fit=setup["label"],
                         delta=setup["delta"], clean=clean)
    assert inside["R_act_specific"].isna().all() and (inside["rank_specific"] == 0).all()


# ------------------------------------------------------------------ bad input


def test_non_orthonormal_basis_is_rejected_with_an_offer_to_orthonormalise():
    gen = torch.Generator().manual_seed(5)
    raw = torch.randn(2, 32, 3, generator=gen)
    with pytest.raises(ValueError, match=r"not orthonormal.*orthonormalize=True"):
        Basis.from_vectors("skewed", raw, layers=[0, 1])
    fixed = Basis.from_vectors("skewed", raw, layers=[0, 1], orthonormalize=True)
    for i in range(2):
        b = fixed.at(i)
        torch.testing.assert_close(b.T @ b, torch.eye(3), atol=1e-5, rtol=0)
        # same span: projecting the raw columns onto it changes nothing
        torch.testing.assert_close(b @ (b.T @ raw[i]), raw[i], atol=1e-4, rtol=1e-4)


def test_bad_ranks_and_values_are_rejected():
    with pytest.raises(ValueError, match="rank 0"):
        Basis.from_vectors("empty", torch.zeros(8, 0), layers=[0])
    with pytest.raises(ValueError, match="exceeds d_model"):
        Basis.from_vectors("wide", torch.eye(8).repeat(1, 2), layers=[0])
    nan = torch.eye(8)[:, :2].clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        Basis.from_vectors("nan", nan, layers=[0])
    with pytest.raises(ValueError, match="k: rank must be at least 1"):
        random_basis([0], 8, 0)
    with pytest.raises(ValueError, match="exceeds d_model"):
        random_basis([0], 8, 9)
    with pytest.raises(ValueError, match="axis_kind"):
        Basis.from_vectors("x", torch.eye(8)[:, :2], layers=[0], axis_kind="sideways")


def test_zero_or_nan_labels_and_out_of_range_layers_are_rejected(setup):
    zero = setup["label"].clone()
    zero[0, 1] = 0
    with pytest.raises(ValueError, match="zero vectors"):
        Target.from_samples(zero)
    nan = setup["label"].clone()
    nan[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        Target.from_samples(nan)
    with pytest.raises(ValueError, match=r"layers: \[3\] are outside the delta's range.*layers 10-11"):
        write_targets(setup["delta"], [3, 10])
    reads_only = {k: v for k, v in setup["delta"].items() if ".W_O" not in k and ".W_out" not in k}
    with pytest.raises(ValueError, match="no residual-write tensor"):
        write_targets(reads_only, LAYERS)
    with pytest.raises(ValueError, match="null"):
        score_table(setup["bases"], label_eval=setup["label"], label_fit=setup["label"],
                    delta=setup["delta"], null="bootstrap")


def test_compressed_targets_equal_the_dense_ones(setup):
    """Target.from_matrix compresses a low-rank delta exactly and keeps a full-rank one dense; both
    give the same energies, ‖T‖²_F and Ky Fan sums as the dense T = M Mᵀ/‖M‖²."""
    from interp.subspace.scores import ceiling_curve, write_matrices

    gen = torch.Generator().manual_seed(31)
    low = write_matrices(setup["delta"], LAYERS)["mlp.W_out"]  # rank 4 (synthetic LoRA-like delta)
    full = torch.randn(2, 96, 200, generator=gen)
    for m, compressed in [(low, True), (full, False)]:
        t = Target.from_matrix(m)
        assert (t.u is not None) == compressed
        md = m.double()
        dense = torch.einsum("ldc,lec->lde", md, md) / md.pow(2).sum((-2, -1))[:, None, None]  # float64 reference
        d = m.shape[1]
        cols = torch.linalg.qr(torch.randn(2, d, 12, generator=gen, dtype=torch.float64))[0]
        expected = torch.einsum("ldk,lde,lek->lk", cols, dense, cols)
        torch.testing.assert_close(t.energy(cols), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(t.frob2(), dense.pow(2).sum((-2, -1)), rtol=1e-4, atol=0)
        ky_fan = torch.linalg.eigvalsh(dense).flip(-1)[:, :6].cumsum(-1)
        torch.testing.assert_close(t.ky_fan(6), ky_fan, rtol=0, atol=1e-6)
        torch.testing.assert_close(ceiling_curve(Target.from_gram(dense), None, 6),
                                   (ky_fan * d / torch.arange(1, 7)).float(), rtol=1e-4, atol=1e-4)
    samples = setup["label"]
    t = Target.from_samples(samples)
    assert t.u.shape[-1] == samples.shape[1]
    unit = samples.double() / samples.double().norm(dim=-1, keepdim=True)  # plain-torch (1/n) Σ δ̂δ̂ᵀ
    expected = torch.einsum("lnd,lne->lde", unit, unit) / samples.shape[1]
    torch.testing.assert_close(t.dense(), expected, rtol=1e-4, atol=1e-7)


def test_cos_with_dw_is_the_mean_principal_cosine_with_the_balanced_delta_basis(setup):
    table = score_table(setup["bases"], label_eval=setup["label"], label_fit=setup["label"], delta=setup["delta"],
                        dw_rank=6)
    d = setup["d"]
    for basis in setup["bases"]:
        rows = table[table["basis"] == basis.name]
        for i, layer in enumerate(LAYERS):
            w_o = setup["delta"][f"blocks.{layer}.attn.W_O"].double().numpy().reshape(-1, d).T
            w_out = setup["delta"][f"blocks.{layer}.mlp.W_out"].double().numpy().T
            bal = np.concatenate([w_o / np.linalg.norm(w_o), w_out / np.linalg.norm(w_out)], axis=1)
            u = np.linalg.svd(bal, full_matrices=False)[0][:, :6]
            cos = np.linalg.svd(basis.at(layer).double().numpy().T @ u, compute_uv=False)
            assert math.isclose(float(rows["cos_with_dW"].iloc[i]), cos.sum() / 6, rel_tol=1e-4, abs_tol=1e-6)
