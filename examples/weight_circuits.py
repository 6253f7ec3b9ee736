# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Weight circuits of persona directions, base vs tuned (seeds 000 and 001)
#
# How do a model's attention and MLP weights treat the principal axes of "persona space", and what
# did tuning change? This reproduces the two seed notebooks end to end on the offline default pair
# (SmolLM2-135M-Instruct and its sycophancy-persona LoRA sibling):
#
# * **seed 000**: QK affinity (the pre-softmax logit a query at PC*i* gives a key at ±PC*i*) and VO
#   decomposition (what attention writes when it attends to PC*i*, read against ±PC*i*), per layer,
#   as z-scores against random unit directions; base vs tuned; "is PC1 special?";
# * **seed 001**: the full MLP pass of ±PC1 through every layer, base vs tuned, the layer where
#   tuning changes it most, and what tuning adds, projected on role and trait vectors.
#
# Math and conventions: `docs/analyses/weight_circuits.md`. Every figure is a plotly `Figure`
# built from a tidy table that is also kept (`table`, `series`, `deltas`, `summary`, `mlp_table`...).

# %%
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import torch

from interp import ModelPair
from interp.circuits import circuit_study
from interp.personas import persona_directions, persona_prompts
from interp.plots.circuits import (
    circuit_heatmap,
    mlp_delta_by_layer,
    pc_comparison,
    projection_bars,
    zscore_delta_lines,
    zscore_lines,
)

torch.set_grad_enabled(False)

# %% [markdown]
# ## Configuration

# %%
N_PCS = 5  # persona PCs analysed (the seed used 10 of a 240-role PCA; we have 30 roles)
N_RANDOM = 20  # random unit directions for the z-score baseline (seed: 20, torch seed 42)
RANDOM_SEED = 42
QUESTIONS = persona_prompts().questions[:1]  # one neutral question per role keeps this fast on a CPU (use more for
# steadier role vectors: the forward passes over the prompts are most of the run time)
PLOT_PCS = ["PC1", "PC2", "PC3"]

if "pair" not in globals():  # tests/test_examples_weight_circuits.py hands in its already loaded pair
    pair = ModelPair.default()
n_layers = pair.cfg.n_layers
PCA_LAYER = n_layers // 2  # where persona directions are read (blocks.L.hook_resid_post)
COMPARISON_LAYERS = list(range(9, 24))  # the layers the default LoRA tunes (seed 000 used 17-27 of 46)
print(pair.name, f"{n_layers} layers, d_model {pair.cfg.d_model}, PCA layer {PCA_LAYER}")

# %% [markdown]
# ## Probe directions: persona PCs (and their negations) plus random directions

# %%
# PCs of the 30 packaged roles' vectors, plus the 12 trait vectors, all read at PCA_LAYER of the base model
persona = persona_directions(pair.base, layer=PCA_LAYER, n_components=N_PCS, questions=QUESTIONS, traits=True,
                             batch_size=32)
explained = persona.pcs.metadata["explained_variance_ratio"]
print(f"variance explained by PC1..PC{N_PCS}:", [round(v, 3) for v in explained])

# %% [markdown]
# ## The whole study in one call
#
# `circuit_study` runs seeds 000 and 001 on the pair: the probes are the PCs, their negations and
# N_RANDOM seeded random unit directions; the MLP pass is of ±PC1, read against the role and trait
# vectors at PCA_LAYER (the PCs' own layer). The cells below look at what it returns.

# %%
study = circuit_study(pair, persona.pcs, semantic=persona.roles.concat(persona.traits),
                      tuned_layers=COMPARISON_LAYERS, n_random=N_RANDOM, random_seed=RANDOM_SEED)
probes = study.probes
print(f"{len(probes)} probes")

# %% [markdown]
# ## Seed 000: QK affinity and VO decomposition, all layers, both models
#
# One row per (circuit, model, layer, query, key) with the raw value, the layer's random baseline
# (mean and std over the random directions' self entries, as the seed) and the z-score.

# %%
table = study.table
series = study.series  # PC -> PC ("self") and PC -> -PC ("opposite")
deltas = study.deltas  # z_base, z_tuned, delta_z side by side
series.head()

# %%
zscore_lines(series, PLOT_PCS, pca_layer=PCA_LAYER)

# %%
zscore_delta_lines(deltas, PLOT_PCS)

# %%
circuit_heatmap(table, layer=PCA_LAYER, circuit="qk", model="tuned")

# %% [markdown]
# ### Is PC1 special? Mean |Δz| over the tuned layers, per PC

# %%
summary = study.summary  # mean |Δz| over COMPARISON_LAYERS
wide = summary.pivot_table(index=["direction", "number", "explained_variance"], columns=["circuit", "relation"],
                           values="mean_abs_delta_z").sort_index(level="number")
print(wide.round(3).to_string())
strongest = summary.loc[summary.groupby(["circuit", "relation"])["mean_abs_delta_z"].idxmax()]
print(strongest[["circuit", "relation", "direction", "mean_abs_delta_z"]].to_string(index=False))

# %% [markdown]
# ### ...and is that more than a random direction moves?
# Each PC's mean |Δz| against the same statistic of the random probes (p with the +1 correction;
# ask `circuit_study` for more random directions with `n_random` to resolve smaller p-values).

# %%
print(study.null_summary().round(3).to_string(index=False))
print(study.mlp_null_summary().round(3).to_string(index=False))

# %%
pc_comparison(summary)

# %% [markdown]
# ## Seed 001: the MLP pass of ±PC1, base vs tuned

# %%
mlp_table = study.mlp_table
peak = study.mlp_peak_rows(1).iloc[0]
PEAK_LAYER = study.peak_layer
print(f"largest tuning change of PC1's MLP output at layer {PEAK_LAYER}: |Δ| = {peak['delta_norm']:.4f} "
      f"(base norm {peak['base_norm']:.3f}, tuned {peak['tuned_norm']:.3f})")

# %%
mlp_delta_by_layer(mlp_table)

# %% [markdown]
# ### What tuning adds to PC1's MLP output, read against role and trait vectors
#
# The role and trait vectors live in the residual stream at `PCA_LAYER`, so the decomposition is
# done at that layer's MLP (inside the tuned layers). The seed decomposed at its a-priori layer 18
# with vectors read at that layer; `role_vectors(pair.base, layer=PEAK_LAYER)` does the same here,
# at the cost of another pass over the prompts.

# %%
projections = study.projections  # at study.projection_layer == PCA_LAYER
ends = study.projection_ends
print(ends[["end", "probe", "projection"]].to_string(index=False))

# %%
projection_bars(ends)

# %% [markdown]
# ## Summary table of the run

# %%
overview = pd.DataFrame(
    {
        "probes": [len(probes)],
        "layers": [n_layers],
        "rows in circuit table": [len(table)],
        "max |Δz| outside the LoRA layers": [
            deltas[~deltas["layer"].isin(COMPARISON_LAYERS)]["delta_z"].abs().max()
        ],
        "max |Δz| in the LoRA layers": [deltas[deltas["layer"].isin(COMPARISON_LAYERS)]["delta_z"].abs().max()],
        "MLP peak layer": [PEAK_LAYER],
    }
)
print(overview.T.to_string(header=False))
