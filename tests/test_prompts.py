"""The prompt layer on real tokenizers: formatting, BOS handling, padding, the context check, the runner."""

from __future__ import annotations

import pytest
import torch

from interp.prompts import format_prompt, format_prompts, pad_rows, run_batched, token_ids, tokenize

SENTENCES = ["The cat sat on the mat.", "Paris is the capital of France and a large city."]


def test_chat_texts_that_start_with_bos_get_no_second_bos(gemma):
    # Gemma prepends <bos> (cfg.default_prepend_bos); a text that already starts with it keeps one.
    text = gemma.tokenizer.bos_token + "Hello there"
    ids = token_ids(gemma, text)
    assert ids == gemma.to_tokens("Hello there")[0].tolist()
    assert ids.count(gemma.tokenizer.bos_token_id) == 1


def test_prepend_bos_is_explicit(gemma):
    plain = gemma.to_tokens("Hello there", prepend_bos=False)[0].tolist()
    assert token_ids(gemma, "Hello there", prepend_bos=False) == plain
    assert token_ids(gemma, "Hello there", prepend_bos=True) == [gemma.tokenizer.bos_token_id, *plain]
    with pytest.raises(TypeError, match="prepend_bos"):
        tokenize(gemma, ["x"], prepend_bos="yes")


def test_padding_side_puts_real_tokens_left_or_right(smollm2):
    for side in ("left", "right"):
        batch = tokenize(smollm2, SENTENCES, padding_side=side)
        for row, text in enumerate(SENTENCES):
            expected = smollm2.to_tokens(text)[0]
            assert torch.equal(batch.tokens[row][batch.mask[row]], expected)
        short = int(batch.lengths.argmin())
        assert bool(batch.mask[short, -1] if side == "right" else batch.mask[short, 0]) is False


def test_pad_rows_plain_torch():
    tokens, mask = pad_rows([[1, 2], [], [3]], 9, side="left")
    assert tokens.tolist() == [[1, 2], [9, 9], [9, 3]]
    assert mask.tolist() == [[True, True], [False, False], [False, True]]
    with pytest.raises(ValueError, match="padding_side"):
        pad_rows([[1]], 0, side="up")


def test_context_check_names_the_argument(smollm2):
    too_long = "word " * (smollm2.cfg.n_ctx + 10)
    with pytest.raises(ValueError, match="questions: prompt\\(s\\) 1 .* longer than the model's context"):
        tokenize(smollm2, ["fine", too_long], name="questions")


def test_format_prompts_plain_and_chat(smollm2, gemma):
    assert format_prompts(gemma, ["Q?"], "Be brief.") == ["System: Be brief.\nUser: Q?\nAssistant:"]
    assert format_prompts(gemma, ["Q?"]) == ["User: Q?\nAssistant:"]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}]
    chat = smollm2.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert format_prompt(smollm2.tokenizer, "Be brief.", "Q?") == chat == format_prompts(smollm2, ["Q?"], "Be brief.")[0]
    with pytest.raises(TypeError, match="users"):
        format_prompts(smollm2, "Q?")


def test_run_batched_equals_run_with_cache_per_prompt(smollm2):
    batch = tokenize(smollm2, SENTENCES, padding_side="left")
    name = "blocks.2.hook_resid_post"
    got = {}

    def make_hooks(chunk):
        def keep(act, hook):
            got[chunk.rows.start] = (act.detach().clone(), chunk)
        return [(name, keep)]

    run_batched(smollm2, batch, make_hooks, batch_size=1, stop_at_layer=3)
    for row, text in enumerate(SENTENCES):
        act, chunk = got[row]
        _, cache = smollm2.run_with_cache(smollm2.to_tokens(text), names_filter=name, stop_at_layer=3)
        torch.testing.assert_close(act[0], cache[name][0], rtol=1e-4, atol=1e-4)


def test_stop_layer_without_names_names_the_argument(smollm2):
    from interp.prompts import stop_layer

    with pytest.raises(ValueError, match="names: expected at least one hook name"):
        stop_layer(smollm2, [])


def test_a_token_batch_refuses_arguments_that_contradict_its_own_settings(gemma):
    """A TokenBatch is returned as it is; padding_side / prepend_bos may restate its settings (or be
    None) but a contradiction is a ValueError naming the argument, not silently ignored."""
    from interp.prompts import batch_from_tokens

    bos = gemma.tokenizer.bos_token_id
    assert gemma.cfg.default_prepend_bos  # so the default batch has BOS put first
    left = tokenize(gemma, SENTENCES, padding_side="left")
    assert all(row[row != gemma.tokenizer.pad_token_id][0] == bos for row in left.tokens)
    for kwargs in ({}, {"padding_side": "left"}, {"prepend_bos": True}, {"padding_side": "left", "prepend_bos": True}):
        assert tokenize(gemma, left, **kwargs) is left
    with pytest.raises(ValueError, match="padding_side: 'right', but questions is a TokenBatch, already tokenized"):
        tokenize(gemma, left, padding_side="right", name="questions")
    with pytest.raises(ValueError, match=r"prepend_bos: False, but prompts is a TokenBatch, already tokenized .*\[0, 1\]"):
        tokenize(gemma, left, prepend_bos=False)
    plain = tokenize(gemma, SENTENCES, prepend_bos=False)
    assert tokenize(gemma, plain, prepend_bos=False) is plain
    with pytest.raises(ValueError, match=r"prepend_bos: True, but prompts is a TokenBatch, already tokenized.*\[0, 1\]"):
        tokenize(gemma, plain, prepend_bos=True)
    # a text that starts with BOS itself tokenizes the same under either setting: both restate the batch
    text = gemma.tokenizer.bos_token + "Hello there"
    assert token_ids(gemma, text, prepend_bos=True) == token_ids(gemma, text, prepend_bos=False)
    own = tokenize(gemma, [text], prepend_bos=False)
    assert tokenize(gemma, own, prepend_bos=True) is own and tokenize(gemma, own, prepend_bos=False) is own
    # tokens given without text: a BOS first was put there, not read from a text
    given = batch_from_tokens(gemma, gemma.to_tokens("Hello there"))
    assert tokenize(gemma, given, prepend_bos=True) is given
    with pytest.raises(ValueError, match="prepend_bos: False, but prompts is a TokenBatch"):
        tokenize(gemma, given, prepend_bos=False)
    with pytest.raises(ValueError, match="padding_side: expected 'left', 'right' or None"):
        tokenize(gemma, left, padding_side="middle")
    with pytest.raises(TypeError, match="prepend_bos"):
        tokenize(gemma, left, prepend_bos="yes")


def test_attention_metrics_keeps_a_left_padded_batch_and_refuses_another_side(smollm2):
    from interp.activations import attention_metrics

    left = tokenize(smollm2, SENTENCES, padding_side="left")
    metrics = attention_metrics(smollm2, left, layers=[0], progress=False)
    right = attention_metrics(smollm2, SENTENCES, layers=[0], progress=False)  # texts: right-padded
    torch.testing.assert_close(metrics.entropy, right.entropy, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="padding_side: 'right', but prompts is a TokenBatch"):
        attention_metrics(smollm2, left, layers=[0], padding_side="right", progress=False)
