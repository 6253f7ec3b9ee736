"""Residual-stream captures for the subspace sweep: last-token activations and the steering label.

Prompts of different lengths are right-padded into one batch with an attention mask
(:func:`interp.prompts.tokenize`, :func:`interp.prompts.run_batched`), so the last *real* token of
each prompt sees exactly what it would see alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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


def last_token(
    model: HookedTransformer, texts: Sequence[str], layers: Sequence[int], hooks: Sequence[str] = ("resid_post",)
) -> dict[str, Float[torch.Tensor, "layer n d"]]:
    """Activation at the last token of each text, per hook short name (``get_act_name``) and layer."""
    names = {(hook, layer): get_act_name(hook, layer) for hook in hooks for layer in layers}
    acts, lengths = _run(model, texts, list(names.values()))
    idx = torch.arange(len(texts))
    last = (lengths - 1).to(next(iter(acts.values())).device)
    return {
        hook: torch.stack([acts[names[(hook, layer)]][idx, last].float().cpu() for layer in layers])
        for hook in hooks
    }


def suffix_tokens(
    model: HookedTransformer, texts: Sequence[str], layers: Sequence[int], n_suffix: int
) -> tuple[Float[torch.Tensor, "layer n t d"], Float[torch.Tensor, "layer n t"]]:
    """``resid_post`` at the last ``n_suffix`` tokens of each text, and the head-mean attention the last
    token pays to each of them (``hook_pattern``), aligned from the end (position ``t-1`` = last token)."""
    names = [get_act_name("resid_post", layer) for layer in layers]
    names += [get_act_name("pattern", layer) for layer in layers]
    acts, lengths = _run(model, texts, names)
    if int(lengths.min()) < n_suffix:
        raise ValueError(f"n_suffix: {n_suffix} is longer than the shortest text ({int(lengths.min())} tokens)")
    offsets = torch.arange(n_suffix)
    pos = (lengths[:, None] - n_suffix + offsets[None]).long()  # [n, t]
    row = torch.arange(len(texts))[:, None]
    resid, attn = [], []
    for layer in layers:  # gathers only; the forward pass above is one batched call
        r = acts[get_act_name("resid_post", layer)].float().cpu()
        p = acts[get_act_name("pattern", layer)].float().cpu()  # [n, head, q, k]
        resid.append(r[row, pos])
        last_rows = p[torch.arange(len(texts)), :, lengths - 1]  # [n, head, k]
        attn.append(last_rows.mean(1)[row, pos])
    return torch.stack(resid), torch.stack(attn)


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


@dataclass(frozen=True, eq=False)
class ProbeActivations:
    """Base-model activations on the *fit* probe prompts, from which activation-derived bases are built.

    ``clean*``: no persona system prompt; ``positive``/``negative``: the sycophantic and the critical
    persona. ``*_tokens`` hold ``resid_post`` on the tokens the two persona texts share at their end
    (the user turn and the generation prompt), ``*_attn`` the head-mean attention the last token pays
    to each of those tokens.
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


def probe_activations(
    model: HookedTransformer,
    prompts: Sequence[str],
    layers: Sequence[int],
    *,
    positive_system: str,
    negative_system: str,
    chat_template: bool = False,
) -> ProbeActivations:
    """Capture everything :func:`interp.subspace.activation_library.activation_bases` needs, in three forward passes.

    The clean texts are the raw prompts (as the subspace-sweep notebook fed them without a system prompt) unless ``chat_template``, which formats them with :func:`interp.prompts.format_prompts`
    (for SmolLM2 that also inserts its default system prompt). The persona texts are always
    chat-templated with their system prompt.
    """
    if not isinstance(chat_template, bool):
        raise TypeError(f"chat_template: expected a bool, got {type(chat_template).__name__}")
    clean_texts = format_prompts(model, prompts) if chat_template else list(prompts)
    pos_texts = format_prompts(model, prompts, positive_system)
    neg_texts = format_prompts(model, prompts, negative_system)
    clean = last_token(model, clean_texts, layers, hooks=("resid_post", "resid_pre", "mlp_out", "pre"))
    act_fn = model.blocks[layers[0]].mlp.act_fn
    gate_mean = act_fn(clean["pre"]).mean(1)
    n_suffix = _shared_suffix(model, pos_texts, neg_texts)
    if n_suffix < 1:
        raise ValueError("positive_system/negative_system: the persona texts share no final tokens")
    pos_tokens, pos_attn = suffix_tokens(model, pos_texts, layers, n_suffix)
    neg_tokens, neg_attn = suffix_tokens(model, neg_texts, layers, n_suffix)
    return ProbeActivations(
        layers=tuple(layers),
        clean=clean["resid_post"],
        clean_pre=clean["resid_pre"],
        mlp_out=clean["mlp_out"],
        gate_mean=gate_mean,
        positive=pos_tokens[:, :, -1],
        negative=neg_tokens[:, :, -1],
        positive_tokens=pos_tokens,
        negative_tokens=neg_tokens,
        positive_attn=pos_attn,
        negative_attn=neg_attn,
    )
