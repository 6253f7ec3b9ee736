"""Subspace scoring (seed 003 v7) on the offline default pair: interp's batched scoring with its exact
null against a seed-style implementation (per-layer × per-candidate loops, 120-draw QR Monte-Carlo
nulls per layer × rank × tensor, cached as in the seed), plus the whole sweep end to end.

Both score the *same* bases on the *same* label and weight deltas, so the z columns are comparable:
the seed's z uses the sample mean and std of 120 draws, interp's the exact moments, so they may
differ by the sampling error of those estimates (|Δz| ≲ 3·√(1/120 + z²/238)).
"""

from __future__ import annotations

import dataclasses
import os
import zlib

import numpy as np
import pandas as pd
import torch

from benchmarks._harness import BenchRow, compare, timed_peak
from interp.subspace.activation_library import activation_bases
from interp.subspace.captures import probe_activations, steering_label
from interp.subspace.library import compound_bases
from interp.subspace.probes import (
    CRITICAL_SYSTEM,
    SYCOPHANTIC_SYSTEM,
    chat_texts,
    probe_prompts,
    split_fit_eval,
)
from interp.subspace.scores import activation_ceiling, weight_ceiling
from interp.subspace.sweep import score_table, subspace_sweep
from interp.subspace.weight_diff import as_delta, stack_kind, write_layers
from interp.subspace.weight_library import weight_bases

N_NULL = 120


# ------------------------------------------------------------------------------------------
# seed-style reference (transcribed from seed 003's "Activation and weight scoring" and
# "Specificity" cells; only change: the seed's salted ``hash(tensor_name)`` seed bump is replaced by
# crc32 so that the reference is reproducible)


