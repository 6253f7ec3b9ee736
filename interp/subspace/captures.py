"""Residual-stream captures for the subspace sweep: last-token activations and the steering label.

Prompts of different lengths are right-padded into one batch with an attention mask
(:func:`interp.prompts.tokenize`, :func:`interp.prompts.run_batched`), so the last *real* token of
each prompt sees exactly what it would see alone.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer
from transformer_lens.utils import get_act_name

from interp.pair import ModelPair
from interp.prompts import format_prompts, run_batched, stop_layer, tokenize
from interp.subspace.steering import steer


def _run(model: HookedTransformer, texts: Sequence[str], names: list[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``names`` over the right-padded batch of ``texts`` in one forward pass, and each text's length."""
    batch = tokenize(model, list(texts), padding_side="right")
    acts: dict[str, torch.Tensor] = {}

    def keep(act: torch.Tensor, hook) -> None:  # noqa: ANN001 - HookPoint
        acts[hook.name] = act.detach()

    run_batched(model, batch, lambda chunk: [(name, keep) for name in names], batch_size=len(batch),
                stop_at_layer=stop_layer(model, names), progress=False)
    return {name: acts[name] for name in names}, batch.lengths.cpu()


def _names(hooks: Sequence[str], layers: Sequence[int]) -> list[str]:
    return [get_act_name(hook, layer) for hook in hooks for layer in layers]


def _at_last(acts: dict[str, torch.Tensor], lengths: torch.Tensor, hook: str,
             layers: Sequence[int]) -> Float[torch.Tensor, "layer n d"]:
    """``hook`` at the last real token of each text, per layer, from the activations of one pass."""
    first = acts[get_act_name(hook, layers[0])]
    idx, last = torch.arange(len(lengths)), (lengths - 1).to(first.device)
    return torch.stack([acts[get_act_name(hook, layer)][idx, last].float().cpu() for layer in layers])


def _at_suffix(acts: dict[str, torch.Tensor], lengths: torch.Tensor, layers: Sequence[int],
               n_suffix: int) -> tuple[Float[torch.Tensor, "layer n t d"], Float[torch.Tensor, "layer n t"]]:
    """``resid_post`` at the last ``n_suffix`` tokens and the head-mean attention the last token pays
    them, from the activations of one pass (gathers only)."""
    if int(lengths.min()) < n_suffix:
        raise ValueError(f"n_suffix: {n_suffix} is longer than the shortest text ({int(lengths.min())} tokens)")
    n = len(lengths)
    offsets = torch.arange(n_suffix)
    pos = (lengths[:, None] - n_suffix + offsets[None]).long()  # [n, t]
    row = torch.arange(n)[:, None]
    resid, attn = [], []
    for layer in layers:
        r = acts[get_act_name("resid_post", layer)].float().cpu()
        p = acts[get_act_name("pattern", layer)].float().cpu()  # [n, head, q, k]
        resid.append(r[row, pos])
        last_rows = p[torch.arange(n), :, lengths - 1]  # [n, head, k]
        attn.append(last_rows.mean(1)[row, pos])
    return torch.stack(resid), torch.stack(attn)


def last_token(
    model: HookedTransformer, texts: Sequence[str], layers: Sequence[int], hooks: Sequence[str] = ("resid_post",)
) -> dict[str, Float[torch.Tensor, "layer n d"]]:
    """Activation at the last token of each text, per hook short name (``get_act_name``) and layer."""
    acts, lengths = _run(model, texts, _names(hooks, layers))
    return {hook: _at_last(acts, lengths, hook, layers) for hook in hooks}


def suffix_tokens(
    model: HookedTransformer, texts: Sequence[str], layers: Sequence[int], n_suffix: int
) -> tuple[Float[torch.Tensor, "layer n t d"], Float[torch.Tensor, "layer n t"]]:
    """``resid_post`` at the last ``n_suffix`` tokens of each text, and the head-mean attention the last
    token pays to each of them (``hook_pattern``), aligned from the end (position ``t-1`` = last token)."""
    acts, lengths = _run(model, texts, _names(("resid_post", "pattern"), layers))
    return _at_suffix(acts, lengths, layers, n_suffix)


def steering_label(
    model: HookedTransformer,
    delta: Mapping[str, torch.Tensor],
    texts: Sequence[str],
    layers: Sequence[int],
    alpha: float = 1.0,
) -> Float[torch.Tensor, "layer n d"]:
    """δ = resid_post(W + α·ΔW) − resid_post(W − α·ΔW) at the last token: what steering changes."""
    with steer(model, delta, +alpha):
        plus = last_token(model, texts, layers)["resid_post"]
    with steer(model, delta, -alpha):
        minus = last_token(model, texts, layers)["resid_post"]
    return plus - minus


