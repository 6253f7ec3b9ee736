"""Read a PEFT LoRA adapter and express its weight delta in TransformerLens' parameter layout.

A PEFT adapter folder holds ``adapter_config.json`` and ``adapter_model.safetensors``. For each
target module, ΔW = s · B A with B ``[out, r]``, A ``[r, in]`` and s = α / r (α / √r with rsLoRA);
the delta is then rearranged exactly as TransformerLens' own Llama/Gemma converters rearrange the
Hugging Face weight, so it can be added to an *unprocessed* TransformerLens state dict.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import einops
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformerConfig

_KEY = re.compile(
    r"layers\.(?P<layer>\d+)\.(?P<block>self_attn|mlp)\.(?P<module>\w+?)\.lora_(?P<ab>[AB])(?:\.[\w-]+)?\.weight$"
)
SUPPORTED_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraAdapter:
    """A PEFT LoRA adapter: its config and the low-rank factors per ``(layer, module)``."""

    path: Path
    config: dict[str, Any]
    factors: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]  # (A [r, in], B [out, r])

    @property
    def layers(self) -> list[int]:
        """The layers the adapter touches, sorted."""
        return sorted({layer for layer, _ in self.factors})

    @property
    def target_modules(self) -> list[str]:
        """The Hugging Face module names the adapter touches (``q_proj``...)."""
        return sorted({module for _, module in self.factors})

    def scale(self, layer: int, module: str) -> float:
        """s = α / r (or α / √r with ``use_rslora``), honouring ``rank_pattern``/``alpha_pattern``."""
        key = f"model.layers.{layer}.{'mlp' if module.endswith(('gate_proj', 'up_proj', 'down_proj')) else 'self_attn'}.{module}"
        r = _pattern_value(self.config.get("rank_pattern") or {}, key, self.config["r"])
        alpha = _pattern_value(self.config.get("alpha_pattern") or {}, key, self.config["lora_alpha"])
        return alpha / math.sqrt(r) if self.config.get("use_rslora") else alpha / r

    def delta_hf(self, layer: int, module: str) -> Float[torch.Tensor, "out d_in"]:
        """ΔW = s · B A in the Hugging Face ``[out_features, in_features]`` layout."""
        A, B = self.factors[(layer, module)]
        return self.scale(layer, module) * (B.float() @ A.float())


def _pattern_value(pattern: dict[str, Any], key: str, default: Any) -> Any:
    for pat, value in pattern.items():
        if re.match(rf"(.*\.)?{pat}$", key):
            return value
    return default


def read_lora_adapter(path: str | Path) -> LoraAdapter:
    """Read a PEFT LoRA adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"adapter_path: {folder} is not a folder (expected a PEFT adapter folder)")
    config_path = folder / "adapter_config.json"
    weights_path = folder / "adapter_model.safetensors"
    if not config_path.is_file():
        raise FileNotFoundError(f"adapter_path: {folder} has no adapter_config.json")
    if not weights_path.is_file():
        extra = " (found adapter_model.bin: pickled adapters are not loaded; re-save with safetensors)" if (
            folder / "adapter_model.bin").exists() else ""
        raise FileNotFoundError(f"adapter_path: {folder} has no adapter_model.safetensors{extra}")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"adapter_path: {config_path} is not valid JSON ({exc})") from exc
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise ValueError(f"adapter_path: peft_type is {peft_type!r}; only LORA adapters are supported")
    for field in ("r", "lora_alpha"):
        if field not in config:
            raise ValueError(f"adapter_path: adapter_config.json lacks {field!r}")
    if config.get("use_dora"):
        raise ValueError("adapter_path: DoRA adapters (use_dora=true) are not supported")
    if config.get("modules_to_save"):
        raise ValueError(f"adapter_path: modules_to_save={config['modules_to_save']} is not supported")
    if config.get("bias", "none") != "none":
        raise ValueError(f"adapter_path: bias={config['bias']!r} is not supported (expected 'none')")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"adapter_path: {weights_path} is not a readable safetensors file ({exc})") from exc
    halves: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        match = _KEY.search(key)
        if match is None:
            raise ValueError(f"adapter_path: unexpected tensor {key!r} (expected '...layers.N.self_attn|mlp.MODULE.lora_A|B.weight')")
        module = match["module"]
        if module not in SUPPORTED_TARGETS:
            raise ValueError(
                f"adapter_path: target module {module!r} is not supported; supported: {', '.join(SUPPORTED_TARGETS)}"
            )
        halves.setdefault((int(match["layer"]), module), {})[match["ab"]] = value
    factors = {}
    for where, pair in halves.items():
        if set(pair) != {"A", "B"}:
            raise ValueError(f"adapter_path: layer {where[0]} {where[1]} has lora_{''.join(pair)} but not both A and B")
        A, B = pair["A"], pair["B"]
        if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[1]:
            raise ValueError(
                f"adapter_path: layer {where[0]} {where[1]} has incompatible factors A{tuple(A.shape)} B{tuple(B.shape)}"
            )
        factors[where] = (A, B)
    if not factors:
        raise ValueError(f"adapter_path: {weights_path} holds no LoRA factors")
    return LoraAdapter(folder, config, factors)


def lora_delta(adapter: LoraAdapter, cfg: HookedTransformerConfig) -> dict[str, torch.Tensor]:
    """The adapter's ΔW per TransformerLens parameter (unprocessed layout), checked against ``cfg``."""
    n_heads, d_head, d_model = cfg.n_heads, cfg.d_head, cfg.d_model
    n_kv = cfg.n_key_value_heads or n_heads
    kv_prefix = "_" if cfg.n_key_value_heads is not None else ""
    expected = {
        "q_proj": ((n_heads * d_head, d_model), "attn.W_Q", "(n h) m -> n m h", n_heads),
        "k_proj": ((n_kv * d_head, d_model), f"attn.{kv_prefix}W_K", "(n h) m -> n m h", n_kv),
        "v_proj": ((n_kv * d_head, d_model), f"attn.{kv_prefix}W_V", "(n h) m -> n m h", n_kv),
        "o_proj": ((d_model, n_heads * d_head), "attn.W_O", "m (n h) -> n h m", n_heads),
        "gate_proj": ((cfg.d_mlp, d_model), "mlp.W_gate", "f m -> m f", None),
        "up_proj": ((cfg.d_mlp, d_model), "mlp.W_in", "f m -> m f", None),
        "down_proj": ((d_model, cfg.d_mlp), "mlp.W_out", "m f -> f m", None),
    }
    out: dict[str, torch.Tensor] = {}
    for layer, module in sorted(adapter.factors):
        if layer >= cfg.n_layers:
            raise ValueError(f"adapter_path: the adapter touches layer {layer} but the model has {cfg.n_layers} layers")
        if module in ("gate_proj",) and not cfg.gated_mlp:
            raise ValueError("adapter_path: the adapter targets gate_proj but the model's MLP is not gated")
        shape, tl_name, pattern, n = expected[module]
        delta = adapter.delta_hf(layer, module)
        if tuple(delta.shape) != shape:
            raise ValueError(
                f"adapter_path: layer {layer} {module} delta has shape {tuple(delta.shape)}, "
                f"but the base model needs {shape}: the adapter was trained on another architecture"
            )
        kwargs = {"n": n} if n is not None else {}
        out[f"blocks.{layer}.{tl_name}"] = einops.rearrange(delta, pattern, **kwargs).contiguous()
    return out
