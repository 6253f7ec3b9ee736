"""Read a PEFT LoRA adapter and express its weight delta on a base model.

A PEFT adapter folder holds ``adapter_config.json`` and ``adapter_model.safetensors``. For each
target module, ΔW = s · B A with B ``[out, r]``, A ``[r, in]`` and s = α / r (α / √r with rsLoRA,
``rank_pattern``/``alpha_pattern`` per module). The delta is either added to a transformers model's
weights (:func:`merge_lora`, transposed for GPT-2's ``Conv1D``, whose weight is ``[in, out]``), which
TransformerLens' converter then converts — any module of any layer the base has, fused projections
such as Phi-3's ``qkv_proj``/``gate_up_proj`` included — or rearranged exactly as TransformerLens'
Llama/Gemma converters rearrange the Hugging Face weight (:func:`lora_delta`, only the separate
projections in :data:`TL_LAYOUT_TARGETS`), to be added to an *unprocessed* TransformerLens state dict
(the GGUF models, whose Hugging Face weights are not kept).
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
    r"^(?:base_model\.model\.)?(?P<path>(?:.*\.)?(?:layers|h)\.(?P<layer>\d+)\.(?P<sub>(?:\w+\.)*?(?P<module>\w+?)))"
    r"\.lora_(?P<ab>[AB])(?:\.[\w-]+)?\.weight$"
)
# The modules :func:`lora_delta` can rearrange into TransformerLens' layout (``block.module``): the
# separate projections of the Llama family (Llama, Mistral, Qwen 2/3, Gemma 2/3, OLMo 2), the
# architectures of the GGUF / registry bases. Any other module is merged on the Hugging Face side.
TL_LAYOUT_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")  # the keys of lora_delta's table


@dataclass(frozen=True)
class LoraAdapter:
    """A PEFT LoRA adapter: its config and the low-rank factors per ``(layer, "block.module")``."""

    path: Path
    config: dict[str, Any]
    factors: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]  # (A [r, in], B [out, r])
    module_paths: dict[tuple[int, str], str]  # the module's name in the transformers model

    @property
    def layers(self) -> list[int]:
        """The layers the adapter touches, sorted."""
        return sorted({layer for layer, _ in self.factors})

    @property
    def target_modules(self) -> list[str]:
        """The Hugging Face module names the adapter touches (``q_proj``...)."""
        return sorted({sub.rsplit(".", 1)[-1] for _, sub in self.factors})

    def scale(self, layer: int, sub: str) -> float:
        """s = α / r (or α / √r with ``use_rslora``), honouring ``rank_pattern``/``alpha_pattern``."""
        key = self.module_paths[(layer, sub)]
        r = _pattern_value(self.config.get("rank_pattern") or {}, key, self.config["r"])
        alpha = _pattern_value(self.config.get("alpha_pattern") or {}, key, self.config["lora_alpha"])
        return alpha / math.sqrt(r) if self.config.get("use_rslora") else alpha / r

    def delta_hf(self, layer: int, sub: str) -> Float[torch.Tensor, "out d_in"]:
        """ΔW = s · B A in the ``[out_features, in_features]`` layout of ``nn.Linear``."""
        A, B = self.factors[(layer, sub)]
        return self.scale(layer, sub) * (B.float() @ A.float())


def _pattern_value(pattern: dict[str, Any], key: str, default: Any) -> Any:
    for pat, value in pattern.items():
        if re.match(rf"(.*\.)?({pat})$", key):  # as PEFT's get_pattern_key
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
    for field in ("lora_bias", "use_qalora", "use_bdlora", "target_parameters", "layer_replication"):
        if config.get(field):
            raise ValueError(f"adapter_path: {field}={config[field]!r} is not supported (plain LoRA only)")
    if config.get("bias", "none") != "none":
        raise ValueError(f"adapter_path: bias={config['bias']!r} is not supported (expected 'none')")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"adapter_path: {weights_path} is not a readable safetensors file ({exc})") from exc
    halves: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    paths: dict[tuple[int, str], str] = {}
    for key, value in tensors.items():
        match = _KEY.search(key)
        if match is None:
            raise ValueError(f"adapter_path: unexpected tensor {key!r} (expected a LoRA factor of a module inside a "
                             "layer: '...layers.N.MODULE.lora_A|B.weight', or GPT-2's '...h.N.MODULE...')")
        where = (int(match["layer"]), match["sub"])
        halves.setdefault(where, {})[match["ab"]] = value
        paths[where] = match["path"]
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
    return LoraAdapter(folder, config, factors, paths)


def lora_delta(adapter: LoraAdapter, cfg: HookedTransformerConfig) -> dict[str, torch.Tensor]:
    """The adapter's ΔW per TransformerLens parameter (unprocessed layout), checked against ``cfg``.

    Only the separate projections of :data:`TL_LAYOUT_TARGETS` have a rearrangement; any other module
    (a fused ``qkv_proj``/``gate_up_proj``, GPT-2's ``Conv1D`` ones) raises ``ValueError``: load the base
    from its Hugging Face folder instead, where :func:`merge_lora` merges any module."""
    n_heads, d_head, d_model = cfg.n_heads, cfg.d_head, cfg.d_model
    n_kv = cfg.n_key_value_heads or n_heads
    kv_prefix = "_" if cfg.n_key_value_heads is not None else ""
    expected = {
        "self_attn.q_proj": ((n_heads * d_head, d_model), "attn.W_Q", "(n h) m -> n m h", n_heads),
        "self_attn.k_proj": ((n_kv * d_head, d_model), f"attn.{kv_prefix}W_K", "(n h) m -> n m h", n_kv),
        "self_attn.v_proj": ((n_kv * d_head, d_model), f"attn.{kv_prefix}W_V", "(n h) m -> n m h", n_kv),
        "self_attn.o_proj": ((d_model, n_heads * d_head), "attn.W_O", "m (n h) -> n h m", n_heads),
        "mlp.gate_proj": ((cfg.d_mlp, d_model), "mlp.W_gate", "f m -> m f", None),
        "mlp.up_proj": ((cfg.d_mlp, d_model), "mlp.W_in", "f m -> m f", None),
        "mlp.down_proj": ((d_model, cfg.d_mlp), "mlp.W_out", "m f -> f m", None),
    }
    out: dict[str, torch.Tensor] = {}
    for layer, sub in sorted(adapter.factors):
        module = sub.rsplit(".", 1)[-1]
        if sub not in expected:
            fused = " (a fused projection)" if module in ("qkv_proj", "gate_up_proj") else ""
            raise ValueError(
                f"adapter_path: the adapter targets {sub!r}{fused}, which cannot be added to this base in "
                f"TransformerLens' layout (GGUF, registry and official-name bases take only "
                f"{', '.join(TL_LAYOUT_TARGETS)}); load the base from its Hugging Face folder or hub id, "
                "where the adapter is merged into the transformers weights of any module the base has")
        if layer >= cfg.n_layers:
            raise ValueError(f"adapter_path: the adapter touches layer {layer} but the model has {cfg.n_layers} layers")
        if module in ("gate_proj",) and not cfg.gated_mlp:
            raise ValueError("adapter_path: the adapter targets gate_proj but the model's MLP is not gated")
        shape, tl_name, pattern, n = expected[sub]
        delta = adapter.delta_hf(layer, sub)
        if tuple(delta.shape) != shape:
            raise ValueError(
                f"adapter_path: layer {layer} {module} delta has shape {tuple(delta.shape)}, "
                f"but the base model needs {shape}: the adapter was trained on another architecture"
            )
        kwargs = {"n": n} if n is not None else {}
        out[f"blocks.{layer}.{tl_name}"] = einops.rearrange(delta, pattern, **kwargs).contiguous()
    return out


def _layer_modules(model: torch.nn.Module) -> tuple[list[str], int]:
    """The ``block.module`` names of the model's per-layer ``Linear``/``Conv1D`` modules, and its layer count."""
    from transformers.pytorch_utils import Conv1D

    subs, layers = set(), set()
    for name, module in model.named_modules():
        match = re.fullmatch(r"(?:.*\.)?(?:layers|h)\.(\d+)\.((?:\w+\.)*\w+)", name)
        if match and isinstance(module, (torch.nn.Linear, Conv1D)):
            layers.add(int(match[1]))
            subs.add(match[2])
    return sorted(subs), max(layers, default=-1) + 1


def merge_lora(model: torch.nn.Module, adapter: LoraAdapter) -> None:
    """Add the adapter's ΔW to a transformers model's weights, in place (as PEFT's ``merge_and_unload``).

    W ← W + s·B A for every target, found by its name in the model: any ``Linear`` of any layer,
    fused projections (Phi-3's ``qkv_proj``, ``gate_up_proj``) included; GPT-2's ``Conv1D`` stores
    ``[in, out]``, so its ΔW is transposed. A module or layer the model lacks, or a shape that does not
    fit, raises ``ValueError`` naming the module and the model's own modules, before any weight changes."""
    from transformers.pytorch_utils import Conv1D

    updates = []
    for (layer, sub), path in sorted(adapter.module_paths.items()):
        try:
            module = model.get_submodule(path)
        except AttributeError:
            subs, n_layers = _layer_modules(model)
            where = (f"the base model has {n_layers} layers" if layer >= n_layers else
                     f"its per-layer modules are {', '.join(subs)}")
            raise ValueError(f"adapter_path: the base model has no module {path!r} (layer {layer} {sub}); {where}: "
                             "the adapter was trained on another architecture") from None
        if not isinstance(module, (torch.nn.Linear, Conv1D)):
            raise ValueError(f"adapter_path: module {path!r} of the base model is a {type(module).__name__}, "
                             "not a Linear (or GPT-2 Conv1D) layer that LoRA adapts")
        delta = adapter.delta_hf(layer, sub)
        if isinstance(module, Conv1D):
            delta = delta.T
        if tuple(delta.shape) != tuple(module.weight.shape):
            raise ValueError(
                f"adapter_path: layer {layer} {sub} delta has shape {tuple(delta.shape)}, but the base model's "
                f"weight is {tuple(module.weight.shape)}: the adapter was trained on another architecture"
            )
        updates.append((module.weight, delta))
    with torch.no_grad():
        for weight, delta in updates:
            weight.add_(delta.to(weight.dtype))
