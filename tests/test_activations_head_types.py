"""Head types on real models: equal to TransformerLens' detect_head, induction heads and a
first-token sink in SmolLM2."""

from __future__ import annotations

import pytest
import torch
from transformer_lens.head_detector import (
    compute_head_attention_similarity_score,
    detect_head,
    get_induction_head_detection_pattern,
    get_previous_token_head_detection_pattern,
)

from interp.activations import HEAD_TYPES, attention_metrics, head_type_scores, repeated_random_tokens

# Documented in docs/analyses/activations.md: with 8 sequences of 40 repeated random tokens
# (seed 0), these SmolLM2 heads score above INDUCTION_THRESHOLD on detect_head's measure (a
# perfect induction head scores (40 - 1) / 80 = 0.49 there).
INDUCTION_THRESHOLD = 0.3
SMOLLM2_INDUCTION_HEADS = {(17, 3), (17, 4), (18, 6)}
REPEATS = "The cat sat on the mat. The dog ran in the park. The cat sat on the mat. The dog ran in the park."


@pytest.fixture(scope="module")
def smol_scores(smollm2):
    return head_type_scores(smollm2, length=40, n_sequences=8, seed=0)


def test_scores_equal_transformer_lens_detect_head(smollm2):
    tokens = smollm2.to_tokens(REPEATS)
    ours = head_type_scores(smollm2, tokens)
    for kind, name in zip(HEAD_TYPES, ("previous_token_head", "duplicate_token_head", "induction_head"), strict=True):
        expected = detect_head(smollm2, REPEATS, name)
        torch.testing.assert_close(getattr(ours, kind), expected, atol=2e-5, rtol=0,
                                   msg=lambda m, kind=kind: f"{kind} vs detect_head: {m}")
    flags = dict(exclude_bos=True, exclude_current_token=True)
    excluded = head_type_scores(smollm2, tokens, **flags)
    torch.testing.assert_close(excluded.induction, detect_head(smollm2, REPEATS, "induction_head", **flags),
                               atol=2e-5, rtol=0)


def test_repeated_random_tokens_are_seeded_repeats_of_ordinary_tokens(smollm2, gemma):
    tokens = repeated_random_tokens(smollm2, length=30, n_sequences=3, seed=7)
    assert tokens.shape == (3, 60)
    assert torch.equal(tokens[:, :30], tokens[:, 30:])
    assert torch.equal(tokens, repeated_random_tokens(smollm2, length=30, n_sequences=3, seed=7))
    assert not torch.equal(tokens, repeated_random_tokens(smollm2, length=30, n_sequences=3, seed=8))
    assert not set(tokens.flatten().tolist()) & set(smollm2.tokenizer.all_special_ids)
    with_bos = repeated_random_tokens(gemma, length=10, n_sequences=2, seed=0)
    assert with_bos.shape == (2, 21) and (with_bos[:, 0] == gemma.tokenizer.bos_token_id).all()
    assert torch.equal(with_bos[:, 1:11], with_bos[:, 11:])


def test_smollm2_has_induction_heads_that_attend_to_the_induction_target(smollm2, smol_scores):
    found = set(smol_scores.heads_above("induction", INDUCTION_THRESHOLD))
    assert SMOLLM2_INDUCTION_HEADS <= found, f"induction heads above {INDUCTION_THRESHOLD}: {sorted(found)}"
    # independent check on TransformerLens' cached patterns: on the second copy, query q attends to
    # the token after the previous occurrence of its own token, q - length + 1
    tokens = smol_scores.tokens[:2]
    length = tokens.shape[1] // 2
    _, cache = smollm2.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"), stop_at_layer=19)
    q = torch.arange(length, 2 * length)
    for layer, head in SMOLLM2_INDUCTION_HEADS:
        stripe = cache["pattern", layer][:, head, q, q - length + 1]
        assert stripe.mean() > 0.6, f"L{layer}H{head} puts only {stripe.mean():.2f} on the induction target"
        off = cache["pattern", layer][:, head, q, q - length]  # the repeated token itself
        assert stripe.mean() > 3 * off.mean()
    detected = head_type_scores(smollm2, smol_scores.tokens[:2], layers=[17, 18], rows="detected")
    for layer, head in SMOLLM2_INDUCTION_HEADS:
        assert detected.induction[layer - 17, head] > 0.6
    assert smol_scores.to_frame().groupby("layer")["induction"].max().loc[:10].max() < 0.1, \
        "no induction head in the first layers (it needs a previous-token head before it)"


