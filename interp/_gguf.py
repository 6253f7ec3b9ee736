"""Read a llama.cpp GGUF file into dequantized tensors with Hugging Face parameter names.

Only the two architectures interp ships offline models for are mapped (``llama`` and
``gemma3``); both are read tensor by tensor with :func:`gguf.quants.dequantize`. Files with rope
scaling, experts or unusual head sizes are refused by name (:func:`check_supported`).
llama.cpp stores Llama q/k rows permuted for its interleaved rotary layout; they are
un-permuted here so that the result equals the original Hugging Face checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import einops
import numpy as np
import torch

_LAYER_NAMES: dict[str, dict[str, str]] = {
    "llama": {
        "attn_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    },
    "gemma3": {
        "attn_norm": "input_layernorm",
        "post_attention_norm": "post_attention_layernorm",
        "ffn_norm": "pre_feedforward_layernorm",
        "post_ffw_norm": "post_feedforward_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "attn_q_norm": "self_attn.q_norm",
        "attn_k_norm": "self_attn.k_norm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    },
}
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
SUPPORTED_ARCHITECTURES = tuple(_LAYER_NAMES)


@dataclass(frozen=True)
class GGUFContents:
    """The metadata and the dequantized float32 tensors of one GGUF file, named as in Hugging Face."""

    architecture: str
    metadata: dict[str, Any]
    state_dict: dict[str, torch.Tensor]


def _field_value(field: Any) -> Any:
    try:
        return field.contents()
    except Exception:  # pragma: no cover - exotic field types are not needed
        return None


def read_metadata(path: str | Path, *, skip_prefix: str = "tokenizer.ggml.") -> dict[str, Any]:
    """The GGUF key/value metadata, without the (large) tokenizer vocabulary arrays."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    keep = ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token",
            "tokenizer.ggml.padding_token_id", "tokenizer.ggml.model", "tokenizer.ggml.pre")
    return {
        name: _field_value(field)
        for name, field in reader.fields.items()
        if not name.startswith(skip_prefix) or name in keep
    }


def unpermute_rotary_rows(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation: rows (head, pair, 2) back to (head, 2, pair)."""
    return einops.rearrange(weight, "(h pair two) d -> (h two pair) d", h=n_heads, two=2)


def check_supported(arch: str, metadata: dict[str, Any], tensor_names: list[str], path: str | Path) -> None:
    """Refuse, by name, what a GGUF file holds that interp would otherwise convert wrongly.

    Rope scaling of any kind (Llama 3.1+ files carry it as a ``rope_freqs`` tensor of per-frequency
    factors, others as ``{arch}.rope.scaling.type``), mixture-of-experts layers, a head size other
    than ``embedding_length / head_count``, and partial rotary embeddings.
    """
    def refuse(what: str) -> None:
        raise ValueError(f"path: {path} is a {arch} GGUF with {what}, which interp does not convert; "
                         "load the original Hugging Face checkpoint folder instead")

    if any(name.startswith("rope_freqs") for name in tensor_names):
        refuse("per-frequency rope scaling (a rope_freqs tensor, as Llama 3.1+ files have)")
    scaling = metadata.get(f"{arch}.rope.scaling.type")
    if scaling not in (None, "", "none"):
        refuse(f"rope scaling {scaling!r}")
    factor = metadata.get(f"{arch}.rope.scaling.factor")
    if factor not in (None, 0, 0.0, 1, 1.0):
        refuse(f"rope scaling factor {factor}")
    if int(metadata.get(f"{arch}.expert_count") or 0) > 0:
        refuse(f"{metadata[f'{arch}.expert_count']} experts per layer (mixture of experts)")
    if arch == "llama":
        d_head = int(metadata["llama.embedding_length"]) // int(metadata["llama.attention.head_count"])
        for key in ("llama.attention.key_length", "llama.attention.value_length", "llama.rope.dimension_count"):
            if key in metadata and int(metadata[key]) != d_head:
                refuse(f"{key.rsplit('.', 1)[-1].replace('_', ' ')} {int(metadata[key])} ≠ embedding_length / "
                       f"head_count = {d_head}")


def read_gguf(path: str | Path) -> GGUFContents:
    """Dequantize every tensor of a GGUF file into float32 with Hugging Face names."""
    import gguf
    from gguf.quants import dequantize

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no GGUF file at {path}")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:
        raise ValueError(f"path: {path} is not a readable GGUF file ({exc})") from exc
    arch = _field_value(reader.fields["general.architecture"])
    if arch not in _LAYER_NAMES:
        raise ValueError(
            f"path: GGUF architecture {arch!r} is not supported; interp reads {SUPPORTED_ARCHITECTURES}"
        )
    metadata = read_metadata(path)
    check_supported(arch, metadata, [tensor.name for tensor in reader.tensors], path)
    n_heads = int(metadata[f"{arch}.attention.head_count"])
    n_kv_heads = int(metadata.get(f"{arch}.attention.head_count_kv", n_heads))
    layer_names = _LAYER_NAMES[arch]
    state: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        array = dequantize(tensor.data, tensor.tensor_type)
        value = torch.from_numpy(np.array(array, dtype=np.float32, copy=True))
        stem, _, kind = tensor.name.rpartition(".")
        if stem.startswith("blk."):
            _, layer, short = stem.split(".", 2)
            if short not in layer_names:
                raise ValueError(f"path: unexpected tensor {tensor.name!r} in a {arch} GGUF file")
            if arch == "llama" and short == "attn_q":
                value = unpermute_rotary_rows(value, n_heads)
            elif arch == "llama" and short == "attn_k":
                value = unpermute_rotary_rows(value, n_kv_heads)
            name = f"model.layers.{layer}.{layer_names[short]}.{kind}"
        elif stem in _GLOBAL_NAMES:
            name = f"{_GLOBAL_NAMES[stem]}.{kind}"
        else:
            raise ValueError(f"path: unexpected tensor {tensor.name!r} in a {arch} GGUF file")
        state[name] = value
    return GGUFContents(architecture=arch, metadata=metadata, state_dict=state)
