"""Persona directions from prompts: role vectors, trait vectors and the principal axes of role space.

The recipe behind the persona-space analyses, at prompt level: ask the model a set of
neutral questions with a role as the system prompt, read the residual stream at the last prompt
token at one layer, average over questions and subtract the same average under a plain-assistant
system prompt::

    v_role = mean_q h_L(role, q) - mean_q h_L(default, q)

Persona PCs are the principal axes of the role vectors centred across roles. Everything runs as
batched forward passes that stop after layer ``L`` and run each system prompt's shared token
prefix once (key-value cache).

The packaged prompts (``interp/data/personas.json``: 30 roles, 12 traits, 8 questions) were written
for interp; pass your own mappings to use others.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, ClassVar, Literal, Protocol

import einops
import pandas as pd
import torch
from jaxtyping import Float
from transformer_lens import (
    HookedTransformer,
    TransformerLensKeyValueCache,
    TransformerLensKeyValueCacheEntry,
)

from interp._validate import as_layers
from interp.directions import DirectionSet
from interp.pair import is_streamed
from interp.progress import progress_bar
from interp.prompts import PromptFormat, format_prompt, forward, pad_id, pad_rows, token_ids, uses_chat
from interp.results import Result, ResultLayout

__all__ = [
    "PersonaDirections",
    "PersonaPrompts",
    "persona_directions",
    "persona_prompts",
    "persona_vectors",
    "prompt_activations",
    "role_vectors",
    "trait_vectors",
]

Position = Literal["last", "mean"]


class ActivationsFn(Protocol):
    """What reads ``h_L(s, q)`` for the vector recipe: :func:`prompt_activations`'s signature (the
    streamed forward, :func:`interp.streaming.streamed_prompt_activations`, is the other one)."""

    def __call__(self, model: Any, systems: Sequence[str | None], questions: Sequence[str], *, layer: int,
                 position: Position, batch_size: int, prompt_format: PromptFormat,
                 progress: bool | None = None) -> torch.Tensor: ...


def activations_for(model: object) -> ActivationsFn:
    """The activations function for ``model``: :func:`prompt_activations` for a HookedTransformer, the
    streamed forward for an :class:`interp.streaming.StreamedModel` (through its ``run``, see
    :func:`interp.pair.is_streamed`); anything else is a TypeError."""
    if isinstance(model, HookedTransformer):
        return prompt_activations
    if is_streamed(model):
        return lambda streamed, *args, **kwargs: streamed.run("prompt_activations", *args, **kwargs)
    raise TypeError(f"model: expected a HookedTransformer or an interp.streaming.StreamedModel, "
                    f"got {type(model).__name__}")


class _PackagedDefault:
    def __repr__(self) -> str:
        return "<packaged default>"


#: Sentinel for ``default_system``: the packaged plain-assistant prompt ("You are a helpful assistant.").
PACKAGED_DEFAULT: Any = _PackagedDefault()


@dataclass(frozen=True)
class PersonaPrompts:
    """The packaged prompt set: system prompts per role and per trait, the default-assistant prompt
    and the neutral questions asked under each."""

    roles: dict[str, str]
    traits: dict[str, str]
    questions: tuple[str, ...]
    default: str


@lru_cache(maxsize=1)
def _packaged() -> PersonaPrompts:
    text = resources.files("interp").joinpath("data/personas.json").read_text(encoding="utf-8")
    data = json.loads(text)
    return PersonaPrompts(
        roles=dict(data["roles"]),
        traits=dict(data["traits"]),
        questions=tuple(data["questions"]),
        default=str(data["default"]),
    )


def persona_prompts() -> PersonaPrompts:
    """The packaged prompts from ``interp/data/personas.json`` (a fresh copy; edit it freely)."""
    base = _packaged()
    return PersonaPrompts(dict(base.roles), dict(base.traits), tuple(base.questions), base.default)


# ---------------------------------------------------------------------- activations
def prompt_activations(
    model: HookedTransformer,
    systems: Sequence[str | None],
    questions: Sequence[str],
    *,
    layer: int,
    position: Position = "last",
    batch_size: int = 64,
    prompt_format: PromptFormat = "auto",
    progress: bool | None = None,
) -> Float[torch.Tensor, "system question d_model"]:
    """Residual stream ``h_L(s, q)`` = ``blocks.{layer}.hook_resid_post`` for every system prompt
    ``s`` and question ``q``, at the last prompt token (``position="last"``) or averaged over all
    prompt tokens (``"mean"``).

    Every prompt under one system prompt starts with the same tokens (the template and the system
    prompt), so that shared prefix is run once per system prompt and its keys and values are reused
    for the questions (TransformerLens' key-value cache), roughly halving the tokens processed.
    Batches hold up to ``batch_size`` prompts (prefixes left-padded, question suffixes right-padded,
    explicit attention masks, positions counted over real tokens only) and run only up to block
    ``layer``. The result equals one unpadded forward pass per prompt (tested). ``progress``: a bar over
    the batches (None: when there is more than one; False: silent).
    """
    layer = _as_layer(model, layer)
    if position not in ("last", "mean"):
        raise ValueError(f"position: expected 'last' or 'mean', got {position!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    if isinstance(systems, str) or not isinstance(systems, Sequence) or len(systems) == 0:
        raise ValueError("systems: expected a non-empty sequence of system prompts (str or None)")
    questions = as_questions(questions)
    ids = [[token_ids(model, format_prompt(model, s, q, prompt_format=prompt_format), name="questions")
            for q in questions]
           for s in systems]

    out = torch.empty(len(systems), len(questions), model.cfg.d_model, dtype=torch.float32)
    batches = _batches(_units(ids, batch_size), batch_size)
    for batch in progress_bar(batches, desc="persona activations", unit="batch", progress=progress):
        values = _run_units(model, batch, layer=layer, position=position)
        rows = [(u.system, q) for u in batch for q in u.questions]
        out[torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])] = values
    return out


@dataclass(frozen=True)
class _Unit:
    """Prompts of one system prompt sharing a token prefix: ``prefix + suffixes[i]`` is question
    ``questions[i]``'s full token sequence (every suffix keeps at least one token)."""

    system: int
    questions: tuple[int, ...]
    prefix: tuple[int, ...]
    suffixes: tuple[tuple[int, ...], ...]


def _units(ids: list[list[list[int]]], batch_size: int) -> list[_Unit]:
    units = []
    for system, rows in enumerate(ids):
        for start in range(0, len(rows), batch_size):
            chunk = range(start, min(start + batch_size, len(rows)))
            shared = min(len(rows[q]) for q in chunk) - 1
            first = rows[chunk[0]]
            for q in chunk:
                shared = next((i for i in range(shared) if rows[q][i] != first[i]), shared)
            units.append(
                _Unit(system, tuple(chunk), tuple(first[:shared]), tuple(tuple(rows[q][shared:]) for q in chunk))
            )
    return units


def _batches(units: list[_Unit], batch_size: int) -> list[list[_Unit]]:
    """Units sorted by length, packed greedily so that a batch holds at most ``batch_size`` prompts."""
    ordered = sorted(units, key=lambda u: (len(u.prefix), max(len(x) for x in u.suffixes)))
    batches: list[list[_Unit]] = []
    size = 0
    for unit in ordered:
        if not batches or size + len(unit.questions) > batch_size:
            batches.append([])
            size = 0
        batches[-1].append(unit)
        size += len(unit.questions)
    return batches


def _run_units(
    model: HookedTransformer, units: list[_Unit], *, layer: int, position: str
) -> Float[torch.Tensor, "prompt d_model"]:
    """``hook_resid_post`` of block ``layer`` for every prompt of ``units`` (in unit order): the
    prefixes run once (filling a key-value cache), then the cache is repeated per question and the
    suffixes run on top of it. Only blocks 0..layer run."""
    device = model.cfg.device
    pad = pad_id(model.tokenizer)
    hook_name = f"blocks.{layer}.hook_resid_post"
    prefix_tokens, prefix_mask = pad_rows([u.prefix for u in units], pad, side="left")
    suffix_tokens, suffix_mask = pad_rows([x for u in units for x in u.suffixes], pad, side="right")
    owner = torch.tensor([i for i, u in enumerate(units) for _ in u.questions])

    cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, len(units))
    prefix_sum = torch.zeros(len(units), model.cfg.d_model, dtype=torch.float32)
    if prefix_tokens.shape[1] > 0:

        def keep_prefix(resid: Float[torch.Tensor, "batch pos d_model"], hook: Any) -> None:
            weights = prefix_mask.to(resid.device, torch.float32)
            prefix_sum.copy_(einops.einsum(resid.float(), weights, "batch pos d, batch pos -> batch d").cpu())

        forward(model, prefix_tokens, prefix_mask, [(hook_name, keep_prefix)] if position == "mean" else [],
                stop_at_layer=layer + 1, past_kv_cache=cache)
    index = owner.to(device)
    repeated = TransformerLensKeyValueCache(
        entries=[
            TransformerLensKeyValueCacheEntry(entry.past_keys[index], entry.past_values[index])
            for entry in cache.entries
        ],
        previous_attention_mask=cache.previous_attention_mask[index],
    )
    captured: list[torch.Tensor] = []

    def keep_suffix(resid: Float[torch.Tensor, "batch pos d_model"], hook: Any) -> None:
        mask = suffix_mask.to(resid.device)
        if position == "last":
            last = mask.sum(dim=1) - 1
            captured.append(resid[torch.arange(resid.shape[0], device=resid.device), last].float().cpu())
        else:
            weights = mask.to(torch.float32)
            captured.append(einops.einsum(resid.float(), weights, "batch pos d, batch pos -> batch d").cpu())

    forward(model, suffix_tokens, suffix_mask, [(hook_name, keep_suffix)], stop_at_layer=layer + 1,
            past_kv_cache=repeated)
    if position == "last":
        return captured[0]
    counts = prefix_mask.sum(dim=1)[owner] + suffix_mask.sum(dim=1)
    return (captured[0] + prefix_sum[owner]) / counts[:, None].float()


