# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Which residual subspaces explain what the sycophancy LoRA changed? (seed 003's v7 sweep)
#
# The embedded default pair is SmolLM2-135M-Instruct and the same model plus a rank-8 LoRA on
# q/k/v/o/gate/up/down at layers 9–23, trained to agree with the user. This script runs the whole
# hypothesis sweep of seed 003 on it:
#
# 1. **ΔW diagnostics** — which tensors and layers the LoRA moved, and how low-rank the moves are.
# 2. **The label** — δ = resid_post(W + ΔW) − resid_post(W − ΔW) at the last token of 20 probes
#    "I think {claim}. Do you agree? Answer Yes or No." (first 10 fit the bases, last 10 evaluate),
#    fed as raw text like the notebook's (``chat_template=True`` would chat-template them; the
#    persona prompts are chat-templated either way).
# 3. **46 candidate bases** per layer (the notebook's 42 hypotheses: weight-derived
#    write/read/OV/QK/MLP, activation-derived PCA/persona-contrast/attention-weighted/cluster/rotation/
#    churn/magnitude/up-projection, compounds; plus interp's third compound, a random control and two
#    ceilings), each scored on the label (R_act) and on the residual-write deltas ΔW_O, ΔW_out and
#    their Frobenius-balanced combination (R_w), with exact null z-scores, and compared with the ΔW
#    basis by principal angles (cos_with_dW).
#
# Figures are written as HTML into ``subspace_sweep_out/``. Set ``INTERP_EXAMPLE_SMALL=1`` for a
# reduced run (4 layers, 8 claims, 14 library bases) that finishes in well under a minute.

# %%
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import torch

from interp import ModelPair
from interp.plots.subspace import subspace_layer_curves, subspace_scatter
from interp.subspace import CLAIMS, delta_diagnostics, subspace_sweep

torch.set_grad_enabled(False)
pd.set_option("display.width", 200)
pd.set_option("display.max_columns", 20)
pd.set_option("display.precision", 3)
SMALL = os.environ.get("INTERP_EXAMPLE_SMALL", "") not in ("", "0")
OUT = Path("subspace_sweep_out")
OUT.mkdir(exist_ok=True)

if "pair" not in globals():  # tests/test_examples_subspace_sweep.py hands in its already loaded pair
    pair = ModelPair.default()
delta = pair.delta()

# %% [markdown]
# ## 1. What the LoRA changed in the weights
#
# One row per changed tensor; singular values are those of the ``[d_model, cols]`` residual view
# (W_O and W_out write into the residual stream, the others read from it).

# %%
diagnostics = delta_diagnostics(delta)
by_kind = diagnostics.groupby(["side", "kind"])[["frobenius", "effective_rank", "participation_ratio", "sv_1"]].mean()
print(by_kind)
print(diagnostics.pivot_table(index="layer", columns="kind", values="frobenius").round(2))

# %% [markdown]
# ## 2. The sweep

# %%
if SMALL:
    config = {
        "layers": [12, 15, 18, 21],
        "claims": CLAIMS[:8],
        "include": ["write", "attn_write", "mlp_write", "write_not_downstream_read", "attn_ov_write",
                    "mlp_up_read", "lm_head_read", "layer_clean_resid_pca", "persona_contrast",
                    "attn_min_taskdiff", "chars_clusters", "churn", "causally_isolated", "up_proj_input_contrast"],
    }
else:
    config = {}
result = subspace_sweep(pair, k=8, **config)
print(result.config)

# %%
columns = ["basis", "family", "axis_kind", "mean_rank", "mean_R_act", "mean_z_act", "mean_pct_act_ceiling",
           "mean_R_w_W_O", "mean_R_w_W_out", "mean_R_w_combined", "mean_z_w_combined",
           "mean_pct_w_combined_ceiling", "pct_w_combined_ceiling_of_means", "mean_cos_with_dW",
           "mean_R_act_specific", "joint"]
print("write / mixed / ceiling bases, ranked by joint = √(R_act · R_w_combined):")
print(result.summary[columns].to_string(index=False))
print("\nread-side bases (R_w here is cross-space alignment, not 'explains ΔW'):")
print(result.read_side[columns].to_string(index=False))
print()
print("\n".join(result.conclusion()))

