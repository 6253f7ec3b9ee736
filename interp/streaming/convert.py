"""One layer of a checkpoint as a one-block HookedTransformer, converted and processed as a whole model is.

Layer ``l`` is converted by TransformerLens' own weight converter for the checkpoint's architecture
(``config.json`` ``architectures[0]``), run on a transformers model built on the meta device with one
layer, whose parameters are layer ``l``'s tensors read from the checkpoint (the rest of the model —
token embedding, final norm, unembedding — are one-row stand-ins unless the caller asks for some
embedding rows, or with ``unembed=True`` those tokens' unembedding columns and the final norm too). The converted block is then processed by interp's loader (:mod:`interp.loading`,
the same ``ProcessWeights`` options as ``load_model``) into a HookedTransformer with ``n_layers=1``
whose configuration is the model's with the per-layer fields (``attn_types``) of layer ``l``.

Every processing step TransformerLens applies is per layer (folding ``ln1``/``ln2`` into the next
weights, centring writing weights row by row, folding ``b_V`` into ``b_O``); embedding rows are centred
row by row and ``ln_final`` is folded into each column of ``W_U``, so a subset of tokens is processed
as in the whole model, except centring ``W_U`` over the vocabulary, a whole-vocabulary mean that
``unembed=True`` leaves to the caller (:mod:`interp.streaming.vocab` applies it to its sums).

``neurons=(start, stop)`` converts only those MLP neurons (the block's ``d_mlp`` becomes
``stop - start``): the MLP's output is a sum over neurons, so a layer too large for memory is taken
in blocks of neurons. ``part="attn"`` builds an attention-only block (no MLP weight is read);
``part="mlp"`` reads no attention weight and, where the architecture takes ``head_dim`` from its
config, gives the block a one-head stand-in attention of width 2 (nothing to fill or process).

The configuration comes from :func:`tl_config_dict`, the loader's architecture-based configuration
(``config.json`` ``architectures[0]``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import torch
from transformer_lens import HookedTransformer

from interp.streaming.checkpoint import Checkpoint

__all__ = ["LayerPart", "layer_model", "tl_config_dict"]

LayerPart = Literal["all", "attn", "mlp"]

_DROP = ("dtype", "device", "n_params")


def tl_config_dict(ckpt: Checkpoint) -> dict[str, Any]:
    """The TransformerLens config (as a dict) of a checkpoint, from its ``config.json``: the loader's
    architecture-based configuration (:func:`interp.loading.checkpoint.tl_config`)."""
    from interp.loading.checkpoint import tl_config

    cfg = tl_config(ckpt.folder, ckpt.config, label="source")
    cfg = {k: v for k, v in cfg.items() if k not in _DROP}
    cfg["init_weights"] = False
    cfg["tokenizer_name"] = None  # one-block models carry no tokenizer; the StreamedModel holds it
    if cfg.get("scale_attn_by_inverse_layer_idx"):
        raise ValueError("source: attention scaled by the inverse layer index cannot be streamed one block at a time")
    return cfg


# ------------------------------------------------------------------------------------- one layer


def layer_cfg_dict(
    cfg: dict[str, Any], layer: int, *, part: LayerPart = "all", d_mlp: int | None = None, d_vocab: int = 1
) -> dict[str, Any]:
    """The config of a one-block model holding layer ``layer`` of a model with config ``cfg``."""
    n_layers = int(cfg["n_layers"])
    out = dict(cfg)
    for key, value in cfg.items():  # per-layer lists (attn_types): layer ``layer``'s entry
        if isinstance(value, (list, tuple)) and len(value) == n_layers and key != "n_layers":
            out[key] = [value[layer]]
    out.update(n_layers=1, d_vocab=d_vocab, d_vocab_out=d_vocab)
    if part == "attn":
        out["attn_only"] = True
    if d_mlp is not None:
        out["d_mlp"] = d_mlp
    return out


# A block converted for its MLP only gets this stand-in attention (one head of width 2; never read).
_STUB_ATTENTION_HF = {"num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 2}
_STUB_ATTENTION_TL = {"n_heads": 1, "d_head": 2, "n_key_value_heads": 1, "rotary_dim": 2}
# TransformerLens sizes these architectures' q/k norms by d_model, not by the heads: no stand-in
# (their MLP-only blocks carry zero attention weights of the real shape, never read from disk).
_FULL_WIDTH_QK_NORM = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")


def _hf_config(ckpt: Checkpoint, layer: int, *, d_mlp: int | None, vocab: int, stub_attention: bool = False) -> Any:
    """transformers' config of a one-layer model: layer ``layer``'s per-layer entries, ``vocab`` tokens."""
    from transformers import AutoConfig

    raw = dict(ckpt.config)
    if stub_attention:
        raw.update(_STUB_ATTENTION_HF)
    n_layers = int(raw["num_hidden_layers"]) if "num_hidden_layers" in raw else int(raw.get("n_layer", 0))
    for key, value in list(raw.items()):
        if isinstance(value, list) and len(value) == n_layers and key not in ("architectures",):
            raw[key] = [value[layer]]
    for key in ("num_hidden_layers", "n_layer"):
        if key in raw:
            raw[key] = 1
    if d_mlp is not None:
        for key in ("intermediate_size", "n_inner"):
            if key in raw or key == "intermediate_size":
                raw[key] = d_mlp
    raw["vocab_size"] = vocab
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        raw[key] = None
    model_type = raw.pop("model_type")
    return AutoConfig.for_model(model_type, **{k: v for k, v in raw.items() if not k.startswith("_")})


def full_d_mlp(cfg: dict[str, Any]) -> int:
    return int(cfg["d_mlp"])


_LAYER_RE = re.compile(r"^(.*?)\.0\.(.*)$")


def layer_model(
    ckpt: Checkpoint,
    cfg: dict[str, Any],
    layer: int,
    *,
    processed: bool,
    part: LayerPart = "all",
    neurons: tuple[int, int] | None = None,
    vocab_rows: list[int] | None = None,
    unembed: bool = False,
    device: str | torch.device = "cpu",
) -> HookedTransformer:
    """Layer ``layer`` of ``ckpt`` as a one-block HookedTransformer (float32), see the module docstring.

    ``vocab_rows``: token ids whose embeddings the model holds (its token ``i`` is ``vocab_rows[i]``);
    default one zero row. ``neurons``: only MLP neurons ``start:stop``. ``part="attn"``: no MLP.
    ``unembed``: the model also holds those tokens' unembedding columns (``W_U``, ``b_U``; a tied
    unembedding is the embedding's rows) and the real final norm, processed as in ``load_model``
    except the centring over the vocabulary, a whole-vocabulary mean that the caller applies
    (:func:`interp.loading.centres_unembed`).
    """
    from transformers import AutoModelForCausalLM

    from interp.loading import build_model  # the loader's processing: one implementation for both paths

    n_mlp = full_d_mlp(cfg)
    start, stop = neurons if neurons is not None else (0, n_mlp)
    if not 0 <= start < stop <= n_mlp:
        raise ValueError(f"neurons: expected 0 <= start < stop <= {n_mlp}, got {neurons!r}")
    block_mlp = stop - start if neurons is not None else None
    vocab = len(vocab_rows) if vocab_rows else 1
    hf_model = None
    if part == "mlp" and cfg.get("original_architecture") not in _FULL_WIDTH_QK_NORM:
        # a one-head stand-in attention, where the architecture takes head_dim from the config
        with torch.device("meta"):
            hf_model = AutoModelForCausalLM.from_config(
                _hf_config(ckpt, layer, d_mlp=block_mlp, vocab=vocab, stub_attention=True))
        if sum(p.numel() for n, p in hf_model.named_parameters() if _is_attention(n)) > 64 * int(cfg["d_model"]):
            hf_model = None
    stub = hf_model is not None
    if hf_model is None:  # an attention-only block gets a one-neuron stand-in MLP (dropped after conversion)
        with torch.device("meta"):
            hf_model = AutoModelForCausalLM.from_config(
                _hf_config(ckpt, layer, d_mlp=1 if part == "attn" else block_mlp, vocab=vocab))
    state, tied = {}, {}
    for name, param in hf_model.named_parameters(remove_duplicate=False):  # tied lm_head too
        if unembed and id(param) in tied:  # a tied unembedding: the embedding's tensor, as loaded models tie it
            state[name] = state[tied[id(param)]]
            continue
        tied[id(param)] = name
        state[name] = _hf_tensor(ckpt, name, tuple(param.shape), layer, part=part,
                                 neurons=(start, stop) if neurons is not None else None,
                                 n_mlp=n_mlp, vocab_rows=vocab_rows, unembed=unembed)
    hf_model.load_state_dict(state, strict=False, assign=True)
    one_cfg = layer_cfg_dict(cfg, layer, part=part, d_mlp=block_mlp, d_vocab=vocab)
    if stub:
        one_cfg.update(_STUB_ATTENTION_TL)
        if cfg.get("n_key_value_heads") is None:  # the model's attention kind (plain or grouped) is kept
            one_cfg["n_key_value_heads"] = None
    tl_state = _convert(ckpt, hf_model, one_cfg)
    del hf_model, state
    # the converted tensors are this layer's own (read for it alone): processed without defensive copies
    return build_model(one_cfg, tl_state, None, processed=processed, dtype=torch.float32, device=device, owned=True,
                       center_unembed=not unembed)


def _convert(ckpt: Checkpoint, hf_model: Any, cfg_dict: dict[str, Any]) -> dict[str, torch.Tensor]:
    """TransformerLens' converter for the architecture, on the one-layer transformers model."""
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import get_pretrained_state_dict

    cfg = HookedTransformerConfig.from_dict({**cfg_dict, "attn_only": False})
    state = get_pretrained_state_dict(str(ckpt.folder), cfg, hf_model=hf_model, dtype=torch.float32)
    if cfg_dict.get("attn_only"):
        state = {k: v for k, v in state.items() if ".mlp." not in k and ".ln2" not in k}
    return {k: v.detach().to(torch.float32) for k, v in state.items()}