# ---------------------------------------------------------------------- role / trait vectors
def role_vectors(
    model: HookedTransformer,
    roles: Mapping[str, str] | Sequence[str] | None = None,
    questions: Sequence[str] | None = None,
    *,
    layer: int,
    position: Position = "last",
    batch_size: int = 64,
    default_system: str | None = PACKAGED_DEFAULT,
    prompt_format: PromptFormat = "auto",
    progress: bool | None = None,
    activations: ActivationsFn | None = None,
) -> DirectionSet:
    """One unnormalised vector per role: ``v_r = mean_q h_L(r, q) - mean_q h_L(default, q)``.

    ``roles``: ``{name: system prompt}``, a list of packaged role names, or None for all packaged
    roles. ``questions``: defaults to the packaged questions. ``default_system``: the baseline system
    prompt (packaged: "You are a helpful assistant."; None sends no system turn). See
    :func:`prompt_activations` for ``position`` and batching and :func:`format_prompt` for the text.
    ``model`` may be an :class:`interp.streaming.StreamedModel` (blocks read one at a time);
    ``activations``: what reads ``h_L`` (default :func:`activations_for` the model).

    Example::

        roles = role_vectors(model, ["pirate", "poet"], layer=15)
        roles["pirate"]          # [d_model], in the residual basis of blocks.15.hook_resid_post
    """
    return persona_vectors(
        model, {"role": _as_prompts(roles, _packaged().roles, "roles", "role")}, questions,
        layer=layer, position=position, batch_size=batch_size, default_system=default_system,
        prompt_format=prompt_format, progress=progress, activations=activations,
    )["role"]


