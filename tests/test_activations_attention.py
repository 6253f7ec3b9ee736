"""Hook-reduced attention metrics against plain transformers (eager attention, output_attentions=True)
on the same GGUF-loaded SmolLM2, and base-vs-tuned versions on a ModelPair."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.activations import (
    HEAD_TYPES,
    attention_metrics,
    attention_pattern,
    compare_prompt_variants,
    few_shot_answer_attention,
    head_type_scores,
    pair_attention_metrics,
    pair_few_shot_answer_attention,
    pair_head_type_scores,
)
from interp.activations.attention_metrics import few_shot_answers
from interp.loading import OFFLINE_MODELS

QUESTION = "What is 15 plus 27?"
VARIANTS = {
    "plain": QUESTION,
    "cot": f"Let's think step by step.\n\n{QUESTION}",
    "expert": f"You are an expert mathematician.\n\n{QUESTION}",
    "structured": f"Question: {QUESTION}\nAnswer:",
}
FEWSHOT = [
    "Q: What is 3 plus 4?\nA: 7\n\nQ: What is 15 plus 27?\nA:",
    "Q: What is 3 plus 4?\nA: 7\n\nQ: What is 10 plus 5?\nA: 15\n\nQ: What is 15 plus 27?\nA:",
]
ATOL = 1e-4


@pytest.fixture(scope="module")
def hf_smollm2():
    """Plain transformers Llama from the same GGUF file, eager attention (the independent reference)."""
    from transformers import AutoModelForCausalLM

    path = OFFLINE_MODELS["smollm2-135m-instruct"].locate()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32,
                                                 attn_implementation="eager")
    return model.eval()


def hf_attentions(hf_model, tl_model, prompt: str) -> tuple[torch.Tensor, list[int]]:
    """``[layer, head, q, k]`` attentions of one unpadded prompt, fed the same token ids as TL's."""
    ids = tl_model.to_tokens(prompt)
    with torch.no_grad():
        out = hf_model(input_ids=ids, output_attentions=True)
    return torch.stack([a[0] for a in out.attentions]), ids[0].tolist()


def entropy(p: torch.Tensor) -> torch.Tensor:
    logs = torch.where(p > 0, torch.log(p), torch.zeros_like(p))
    return -(p * logs).sum(-1)


@pytest.fixture(scope="module")
def variant_metrics(smollm2):
    return compare_prompt_variants(smollm2, VARIANTS, keywords=["15", "plus", "step", "expert"], padding_side="left",
                                   batch_size=3)


def test_entropy_max_sink_equal_transformers(variant_metrics, hf_smollm2, smollm2):
    for i, prompt in enumerate(VARIANTS.values()):
        att, _ = hf_attentions(hf_smollm2, smollm2, prompt)
        last = att[:, :, -1, :]  # [layer, head, key] from the last token
        torch.testing.assert_close(variant_metrics.entropy[i], entropy(last), atol=ATOL, rtol=0,
                                   msg=lambda m, i=i: f"entropy, prompt {i}: {m}")
        torch.testing.assert_close(variant_metrics.max_attention[i], last.max(-1).values, atol=ATOL, rtol=0)
        confident = (last.topk(2, dim=-1).values.diff(dim=-1).abs()[..., 0] > 1e-3)  # argmax not a near tie
        assert torch.equal(variant_metrics.max_position[i][confident], last.argmax(-1)[confident])
        torch.testing.assert_close(variant_metrics.sink[i], last[..., 0], atol=ATOL, rtol=0)
        per_query = entropy(att)[:, :, 1:].mean(-1)  # every query but the first token
        torch.testing.assert_close(variant_metrics.mean_entropy[i], per_query, atol=ATOL, rtol=0)
        torch.testing.assert_close(variant_metrics.mean_sink[i], att[:, :, 1:, 0].mean(-1), atol=ATOL, rtol=0)
        torch.testing.assert_close(variant_metrics.head_mean_entropy[i], entropy(last.mean(1)), atol=ATOL, rtol=0)