def _is_attention(name: str) -> bool:
    return (".self_attn." in name or ".attn." in name) and ".mlp." not in name


def _ckpt_name(ckpt: Checkpoint, name: str) -> str | None:
    """The checkpoint's name for a transformers parameter name (with or without the model prefix)."""
    if ckpt.has(name):
        return name
    head, _, tail = name.partition(".")
    if tail and ckpt.has(tail):
        return tail
    return None


def _hf_tensor(
    ckpt: Checkpoint,
    name: str,
    shape: tuple[int, ...],
    layer: int,
    *,
    part: LayerPart,
    neurons: tuple[int, int] | None,
    n_mlp: int,
    vocab_rows: list[int] | None,
    unembed: bool = False,
) -> torch.Tensor:
    """The value of one parameter of the one-layer transformers model."""
    match = _LAYER_RE.match(name)
    if match is None:  # embeddings, final norm, unembedding, learned positions
        return _outside_tensor(ckpt, name, shape, vocab_rows, unembed)
    wanted = f"{match.group(1)}.{layer}.{match.group(2)}"
    source = _ckpt_name(ckpt, wanted)
    if source is None:
        raise ValueError(f"source: {ckpt.folder} has no tensor {wanted!r} (layer {layer}); is the checkpoint incomplete?")
    in_mlp = ".mlp." in name
    if part == "attn" and in_mlp:
        return torch.zeros(shape)  # the one-neuron stand-in MLP of an attention-only block
    if part == "mlp" and _is_attention(name):
        return torch.zeros(shape)  # the MLP pass never reads attention weights
    if in_mlp and neurons is not None:
        tensor = _neuron_slice(ckpt, source, shape, neurons, n_mlp)
    else:
        tensor = ckpt.read(source, dtype=torch.float32)
    if tuple(tensor.shape) != shape:
        raise ValueError(f"source: tensor {source!r} has shape {tuple(tensor.shape)}, the config implies {shape}")
    return tensor