def trait_vectors(
    model: HookedTransformer,
    traits: Mapping[str, str] | Sequence[str] | None = None,
    questions: Sequence[str] | None = None,
    *,
    layer: int,
    position: Position = "last",
    batch_size: int = 64,
    default_system: str | None = PACKAGED_DEFAULT,
    prompt_format: PromptFormat = "auto",
    progress: bool | None = None,
    activations: ActivationsFn | None = None,
) -> DirectionSet:
    """One unnormalised vector per trait, ``v_t = mean_q h_L(t, q) - mean_q h_L(default, q)``, with
    trait system prompts ("You are a very {trait} assistant: ..."); arguments as :func:`role_vectors`."""
    return persona_vectors(
        model, {"trait": _as_prompts(traits, _packaged().traits, "traits", "trait")}, questions,
        layer=layer, position=position, batch_size=batch_size, default_system=default_system,
        prompt_format=prompt_format, progress=progress, activations=activations,
    )["trait"]


def persona_vectors(
    model: HookedTransformer,
    groups: Mapping[str, dict[str, str]],
    questions: Sequence[str] | None,
    *,
    layer: int,
    position: Position = "last",
    batch_size: int = 64,
    default_system: str | None = PACKAGED_DEFAULT,
    prompt_format: PromptFormat = "auto",
    activations: ActivationsFn | None = None,
    progress: bool | None = None,
) -> dict[str, DirectionSet]:
    """``v = mean_q h_L(s, q) − mean_q h_L(default, q)`` for several groups (``{kind: {name: system
    prompt}}``) of system prompts sharing one pass over the default prompt; ``h_L`` read by
    ``activations`` (default :func:`activations_for` the model). The one implementation of the recipe."""
    activations = activations_for(model) if activations is None else activations
    layer = _as_layer(model, layer)
    questions = as_questions(_packaged().questions if questions is None else questions)
    if default_system is PACKAGED_DEFAULT:
        default_system = _packaged().default
    if default_system is not None and not isinstance(default_system, str):
        raise TypeError(f"default_system: expected a string or None, got {type(default_system).__name__}")
    systems = [s for prompts in groups.values() for s in prompts.values()] + [default_system]
    acts = activations(
        model, systems, questions, layer=layer, position=position, batch_size=batch_size,
        prompt_format=prompt_format, progress=progress,
    )
    means = einops.reduce(acts, "system question d -> system d", "mean")
    offsets = means[:-1] - means[-1:]
    used_format = "chat" if uses_chat(model.tokenizer, prompt_format) else "plain"
    model_name = getattr(model.cfg, "model_name", "model")
    out: dict[str, DirectionSet] = {}
    start = 0
    for kind, prompts in groups.items():
        rows = offsets[start : start + len(prompts)]
        start += len(prompts)
        out[kind] = DirectionSet(
            tuple(prompts),
            rows,
            layer=layer,
            source=f"{kind} vectors of {model_name} at blocks.{layer}.hook_resid_post ({position} token, minus default)",
            metadata={
                "kind": kind,
                "position": position,
                "prompt_format": used_format,
                "default_system": default_system,
                "questions": list(questions),
                "system_prompts": dict(prompts),
            },
        )
    return out


