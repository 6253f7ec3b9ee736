"""On-disk cache for the report's reusable intermediate results (persona directions of a base model).

Entries are keyed by a fingerprint of the model's weights and the arguments, so a changed model or
setting never reads a stale entry. Files are DirectionSet ``.safetensors`` (no pickles).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer

from interp.directions import DirectionSet
from interp.personas import PersonaDirections, persona_directions

__all__ = ["cached_persona_directions", "default_cache_dir", "model_fingerprint"]


def default_cache_dir() -> Path:
    """``interp.cache_dir() / "report"``."""
    from interp.loading import cache_dir

    return cache_dir() / "report"


def model_fingerprint(model: HookedTransformer) -> str:
    """A hex digest of the model's config essentials and the bytes of every parameter (name order)."""
    digest = hashlib.blake2b(digest_size=16)
    cfg = model.cfg
    digest.update(json.dumps([cfg.model_name, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_vocab,
                              str(cfg.normalization_type), str(cfg.dtype)]).encode())
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        digest.update(name.encode())
        tensor = param.detach().to("cpu").contiguous()
        digest.update(tensor.view(torch.uint8).numpy().data if tensor.numel() else b"")
    tokenizer = model.tokenizer
    if tokenizer is not None:
        digest.update(str(len(tokenizer)).encode())
        digest.update(str(getattr(tokenizer, "chat_template", "") or "").encode())
    return digest.hexdigest()


def cached_persona_directions(
    model: HookedTransformer, *, cache_dir: Path | None, **kwargs: Any
) -> tuple[PersonaDirections, bool]:
    """:func:`interp.personas.persona_directions` of ``model`` with ``kwargs``, read from ``cache_dir``
    when an entry for the same weights and arguments exists (else computed and written there).

    Returns ``(directions, from_cache)``. ``cache_dir=None`` always computes, as does a streamed model
    (:class:`interp.streaming.StreamedModel`: its weights are never all in memory to fingerprint).
    """
    if cache_dir is None or not isinstance(model, HookedTransformer):
        return persona_directions(model, **kwargs), False
    key_source = json.dumps({"model": model_fingerprint(model), **kwargs}, sort_keys=True, default=str)
    key = hashlib.blake2b(key_source.encode(), digest_size=10).hexdigest()
    folder = Path(cache_dir) / f"persona-{key}"
    done = folder / "done.json"
    if done.is_file():
        try:
            pcs = DirectionSet.load(folder / "pcs.safetensors")
            roles = DirectionSet.load(folder / "roles.safetensors")
            traits_file = folder / "traits.safetensors"
            traits = DirectionSet.load(traits_file) if traits_file.is_file() else None
            layer = json.loads(done.read_text())["layer"]
            return PersonaDirections(pcs=pcs, roles=roles, traits=traits, layer=int(layer)), True
        except (OSError, ValueError, KeyError):  # a damaged entry is recomputed and overwritten
            pass
    result = persona_directions(model, **kwargs)
    folder.mkdir(parents=True, exist_ok=True)
    result.pcs.save(folder / "pcs.safetensors")
    result.roles.save(folder / "roles.safetensors")
    if result.traits is not None:
        result.traits.save(folder / "traits.safetensors")
    done.write_text(json.dumps({"layer": result.layer, "arguments": key_source}))
    return result, False