def test_keyword_attention_equals_transformers(variant_metrics, hf_smollm2, smollm2):
    tok = smollm2.tokenizer
    digit_ids = [tok.convert_tokens_to_ids("1"), tok.convert_tokens_to_ids("5")]
    single = {"plus": tok.encode(" plus", add_special_tokens=False), "step": tok.encode(" step", add_special_tokens=False),
              "expert": tok.encode(" expert", add_special_tokens=False)}
    assert all(len(v) == 1 for v in single.values())
    for i, prompt in enumerate(VARIANTS.values()):
        att, ids = hf_attentions(hf_smollm2, smollm2, prompt)
        last = att[:, :, -1, :]
        fifteen = [j for j in range(len(ids) - 1) if ids[j : j + 2] == digit_ids]
        keys = {"15": [j for s in fifteen for j in (s, s + 1)],
                **{k: [j for j, t in enumerate(ids) if t == v[0]] for k, v in single.items()}}
        for w, keyword in enumerate(variant_metrics.keywords):
            expected = last[..., keys[keyword]].sum(-1)
            torch.testing.assert_close(variant_metrics.keyword_attention[i, ..., w], expected, atol=ATOL, rtol=0,
                                       msg=lambda m, k=keyword, i=i: f"keyword {k!r}, prompt {i}: {m}")
            assert int(variant_metrics.keyword_tokens[i, w]) == len(keys[keyword])
    frame = variant_metrics.keyword_frame()
    assert len(frame) == 4 * 30 * 9 * 4
    assert frame.query("label == 'plain' and keyword == 'step'")["attention"].eq(0).all()


def test_frames_are_tidy_and_label_the_variants(variant_metrics, smollm2):
    heads = variant_metrics.to_frame()
    assert len(heads) == 4 * 30 * 9
    assert list(heads["label"].unique()) == list(VARIANTS)
    row = heads.query("label == 'cot' and layer == 3 and head == 2").iloc[0]
    tokens = [smollm2.tokenizer.decode([t]) for t in smollm2.to_tokens(VARIANTS["cot"])[0]]
    assert row["max_token"] == tokens[row["max_position"]]
    assert row["query_position"] == len(tokens) - 1
    layers = variant_metrics.layer_frame()
    assert len(layers) == 4 * 30
    expected = heads.groupby(["label", "layer"])["entropy"].mean()
    got = layers.set_index(["label", "layer"])["entropy"]
    np.testing.assert_allclose(got.loc[expected.index].to_numpy(), expected.to_numpy(), rtol=1e-6)


def test_padding_side_and_chosen_query_do_not_change_the_numbers(smollm2, variant_metrics):
    prompts = list(VARIANTS.values())
    right = attention_metrics(smollm2, prompts, layers=[0, 7, 29], padding_side="right", batch_size=2)
    torch.testing.assert_close(right.entropy, variant_metrics.entropy[:, [0, 7, 29]], atol=2e-5, rtol=0)
    torch.testing.assert_close(right.mean_entropy, variant_metrics.mean_entropy[:, [0, 7, 29]], atol=2e-5, rtol=0)
    # a chosen query position: the third token, checked against TransformerLens' own cached pattern
    third = attention_metrics(smollm2, prompts[:2], layers=[5], query=2)
    _, cache = smollm2.run_with_cache(prompts[1], names_filter=["blocks.5.attn.hook_pattern"], stop_at_layer=6)
    p = cache["blocks.5.attn.hook_pattern"][0, :, 2]
    torch.testing.assert_close(third.entropy[1, 0], entropy(p), atol=2e-5, rtol=0)
    assert third.query_position.tolist() == [2, 2]