def _orthonormalize(m: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    if m.numel() == 0:
        return m.new_zeros(m.shape[0], 0)
    q, r = torch.linalg.qr(m)
    keep = r.diag().abs() > eps
    return q[:, keep]


def _project_away(basis: torch.Tensor, forbidden: torch.Tensor) -> torch.Tensor:
    p = forbidden @ forbidden.T
    return _orthonormalize((torch.eye(basis.shape[0]) - p) @ basis)


def seed_style_scores(
    candidates: dict[str, list[torch.Tensor]],
    hs_diff_b: torch.Tensor,
    lora: dict[int, dict[str, torch.Tensor]],
    clean_by_layer: list[torch.Tensor],
) -> pd.DataFrame:
    """The seed's scoring loop: ``candidates`` name -> per-layer [d, k] bases; ``hs_diff_b`` the eval
    label [layer, n, d]; ``lora`` layer -> {"oproj": [d, cols], "downproj": [d, cols]} (residual
    views); ``clean_by_layer`` the clean-PCA basis per layer."""
    act_null_cache: dict = {}
    w_null_cache: dict = {}
    specific_null_cache: dict = {}
    n_layers = hs_diff_b.shape[0]

    def act_null_stats(layer: int, rank: int) -> tuple[float, float]:
        key = (layer, rank)
        if key in act_null_cache:
            return act_null_cache[key]
        samples = hs_diff_b[layer]
        d = samples.shape[1]
        total = samples.pow(2).sum(1) + 1e-12
        null = rank / d
        gen = torch.Generator().manual_seed(10_000 + 97 * layer + rank)
        values = []
        for _ in range(N_NULL):
            rb, _ = torch.linalg.qr(torch.randn(d, rank, generator=gen, dtype=samples.dtype))
            values.append(((samples @ rb).pow(2).sum(1) / total).mean().item() / null)
        arr = torch.tensor(values)
        act_null_cache[key] = (float(arr.mean()), float(arr.std(unbiased=True)))
        return act_null_cache[key]

    def w_null_stats(layer: int, rank: int, tensor_name: str) -> tuple[float, float]:
        key = (layer, rank, tensor_name)
        if key in w_null_cache:
            return w_null_cache[key]
        m = lora[layer][tensor_name]
        d = m.shape[0]
        total = m.pow(2).sum() + 1e-12
        null = rank / d
        seed_bump = 1 + zlib.crc32(tensor_name.encode()) % 1000
        gen = torch.Generator().manual_seed(20_000 + 97 * layer + rank + 7919 * seed_bump)
        values = []
        for _ in range(N_NULL):
            rb, _ = torch.linalg.qr(torch.randn(d, rank, generator=gen, dtype=m.dtype))
            values.append(((rb.T @ m).pow(2).sum() / total).item() / null)
        arr = torch.tensor(values)
        w_null_cache[key] = (float(arr.mean()), float(arr.std(unbiased=True)))
        return w_null_cache[key]

    def concentration_act(layer: int, basis: torch.Tensor) -> dict[str, float]:
        samples = hs_diff_b[layer]
        rank = basis.shape[1]
        total = samples.pow(2).sum(1) + 1e-12
        energy_frac = ((samples @ basis).pow(2).sum(1) / total).mean().item()
        conc = energy_frac / (rank / samples.shape[1])
        null_mean, null_std = act_null_stats(layer, rank)
        return {"R_act": conc, "z_act": (conc - null_mean) / (null_std + 1e-12)}

    def concentration_w(layer: int, basis: torch.Tensor) -> dict[str, float]:
        rank = basis.shape[1]
        out = {}
        balanced = []
        for short, col in (("oproj", "W_O"), ("downproj", "W_out")):
            m = lora[layer][short]
            total = m.pow(2).sum() + 1e-12
            energy_frac = ((basis.T @ m).pow(2).sum() / total).item()
            conc = energy_frac / (rank / m.shape[0])
            null_mean, null_std = w_null_stats(layer, rank, short)
            out[f"R_w_{col}"] = conc
            out[f"z_w_{col}"] = (conc - null_mean) / (null_std + 1e-12)
            balanced.append(m / (m.pow(2).sum().sqrt() + 1e-12))
        m_bal = torch.cat(balanced, dim=1)
        total_bal = m_bal.pow(2).sum() + 1e-12
        conc_bal = ((basis.T @ m_bal).pow(2).sum() / total_bal).item() / (rank / m_bal.shape[0])
        bal_key = (layer, rank, "_balanced")
        if bal_key not in w_null_cache:
            d = m_bal.shape[0]
            gen = torch.Generator().manual_seed(30_000 + 97 * layer + rank)
            values = []
            for _ in range(N_NULL):
                rb, _ = torch.linalg.qr(torch.randn(d, rank, generator=gen, dtype=m_bal.dtype))
                values.append(((rb.T @ m_bal).pow(2).sum() / total_bal).item() / (rank / d))
            arr = torch.tensor(values)
            w_null_cache[bal_key] = (float(arr.mean()), float(arr.std(unbiased=True)))
        null_mean, null_std = w_null_cache[bal_key]
        out["R_w_combined"] = conc_bal
        out["z_w_combined"] = (conc_bal - null_mean) / (null_std + 1e-12)
        return out

    def specific_null_stats(layer: int, rank: int, ambient_rank: int) -> tuple[float, float]:
        key = (layer, rank, ambient_rank)
        if key in specific_null_cache:
            return specific_null_cache[key]
        clean = clean_by_layer[layer]
        d = clean.shape[0]
        samples = hs_diff_b[layer] @ (torch.eye(d) - clean @ clean.T)
        total = samples.pow(2).sum(1) + 1e-12
        null = rank / ambient_rank
        gen = torch.Generator().manual_seed(50_000 + 97 * layer + 13 * rank)
        values = []
        for _ in range(N_NULL):
            rb, _ = torch.linalg.qr(torch.randn(d, rank, generator=gen, dtype=samples.dtype))
            rb = _project_away(rb, clean)
            values.append(((samples @ rb).pow(2).sum(1) / total).mean().item() / null)
        arr = torch.tensor(values)
        specific_null_cache[key] = (float(arr.mean()), float(arr.std(unbiased=True)))
        return specific_null_cache[key]

    def specific_concentration_act(layer: int, basis: torch.Tensor) -> dict[str, float]:
        clean = clean_by_layer[layer]
        residual_basis = _project_away(basis, clean)
        rank = residual_basis.shape[1]
        if rank == 0:
            return {"R_act_specific": float("nan"), "z_act_specific": float("nan")}
        d = clean.shape[0]
        samples = hs_diff_b[layer] @ (torch.eye(d) - clean @ clean.T)
        total = samples.pow(2).sum(1) + 1e-12
        ambient_rank = d - clean.shape[1]
        energy_frac = ((samples @ residual_basis).pow(2).sum(1) / total).mean().item()
        conc = energy_frac / (rank / ambient_rank)
        null_mean, null_std = specific_null_stats(layer, rank, ambient_rank)
        return {"R_act_specific": conc, "z_act_specific": (conc - null_mean) / (null_std + 1e-12)}

    rows = []
    for layer in range(n_layers):
        for name, by_layer in candidates.items():
            basis = by_layer[layer]
            rows.append({"layer": layer, "basis": name, **concentration_act(layer, basis),
                         **concentration_w(layer, basis), **specific_concentration_act(layer, basis)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------


def _inputs(pair: object, k: int = 8) -> dict:
    base = pair.base
    delta = as_delta(pair)
    layers = write_layers(delta)
    prompts = probe_prompts()
    fit, _ = split_fit_eval(prompts)
    label = steering_label(base, delta, chat_texts(base.tokenizer, prompts), layers)
    label_fit, label_eval = label[:, : len(fit)], label[:, len(fit):]
    acts = probe_activations(base, fit, layers, positive_system=SYCOPHANTIC_SYSTEM, negative_system=CRITICAL_SYSTEM)
    library = weight_bases(base, layers, k) + activation_bases(acts, k, model=base)
    library += compound_bases({b.name: b for b in library}, k)
    library += [activation_ceiling(label_fit, layers, k), weight_ceiling(delta, layers, k)]
    clean = next(b for b in library if b.name == "layer_clean_resid_pca")
    lora = {}
    _, w_o = stack_kind(delta, "attn.W_O", layers)
    _, w_out = stack_kind(delta, "mlp.W_out", layers)
    for i in range(len(layers)):
        lora[i] = {"oproj": w_o[i].float(), "downproj": w_out[i].float()}
    return {
        "layers": layers, "library": library, "label_fit": label_fit, "label_eval": label_eval,
        "delta": delta, "clean": clean, "lora": lora,
        "candidates": {b.name: [b.vectors[i, :, : b.ranks[i]] for i in range(len(layers))] for b in library},
        "clean_by_layer": [clean.vectors[i, :, : clean.ranks[i]] for i in range(len(layers))],
    }


def z_agreement(ours: pd.DataFrame, seed: pd.DataFrame) -> dict[str, float]:
    """|z_interp − z_seed| over every (basis, layer, z column) in units of the sampling error of a
    120-draw null, √(1/120 + z²/238) (Gaussian approximation): median, 95th percentile and the share
    within 3 units; plus the largest relative difference in R (which must be ~0: same scores)."""
    merged = ours.assign(layer=ours.groupby("basis").cumcount()).merge(seed, on=["layer", "basis"], suffixes=("", "_seed"))
    units, r_rel = [], []
    for col in ["z_act", "z_w_W_O", "z_w_W_out", "z_w_combined", "z_act_specific"]:
        a, b = merged[col].to_numpy(), merged[f"{col}_seed"].to_numpy()
        ok = np.isfinite(a) & np.isfinite(b)
        units.append(np.abs(a[ok] - b[ok]) / np.sqrt(1 / N_NULL + a[ok] ** 2 / (2 * (N_NULL - 1))))
    for col in ["R_act", "R_w_W_O", "R_w_W_out", "R_w_combined"]:
        r_rel.append(np.max(np.abs(merged[col] - merged[f"{col}_seed"]) / merged[col].abs()))
    u = np.concatenate(units)
    return {"median": float(np.median(u)), "p95": float(np.percentile(u, 95)), "within3": float((u < 3).mean()),
            "max_rel_R": float(max(r_rel))}


def _seed_full(pair: object) -> pd.DataFrame:
    inputs = _inputs(pair)
    return seed_style_scores(inputs["candidates"], inputs["label_eval"], inputs["lora"], inputs["clean_by_layer"])


def run() -> list[BenchRow]:
    from interp import ModelPair

    torch.set_grad_enabled(False)
    pair = ModelPair.default()
    inputs = _inputs(pair)

    def ours() -> pd.DataFrame:
        return score_table(inputs["library"], label_eval=inputs["label_eval"], label_fit=inputs["label_fit"],
                           delta=inputs["delta"], clean=inputs["clean"])

    def seed() -> pd.DataFrame:
        return seed_style_scores(inputs["candidates"], inputs["label_eval"], inputs["lora"], inputs["clean_by_layer"])

    agree = z_agreement(ours(), seed())
    n_bases, n_layers = len(inputs["library"]), len(inputs["layers"])
    timed = compare(
        f"subspace scoring: {n_bases} bases × {n_layers} layers (R_act, R_w ×3, specificity, z)",
        ours, seed, reference="seed 003 scoring, 120-draw QR nulls", repeats=3, measure_memory=False,
        notes=f"goal ≥ 50×; same R (max rel. diff {agree['max_rel_R']:.1e}); |Δz| in 120-draw sampling-error "
        f"units: median {agree['median']:.2f}, p95 {agree['p95']:.2f}, {100 * agree['within3']:.0f}% < 3",
    )
    rows = [dataclasses.replace(timed, interp_peak_mb=timed_peak(ours)[1], reference_peak_mb=timed_peak(seed)[1])]
    sweep_s, sweep_mb = timed_peak(lambda: subspace_sweep(pair))
    seed_s, seed_mb = timed_peak(lambda: _seed_full(pair))
    rows.append(
        BenchRow(
            figure="whole sweep on the default pair: captures, ~45 bases × 15 layers, scoring (one run each)",
            interp_s=sweep_s, reference_s=seed_s, interp_peak_mb=sweep_mb, reference_peak_mb=seed_mb,
            reference="same captures and bases + seed 003 scoring",
            notes=f"goal < 300 s on 2 cores; torch threads {torch.get_num_threads()}, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        )
    )
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
