"""Targeted caching: run a batch of prompts and keep only named hooks at selected positions.

Instead of ``run_with_cache`` over every hook and position, each hook copies out only the rows of
:class:`~interp.activations.positions.Positions` as the forward pass runs, batch by batch (with a
progress bar), and the pass stops after the last layer that is needed.

>>> batch = tokenize(model, sentences)
>>> cache = cache_positions(model, batch, target_positions(batch, " her"), ["blocks.6.attn.hook_q"])
>>> cache["blocks.6.attn.hook_q"].shape     # [n_selected, n_heads, d_head]
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from interp.activations.positions import Positions, TokenBatch

# Hooks whose activations are [batch, head, query_pos, key_pos]: positions select query rows.
_QUERY_AXIS_HOOKS = ("hook_pattern", "hook_attn_scores")
_LAYER = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class Chunk:
    """One forward pass of a batched run: prompts ``rows`` and token columns ``cols`` of the batch."""

    rows: slice
    cols: slice

    def local(self, prompt: torch.Tensor, position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch-level ``(prompt, position)`` as indices into this chunk's tensors."""
        return prompt - self.rows.start, position - self.cols.start


HookFn = Callable[[torch.Tensor, object], None]


def check_hook_names(model: HookedTransformer, names: str | Iterable[str] | Callable[[str], bool]) -> list[str]:
    """The hook names selected by ``names`` (a name, a list of names or a filter), validated.

    An unknown name raises a ValueError listing the closest hook names of the model (difflib).
    """
    available = list(model.hook_dict)
    if callable(names):
        chosen = [n for n in available if names(n)]
        if not chosen:
            raise ValueError("names: the filter selects no hook of the model")
        return chosen
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise ValueError("names: is empty (expected at least one hook name)")
    unknown = [n for n in names if n not in model.hook_dict]
    if unknown:
        hints = []
        for name in unknown[:5]:
            close = difflib.get_close_matches(str(name), available, n=3, cutoff=0.5)
            hints.append(f"{name!r} (did you mean {', '.join(repr(c) for c in close)}?)" if close else repr(name))
        raise ValueError(f"names: unknown hook name(s) {'; '.join(hints)}; see model.hook_dict for all names")
    return names


def stop_layer(model: HookedTransformer, names: Sequence[str]) -> int | None:
    """The ``stop_at_layer`` that runs just far enough to reach every hook in ``names`` (None: all)."""
    layers = []
    for name in names:
        match = _LAYER.match(name)
        if match is None:
            return None  # embedding or final hooks: hook_embed comes first, ln_final needs the full pass
        layers.append(int(match.group(1)))
    deepest = max(layers) + 1
    return None if deepest >= model.cfg.n_layers else deepest


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
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    n = len(batch)
    starts = range(0, n, batch_size)
    show = len(starts) > 1 if progress is None else progress
    for start in tqdm(starts, desc=desc, disable=not show, leave=False):
        rows = slice(start, min(start + batch_size, n))
        used = batch.mask[rows].any(dim=0).nonzero().flatten()
        cols = slice(int(used[0]), int(used[-1]) + 1)
        chunk = Chunk(rows, cols)
        tokens = batch.tokens[rows, cols]
        mask = batch.mask[rows, cols]
        needs_mask = not bool(mask.all()) or getattr(model.tokenizer, "padding_side", "right") == "left"
        with torch.no_grad():  # activations are measured, never differentiated (TL's own cache detaches too)
            model.run_with_hooks(
                tokens,
                return_type=None,
                stop_at_layer=stop_at_layer,
                attention_mask=mask.long() if needs_mask else None,
                fwd_hooks=make_hooks(chunk),
            )


@dataclass(frozen=True)
class PositionCache:
    """Activations of named hooks at selected positions: ``acts[name][i]`` belongs to ``positions`` row ``i``.

    For ``hook_pattern``/``hook_attn_scores`` the positions select query rows: ``[n, head, key_pos]``
    with key positions indexed as in the batch (zero beyond a prompt's chunk).
    """

    positions: Positions
    acts: dict[str, Float[torch.Tensor, "n ..."]]

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.acts:
            close = difflib.get_close_matches(name, list(self.acts), n=3, cutoff=0.5)
            raise KeyError(f"{name!r} was not cached; cached: {sorted(self.acts)}" + (f" (close: {close})" if close else ""))
        return self.acts[name]

    def keys(self) -> list[str]:
        return list(self.acts)


def cache_positions(
    model: HookedTransformer,
    batch: TokenBatch,
    positions: Positions,
    names: str | Iterable[str] | Callable[[str], bool],
    *,
    batch_size: int = 16,
    progress: bool | None = None,
) -> PositionCache:
    """Run ``batch`` and keep the activations of hooks ``names`` at ``positions`` only.

    ``names`` is a hook name, a list of names (validated against ``model.hook_dict``) or a filter
    function as in ``run_with_cache(names_filter=...)``.
    """
    if not isinstance(batch, TokenBatch):
        raise TypeError(f"batch: expected a TokenBatch (see interp.activations.tokenize), got {type(batch).__name__}")
    if not isinstance(positions, Positions):
        raise TypeError(f"positions: expected a Positions, got {type(positions).__name__}")
    if len(positions) == 0:
        raise ValueError("positions: is empty (expected at least one selected token)")
    if int(positions.prompt.max()) >= len(batch) or int(positions.prompt.min()) < 0:
        raise ValueError(f"positions: prompt indices must lie in [0, {len(batch)})")
    selected = check_hook_names(model, names)
    width = batch.tokens.shape[1]
    out: dict[str, torch.Tensor] = {}

    def make_hooks(chunk: Chunk) -> list[tuple[str, HookFn]]:
        in_chunk = (positions.prompt >= chunk.rows.start) & (positions.prompt < chunk.rows.stop)
        row_ids = torch.nonzero(in_chunk).flatten()
        local_b, local_p = chunk.local(positions.prompt[row_ids], positions.position[row_ids])

        def keep(act: torch.Tensor, hook) -> None:  # noqa: ANN001 - HookPoint
            name = hook.name
            if name.endswith(_QUERY_AXIS_HOOKS):
                rows = act[local_b.to(act.device), :, local_p.to(act.device)]  # [n, head, key_pos]
                full = rows.new_zeros((*rows.shape[:-1], width))
                full[..., chunk.cols] = rows
                rows = full
            else:
                rows = act[local_b.to(act.device), local_p.to(act.device)]  # [n, ...]
            if name not in out:
                out[name] = rows.new_zeros((len(positions), *rows.shape[1:]))
            out[name][row_ids.to(rows.device)] = rows.detach()

        return [(name, keep) for name in selected]

    run_batched(model, batch, make_hooks, batch_size=batch_size, stop_at_layer=stop_layer(model, selected),
                progress=progress, desc="caching")
    return PositionCache(positions, out)