def pair_label(pair: ModelPair, texts: Sequence[str], layers: Sequence[int]) -> Float[torch.Tensor, "layer n d"]:
    """δ = resid_post(tuned) − resid_post(base) at the last token."""
    return last_token(pair.tuned, texts, layers)["resid_post"] - last_token(pair.base, texts, layers)["resid_post"]


#: What :class:`ExtraCaptures` can hold: the names a recipe's ``needs`` may use besides "model".
CAPTURES = ("clean_all", "persona_mlp")


@dataclass(frozen=True, eq=False)
class ExtraCaptures:
    """Base-model captures on the fit prompts beyond :class:`ProbeActivations`, each None unless asked for.

    ``clean_all``: clean last-token ``resid_post`` at *every* model layer (for the magnitude-turnover
    bases). ``positive_mlp_in``/``negative_mlp_in``: the persona texts' last-token input to the MLP's
    up projection in residual coordinates, x̂ = ln2(resid_mid) with the norm's elementwise weight and
    bias taken off (what ``ln2.hook_normalized`` holds); ``positive_up``/``negative_up``: the up
    projection's output x̂ W_in + b_in (``mlp.hook_pre_linear``; ``mlp.hook_pre`` for ungated MLPs).
    """

    clean_all: Float[torch.Tensor, "all_layers n d"] | None = None
    positive_mlp_in: Float[torch.Tensor, "layer n d"] | None = None
    negative_mlp_in: Float[torch.Tensor, "layer n d"] | None = None
    positive_up: Float[torch.Tensor, "layer n d_mlp"] | None = None
    negative_up: Float[torch.Tensor, "layer n d_mlp"] | None = None


@dataclass(frozen=True, eq=False)
class ProbeActivations:
    """Base-model activations on the *fit* probe prompts, from which activation-derived bases are built.

    ``clean*``: no persona system prompt; ``positive``/``negative``: the sycophantic and the critical
    persona. ``*_tokens`` hold ``resid_post`` on the tokens the two persona texts share at their end
    (the user turn and the generation prompt), ``*_attn`` the head-mean attention the last token pays
    to each of those tokens. ``extra``: the :class:`ExtraCaptures` asked for with
    :func:`probe_activations`' ``needs`` (from the same forward passes; empty by default).
    """

    layers: tuple[int, ...]
    clean: Float[torch.Tensor, "layer n d"]
    clean_pre: Float[torch.Tensor, "layer n d"]
    mlp_out: Float[torch.Tensor, "layer n d"]
    gate_mean: Float[torch.Tensor, "layer d_mlp"]
    positive: Float[torch.Tensor, "layer n d"]
    negative: Float[torch.Tensor, "layer n d"]
    positive_tokens: Float[torch.Tensor, "layer n t d"]
    negative_tokens: Float[torch.Tensor, "layer n t d"]
    positive_attn: Float[torch.Tensor, "layer n t"]
    negative_attn: Float[torch.Tensor, "layer n t"]
    extra: ExtraCaptures = field(default_factory=ExtraCaptures)


def _shared_suffix(model: HookedTransformer, a: Sequence[str], b: Sequence[str]) -> int:
    """The number of final tokens that every pair of texts ``a[i]``, ``b[i]`` has in common."""
    ta, tb = tokenize(model, list(a)), tokenize(model, list(b))
    shared = []
    for i in range(len(a)):
        x, y = ta.tokens[i][ta.mask[i]].flip(0), tb.tokens[i][tb.mask[i]].flip(0)
        n = min(len(x), len(y))
        differ = torch.nonzero(x[:n] != y[:n])
        shared.append(int(differ[0]) if len(differ) else n)
    return min(shared)


def _check_needs(needs: Collection[str]) -> set[str]:
    if isinstance(needs, str) or not isinstance(needs, Collection):
        raise TypeError(f"needs: expected a collection of names from {CAPTURES}, got {needs!r}")
    unknown = set(needs) - set(CAPTURES)
    if unknown:
        raise ValueError(f"needs: unknown captures {sorted(unknown)}; choose from {CAPTURES}")
    return set(needs)


def probe_activations(
    model: HookedTransformer,
    prompts: Sequence[str],
    layers: Sequence[int],
    *,
    positive_system: str,
    negative_system: str,
    chat_template: bool = False,
    needs: Collection[str] = (),
) -> ProbeActivations:
    """Capture everything :func:`interp.subspace.activation_library.activation_bases` needs, in three
    forward passes (clean, positive persona, negative persona).

    The clean texts are the raw prompts (as the subspace-sweep notebook fed them without a system prompt) unless ``chat_template``, which formats them with :func:`interp.prompts.format_prompts`
    (for SmolLM2 that also inserts its default system prompt). The persona texts are always
    chat-templated with their system prompt. ``needs`` (names from :data:`CAPTURES`) adds those
    :class:`ExtraCaptures` to ``.extra``, captured in the same three passes.
    """
    out, extra = _fit_passes(model, prompts, layers, positive_system=positive_system, negative_system=negative_system,
                             chat_template=chat_template, probe=True, needs=needs)
    return ProbeActivations(layers=tuple(layers), **out, extra=extra)


