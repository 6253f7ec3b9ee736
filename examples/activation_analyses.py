# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Activation analyses: attention metrics, head types and Q/K/V structure
#
# Reproduces two seed notebooks on the offline models:
#
# * **seed 004** (attention pattern analysis) on SmolLM2-135M-Instruct with chat-formatted prompts:
#   entropy per layer for plain / chain-of-thought / expert / structured prompts, attention to
#   keywords, few-shot attention to the example answers, head specialisation, head types
#   (previous-token, duplicate-token, induction) and the first-token sink — all reduced inside the
#   forward pass, so no ``[layer, head, seq, seq]`` tensor is kept;
# * **seed 002** (token-related similarities within and across Q, K, V) on SmolLM2 and Gemma 3 270M
#   with the seed's " her" sentences, under the seed's settings (Pearson correlation, no BOS).
#
# Figures are written as HTML into ``activation_analyses_out/`` in the working directory.

# %%
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from interp import ModelPair, load_model
from interp.activations import (
    attention_pattern,
    attention_study,
    compare_prompt_variants,
    few_shot_answer_attention,
    head_type_scores,
    prompt_sensitivity,
    qkv_similarity_study,
)
from interp.plots.activations import (
    attention_heatmap,
    entropy_by_layer,
    head_metric_heatmap,
    similarity_densities,
)
from interp.prompts import format_prompt

torch.set_grad_enabled(False)
OUT = Path("activation_analyses_out")
OUT.mkdir(exist_ok=True)


def save(fig, name: str) -> None:
    fig.write_html(OUT / f"{name}.html", include_plotlyjs="cdn")


# tests/test_examples_activation_analyses.py hands in its already loaded models
if "smollm2" not in globals():
    smollm2 = load_model("smollm2-135m-instruct")


# %% [markdown]
# ## Seed 004: the same question under four prompt variants
# Entropy is in nats, of the last token's attention over the prompt's real tokens; the normalised
# entropy H / ln n_keys divides by its maximum for the n_keys tokens the last token sees, so variants
# of different lengths compare.

# %%
QUESTION = "What is 15 plus 27?"
TURNS = {  # label -> (system prompt or None, user turn)
    "plain": (None, QUESTION),
    "cot": (None, f"Let's think step by step.\n\n{QUESTION}"),
    "expert": ("You are an expert mathematician.", QUESTION),
    "structured": (None, f"Question: {QUESTION}\nAnswer:"),
}
# SmolLM2's chat prompts, ending where the assistant's answer starts
VARIANTS = {label: format_prompt(smollm2, system, user) for label, (system, user) in TURNS.items()}
KEYWORDS = ["15", "27", "plus", "step", "expert", "Question", "Answer"]
variants = compare_prompt_variants(smollm2, VARIANTS, keywords=KEYWORDS)
layers = variants.layer_frame()
print("keys seen by the last token:", dict(zip(variants.labels, variants.n_keys.tolist(), strict=True)))
print(layers.pivot(index="layer", columns="label", values="head_mean_entropy").round(3).tail(8))
print(layers.pivot(index="layer", columns="label", values="head_mean_normalized_entropy").round(3).tail(8))
save(entropy_by_layer(layers, value="head_mean_entropy", title="Entropy of the head-averaged last-token attention"),
     "entropy_by_layer")
save(entropy_by_layer(layers, value="head_mean_normalized_entropy",
                      title="Normalised entropy H / ln n_keys of the head-averaged last-token attention"),
     "normalized_entropy_by_layer")

# %% [markdown]
# The seed's last-layer heatmap: attention of every query to every key, averaged over heads
# (``head=None``; pass a head index for one head), for the chain-of-thought variant.

# %%
last_layer_pattern = attention_pattern(smollm2, VARIANTS["cot"], layer=smollm2.cfg.n_layers - 1, head=None)
save(attention_heatmap(last_layer_pattern), "last_layer_mean_pattern")

# %% [markdown]
# Which layers are the most prompt-sensitive? The spread (max − min across variants) of the
# head-mean entropy per layer; the variants differ in length, so the ranking is by the normalised
# spread (raw entropy would partly rank length):

# %%
sensitivity = prompt_sensitivity(layers)
print(f"most prompt-sensitive layers (ranked by {sensitivity['ranked_by'].iloc[0]}):")
print(sensitivity.head(5).round(3).to_string(index=False))

# %% [markdown]
# Attention from the last token to keywords (last layer, mean over heads), as in the seed:

# %%
keywords = variants.keyword_frame()
last_layer = keywords[(keywords["layer"] == smollm2.cfg.n_layers - 1) & (keywords["n_tokens"] > 0)]
print(last_layer.groupby(["label", "keyword"])["attention"].mean().round(4).to_string())

# %% [markdown]
# ## Head specialisation (chain-of-thought prompt)

# %%
heads = variants.to_frame()
cot = heads[heads["label"] == "cot"]
print("most focused heads:\n", cot.nsmallest(5, "entropy")[["layer", "head", "entropy", "max_attention", "max_token"]])
print("most distributed heads:\n", cot.nlargest(5, "entropy")[["layer", "head", "entropy"]])
save(head_metric_heatmap(cot, "entropy", title="Last-token attention entropy (nats), CoT prompt"), "cot_entropy_heads")
save(head_metric_heatmap(heads, "mean_sink", title="Attention on the first token, mean over queries"), "sink_heads")
sink_by_layer = heads.groupby("layer")["mean_sink"].mean()
print(f"first-token sink: layers 0-1 {sink_by_layer.iloc[:2].mean():.2f}, "
      f"layers 15-29 {sink_by_layer.iloc[15:].mean():.2f}")