def test_first_token_sink_grows_in_later_layers(smollm2):
    prompts = ["The quick brown fox jumps over the lazy dog near the river bank.",
               "What is 15 plus 27? Let's think step by step about the answer."]
    metrics = attention_metrics(smollm2, prompts)
    by_layer = metrics.mean_sink.mean(dim=(0, 2))  # [layer]
    _, cache = smollm2.run_with_cache(prompts[0], names_filter=["blocks.24.attn.hook_pattern"], stop_at_layer=25)
    expected = cache["blocks.24.attn.hook_pattern"][0, :, 1:, 0].mean(-1)
    torch.testing.assert_close(metrics.mean_sink[0, 24], expected, atol=2e-5, rtol=0)
    assert by_layer[15:].mean() > 0.6, f"late-layer sink mass {by_layer[15:].mean():.2f}"
    assert by_layer[15:].mean() > 2 * by_layer[:2].mean()


def test_gemma_head_types_run_with_bos(gemma):
    scores = head_type_scores(gemma, length=20, n_sequences=2, layers=[0, 1, 2])
    assert scores.induction.shape == (3, 4) and scores.tokens.shape == (2, 41)
    tokens = gemma.to_tokens(REPEATS)
    ours = head_type_scores(gemma, tokens, layers=[4])
    # detect_head's run_with_cache(remove_batch_dim=True) fails on Gemma 3 in TransformerLens 3.9, so
    # use its scoring function on a normally cached pattern
    _, cache = gemma.run_with_cache(tokens, names_filter=["blocks.4.attn.hook_pattern"], stop_at_layer=5)
    for kind, detector in (("previous_token", get_previous_token_head_detection_pattern),
                           ("induction", get_induction_head_detection_pattern)):
        detection = detector(tokens)
        expected = torch.tensor([
            compute_head_attention_similarity_score(cache["blocks.4.attn.hook_pattern"][0, h], detection,
                                                    exclude_bos=False, exclude_current_token=False,
                                                    error_measure="mul")
            for h in range(4)
        ])
        torch.testing.assert_close(getattr(ours, kind)[0], expected, atol=2e-5, rtol=0)


def test_bad_inputs(smollm2, smol_scores):
    with pytest.raises(ValueError, match="length: expected a positive int"):
        repeated_random_tokens(smollm2, length=0)
    with pytest.raises(ValueError, match="exceed the model's context"):
        repeated_random_tokens(smollm2, length=5000)
    with pytest.raises(TypeError, match="tokens: expected an integer tensor"):
        head_type_scores(smollm2, torch.zeros(2, 10))
    with pytest.raises(ValueError, match="layers: layer 30 is out of range"):
        head_type_scores(smollm2, length=5, n_sequences=1, layers=[30])
    with pytest.raises(ValueError, match="rows"):
        head_type_scores(smollm2, length=5, n_sequences=1, rows="some")
    with pytest.raises(ValueError, match="kind"):
        smol_scores.heads_above("copy", 0.5)


def test_token_ids_outside_the_vocabulary_are_refused_before_any_forward(smollm2):
    """Issue 13: ids ≥ d_vocab (or < 0) raise a ValueError naming ``tokens`` instead of an IndexError
    from inside the embedding, and the model is never run."""
    calls = []
    handle = smollm2.embed.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        vocab = smollm2.cfg.d_vocab
        good = torch.randint(0, vocab, (2, 8), generator=torch.Generator().manual_seed(0))
        for value in (vocab, vocab + 100, -1):
            bad = good.clone()
            bad[1, 3] = value
            with pytest.raises(ValueError, match=rf"tokens: expected ids in \[0, {vocab}\)"):
                head_type_scores(smollm2, bad, layers=[0])
        assert calls == []
        head_type_scores(smollm2, good, layers=[0])  # valid ids still run
        assert calls != []
    finally:
        handle.remove()
