"""Position selection on real tokenizers: BOS handling, padding sides, target tokens, bad input."""

from __future__ import annotations

import pytest
import torch

from interp.activations import (
    Positions,
    index_positions,
    last_positions,
    target_positions,
    tokenize,
)
from interp.activations.positions import occurrence_spans, span_mask

SENTENCES = ["I saw her at the market.", "She gave her the book.", "The author based the character on her."]


@pytest.mark.parametrize("model_name", ["smollm2", "gemma"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_tokenize_matches_to_tokens_and_pads(model_name, side, request):
    model = request.getfixturevalue(model_name)
    batch = tokenize(model, SENTENCES, padding_side=side)
    for row, prompt in enumerate(SENTENCES):
        expected = model.to_tokens(prompt)[0]  # TransformerLens' own tokenization (BOS per cfg)
        real = batch.tokens[row][batch.mask[row]]
        assert torch.equal(real, expected), f"row {row}: {real.tolist()} != {expected.tolist()}"
        n = len(expected)
        if side == "right":
            assert batch.mask[row, :n].all() and not batch.mask[row, n:].any()
        else:
            width = batch.tokens.shape[1]
            assert batch.mask[row, width - n:].all() and not batch.mask[row, : width - n].any()
    assert (batch.tokens[0, batch.first[0]] == model.tokenizer.bos_token_id) == bool(model.cfg.default_prepend_bos)


@pytest.mark.parametrize("side", ["left", "right"])
def test_target_positions_point_at_the_target_token(smollm2, side):
    batch = tokenize(smollm2, SENTENCES, padding_side=side)
    her = smollm2.tokenizer.encode(" her", add_special_tokens=False)
    assert len(her) == 1
    pos = target_positions(batch, " her")
    assert pos.prompt.tolist() == [0, 1, 2]
    assert (batch.tokens[pos.prompt, pos.position] == her[0]).all()
    before = target_positions(batch, " her", offset=-1)
    assert torch.equal(before.position, pos.position - 1)
    # the seed's computation: list.index on the unpadded ids
    for row, prompt in enumerate(SENTENCES):
        ids = smollm2.to_tokens(prompt)[0].tolist()
        assert int(pos.position[row] - batch.first[row]) == ids.index(her[0])


def test_multi_token_target_every_and_last_occurrence(smollm2):
    prompt = "the red fox and the red hen and the red cow"
    target = " the red"
    ids = smollm2.tokenizer.encode(target, add_special_tokens=False)
    assert len(ids) == 2, "the test needs a two-token target"
    batch = tokenize(smollm2, [prompt])
    tokens = batch.tokens[0].tolist()
    starts = [i for i in range(len(tokens) - 1) if tokens[i : i + 2] == ids]
    every = target_positions(batch, target, occurrence="every")
    assert every.position.tolist() == [s + 1 for s in starts]  # anchored on the last token by default
    first_aligned = target_positions(batch, target, occurrence="every", align="first")
    assert first_aligned.position.tolist() == starts
    assert target_positions(batch, target, occurrence="last").position.tolist() == [starts[-1] + 1]
    assert target_positions(batch, target).position.tolist() == [starts[0] + 1]


def test_missing_target_raises_with_prompt_indices_or_skips_with_warning(smollm2):
    prompts = ["I saw her.", "No pronoun here.", "Call her now.", "Nothing."]
    batch = tokenize(smollm2, prompts)
    with pytest.raises(ValueError, match=r"does not occur in prompt\(s\) \[1, 3\]"):
        target_positions(batch, " her")
    with pytest.warns(UserWarning, match=r"\[1, 3\]"):
        pos = target_positions(batch, " her", on_missing="skip")
    assert pos.prompt.tolist() == [0, 2]


def test_offset_leaving_the_prompt_is_reported(smollm2):
    batch = tokenize(smollm2, [" her book", "I saw her"])
    assert target_positions(batch, " her").position.tolist() == [0, 2]
    with pytest.raises(ValueError, match=r"outside prompt\(s\) \[0\]"):
        target_positions(batch, " her", offset=-1)


def test_last_and_index_positions_respect_padding(smollm2):
    for side in ("left", "right"):
        batch = tokenize(smollm2, SENTENCES, padding_side=side)
        last = last_positions(batch)
        lengths = [len(smollm2.to_tokens(p)[0]) for p in SENTENCES]
        for row, n in enumerate(lengths):
            assert batch.mask[row, last.position[row]]
            assert int(last.position[row] - batch.first[row]) == n - 1
        assert torch.equal(index_positions(batch, -1).position, last.position)
        assert torch.equal(index_positions(batch, 0).position, batch.first)
        per_prompt = index_positions(batch, [[0, 1], [2], [-2]])
        assert per_prompt.prompt.tolist() == [0, 0, 1, 2]
        expected = [int(batch.first[0]), int(batch.first[0]) + 1, int(batch.first[1]) + 2, int(batch.last[2]) - 1]
        assert per_prompt.position.tolist() == expected


def test_span_mask_marks_tokens_overlapping_text(smollm2):
    prompt = "What is 15 plus 27?"
    batch = tokenize(smollm2, [prompt])
    spans = occurrence_spans(prompt, "15")
    assert spans == [(prompt.index("15"), prompt.index("15") + 2)]
    mask = span_mask(batch, [[spans]])
    picked = "".join(batch.str_tokens(0)[i] for i in torch.nonzero(mask[0, 0]).flatten().tolist())
    assert picked.strip() == "15"
    assert occurrence_spans("Plus plus PLUS", "plus") == [(0, 4), (5, 9), (10, 14)]
    assert occurrence_spans("Plus plus", "plus", case_sensitive=True) == [(5, 9)]


def test_positions_frame_lists_tokens(smollm2):
    batch = tokenize(smollm2, SENTENCES)
    frame = target_positions(batch, " her").to_frame(batch)
    assert list(frame.columns) == ["prompt", "position", "token"]
    assert (frame["token"] == " her").all()
    assert isinstance(last_positions(batch), Positions)


def test_bad_prompts_raise_clear_errors(smollm2):
    with pytest.raises(ValueError, match="prompts: is empty"):
        tokenize(smollm2, [])
    with pytest.raises(ValueError, match=r"prompts: prompt\(s\) \[1\] are empty strings"):
        tokenize(smollm2, ["fine", ""])
    with pytest.raises(TypeError, match="prompts"):
        tokenize(smollm2, ["fine", 3])
    too_long = "hello " * (smollm2.cfg.n_ctx + 10)
    with pytest.raises(ValueError, match=rf"longer than the model's context of {smollm2.cfg.n_ctx}"):
        tokenize(smollm2, ["fine", too_long])
    with pytest.raises(ValueError, match="padding_side"):
        tokenize(smollm2, ["fine"], padding_side="middle")


def test_bad_position_arguments_raise(smollm2):
    batch = tokenize(smollm2, SENTENCES)
    with pytest.raises(ValueError, match="target: is empty"):
        target_positions(batch, "")
    with pytest.raises(ValueError, match="occurrence"):
        target_positions(batch, " her", occurrence="second")
    with pytest.raises(ValueError, match="on_missing"):
        target_positions(batch, " her", on_missing="ignore")
    with pytest.raises(ValueError, match=r"indices: out of range: index 50 in prompt 0"):
        index_positions(batch, 50)
    with pytest.raises(ValueError, match="indices: got 2 lists"):
        index_positions(batch, [[0], [1]])
