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
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from interp.activations.positions import Positions
from interp.prompts import Chunk, HookFn, TokenBatch, run_batched, stop_layer

# Hooks whose activations are [batch, head, query_pos, key_pos]: positions select query rows.
_QUERY_AXIS_HOOKS = ("hook_pattern", "hook_attn_scores")


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
        raise TypeError(f"batch: expected a TokenBatch (see interp.prompts.tokenize), got {type(batch).__name__}")
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
