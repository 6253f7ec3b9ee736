"""Targeted caching keeps exactly what run_with_cache would hold at the selected positions."""

from __future__ import annotations

import pytest
import torch

from interp.activations import (
    cache_positions,
    index_positions,
    last_positions,
    target_positions,
    tokenize,
)
from interp.activations.caching import check_hook_names

SENTENCES = ["I saw her at the market.", "They asked her for advice about the garden.", "We invited her."]
NAMES = ["blocks.2.attn.hook_q", "blocks.2.attn.hook_k", "blocks.3.hook_resid_post", "blocks.1.attn.hook_pattern"]


@pytest.mark.parametrize("side", ["left", "right"])
def test_cached_rows_equal_run_with_cache_on_each_unpadded_prompt(smollm2, side):
    batch = tokenize(smollm2, SENTENCES, padding_side=side)
    positions = target_positions(batch, " her", offset=-1)
    cache = cache_positions(smollm2, batch, positions, NAMES, batch_size=2)
    for i, (row, col) in enumerate(zip(positions.prompt.tolist(), positions.position.tolist(), strict=True)):
        _, ref = smollm2.run_with_cache(SENTENCES[row], names_filter=NAMES, stop_at_layer=4)
        pos = col - int(batch.first[row])  # position in the unpadded prompt
        for name in NAMES[:3]:
            torch.testing.assert_close(cache[name][i], ref[name][0, pos], atol=2e-5, rtol=1e-4,
                                       msg=lambda m, name=name, row=row: f"{name}, prompt {row}: {m}")
        pattern = cache["blocks.1.attn.hook_pattern"][i]  # [head, key] over the batch's columns
        first = int(batch.first[row])
        n = int(batch.lengths[row])
        torch.testing.assert_close(pattern[:, first : first + n], ref["blocks.1.attn.hook_pattern"][0, :, pos],
                                   atol=2e-6, rtol=1e-4)
        assert pattern[:, :first].abs().sum() == 0 and pattern[:, first + n:].abs().sum() == 0


def test_gqa_keys_keep_their_kv_heads(smollm2):
    batch = tokenize(smollm2, SENTENCES)
    cache = cache_positions(smollm2, batch, last_positions(batch), ["blocks.0.attn.hook_q", "blocks.0.attn.hook_v"])
    assert cache["blocks.0.attn.hook_q"].shape == (3, smollm2.cfg.n_heads, smollm2.cfg.d_head)
    assert cache["blocks.0.attn.hook_v"].shape == (3, smollm2.cfg.n_key_value_heads, smollm2.cfg.d_head)


def test_filter_function_and_final_hooks(smollm2):
    batch = tokenize(smollm2, SENTENCES[:2])
    positions = index_positions(batch, [0, -1])
    cache = cache_positions(smollm2, batch, positions, lambda name: name in ("hook_embed", "ln_final.hook_normalized"))
    assert sorted(cache.keys()) == ["hook_embed", "ln_final.hook_normalized"]
    _, ref = smollm2.run_with_cache(SENTENCES[1], names_filter=["ln_final.hook_normalized"])
    torch.testing.assert_close(cache["ln_final.hook_normalized"][3], ref["ln_final.hook_normalized"][0, -1],
                               atol=2e-5, rtol=1e-4)
    embed = smollm2.W_E[batch.tokens[positions.prompt, positions.position]]
    torch.testing.assert_close(cache["hook_embed"], embed)


def test_invalid_hook_names_list_close_matches(smollm2):
    with pytest.raises(ValueError, match=r"'blocks.2.attn.hook_patern' \(did you mean 'blocks.2.attn.hook_pattern'"):
        check_hook_names(smollm2, ["blocks.2.attn.hook_patern"])
    with pytest.raises(ValueError, match="names: is empty"):
        check_hook_names(smollm2, [])
    with pytest.raises(ValueError, match="selects no hook"):
        check_hook_names(smollm2, lambda name: False)
    batch = tokenize(smollm2, SENTENCES)
    with pytest.raises(ValueError, match="blocks.40.hook_resid_post"):
        cache_positions(smollm2, batch, last_positions(batch), "blocks.40.hook_resid_post")
    with pytest.raises(ValueError, match="batch_size"):
        cache_positions(smollm2, batch, last_positions(batch), "hook_embed", batch_size=0)
    with pytest.raises(TypeError, match="batch: expected a TokenBatch"):
        cache_positions(smollm2, SENTENCES, last_positions(batch), "hook_embed")