def test_few_shot_attention_to_example_answers_equals_transformers(smollm2, hf_smollm2):
    assert [a for a, _ in few_shot_answers(FEWSHOT[1])] == ["7", "15"]
    assert few_shot_answers(QUESTION) == []
    frame = few_shot_answer_attention(smollm2, [QUESTION, *FEWSHOT], labels=["0-shot", "1-shot", "2-shot"],
                                      layers=[10, 20])
    assert set(frame["label"]) == {"1-shot", "2-shot"}  # 0-shot has no answers
    for p, prompt in enumerate(FEWSHOT, start=1):
        att, ids = hf_attentions(hf_smollm2, smollm2, prompt)
        tokens = [smollm2.tokenizer.decode([t]) for t in ids]
        # answer tokens: right after an "A:" line start, up to the newline
        answer_positions = []
        for j in range(len(tokens) - 1):
            if tokens[j] == "A" and tokens[j + 1] == ":":
                k, span = j + 2, []
                while k < len(tokens) and "\n" not in tokens[k]:
                    if tokens[k].strip():
                        span.append(k)
                    k += 1
                if span:
                    answer_positions.append(span)
        rows = frame[frame["prompt"] == p]
        assert rows["example"].nunique() == len(answer_positions) == p
        for e, positions in enumerate(answer_positions):
            for layer in (10, 20):
                got = rows.query(f"example == {e} and layer == {layer}").sort_values("head")["attention"].to_numpy()
                expected = att[layer, :, -1][:, positions].sum(-1).numpy()
                np.testing.assert_allclose(got, expected, atol=ATOL)


def test_long_prompt_lists_run_in_batches_with_a_progress_bar(smollm2, capsys):
    prompts = [f"Number {i} is here." for i in range(5)]
    batched = attention_metrics(smollm2, prompts, layers=[0, 1], batch_size=2, progress=True)
    assert "attention metrics" in capsys.readouterr().err  # tqdm's bar, one step per batch
    whole = attention_metrics(smollm2, prompts, layers=[0, 1], batch_size=5)
    torch.testing.assert_close(batched.entropy, whole.entropy, atol=2e-5, rtol=0)
    assert batched.entropy.shape == (5, 2, 9)


def test_attention_pattern_of_one_head_equals_transformers(smollm2, hf_smollm2):
    pattern = attention_pattern(smollm2, VARIANTS["cot"], layer=14, head=4)
    att, ids = hf_attentions(hf_smollm2, smollm2, VARIANTS["cot"])
    torch.testing.assert_close(pattern.pattern, att[14, 4], atol=ATOL, rtol=0)
    assert len(pattern.tokens) == len(ids)


def test_gemma_metrics_equal_transformer_lens_patterns(gemma):
    prompts = [VARIANTS["cot"], QUESTION]
    metrics = attention_metrics(gemma, prompts, layers=[0, 5], keywords=["plus"], padding_side="left")
    for i, prompt in enumerate(prompts):
        _, cache = gemma.run_with_cache(prompt, names_filter=lambda n: n.endswith("hook_pattern"), stop_at_layer=6)
        for j, layer in enumerate((0, 5)):
            p = cache["pattern", layer][0]  # [head, q, k], BOS at position 0
            torch.testing.assert_close(metrics.entropy[i, j], entropy(p[:, -1]), atol=2e-5, rtol=0)
            torch.testing.assert_close(metrics.sink[i, j], p[:, -1, 0], atol=2e-5, rtol=0)
            torch.testing.assert_close(metrics.mean_entropy[i, j], entropy(p[:, 1:]).mean(-1), atol=2e-5, rtol=0)


# The default pair's LoRA touches layers 9-23 only: nothing in layers 0-8 can change.
UNCHANGED, CHANGED = [5, 8], [12, 20]