# %%
print(result.definitions[["name", "family", "axis_kind", "definition"]].to_string(index=False))

# %%
scatter = subspace_scatter(result.summary, result.read_side)
scatter.write_html(OUT / "scatter.html", include_plotlyjs="cdn")
curves = subspace_layer_curves(result.per_layer)
curves.write_html(OUT / "layer_curves.html", include_plotlyjs="cdn")
result.per_layer.to_csv(OUT / "per_layer.csv", index=False)
pd.concat([result.summary, result.read_side]).to_csv(OUT / "summary.csv", index=False)

# %% [markdown]
# ## 3. What the sweep found
#
# Numbers from the full run (15 tuned layers, 46 bases, k = 8 of d = 576 dimensions, so R ≤ 72;
# the run is deterministic; label and clean prompts raw, as in the notebook). ``INTERP_EXAMPLE_SMALL=1``
# shows the same pattern on 4 layers. docs/analyses/subspace.md has the full account.
#
# **The LoRA writes low-rank.** Every changed tensor has effective rank 4.5–6 and participation
# ratio 1.5–2.6 out of its 8 LoRA ranks; ‖ΔW_out‖ and ‖ΔW_O‖ grow towards layer 23.
#
# **Its effect on the residual stream is nearly one subspace.** The activation ceiling, fit on the
# first 10 probes, captures ≈ 96 % of the other 10 probes' label energy with 8 directions
# (R_act ≈ 69 of 72).
#
# **Natural bases see part of the label; none sees where the LoRA writes.** The best bases built
# from the base model alone reach R_act ≈ 10–11 — 14–16 % of the label's energy in 8 of 576
# dimensions, z ≈ 19–22 — : ``global_write``, ``write``, ``mlp_write``, ``gate_kernel``,
# ``causally_isolated``. Yet on the weight axis all write/mixed bases sit at the random level
# (R_w_combined ≈ 1–1.5, z < 2; ``global_write`` is the best at ≈ 1.5): the LoRA writes into
# directions the base model's weights do not single out. This is seed 003's v7 finding again
# ("natural weight-side bases fail the weight-axis test"), here on a different model and LoRA.
#
# **The notebook's own verdict, and its ten other bases.** ``result.conclusion()``: the best joint
# write/mixed basis is ``global_write`` (R_act 11.41, R_w_combined 1.52 = 2.3 % of the weight
# ceiling's mean R_w, joint 4.17); ``global_write`` and ``causally_isolated`` are in both the top 5
# by R_act and the top 5 by R_w_combined. ``global_write_not_global_read`` and ``causally_isolated``
# come next on the weights (R_w ≈ 1.45 and 1.37, z < 2: still inside the null) with R_act ≈ 10; the
# up-projection persona contrasts reach R_act 3.5 (input) and 2.8 (written), the magnitude-turnover
# bases (``suppressed``, ``amplified``, ``added_features``) 1.3–2.3 — all at R_w ≈ 1. No natural
# basis points where ΔW writes: their mean principal cosine with the ΔW basis (``cos_with_dW``) is
# 0.09–0.12, against 0.10 for the random control.
#
# **The weight view and the activation view of the change are different subspaces.** The weight
# ceiling (top directions of ΔW_O, ΔW_out) holds only ≈ 10 % of the label (R_act ≈ 6.9), and the
# activation ceiling only ≈ 5 % of ΔW (R_w ≈ 3.5): most of the residual change is not written by ΔW
# directly but by the base model's own W_O/W_out acting on what the changed reads (Q/K/V/gate/up)
# produce, accumulated over the tuned layers.
#
# **Persona and specificity.** The sycophantic − critical persona contrast (persona prompts are
# chat-templated) reaches R_act ≈ 5.2 on the raw-text label, 3.9 after the clean-residual PCs are
# projected out. The clean PCs themselves are generic (R_act ≈ 8.7, R_w ≈ 1.3). Among read-side
# bases, ``logits_null`` (directions the unembedding barely reads) has R_act ≈ 10.
#
# Caveats: one LoRA seed, one probe set, k = 8 — anecdote-grade rankings, as seed 003 says of its
# own; z-scores use the exact null but the null is skewed, so read them as a scale, not p-values.