def _neuron_slice(
    ckpt: Checkpoint, source: str, shape: tuple[int, ...], neurons: tuple[int, int], n_mlp: int
) -> torch.Tensor:
    """Neurons ``start:stop`` of MLP tensor ``source``, shaped as the block model's ``shape``: the one axis
    where the stored tensor is longer holds ``k`` runs of ``d_mlp`` neurons (``k`` = 2 for a fused
    gate/up projection such as Phi-3's ``gate_up_proj``), and the same neurons are cut from each run.
    A tensor without a neuron axis (an output bias) is read whole."""
    full = ckpt.shape(source)
    if len(full) != len(shape):
        raise ValueError(f"source: tensor {source!r} has shape {full}, the config implies {shape}")
    axes = [i for i, (a, b) in enumerate(zip(full, shape, strict=True)) if a != b]
    if not axes:
        return ckpt.read(source, dtype=torch.float32)
    axis = axes[0]
    start, stop = neurons
    runs = full[axis] // n_mlp
    if len(axes) != 1 or len(full) > 2 or full[axis] != runs * n_mlp or shape[axis] != runs * (stop - start):
        raise ValueError(
            f"neurons: MLP tensor {source!r} of shape {full} has no axis of d_mlp={n_mlp} neurons to cut "
            f"to {shape}; read this MLP whole (neuron_block=None)"
        )
    pieces = []
    for run in range(runs):
        cut = slice(run * n_mlp + start, run * n_mlp + stop)
        pieces.append(ckpt.read(source, rows=cut, dtype=torch.float32) if axis == 0 else
                      ckpt.read(source, cols=cut, dtype=torch.float32))
    return pieces[0] if runs == 1 else torch.cat(pieces, dim=axis)


def _outside_tensor(
    ckpt: Checkpoint, name: str, shape: tuple[int, ...], vocab_rows: list[int] | None, unembed: bool = False
) -> torch.Tensor:
    """Embedding rows and learned positions when the caller embeds tokens (``vocab_rows``), with
    ``unembed`` also the unembedding's rows (and bias) and the final norm; otherwise a stand-in
    (zeros; ones for a norm gain), never read: the one-block model only runs its block."""
    source = _ckpt_name(ckpt, name)
    wanted = (len(shape) == 2 and "lm_head" not in name) or (unembed and len(shape) in (1, 2))
    if vocab_rows and source is not None and wanted:
        full = ckpt.shape(source)
        if full[0] == ckpt.config.get("vocab_size") and shape[0] == len(vocab_rows):  # token (un)embedding rows
            return ckpt.read_rows(source, sorted(vocab_rows)).to(torch.float32)[_order(vocab_rows)]
        if tuple(full) == shape:  # learned positional embedding; with unembed the final norm
            return ckpt.read(source).to(torch.float32)
    is_gain = len(shape) == 1 and name.endswith("weight")
    return torch.ones(shape) if is_gain else torch.zeros(shape)


def _order(rows: list[int]) -> torch.Tensor:
    """Positions in ``sorted(rows)`` of each entry of ``rows`` (rows are unique)."""
    ranks = {r: i for i, r in enumerate(sorted(rows))}
    return torch.tensor([ranks[r] for r in rows], dtype=torch.long)