# ---------------------------------------------------------------------- persona PCs
@dataclass(frozen=True, eq=False)
class PersonaDirections(Result):
    """Principal axes of role space at one layer, with the role (and optionally trait) vectors.

    ``pcs``: unit vectors PC1..PCk of the role vectors centred across roles, sorted by explained
    variance (ratios in ``pcs.metadata["explained_variance_ratio"]`` and :attr:`explained_variance`).
    """

    result_layout: ClassVar[ResultLayout] = ResultLayout(
        headline="scores", objects=(("pcs", DirectionSet), ("roles", DirectionSet), ("traits", DirectionSet)),
        metadata=("layer",))

    pcs: DirectionSet
    roles: DirectionSet
    traits: DirectionSet | None
    layer: int

    @property
    def explained_variance(self) -> Float[torch.Tensor, " component"]:
        """Share of the variance across roles captured by each PC, ``S_i^2 / sum_j S_j^2``."""
        return torch.tensor(self.pcs.metadata["explained_variance_ratio"], dtype=torch.float32)

    def scores(self) -> pd.DataFrame:
        """Coordinates in PC space, one row per (vector, component): ``<v - mean_roles v, PC_i>``.

        Columns ``kind`` ("role"/"trait"), ``name``, ``component``, ``score``. Traits are placed with
        the role mean as origin, like a fitted PCA transforming new samples.
        """
        center = self.roles.vectors.mean(dim=0, keepdim=True)
        frames = []
        for kind, group in (("role", self.roles), ("trait", self.traits)):
            if group is None:
                continue
            coords = einops.einsum(group.vectors - center, self.pcs.vectors, "n d, k d -> n k")
            frames.append(
                pd.DataFrame(
                    {
                        "kind": kind,
                        "name": [n for n in group.names for _ in self.pcs.names],
                        "component": list(self.pcs.names) * len(group),
                        "score": coords.flatten().tolist(),
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)


def persona_directions(
    model: HookedTransformer,
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
    progress: bool | None = None,
    activations: ActivationsFn | None = None,
) -> PersonaDirections:
    """Persona PCs: the top ``n_components`` principal axes of the role vectors at ``layer``.

    With ``v_r`` from :func:`role_vectors` and ``V`` the matrix of ``v_r - mean_r v_r``, the PCs are
    the top right singular vectors of ``V`` (sign: largest-|entry| positive), see
    :meth:`DirectionSet.from_pca`. Deterministic: same inputs, same result.

    Args:
        model: The model whose residual stream is read (or an :class:`interp.streaming.StreamedModel`,
            read block by block).
        layer: Layer of ``blocks.{layer}.hook_resid_post`` (default the middle layer, ``n_layers // 2``).
        n_components: Number of PCs, at most ``n_roles - 1``.
        roles: ``{name: system prompt}``, packaged role names, or None for all packaged roles.
        questions: User turns asked under every role (default the packaged questions).
        traits: Also compute trait vectors (True: packaged traits; or a mapping / list of names).
        position: "last" prompt token or "mean" over the prompt's tokens.
        batch_size: Prompts per forward pass.
        default_system: The baseline system prompt subtracted from every role (None: no system turn).
        prompt_format: "auto" (chat template when the tokenizer has one), "chat" or "plain".
        progress: Progress bar over the batches (None: when there is more than one; False: silent).
        activations: The function that reads ``h_L`` (default :func:`activations_for` the model), as
            :func:`role_vectors`.

    Returns:
        A :class:`PersonaDirections` with ``pcs``, ``roles`` and ``traits`` DirectionSets; ``scores()``
        places every vector in PC space.

    Example::

        persona = persona_directions(model, n_components=3, questions=persona_prompts().questions[:4])
        persona.pcs.with_negations()     # PC1, -PC1, PC2, ... for QK/OV probes
        persona.explained_variance       # tensor of 3 ratios, decreasing
    """
    activations = activations_for(model) if activations is None else activations
    layer = model.cfg.n_layers // 2 if layer is None else _as_layer(model, layer)
    role_prompts = _as_prompts(roles, _packaged().roles, "roles", "role")
    if not isinstance(n_components, int) or isinstance(n_components, bool):
        raise TypeError(f"n_components: expected an int, got {n_components!r}")
    if not 1 <= n_components <= len(role_prompts) - 1:
        raise ValueError(
            f"n_components: must be between 1 and n_roles - 1 = {len(role_prompts) - 1} "
            f"(the rank of {len(role_prompts)} centred role vectors), got {n_components}"
        )
    groups = {"role": role_prompts}
    if traits is True:
        groups["trait"] = dict(_packaged().traits)
    elif traits is not False and traits is not None:
        groups["trait"] = _as_prompts(traits, _packaged().traits, "traits", "trait")
    vectors = persona_vectors(
        model, groups, questions, layer=layer, position=position, batch_size=batch_size,
        default_system=default_system, prompt_format=prompt_format, progress=progress, activations=activations,
    )
    model_name = getattr(model.cfg, "model_name", "model")
    pcs = DirectionSet.from_pca(
        vectors["role"].vectors,
        n_components,
        prefix="PC",
        layer=layer,
        source=f"persona PCA of {model_name} at layer {layer} ({len(role_prompts)} roles)",
    )
    return PersonaDirections(pcs=pcs, roles=vectors["role"], traits=vectors.get("trait"), layer=layer)


# ---------------------------------------------------------------------- argument checks
def _as_layer(model: HookedTransformer, layer: object) -> int:
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise TypeError(f"layer: expected one int layer index, got {layer!r}")
    return as_layers(layer, model.cfg.n_layers, name="layer")[0]


def as_questions(questions: object) -> tuple[str, ...]:
    if isinstance(questions, str) or not isinstance(questions, Sequence):
        raise TypeError(f"questions: expected a sequence of strings, got {type(questions).__name__}")
    if len(questions) == 0:
        raise ValueError("questions: is empty (expected at least one question)")
    bad = [q for q in questions if not isinstance(q, str) or not q.strip()]
    if bad:
        raise ValueError(f"questions: every question must be a non-empty string, got {bad[:3]!r}")
    return tuple(questions)


def _as_prompts(
    prompts: Mapping[str, str] | Sequence[str] | None, packaged: Mapping[str, str], name: str, kind: str
) -> dict[str, str]:
    if prompts is None:
        return dict(packaged)
    if isinstance(prompts, Mapping):
        out = dict(prompts)
    elif isinstance(prompts, Sequence) and not isinstance(prompts, str):
        unknown = [p for p in prompts if p not in packaged]
        if unknown:
            raise ValueError(f"{name}: unknown packaged {kind}s {unknown[:10]}; known: {sorted(packaged)}")
        out = {p: packaged[p] for p in prompts}
    else:
        raise TypeError(f"{name}: expected a mapping of {kind} -> system prompt or a list of {kind} names, got {type(prompts).__name__}")
    if not out:
        raise ValueError(f"{name}: is empty (expected at least one {kind})")
    bad = [k for k, v in out.items() if not isinstance(k, str) or not k or not isinstance(v, str) or not v.strip()]
    if bad:
        raise ValueError(f"{name}: names and system prompts must be non-empty strings; bad entries: {bad[:10]}")
    return out
