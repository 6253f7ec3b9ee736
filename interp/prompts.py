"""The prompt layer: chat/plain formatting, tokenization into a padded batch, and batched hooked forwards.

Every analysis that feeds text to a model goes through this module, so formatting, BOS handling,
padding and the context-length check behave the same everywhere:

* :func:`format_prompt` turns ``(system, user)`` into the text the model sees (chat template or the
  plain ``System:/User:/Assistant:`` fallback);
* :func:`tokenize` turns texts into a :class:`TokenBatch` (padded left or right, mask of real
  tokens, character spans), with an explicit ``prepend_bos``;
* :func:`forward` runs one hooked forward pass on padded tokens; :func:`run_batched` runs a
  :class:`TokenBatch` through it in chunks of prompts.

>>> text = format_prompt(model, "You are a pirate.", "What is the capital of France?")
>>> batch = tokenize(model, [text], padding_side="left")
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pandas as pd
import torch
from jaxtyping import Bool, Int
from transformer_lens import HookedTransformer

from interp.progress import progress_bar
from interp.results import Result, ResultLayout

__all__ = [
    "Chunk",
    "HookFn",
    "PaddingSide",
    "PromptFormat",
    "SavedVocabulary",
    "TokenBatch",
    "batch_from_tokens",
    "format_prompt",
    "format_prompts",
    "forward",
    "pad_id",
    "pad_rows",
    "run_batched",
    "stop_layer",
    "token_ids",
    "tokenize",
    "uses_chat",
]

PromptFormat = Literal["auto", "chat", "plain"]
PaddingSide = Literal["left", "right"]
HookFn = Callable[[torch.Tensor, object], None]
_LAYER = re.compile(r"^blocks\.(\d+)\.")


# ---------------------------------------------------------------------- formatting
def _tokenizer_of(model_or_tokenizer: object) -> Any:
    if isinstance(model_or_tokenizer, HookedTransformer):
        tokenizer = model_or_tokenizer.tokenizer
        if tokenizer is None:
            raise ValueError("model: has no tokenizer, so prompts cannot be tokenized")
        return tokenizer
    if model_or_tokenizer is None:
        raise ValueError("model: has no tokenizer, so prompts cannot be tokenized")
    return model_or_tokenizer


def uses_chat(model_or_tokenizer: object, prompt_format: PromptFormat = "auto") -> bool:
    """Whether :func:`format_prompt` uses the chat template: ``"auto"`` = iff the tokenizer has one.

    Args:
        model_or_tokenizer: A HookedTransformer or its tokenizer.
        prompt_format: ``"auto"``, ``"chat"`` (raises ValueError without a chat template) or ``"plain"``.

    Returns:
        True when prompts are written with the chat template, False for the plain form.
    """
    if prompt_format not in ("auto", "chat", "plain"):
        raise ValueError(f"prompt_format: expected 'auto', 'chat' or 'plain', got {prompt_format!r}")
    has_template = bool(getattr(_tokenizer_of(model_or_tokenizer), "chat_template", None))
    if prompt_format == "chat" and not has_template:
        raise ValueError("prompt_format: 'chat' needs a tokenizer with a chat template; this one has none (use 'plain')")
    return has_template if prompt_format == "auto" else prompt_format == "chat"


def format_prompt(
    model_or_tokenizer: object, system: str | None, user: str, *, prompt_format: PromptFormat = "auto"
) -> str:
    """The text fed to a model for the user turn ``user`` under the system prompt ``system``.

    ``"chat"``: ``apply_chat_template([system, user], add_generation_prompt=True)``. A template that
    rejects the system role gets the system prompt prepended to the user turn (``"{system}\\n\\n{user}"``);
    ``system=None`` sends no system turn, so a template may insert its own default, as SmolLM2's
    does. ``"plain"``: ``"System: {system}\\nUser: {user}\\nAssistant:"`` (no ``System:`` line when
    ``system`` is None), for base models without a template such as Gemma 3 270M. ``"auto"``
    (default): ``"chat"`` when the tokenizer has a chat template, else ``"plain"``.

    Args:
        model_or_tokenizer: A HookedTransformer or its tokenizer.
        system: The system prompt, or None for no system turn.
        user: The user turn.
        prompt_format: ``"auto"``, ``"chat"`` or ``"plain"`` (above).

    Returns:
        The formatted text, ending where the assistant's answer begins (not yet tokenized).
    """
    use_chat = uses_chat(model_or_tokenizer, prompt_format)
    if not isinstance(user, str):
        raise TypeError(f"user: expected a string, got {type(user).__name__}")
    if system is not None and not isinstance(system, str):
        raise TypeError(f"system: expected a string or None, got {type(system).__name__}")
    if not use_chat:
        head = "" if system is None else f"System: {system}\n"
        return f"{head}User: {user}\nAssistant:"
    tokenizer = _tokenizer_of(model_or_tokenizer)
    messages = [{"role": "user", "content": user}]
    if system is not None:
        try:
            return tokenizer.apply_chat_template(
                [{"role": "system", "content": system}, *messages], tokenize=False, add_generation_prompt=True
            )
        except Exception:  # templates that refuse a system turn (e.g. Gemma 2) raise jinja errors
            messages = [{"role": "user", "content": f"{system}\n\n{user}"}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def format_prompts(
    model_or_tokenizer: object, users: Sequence[str], system: str | None = None, *,
    prompt_format: PromptFormat = "auto",
) -> list[str]:
    """:func:`format_prompt` of every user turn in ``users`` under one system prompt.

    Args:
        model_or_tokenizer: A HookedTransformer or its tokenizer.
        users: The user turns (a list of strings, not one string).
        system: The system prompt shared by every turn, or None for no system turn.
        prompt_format: ``"auto"``, ``"chat"`` or ``"plain"`` (see :func:`format_prompt`).

    Returns:
        One formatted text per user turn, in order.
    """
    if isinstance(users, str) or not isinstance(users, Sequence):
        raise TypeError(f"users: expected a sequence of strings, got {type(users).__name__}")
    return [format_prompt(model_or_tokenizer, system, user, prompt_format=prompt_format) for user in users]


# ---------------------------------------------------------------------- tokenization
class SavedVocabulary:
    """What a saved :class:`TokenBatch` keeps of its tokenizer: the string of each token id it holds.

    ``decode(ids)`` joins the strings of ``ids``; for one id it is exactly ``tokenizer.decode([id])``
    of the tokenizer that made the batch (all :meth:`TokenBatch.str_tokens` needs). It cannot encode
    new text: tokenize that with the model.
    """

    def __init__(self, pieces: dict[int, str]) -> None:
        self.pieces = {int(i): str(piece) for i, piece in pieces.items()}

    @classmethod
    def of(cls, tokenizer: Any, ids: Sequence[int]) -> SavedVocabulary:
        """The strings of ``ids`` as ``tokenizer`` decodes each one alone."""
        if isinstance(tokenizer, SavedVocabulary):
            return cls({i: tokenizer.pieces[i] for i in ids})
        return cls({i: tokenizer.decode([i]) for i in ids})

    def decode(self, ids: Sequence[int]) -> str:
        missing = [i for i in ids if int(i) not in self.pieces]
        if missing:
            raise KeyError(f"ids: token ids {missing[:10]} are not in this saved batch's vocabulary")
        return "".join(self.pieces[int(i)] for i in ids)

    def encode(self, *args: Any, **kwargs: Any) -> list[int]:
        raise TypeError("this TokenBatch was loaded from disk and keeps only the strings of its own tokens; "
                        "tokenize new text with the model (interp.prompts.tokenize)")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SavedVocabulary) and other.pieces == self.pieces

    def __repr__(self) -> str:
        return f"SavedVocabulary({len(self.pieces)} token ids)"


@dataclass(frozen=True, eq=False)
class TokenBatch(Result):
    """Prompts tokenized as the model tokenizes them and padded into one ``[batch, pos]`` tensor.

    ``mask[b, p]`` is True on real tokens; ``spans[b][i]`` is the character span ``(start, end)`` in
    ``prompts[b]`` of the ``i``-th real token (``(0, 0)`` for a prepended BOS).

    Saving (:meth:`save`) keeps the token ids, mask, prompts and spans; of the tokenizer it keeps the
    string of every token id in the batch (a :class:`SavedVocabulary`), so a loaded batch shows its
    tokens exactly but cannot tokenize new text.
    """

    result_layout: ClassVar[ResultLayout] = ResultLayout(
        headline="to_frame", tensors=("tokens", "mask"), metadata=("prompts", "spans", "padding_side", "tokenizer"))

    prompts: tuple[str, ...]
    tokens: Int[torch.Tensor, "batch pos"]
    mask: Bool[torch.Tensor, "batch pos"]
    spans: tuple[tuple[tuple[int, int], ...], ...]
    padding_side: PaddingSide
    tokenizer: Any = field(repr=False)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def lengths(self) -> Int[torch.Tensor, " batch"]:
        """Number of real tokens in each prompt."""
        return self.mask.sum(dim=1)

    @property
    def first(self) -> Int[torch.Tensor, " batch"]:
        """Index of each prompt's first real token (0 unless left-padded)."""
        return self.mask.int().argmax(dim=1)

    @property
    def last(self) -> Int[torch.Tensor, " batch"]:
        """Index of each prompt's last real token."""
        return self.first + self.lengths - 1

    @property
    def has_padding(self) -> bool:
        return not bool(self.mask.all())

    def str_tokens(self, prompt: int) -> list[str]:
        """The real tokens of one prompt as strings."""
        ids = self.tokens[prompt][self.mask[prompt]].tolist()
        return [self.tokenizer.decode([t]) for t in ids]

    def to_frame(self) -> pd.DataFrame:
        """One row per real token: ``prompt``, ``position`` (batch column), ``token_id``, ``token``."""
        prompt, position = self.mask.nonzero(as_tuple=True)
        ids = self.tokens[prompt, position].tolist()
        return pd.DataFrame({"prompt": prompt.tolist(), "position": position.tolist(), "token_id": ids,
                             "token": [self.tokenizer.decode([t]) for t in ids]})

    def _saved_value(self, name: str, value: Any) -> Any:
        if name != "tokenizer":
            return value
        ids = sorted(set(self.tokens.flatten().tolist()))
        return {str(i): piece for i, piece in SavedVocabulary.of(value, ids).pieces.items()}

    @classmethod
    def _restored_values(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "tokenizer": SavedVocabulary({int(i): p for i, p in values["tokenizer"].items()})}

    def select(self, rows: Sequence[int]) -> TokenBatch:
        """The sub-batch of the given prompt rows (padding kept as it is)."""
        index = torch.as_tensor(list(rows), dtype=torch.long)
        return TokenBatch(
            tuple(self.prompts[i] for i in index.tolist()),
            self.tokens[index],
            self.mask[index],
            tuple(self.spans[i] for i in index.tolist()),
            self.padding_side,
            self.tokenizer,
        )