# %% [markdown]
# ## Few-shot: does the model attend to the example answers?

# %%
FEWSHOT = {
    "0-shot": "What is 15 plus 27?",
    "1-shot": "Q: What is 3 plus 4?\nA: 7\n\nQ: What is 15 plus 27?\nA:",
    "2-shot": "Q: What is 3 plus 4?\nA: 7\n\nQ: What is 10 plus 5?\nA: 15\n\nQ: What is 15 plus 27?\nA:",
}
few = few_shot_answer_attention(smollm2, list(FEWSHOT.values()), labels=list(FEWSHOT))
per_prompt = few.groupby(["label", "layer", "head"])["attention"].sum().groupby(["label", "layer"]).mean()
print("total attention to example answers (mean over heads), top layers:")
print(per_prompt.groupby("label", group_keys=False).nlargest(3).round(4).to_string())

# %% [markdown]
# ## Head types on repeated random tokens (seeded)

# %%
types = head_type_scores(smollm2, length=40, n_sequences=4, seed=0)  # the docs' table uses 8 sequences
print("induction heads (score > 0.3, a perfect head scores 0.49):", types.heads_above("induction", 0.3))
print("previous-token heads (score > 0.5):", types.heads_above("previous_token", 0.5))
save(head_metric_heatmap(types.to_frame(), "induction", title="Induction score"), "induction_heads")
top_layer, top_head = types.heads_above("induction", 0.3)[0]
save(attention_heatmap(attention_pattern(smollm2, types.tokens[0], layer=top_layer, head=top_head)),
     "induction_head_pattern")

# %% [markdown]
# ## Base vs tuned: the default ModelPair (SmolLM2 + its sycophancy-persona LoRA on layers 9-23)
# Every metric for both models, with ``model`` = base / tuned / delta (tuned − base).

# %%
if "pair" not in globals():
    pair = ModelPair.default()
# attention_study formats TURNS with the base model's chat template, as VARIANTS above; its head-type probe
# (4 sequences of 40 tokens, seed 0) is the same as the single-model one
pair_study = attention_study(pair, TURNS, keywords=KEYWORDS, head_type_length=40, head_type_sequences=4,
                             head_type_seed=0)
pair_layers = pair_study.layer_frame
delta = pair_layers[pair_layers["model"] == "delta"]
change = delta.groupby("layer")["entropy"].apply(lambda s: s.abs().mean())
print("mean |Δ entropy| per layer (nats), largest five:")
print(change.nlargest(5).round(4).to_string())
print(f"largest |Δ| outside the LoRA's layers 9-23: {change.drop(range(9, 24)).max():.2e} "
      "(layers before 9 cannot change; later ones can, through their inputs)")
pair_types = pair_study.head_types
print("induction score, base vs tuned, for the top heads:")
print(pair_types.pivot_table(index=["layer", "head"], columns="model", values="induction")
      .nlargest(4, "base").round(3).to_string())
save(head_metric_heatmap(pair_study.heads.query("model == 'delta'"), "entropy", colorscale="RdBu", zmid=0,
                         title="Δ last-token entropy (tuned − base)"), "pair_entropy_delta")

# %% [markdown]
# ## Seed 002: Q/K/V neuron similarities at " her" vs the token before it

# %%
SENTENCES = [
    "I saw her at the market.", "She gave her the book.", "They asked her for advice.",
    "We invited her to dinner.", "The dog followed her home.", "They asked her to join.",
    "He saw her at the park yesterday.", "Did you give her your address?", "I haven't seen her in ages.",
    "I told her the truth.", "They congratulated her on his success.", "She recognized her immediately.",
    "The teacher praised her for his work.", "I met her last summer.", "The child hugged her tightly.",
    "They warned her about the danger.", "She drove her to the airport.", "We waited for her for hours.",
    "The cat scratched her accidentally.", "They surprised her with a gift.", "She called her on the phone.",
    "The jury found her not guilty.", "I remembered her from school.", "They elected her as president.",
]

if "gemma" not in globals():
    gemma = load_model("gemma-3-270m")
# The seed's own settings: GPT-2 ran without BOS, and the histograms it plotted are Pearson correlations (its
# correlation cell overwrites the cosine matrices before the histograms; its shuffled baseline was left as a
# cosine, a mismatch interp does not copy: data and baseline use the same `kind`). kind="cosine" is the option.
for name, model, layer in (("smollm2", smollm2, 6), ("gemma", gemma, 6)):
    study = qkv_similarity_study(model, SENTENCES, " her", layer=layer, kind="correlation", prepend_bos=False, seed=0)
    frame = study.histograms
    mean_abs = (frame.assign(w=frame["count"] * frame["bin_center"].abs())
                .groupby(["condition", "block"]).apply(lambda g: g["w"].sum() / g["count"].sum(), include_groups=False))
    print(f"{name} layer {layer}: Q {tuple(study.target.q.shape[1:])}, K/V {tuple(study.target.k.shape[1:])}; "
          "mean |correlation| per block (no BOS):")
    print(mean_abs.unstack("block").round(3).to_string())
    save(similarity_densities(frame, title=f"{name}: Q/K/V neuron correlation, layer {layer} (no BOS)"),
         f"qkv_densities_{name}")