def test_pair_metrics_have_model_column_and_delta(default_pair):
    prompts = list(VARIANTS.values())[:2]
    layers = UNCHANGED + CHANGED
    result = pair_attention_metrics(default_pair, prompts, layers=layers, keywords=["plus"])
    frame = result.to_frame()
    assert set(frame["model"]) == {"base", "tuned", "delta"}
    # base rows are the base model's metrics, checked on TransformerLens' cached pattern
    _, cache = default_pair.base.run_with_cache(prompts[1], names_filter=["blocks.12.attn.hook_pattern"],
                                                stop_at_layer=13)
    base12 = frame.query("model == 'base' and prompt == 1 and layer == 12").sort_values("head")["entropy"]
    np.testing.assert_allclose(base12.to_numpy(), entropy(cache["blocks.12.attn.hook_pattern"][0, :, -1]).numpy(),
                               atol=2e-5)
    delta = frame[frame["model"] == "delta"].set_index(["prompt", "layer", "head"]).sort_index()
    expected = (result.tuned.entropy - result.base.entropy).flatten().numpy()
    np.testing.assert_allclose(delta["entropy"].to_numpy(), expected, atol=1e-6)
    before = delta.query(f"layer in {UNCHANGED}")[["entropy", "max_attention", "sink", "mean_entropy"]]
    assert before.abs().to_numpy().max() == 0, "layers before the LoRA's cannot change"
    assert delta.query(f"layer in {CHANGED}")["entropy"].abs().max() > 1e-3
    assert set(result.keyword_frame()["model"]) == {"base", "tuned", "delta"}
    assert len(result.layer_frame()) == 3 * 2 * 4
    few = pair_few_shot_answer_attention(default_pair, FEWSHOT[:1], layers=[20])
    assert set(few["model"]) == {"base", "tuned", "delta"} and len(few) == 3 * 9


def test_pair_head_type_scores_share_the_probe_and_delta(default_pair):
    frame = pair_head_type_scores(default_pair, length=12, n_sequences=2, seed=3, layers=[8, 17])
    assert set(frame["model"]) == {"base", "tuned", "delta"} and len(frame) == 3 * 2 * 9
    tuned = head_type_scores(default_pair.tuned, length=12, n_sequences=2, seed=3, layers=[8, 17])
    got = frame[frame["model"] == "tuned"].sort_values(["layer", "head"])["induction"].to_numpy()
    np.testing.assert_allclose(got, tuned.induction.flatten().numpy(), atol=1e-6)
    delta = frame[frame["model"] == "delta"]
    assert delta.query("layer == 8")[list(HEAD_TYPES)].abs().to_numpy().max() == 0
    assert delta.query("layer == 17")[list(HEAD_TYPES)].abs().to_numpy().max() > 1e-4


def test_bad_inputs_raise_clear_errors(smollm2):
    with pytest.raises(ValueError, match="prompts: is empty"):
        attention_metrics(smollm2, [])
    with pytest.raises(ValueError, match=r"prompts: prompt\(s\) \[0\] are empty strings"):
        attention_metrics(smollm2, [""])
    with pytest.raises(ValueError, match="longer than the model's context"):
        attention_metrics(smollm2, ["word " * 9000])
    with pytest.raises(ValueError, match="layers: layer 30 is out of range"):
        attention_metrics(smollm2, [QUESTION], layers=[30])
    with pytest.raises(ValueError, match="head: head 9 is out of range"):
        attention_pattern(smollm2, QUESTION, layer=3, head=9)
    with pytest.raises(ValueError, match="layer: layer -31 is out of range"):
        attention_pattern(smollm2, QUESTION, layer=-31, head=0)
    with pytest.raises(ValueError, match="query"):
        attention_metrics(smollm2, [QUESTION], query="first")
    with pytest.raises(ValueError, match="query: index 40 is outside prompt 0"):
        attention_metrics(smollm2, [QUESTION], query=40)
    with pytest.raises(ValueError, match="keywords"):
        attention_metrics(smollm2, [QUESTION], keywords=[""])
    with pytest.raises(ValueError, match="labels: got 2 labels for 1 prompts"):
        attention_metrics(smollm2, [QUESTION], labels=["a", "b"])
    with pytest.raises(ValueError, match="variants"):
        compare_prompt_variants(smollm2, {})
    with pytest.raises(TypeError, match="pair: expected a ModelPair"):
        pair_attention_metrics(smollm2, [QUESTION])