def extra_captures(
    model: HookedTransformer,
    prompts: Sequence[str],
    layers: Sequence[int],
    *,
    positive_system: str,
    negative_system: str,
    needs: Collection[str] = CAPTURES,
    chat_template: bool = False,
) -> ExtraCaptures:
    """The :class:`ExtraCaptures` named in ``needs`` (``"clean_all"``, ``"persona_mlp"``) alone: one
    batched forward pass of the fit prompts per text set it needs (clean; sycophantic; critical). Persona
    texts are chat-templated with their system prompt; clean texts are raw (the notebook's setting), or
    chat-templated with ``chat_template`` (as :func:`probe_activations`, which captures the same in its
    own passes when given ``needs``)."""
    return _fit_passes(model, prompts, layers, positive_system=positive_system, negative_system=negative_system,
                       chat_template=chat_template, probe=False, needs=needs)[1]


def _fit_passes(
    model: HookedTransformer, prompts: Sequence[str], layers: Sequence[int], *, positive_system: str,
    negative_system: str, chat_template: bool, probe: bool, needs: Collection[str],
) -> tuple[dict[str, torch.Tensor], ExtraCaptures]:
    """Each text set (clean, positive, negative) through ``model`` at most once, with every hook that
    :class:`ProbeActivations` (``probe``) and the :class:`ExtraCaptures` in ``needs`` ask of it."""
    if not isinstance(chat_template, bool):
        raise TypeError(f"chat_template: expected a bool, got {type(chat_template).__name__}")
    needs = _check_needs(needs)
    layers = list(layers)
    clean_texts = format_prompts(model, prompts) if chat_template else list(prompts)
    persona_texts = {"positive": format_prompts(model, prompts, positive_system),
                     "negative": format_prompts(model, prompts, negative_system)}
    if probe:
        n_suffix = _shared_suffix(model, persona_texts["positive"], persona_texts["negative"])
        if n_suffix < 1:
            raise ValueError("positive_system/negative_system: the persona texts share no final tokens")
    out: dict[str, torch.Tensor] = {}
    extra: dict[str, torch.Tensor] = {}
    clean_hooks = ("resid_post", "resid_pre", "mlp_out", "pre")
    all_layers = list(range(model.cfg.n_layers))
    if probe or "clean_all" in needs:
        names = (_names(clean_hooks, layers) if probe else []) + (
            _names(["resid_post"], all_layers) if "clean_all" in needs else [])
        acts, lengths = _run(model, clean_texts, list(dict.fromkeys(names)))
        if probe:
            clean = {hook: _at_last(acts, lengths, hook, layers) for hook in clean_hooks}
            act_fn = model.blocks[layers[0]].mlp.act_fn
            out.update(clean=clean["resid_post"], clean_pre=clean["resid_pre"], mlp_out=clean["mlp_out"],
                       gate_mean=act_fn(clean["pre"]).mean(1))
        if "clean_all" in needs:
            extra["clean_all"] = _at_last(acts, lengths, "resid_post", all_layers)
        del acts
    up_hook = "pre_linear" if model.cfg.gated_mlp else "pre"
    if probe or "persona_mlp" in needs:
        for side, texts in persona_texts.items():
            names = (_names(("resid_post", "pattern"), layers) if probe else []) + (
                _names(("resid_mid", up_hook), layers) if "persona_mlp" in needs else [])
            acts, lengths = _run(model, texts, names)
            if probe:
                tokens, attn = _at_suffix(acts, lengths, layers, n_suffix)
                out.update({side: tokens[:, :, -1], f"{side}_tokens": tokens, f"{side}_attn": attn})
            if "persona_mlp" in needs:
                extra[f"{side}_mlp_in"] = _ln2_normalized(model, layers, _at_last(acts, lengths, "resid_mid", layers))
                extra[f"{side}_up"] = _at_last(acts, lengths, up_hook, layers)
            del acts
    return out, ExtraCaptures(**extra)


def _ln2_normalized(model: HookedTransformer, layers: Sequence[int], resid_mid: torch.Tensor) -> torch.Tensor:
    """x̂ = ln2(x) with the norm's elementwise weight (and bias) taken off: the normalised residual."""
    out = []
    for i, layer in enumerate(layers):
        ln = model.blocks[layer].ln2
        y = ln(resid_mid[i].to(model.cfg.device, model.cfg.dtype)).float().cpu()
        b, w = getattr(ln, "b", None), getattr(ln, "w", None)
        if isinstance(b, torch.Tensor):
            y = y - b.detach().float().cpu()
        if isinstance(w, torch.Tensor):
            y = y / w.detach().float().cpu()
        out.append(y)
    return torch.stack(out)
