"""Token positions in a padded batch of prompts: by target token string, last real token, or index.

A :class:`~interp.prompts.TokenBatch` (made by :func:`interp.prompts.tokenize`) is a list of prompts
tokenized once and padded (left or right) with a mask of real tokens and the character span of every
token; a :class:`Positions` is a set of ``(prompt, position)`` pairs into that batch, one row per
selected token.

>>> batch = tokenize(model, ["I saw her at the market.", "She gave her the book."])
>>> her = target_positions(batch, " her")                # first " her" of each prompt
>>> before = target_positions(batch, " her", offset=-1)  # the token before it
>>> last = last_positions(batch)                         # last non-padding token
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import pandas as pd
import torch
from jaxtyping import Bool, Int

from interp.prompts import TokenBatch, batch_from_tokens, tokenize
from interp.results import Result, ResultLayout

__all__ = [
    "OnMissing", "Occurrence", "Positions", "TokenBatch", "batch_from_tokens", "index_positions",
    "last_positions", "occurrence_spans", "span_mask", "target_positions", "tokenize",
]

Occurrence = Literal["first", "last", "every"]
OnMissing = Literal["raise", "skip"]


@dataclass(frozen=True, eq=False)
class Positions(Result):
    """Selected tokens of a :class:`TokenBatch`: row ``i`` is token ``position[i]`` of prompt ``prompt[i]``."""

    result_layout: ClassVar[ResultLayout] = ResultLayout(headline="to_frame", tensors=("prompt", "position"))

    prompt: Int[torch.Tensor, " n"]
    position: Int[torch.Tensor, " n"]

    def __len__(self) -> int:
        return int(self.prompt.numel())

    def to_frame(self, batch: TokenBatch | None = None) -> pd.DataFrame:
        """One row per selected token: ``prompt``, ``position`` (and ``token`` given the batch)."""
        frame = pd.DataFrame({"prompt": self.prompt.tolist(), "position": self.position.tolist()})
        if batch is not None:
            ids = batch.tokens[self.prompt, self.position].tolist()
            frame["token"] = [batch.tokenizer.decode([t]) for t in ids]
        return frame


def target_positions(
    batch: TokenBatch,
    target: str,
    *,
    occurrence: Occurrence = "first",
    offset: int = 0,
    align: Literal["first", "last"] = "last",
    on_missing: OnMissing = "raise",
) -> Positions:
    """Positions where the token ids of ``target`` occur in each prompt, shifted by ``offset``.

    ``target`` is tokenized without special tokens (``" her"`` and ``"her"`` differ); a multi-token
    target is anchored on its ``align`` token. ``occurrence`` keeps the first, the last or every
    match. A prompt with no match (or whose shifted position leaves the prompt) raises a ValueError
    listing the prompt indices, or with ``on_missing="skip"`` is dropped with a warning.
    """
    if not isinstance(target, str):
        raise TypeError(f"target: expected a string, got {type(target).__name__}")
    if occurrence not in ("first", "last", "every"):
        raise ValueError(f"occurrence: expected 'first', 'last' or 'every', got {occurrence!r}")
    if align not in ("first", "last"):
        raise ValueError(f"align: expected 'first' or 'last', got {align!r}")
    if on_missing not in ("raise", "skip"):
        raise ValueError(f"on_missing: expected 'raise' or 'skip', got {on_missing!r}")
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"offset: expected an int, got {type(offset).__name__}")
    ids = batch.tokenizer.encode(target, add_special_tokens=False)
    if target == "" or len(ids) == 0:
        raise ValueError("target: is empty (expected a string that tokenizes to at least one token)")
    needle = torch.tensor(ids, dtype=torch.long, device=batch.tokens.device)
    width = batch.tokens.shape[1]
    if len(ids) > width:
        hits = torch.zeros((len(batch), 0), dtype=torch.bool, device=batch.tokens.device)
    else:
        windows = batch.tokens.unfold(1, len(ids), 1)  # [batch, start, len(ids)]
        real = batch.mask.unfold(1, len(ids), 1).all(dim=-1)
        hits = (windows == needle).all(dim=-1) & real  # [batch, start]
    anchor = 0 if align == "first" else len(ids) - 1

    prompts, positions, missing, outside = [], [], [], []
    for row in range(len(batch)):
        starts = torch.nonzero(hits[row]).flatten()
        if starts.numel() == 0:
            missing.append(row)
            continue
        if occurrence == "first":
            starts = starts[:1]
        elif occurrence == "last":
            starts = starts[-1:]
        shifted = starts + anchor + offset
        inside = (shifted >= batch.first[row]) & (shifted <= batch.last[row])
        if not bool(inside.all()):
            outside.append(row)
            continue
        prompts += [row] * shifted.numel()
        positions += shifted.tolist()
    problems = []
    if missing:
        problems.append(f"target {target!r} (token ids {ids}) does not occur in prompt(s) {missing[:20]}"
                        + (f" and {len(missing) - 20} more" if len(missing) > 20 else ""))
    if outside:
        problems.append(f"offset {offset} from target {target!r} falls outside prompt(s) {outside[:20]}")
    if problems:
        message = "; ".join(problems)
        if on_missing == "raise":
            raise ValueError(f"target: {message} (pass on_missing='skip' to drop them)")
        warnings.warn(f"skipping prompts: {message}", stacklevel=2)
    if not prompts:
        raise ValueError(f"target: {target!r} selects no position in any prompt")
    return Positions(torch.tensor(prompts, dtype=torch.long), torch.tensor(positions, dtype=torch.long))


def last_positions(batch: TokenBatch) -> Positions:
    """The last non-padding token of each prompt (left or right padding)."""
    return Positions(torch.arange(len(batch)), batch.last.cpu().long())


def index_positions(batch: TokenBatch, indices: int | Sequence[int] | Sequence[Sequence[int]]) -> Positions:
    """Explicit token indices, counted over each prompt's real tokens (negative: from its last token).

    ``indices`` is one index for every prompt, a list of indices for every prompt, or one list per
    prompt. An index outside a prompt raises a ValueError naming the prompt.
    """
    n = len(batch)
    if isinstance(indices, bool):
        raise TypeError("indices: expected ints or lists of ints, got bool")
    if isinstance(indices, int):
        per_prompt: list[list[int]] = [[indices]] * n
    else:
        items = list(indices)
        if len(items) == 0:
            raise ValueError("indices: is empty (expected at least one index)")
        if all(isinstance(i, int) and not isinstance(i, bool) for i in items):
            per_prompt = [items] * n
        elif all(isinstance(i, Sequence) and not isinstance(i, str) for i in items):
            if len(items) != n:
                raise ValueError(f"indices: got {len(items)} lists of indices for {n} prompts")
            per_prompt = [list(i) for i in items]
        else:
            raise TypeError("indices: expected an int, a list of ints, or one list of ints per prompt")
    lengths, first = batch.lengths.tolist(), batch.first.tolist()
    prompts, positions, bad = [], [], []
    for row, row_indices in enumerate(per_prompt):
        for index in row_indices:
            if isinstance(index, bool) or not isinstance(index, int):
                raise TypeError(f"indices: expected ints, got {index!r} for prompt {row}")
            if not -lengths[row] <= index < lengths[row]:
                bad.append((row, index))
                continue
            prompts.append(row)
            positions.append(first[row] + index % lengths[row])
    if bad:
        listed = ", ".join(f"index {i} in prompt {r} ({lengths[r]} tokens)" for r, i in bad[:10])
        raise ValueError(f"indices: out of range: {listed}")
    return Positions(torch.tensor(prompts, dtype=torch.long), torch.tensor(positions, dtype=torch.long))


def span_mask(
    batch: TokenBatch,
    spans: Sequence[Sequence[Sequence[tuple[int, int]]]],
) -> Bool[torch.Tensor, "batch group pos"]:
    """``mask[b, g, p]``: token ``p`` of prompt ``b`` overlaps one of the character spans of group ``g``.

    ``spans[b][g]`` lists ``(start, end)`` character spans of ``prompts[b]`` that make up group ``g``
    (a keyword's occurrences, one few-shot answer...). Prompts with fewer groups are padded with
    empty groups. Finds the tokens of a piece of text whatever the tokenization.
    """
    if len(spans) != len(batch):
        raise ValueError(f"spans: got span lists for {len(spans)} prompts, the batch has {len(batch)}")
    groups = max((len(s) for s in spans), default=0)
    out = torch.zeros((len(batch), groups, batch.tokens.shape[1]), dtype=torch.bool)
    first = batch.first.tolist()
    for row, row_groups in enumerate(spans):
        token_spans = torch.tensor(batch.spans[row], dtype=torch.long).reshape(-1, 2)
        for group, group_spans in enumerate(row_groups):
            for start, end in group_spans:
                overlap = (token_spans[:, 0] < end) & (token_spans[:, 1] > start) & (end > start)
                out[row, group, first[row] : first[row] + len(token_spans)] |= overlap
    return out.to(batch.tokens.device)


def occurrence_spans(text: str, needle: str, *, case_sensitive: bool = False) -> list[tuple[int, int]]:
    """Character spans of every (non-overlapping) occurrence of ``needle`` in ``text``."""
    haystack, pattern = (text, needle) if case_sensitive else (text.lower(), needle.lower())
    spans, start = [], haystack.find(pattern)
    while pattern and start >= 0:
        spans.append((start, start + len(pattern)))
        start = haystack.find(pattern, start + len(pattern))
    return spans