def test_query_past_a_short_prompt_names_query(smollm2):
    """Issue 13: ``query=500`` on a 3-token prompt names ``query`` (not the positions helper's ``indices``)."""
    prompt = "Two plus"
    n = len(smollm2.to_tokens(prompt, prepend_bos=False)[0])
    assert n <= 3
    for bad in (500, n, -n - 1):
        with pytest.raises(ValueError, match=rf"query: index {bad} is outside prompt 0 \(\d+ tokens\)") as err:
            attention_metrics(smollm2, [prompt], query=bad)
        assert "indices" not in str(err.value)
    # both in-range ends still work
    assert attention_metrics(smollm2, [prompt], layers=[0], query=-1).query_position.tolist() == [
        attention_metrics(smollm2, [prompt], layers=[0]).query_position.item()]


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("query", ["last", 3])
def test_normalized_entropy_equals_torch_on_hook_pattern(gemma, padding_side, query):
    """H / ln n with n the keys the query sees (its prompt's real tokens up to it, BOS included), from
    TL's hook_pattern of each prompt run alone; n_keys is that count whatever the padding."""
    prompts = [VARIANTS["cot"], QUESTION, "Two plus two"]
    layers = [0, 5]
    metrics = attention_metrics(gemma, prompts, layers=layers, query=query, padding_side=padding_side)
    frame, layer_frame = metrics.to_frame(), metrics.layer_frame()
    for i, prompt in enumerate(prompts):
        tokens = gemma.to_tokens(prompt)  # BOS prepended: Gemma's default
        q = tokens.shape[1] - 1 if query == "last" else query
        n = q + 1  # causal: keys 0..q of the unpadded prompt
        assert int(metrics.n_keys[i]) == n
        assert set(frame.loc[frame["prompt"] == i, "n_keys"]) == {n}
        _, cache = gemma.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"), stop_at_layer=6)
        for j, layer in enumerate(layers):
            p = cache["pattern", layer][0]  # [head, q, k]
            row = p[:, q, : q + 1]
            expected = entropy(row) / torch.log(torch.tensor(float(n)))
            torch.testing.assert_close(metrics.normalized_entropy[i, j], expected, atol=2e-5, rtol=0)
            assert ((metrics.normalized_entropy[i, j] >= -1e-6) & (metrics.normalized_entropy[i, j] <= 1 + 1e-5)).all()
            head_mean = entropy(row.mean(0)) / torch.log(torch.tensor(float(n)))
            torch.testing.assert_close(metrics.head_mean_normalized_entropy[i, j], head_mean, atol=2e-5, rtol=0)
            per_query = torch.stack([entropy(p[:, k, : k + 1]) / torch.log(torch.tensor(float(k + 1)))
                                     for k in range(1, tokens.shape[1])], dim=-1)
            torch.testing.assert_close(metrics.mean_normalized_entropy[i, j], per_query.mean(-1), atol=2e-5, rtol=0)
            got = layer_frame.query(f"prompt == {i} and layer == {layer}")
            assert float(got["head_mean_normalized_entropy"].iloc[0]) == pytest.approx(float(head_mean), abs=2e-5)
            assert float(got["normalized_entropy"].iloc[0]) == pytest.approx(float(expected.mean()), abs=2e-5)


def test_normalized_entropy_of_a_one_key_query_is_nan(smollm2):
    """A query that sees one key has H = 0 and no normalised value (ln 1 = 0): NaN, not inf or 0."""
    metrics = attention_metrics(smollm2, ["Two plus two", QUESTION], layers=[0], query=0)
    assert metrics.n_keys.tolist() == [1, 1]
    assert torch.isnan(metrics.normalized_entropy).all() and torch.isnan(metrics.head_mean_normalized_entropy).all()
    assert (metrics.entropy.abs() < 1e-6).all()