def pad_id(tokenizer: Any) -> int:
    """The id written into padding: the tokenizer's pad token, else its EOS, else 0.

    Padding is always masked out, so the value never reaches a result; it is fixed so runs repeat exactly.

    Args:
        tokenizer: A Hugging Face tokenizer (or any object with ``pad_token_id`` / ``eos_token_id``).

    Returns:
        The token id used for padding.
    """
    for candidate in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if candidate is not None:
            return int(candidate)
    return 0


def pad_rows(
    rows: Sequence[Sequence[int]], pad: int, *, side: PaddingSide = "right"
) -> tuple[Int[torch.Tensor, "batch pos"], Bool[torch.Tensor, "batch pos"]]:
    """Token rows padded with ``pad`` to one width on ``side``, and the mask of real tokens.

    Empty rows are allowed (all padding); the width is that of the longest row (0 if every row is empty).

    Args:
        rows: Token ids, one sequence per row.
        pad: The id written into padding (see :func:`pad_id`).
        side: ``"right"`` (padding after the tokens) or ``"left"`` (before).

    Returns:
        ``(tokens, mask)``: the ``[batch, pos]`` long tensor of ids and the bool tensor, True on real tokens.
    """
    if side not in ("left", "right"):
        raise ValueError(f"padding_side: expected 'left' or 'right', got {side!r}")
    width = max((len(r) for r in rows), default=0)
    tokens = torch.full((len(rows), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        if not row:
            continue
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        tokens[i, span] = torch.tensor(list(row), dtype=torch.long)
        mask[i, span] = True
    return tokens, mask


def _encode(model: HookedTransformer, text: str, bos: bool) -> tuple[list[int], list[tuple[int, int]]]:
    tokenizer = model.tokenizer
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    spans = [tuple(s) for s in encoded["offset_mapping"]]
    bos_id = tokenizer.bos_token_id
    if bos and bos_id is not None and (not ids or ids[0] != bos_id):
        ids, spans = [bos_id, *ids], [(0, 0), *spans]
    return ids, spans


def token_ids(
    model: HookedTransformer, text: str, *, prepend_bos: bool | None = None, name: str = "prompts"
) -> list[int]:
    """The token ids of one text as :func:`tokenize` makes them (see there for BOS handling).

    Args:
        model: The model whose tokenizer is used.
        text: One non-empty text.
        prepend_bos: Put BOS first (None: ``model.cfg.default_prepend_bos``).
        name: The caller's argument name, used in error messages.

    Returns:
        The token ids as a list of ints.
    """
    return tokenize(model, [text], prepend_bos=prepend_bos, name=name).tokens[0].tolist()


def tokenize(
    model: HookedTransformer,
    prompts: str | Sequence[str],
    *,
    padding_side: PaddingSide | None = None,
    prepend_bos: bool | None = None,
    name: str = "prompts",
) -> TokenBatch:
    """Tokenize ``prompts`` (no special tokens added by the tokenizer) and pad them into one batch.

    ``prepend_bos``: put the tokenizer's BOS first (None: ``model.cfg.default_prepend_bos``, as
    ``model.to_tokens``). A text that already starts with BOS (chat templates such as Gemma's write
    it) does not get a second one. ``padding_side``: where padding goes (None: right); padding holds
    :func:`pad_id` and is masked. Raises ValueError for an empty list, an empty string, or a prompt
    longer than ``model.cfg.n_ctx``, naming the offending indices and the caller's argument ``name``.

    A :class:`TokenBatch` is already tokenized: it is returned unchanged, and ``padding_side`` /
    ``prepend_bos`` may only restate its own settings (None always does). A different
    ``padding_side``, ``prepend_bos=True`` when a prompt does not start with BOS, or
    ``prepend_bos=False`` when BOS was put before a prompt's text is a ValueError naming the argument.

    Args:
        model: The model whose tokenizer, BOS default, context length and device are used (a
            HookedTransformer, or a streamed model with the same ``cfg`` and ``tokenizer``).
        prompts: One text or a list of texts (already formatted, e.g. by :func:`format_prompts`), or
            a :class:`TokenBatch`.
        padding_side: ``"right"``, ``"left"`` or None (texts: right; a TokenBatch: its own).
        prepend_bos: Put the tokenizer's BOS first (None: the model's default; a TokenBatch: its own).
        name: The caller's argument name, used in error messages.

    Returns:
        A :class:`TokenBatch` on the model's device: padded ``tokens``, ``mask`` of real tokens, character
        ``spans``; ``batch.last`` is each prompt's last real token.
    """
    if padding_side not in (None, "left", "right"):
        raise ValueError(f"padding_side: expected 'left', 'right' or None, got {padding_side!r}")
    if prepend_bos is not None and not isinstance(prepend_bos, bool):
        raise TypeError(f"prepend_bos: expected True, False or None, got {prepend_bos!r}")
    if isinstance(prompts, TokenBatch):
        _check_restated(model, prompts, padding_side, prepend_bos, name)
        return prompts
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Sequence):
        raise TypeError(f"{name}: expected a string or a list of strings, got {type(prompts).__name__}")
    prompts = list(prompts)
    if len(prompts) == 0:
        raise ValueError(f"{name}: is empty (expected at least one prompt)")
    not_str = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if not_str:
        raise TypeError(f"{name}: expected strings, but prompt(s) {not_str[:10]} are not strings")
    empty = [i for i, p in enumerate(prompts) if p == ""]
    if empty:
        raise ValueError(f"{name}: prompt(s) {empty[:10]} are empty strings")
    if not isinstance(model, HookedTransformer) and not (hasattr(model, "cfg") and hasattr(model, "tokenizer")):
        # a streamed model (interp.streaming.StreamedModel) has the cfg and tokenizer used here
        raise TypeError(f"model: expected a transformer_lens.HookedTransformer, got {type(model).__name__}")
    if model.tokenizer is None:
        raise ValueError("model: has no tokenizer (needed to tokenize prompts)")
    bos = model.cfg.default_prepend_bos if prepend_bos is None else prepend_bos

    encoded = [_encode(model, prompt, bos) for prompt in prompts]
    ids_list = [ids for ids, _ in encoded]
    too_long = [(i, len(ids)) for i, ids in enumerate(ids_list) if len(ids) > model.cfg.n_ctx]
    if too_long:
        listed = ", ".join(f"{i} ({n} tokens)" for i, n in too_long[:10])
        raise ValueError(f"{name}: prompt(s) {listed} are longer than the model's context of {model.cfg.n_ctx} tokens")
    no_tokens = [i for i, ids in enumerate(ids_list) if len(ids) == 0]
    if no_tokens:
        raise ValueError(f"{name}: prompt(s) {no_tokens[:10]} tokenize to no tokens")
    side = padding_side or "right"
    tokens, mask = pad_rows(ids_list, pad_id(model.tokenizer), side=side)
    return TokenBatch(tuple(prompts), tokens.to(model.cfg.device), mask.to(model.cfg.device),
                      tuple(tuple(spans) for _, spans in encoded), side, model.tokenizer)


def _check_restated(model: HookedTransformer, batch: TokenBatch, padding_side: PaddingSide | None,
                    prepend_bos: bool | None, name: str) -> None:
    """The arguments :func:`tokenize` was given with a TokenBatch restate its settings, or a ValueError.

    The batch put BOS first in a prompt when the prompt's first real token is BOS and has no
    characters of the text behind it (span ``(0, 0)``, or no spans: tokens given without text).
    """
    if padding_side is not None and padding_side != batch.padding_side:
        raise ValueError(
            f"padding_side: {padding_side!r}, but {name} is a TokenBatch, already tokenized and padded on the "
            f"{batch.padding_side!r}; pass padding_side=None (or {batch.padding_side!r}), or pass the texts"
        )
    bos_id = getattr(getattr(model, "tokenizer", None), "bos_token_id", None)
    if prepend_bos is None or bos_id is None:  # no BOS token: prepend_bos changes nothing
        return
    first = batch.tokens[torch.arange(len(batch), device=batch.tokens.device), batch.first]
    starts = (first == bos_id).tolist()
    if prepend_bos:
        missing = [i for i, s in enumerate(starts) if not s]
        if missing:
            raise ValueError(
                f"prepend_bos: True, but {name} is a TokenBatch, already tokenized, and its prompt(s) "
                f"{missing[:10]} do not start with BOS; pass prepend_bos=None, or pass the texts"
            )
    else:
        added = [i for i, s in enumerate(starts) if s and (not batch.spans[i] or tuple(batch.spans[i][0]) == (0, 0))]
        if added:
            raise ValueError(
                f"prepend_bos: False, but {name} is a TokenBatch, already tokenized with BOS put first in "
                f"prompt(s) {added[:10]}; pass prepend_bos=None, or pass the texts"
            )


def batch_from_tokens(model: HookedTransformer, tokens: Int[torch.Tensor, "batch pos"]) -> TokenBatch:
    """A :class:`TokenBatch` of already tokenized, unpadded sequences (no text, so no character spans).

    Args:
        model: The model the tokens are for (its context length, device and tokenizer).
        tokens: Integer token ids, ``[pos]`` or ``[batch, pos]``, every token real.

    Returns:
        A :class:`TokenBatch` with an all-True mask and empty prompt texts.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.ndim not in (1, 2):
        raise TypeError("tokens: expected an integer tensor of shape [pos] or [batch, pos]")
    tokens = tokens[None] if tokens.ndim == 1 else tokens
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise ValueError(f"tokens: is empty (shape {tuple(tokens.shape)})")
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"tokens: {tokens.shape[1]} tokens are longer than the model's context of {model.cfg.n_ctx}")
    n = tokens.shape[0]
    return TokenBatch(tuple("" for _ in range(n)), tokens.to(model.cfg.device),
                      torch.ones(tokens.shape, dtype=torch.bool, device=model.cfg.device),
                      tuple(() for _ in range(n)), "right", model.tokenizer)


# ---------------------------------------------------------------------- forward passes
def forward(
    model: HookedTransformer,
    tokens: Int[torch.Tensor, "batch pos"],
    mask: Bool[torch.Tensor, "batch pos"] | None,
    hooks: list[tuple[str, HookFn]],
    *,
    stop_at_layer: int | None = None,
    past_kv_cache: Any = None,
) -> None:
    """One hooked forward pass without gradients or logits: ``tokens`` with attention ``mask``
    (None: every token is real), running blocks ``0..stop_at_layer-1`` (None: all), on top of
    ``past_kv_cache`` when given. Results come out through the ``hooks``.

    Args:
        model: The model to run.
        tokens: ``[batch, pos]`` token ids.
        mask: ``[batch, pos]``, True on real tokens, or None when every token is real.
        hooks: ``(hook name, hook function)`` pairs, as for ``HookedTransformer.run_with_hooks``.
        stop_at_layer: Run blocks ``0..stop_at_layer-1`` only (None: every block).
        past_kv_cache: A TransformerLens key/value cache to continue from, or None.

    Returns:
        None; the hooks collect what the caller needs.
    """
    device = model.cfg.device
    with torch.no_grad():  # activations are measured, never differentiated (TL's own cache detaches too)
        model.run_with_hooks(
            tokens.to(device),
            return_type=None,
            stop_at_layer=stop_at_layer,
            attention_mask=None if mask is None else mask.long().to(device),
            past_kv_cache=past_kv_cache,
            fwd_hooks=hooks,
        )


def stop_layer(model: HookedTransformer, names: Sequence[str]) -> int | None:
    """The ``stop_at_layer`` that runs just far enough to reach every hook in ``names`` (None: all).

    Args:
        model: The model (for its number of layers).
        names: TransformerLens hook names, e.g. ``"blocks.3.hook_attn_out"``.

    Returns:
        One past the deepest hooked block, or None when a hook needs the full pass (embedding or final
        hooks, or the last block).
    """
    layers = []
    for name in names:
        match = _LAYER.match(name)
        if match is None:
            return None  # embedding or final hooks: hook_embed comes first, ln_final needs the full pass
        layers.append(int(match.group(1)))
    if not layers:
        raise ValueError("names: expected at least one hook name")
    deepest = max(layers) + 1
    return None if deepest >= model.cfg.n_layers else deepest


@dataclass(frozen=True)
class Chunk:
    """One forward pass of a batched run: prompts ``rows`` and token columns ``cols`` of the batch."""

    rows: slice
    cols: slice

    def local(self, prompt: torch.Tensor, position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch-level ``(prompt, position)`` as indices into this chunk's tensors."""
        return prompt - self.rows.start, position - self.cols.start


def run_batched(
    model: HookedTransformer,
    batch: TokenBatch,
    make_hooks: Callable[[Chunk], list[tuple[str, HookFn]]],
    *,
    batch_size: int = 16,
    stop_at_layer: int | None = None,
    progress: bool | None = None,
    desc: str = "forward",
) -> None:
    """Run ``batch`` through ``model`` in chunks of ``batch_size`` prompts with the hooks of each chunk.

    Each chunk is trimmed to the token columns its prompts use; the attention mask is passed when the
    chunk has padding. No logits are computed. ``progress=None`` shows a bar for more than one chunk.

    Args:
        model: The model to run.
        batch: The prompts, from :func:`tokenize` (or :func:`batch_from_tokens`).
        make_hooks: Called once per forward pass with its :class:`Chunk` (``chunk.rows`` its prompts,
            ``chunk.local`` batch indices turned into the pass's own); returns the ``(hook name, hook
            function)`` pairs for that pass. Reduce inside the hooks to keep memory small.
        batch_size: Prompts per forward pass.
        stop_at_layer: Run blocks ``0..stop_at_layer-1`` only (see :func:`stop_layer`; None: all).
        progress: Show a progress bar (None: when there is more than one chunk).
        desc: The progress bar's label.

    Returns:
        None; the hooks collect what the caller needs.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    n = len(batch)
    starts = range(0, n, batch_size)
    show = len(starts) > 1 if progress is None else progress
    for start in progress_bar(starts, desc=desc, unit="batch", progress=show, leave=False):
        rows = slice(start, min(start + batch_size, n))
        used = batch.mask[rows].any(dim=0).nonzero().flatten()
        cols = slice(int(used[0]), int(used[-1]) + 1)
        chunk = Chunk(rows, cols)
        tokens = batch.tokens[rows, cols]
        mask = batch.mask[rows, cols]
        needs_mask = not bool(mask.all()) or getattr(model.tokenizer, "padding_side", "right") == "left"
        forward(model, tokens, mask if needs_mask else None, make_hooks(chunk), stop_at_layer=stop_at_layer)
