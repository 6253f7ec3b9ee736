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
