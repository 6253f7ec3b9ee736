"""A forward pass that loads one block at a time: embeddings, then each block applied to the batch's
residual stream and dropped, keeping only the requested hook values.

Block ``l`` runs as the only block of a one-block HookedTransformer (its own attention mask
handling, rotary positions, local/global window, softcaps and norms), so its hooks are the model's
``blocks.l.*`` hooks. The embedding is that of layer 0's model holding only the rows of the tokens in
the batch. On top of it: :func:`streamed_prompt_activations`, :func:`streamed_role_vectors` and
:func:`streamed_persona_directions`, the streamed counterparts of :mod:`interp.personas`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable, Mapping, Sequence

import einops
import torch
from jaxtyping import Float, Int

from interp._validate import as_layers
from interp.directions import DirectionSet
from interp.personas import (
    PACKAGED_DEFAULT,
    PersonaDirections,
    Position,
    as_questions,
    persona_directions,
    role_vectors,
)
from interp.progress import progress_bar
from interp.prompts import PromptFormat, format_prompt, token_ids
from interp.streaming.model import StreamedModel, StreamStats, peak_rss_bytes

__all__ = [
    "streamed_persona_directions",
    "streamed_prompt_activations",
    "streamed_role_vectors",
    "streamed_run_with_cache",
]

_LAYER_HOOK = "blocks."


def _hook_layer(name: str) -> int | None:
    if not name.startswith(_LAYER_HOOK):
        return None
    return int(name.split(".")[1])


@torch.no_grad()
def streamed_run_with_cache(
    model: StreamedModel,
    tokens: Int[torch.Tensor, "batch pos"],
    names: str | Iterable[str],
    *,
    attention_mask: Int[torch.Tensor, "batch pos"] | None = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """``{name: value}`` for hook ``names`` of a forward pass on ``tokens``, equal to
    ``HookedTransformer.run_with_cache(tokens, attention_mask=...)[1][name]`` of the loaded model.

    Blocks after the last requested one are never read. ``attention_mask``: 1 for real tokens
    (default all ones); with right padding the real tokens never attend to pads.
    """
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("names: expected at least one hook name")
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.dtype not in (torch.long, torch.int):
        raise TypeError("tokens: expected an integer tensor [batch, pos]")
    vocab = int(model.cfg_dict["d_vocab"])
    if tokens.numel() == 0 or int(tokens.min()) < 0 or int(tokens.max()) >= vocab:
        raise ValueError(f"tokens: ids must lie in [0, {vocab})")
    if attention_mask is None:
        attention_mask = torch.ones_like(tokens)
    if attention_mask.shape != tokens.shape:
        raise ValueError(f"attention_mask: shape {tuple(attention_mask.shape)} differs from tokens' {tuple(tokens.shape)}")
    layers = {_hook_layer(n) for n in names}
    bad = [n for n in names if _hook_layer(n) is None and n not in ("hook_embed", "hook_pos_embed")]
    if bad:
        raise ValueError(f"names: {bad[:5]} are not block hooks (blocks.L.*) or hook_embed / hook_pos_embed")
    block_layers = sorted(layer for layer in layers if layer is not None)
    if block_layers:
        as_layers(block_layers, model.n_layers, name="names")

    rows = sorted(set(tokens.flatten().tolist()))
    local = torch.searchsorted(torch.tensor(rows), tokens)  # token ids of the model holding only those rows
    first = model.layer(0, vocab_rows=rows)
    embed_names = [n for n in names if n in ("hook_embed", "hook_pos_embed")]
    resid, cache = first.run_with_cache(local, attention_mask=attention_mask, stop_at_layer=0,
                                        names_filter=lambda n: n in embed_names)
    missing = [n for n in embed_names if n not in cache.cache_dict]  # hook_pos_embed of a rotary model
    if missing:
        raise ValueError(f"names: the model has no hook {missing[0]!r}")
    out = {n: cache[n] for n in embed_names}
    if not block_layers:
        return out

    for layer in progress_bar(range(block_layers[-1] + 1), desc="forward", unit="layer", progress=progress):
        block = first if layer == 0 else model.layer(layer)
        wanted = {n.replace(f"blocks.{layer}.", "blocks.0.", 1): n for n in names if _hook_layer(n) == layer}
        resid, cache = block.run_with_cache(resid, start_at_layer=0, stop_at_layer=1, attention_mask=attention_mask,
                                            names_filter=lambda n, w=wanted: n in w)
        missing = [original for local_name, original in wanted.items() if local_name not in cache.cache_dict]
        if missing:
            raise ValueError(f"names: the model has no hook {missing[0]!r}")
        out.update({original: cache[local_name] for local_name, original in wanted.items()})
        del block, cache
    return out


@torch.no_grad()
def streamed_prompt_activations(
    model: StreamedModel,
    systems: Sequence[str | None],
    questions: Sequence[str],
    *,
    layer: int,
    position: Position = "last",
    batch_size: int = 64,
    prompt_format: PromptFormat = "auto",
    progress: bool = True,
) -> Float[torch.Tensor, "system question d_model"]:
    """:func:`interp.personas.prompt_activations` of a streamed model: ``blocks.{layer}.hook_resid_post``
    at the last prompt token (or averaged over the prompt) for every system prompt and question.

    Every prompt is right-padded in batches of ``batch_size``; all batches go through block ``l``
    before block ``l + 1`` is read, so each block is read once.
    """
    if not isinstance(model, StreamedModel):
        raise TypeError(f"model: expected an interp.streaming.StreamedModel, got {type(model).__name__}")
    progress = progress and model.show_progress
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise TypeError(f"layer: expected one int layer index, got {layer!r}")
    layer = as_layers(layer, model.n_layers, name="layer")[0]
    if position not in ("last", "mean"):
        raise ValueError(f"position: expected 'last' or 'mean', got {position!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    if isinstance(systems, str) or not isinstance(systems, Sequence) or len(systems) == 0:
        raise ValueError("systems: expected a non-empty sequence of system prompts (str or None)")
    questions = as_questions(questions)
    ids = [token_ids(model, format_prompt(model.tokenizer, s, q, prompt_format=prompt_format), name="questions")
           for s in systems for q in questions]
    batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    padded = [_right_pad(batch) for batch in batches]
    rows = sorted({t for batch in ids for t in batch})
    local = torch.tensor(rows)


    start_read, start = model.checkpoint.bytes_read, _now()
    first = model.layer(0, vocab_rows=rows)
    resids = [first(torch.searchsorted(local, tokens), attention_mask=mask, stop_at_layer=0) for tokens, mask in padded]
    for index in progress_bar(range(layer + 1), desc="forward", unit="layer", progress=progress):
        block = first if index == 0 else model.layer(index)
        resids = [block(r, start_at_layer=0, stop_at_layer=1, attention_mask=mask) for r, (_, mask) in zip(resids, padded, strict=True)]
        del block
    del first
    values = []
    for resid, (_, mask) in zip(resids, padded, strict=True):
        if position == "last":
            values.append(resid[torch.arange(resid.shape[0]), mask.sum(1) - 1].float())
        else:
            weights = mask.to(torch.float32)
            values.append(einops.einsum(resid.float(), weights, "b p d, b p -> b d") / weights.sum(1, keepdim=True))
    model.stats = StreamStats(layer + 1, model.checkpoint.bytes_read - start_read, peak_rss_bytes(), _now() - start)
    if progress:
        print(model.stats, file=sys.stderr)
    return torch.cat(values).reshape(len(systems), len(questions), -1)


def _now() -> float:
    import time

    return time.perf_counter()


def _right_pad(rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), rows[0][0], dtype=torch.long)  # pads: a token already present
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return tokens, mask


def streamed_role_vectors(
    model: StreamedModel,
    roles: Mapping[str, str] | Sequence[str] | None = None,
    questions: Sequence[str] | None = None,
    *,
    layer: int,
    position: Position = "last",
    batch_size: int = 64,
    default_system: str | None = PACKAGED_DEFAULT,
    prompt_format: PromptFormat = "auto",
    progress: bool = True,
) -> DirectionSet:
    """:func:`interp.personas.role_vectors` of a streamed model (same arguments and result), with a
    progress bar per block."""
    return role_vectors(model, roles, questions, layer=layer, position=position, batch_size=batch_size,
                        default_system=default_system, prompt_format=prompt_format,
                        activations=_activations(model, progress))


def streamed_persona_directions(
    model: StreamedModel,
    *,
    layer: int | None = None,
    n_components: int = 5,
    roles: Mapping[str, str] | Sequence[str] | None = None,
    questions: Sequence[str] | None = None,
    traits: Mapping[str, str] | Sequence[str] | bool = False,
    position: Position = "last",
    batch_size: int = 64,
    default_system: str | None = PACKAGED_DEFAULT,
    prompt_format: PromptFormat = "auto",
    progress: bool = True,
) -> PersonaDirections:
    """:func:`interp.personas.persona_directions` of a streamed model (same arguments and result):
    the top principal axes of the role vectors at ``layer`` (default ``n_layers // 2``)."""
    return persona_directions(model, layer=layer, n_components=n_components, roles=roles, questions=questions,
                              traits=traits, position=position, batch_size=batch_size, default_system=default_system,
                              prompt_format=prompt_format, activations=_activations(model, progress))


def _activations(model: object, progress: bool) -> functools.partial:
    if not isinstance(model, StreamedModel):
        raise TypeError(f"model: expected an interp.streaming.StreamedModel, got {type(model).__name__}")
    return functools.partial(streamed_prompt_activations, progress=progress)
