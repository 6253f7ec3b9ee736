"""Hugging Face checkpoints (a folder, or a hub id in the local cache) converted by architecture.

The checkpoint's own ``config.json`` decides everything: ``architectures[0]`` picks TransformerLens'
weight converter, and the ``HookedTransformerConfig`` is built from that config (never from a model
name), so a fine-tune saved with ``save_pretrained`` loads like the model it was tuned from.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

# Architectures whose config TransformerLens 3.9 builds from the checkpoint's config.json
# (``convert_hf_model_config``) and whose weights it converts; each is tested in tests/test_loading_checkpoints.py.
_TL_FROM_CONFIG = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                   "GPT2LMHeadModel", "Phi3ForCausalLM")
# Architectures TransformerLens converts but configures from hard-coded official names only: interp
# builds their config from config.json here, mirroring TransformerLens' own entries for them.
_OWN_CONFIG = ("Gemma2ForCausalLM", "Gemma3ForCausalLM", "Olmo2ForCausalLM")
SUPPORTED_ARCHITECTURES: tuple[str, ...] = _TL_FROM_CONFIG + _OWN_CONFIG
# What the model's ``rope_parameters`` may say: TransformerLens implements these exactly.
_ROPE_TYPES = ("default", "llama3")
_WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "*.bin.index.json")
_SMALL_PATTERNS = ("*.json", "tokenizer*", "*.model", "*.txt", "*.tiktoken", "*.jinja")


class UnsupportedCheckpoint(ValueError):
    """The checkpoint's architecture or one of its settings cannot be converted exactly."""


def read_config(folder: Path, label: str = "name") -> dict[str, Any]:
    """``config.json`` of a Hugging Face model folder, with errors naming ``label``."""
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{label}: folder {folder} has no config.json (not a Hugging Face model folder)")
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{label}: {path} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{label}: {path} does not hold a JSON object")
    return config


def architecture_of(config: dict[str, Any], where: str, label: str = "name") -> str:
    """``architectures[0]`` of a config, refused unless interp can convert it."""
    archs = config.get("architectures") or []
    if not archs:
        raise UnsupportedCheckpoint(
            f"{label}: {where} has no 'architectures' entry in its config.json, so its model class is unknown; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    arch = str(archs[0])
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedCheckpoint(
            f"{label}: architecture {arch!r} of {where} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    return arch


def _rope(hf_config: Any) -> dict[str, Any]:
    """The rope parameters of the full-attention layers (transformers ≥ 5 nests them per layer type)."""
    params = getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None) or {}
    if isinstance(params, dict) and "full_attention" in params:
        params = params["full_attention"]
    return dict(params) if isinstance(params, dict) else {}


def _check_rope(arch: str, hf_config: Any, where: str, label: str) -> None:
    """Rope scaling TransformerLens implements: none, or ``llama3`` (NTK-by-parts) on Llama."""
    allowed = _ROPE_TYPES if arch == "LlamaForCausalLM" else ("default",)
    params = getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None) or {}
    groups = params.values() if isinstance(params, dict) and all(isinstance(v, dict) for v in params.values()) \
        and params else [params]
    for group in groups:
        rope_type = str((group or {}).get("rope_type") or (group or {}).get("type") or "default").lower()
        if rope_type not in allowed:
            raise UnsupportedCheckpoint(
                f"{label}: {where} uses rope scaling {rope_type!r}, which TransformerLens does not implement for "
                f"{arch} (supported: {', '.join(allowed)})"
            )


def _refuse_unsupported_settings(arch: str, hf_config: Any, where: str, label: str) -> None:
    """Settings a converter would silently drop (biases, sliding windows...) are refused by name."""
    def refuse(what: str) -> None:
        raise UnsupportedCheckpoint(f"{label}: {where} ({arch}) has {what}, which TransformerLens' converter drops")

    if arch != "Qwen2ForCausalLM" and getattr(hf_config, "attention_bias", False):  # Qwen 2's biases are converted
        refuse("attention_bias=True")
    if getattr(hf_config, "mlp_bias", False):
        refuse("mlp_bias=True")
    if arch in ("Qwen2ForCausalLM", "Qwen3ForCausalLM") and getattr(hf_config, "use_sliding_window", False):
        refuse("use_sliding_window=True")
    if getattr(hf_config, "use_bidirectional_attention", False):
        refuse("use_bidirectional_attention=True")
    if arch == "Olmo2ForCausalLM" and hf_config.num_key_value_heads != hf_config.num_attention_heads:
        refuse(f"grouped-query attention ({hf_config.num_key_value_heads} KV heads)")
    if arch == "Phi3ForCausalLM" and getattr(hf_config, "partial_rotary_factor", 1.0) not in (None, 1.0):
        refuse(f"partial_rotary_factor={hf_config.partial_rotary_factor}")
    _check_rope(arch, hf_config, where, label)


def _layer_attn_types(hf_config: Any, default_pattern: int) -> list[str]:
    layer_types = getattr(hf_config, "layer_types", None)
    if not layer_types:
        layer_types = ["full_attention" if (i + 1) % default_pattern == 0 else "sliding_attention"
                       for i in range(hf_config.num_hidden_layers)]
    return ["local" if kind == "sliding_attention" else "global" for kind in layer_types]


def _gemma_cfg(arch: str, c: Any) -> dict[str, Any]:
    """Gemma 2 / Gemma 3 text, as TransformerLens' own ``google/gemma-2-*`` / ``gemma-3-*`` entries."""
    rope = getattr(c, "rope_parameters", None) or {}
    if "full_attention" in rope:
        global_base = rope["full_attention"].get("rope_theta", 1_000_000.0)
        local_base = rope.get("sliding_attention", {}).get("rope_theta", 10_000.0)
    else:
        global_base = rope.get("rope_theta", getattr(c, "rope_theta", 10_000.0))
        local_base = getattr(c, "rope_local_base_freq", None)
    attn_types = _layer_attn_types(c, 2 if arch == "Gemma2ForCausalLM" else 6)
    cfg = {
        "d_model": c.hidden_size,
        "d_head": c.head_dim,
        "n_heads": c.num_attention_heads,
        "n_key_value_heads": c.num_key_value_heads,
        "d_mlp": c.intermediate_size,
        "n_layers": c.num_hidden_layers,
        "n_ctx": c.max_position_embeddings,
        "eps": c.rms_norm_eps,
        "d_vocab": c.vocab_size,
        "act_fn": c.hidden_activation,
        "initializer_range": c.initializer_range,
        "normalization_type": "RMS",
        "rotary_base": global_base,
        "positional_embedding_type": "rotary",
        "rotary_dim": c.head_dim,
        "rotary_adjacent_pairs": False,
        "use_attn_scale": True,
        "attn_scale": float(c.query_pre_attn_scalar) ** 0.5,
        "window_size": c.sliding_window,
        "use_local_attn": "local" in attn_types,
        "attn_types": attn_types,
        "attn_scores_soft_cap": float(c.attn_logit_softcapping or -1.0),
        "output_logits_soft_cap": float(c.final_logit_softcapping or -1.0),
        "gated_mlp": True,
        "final_rms": True,
        "use_normalization_before_and_after": True,
    }
    if arch == "Gemma3ForCausalLM":
        cfg["use_qk_norm"] = True
        if local_base is not None:
            cfg["rotary_base_local"] = local_base
    return cfg


def _olmo2_cfg(c: Any) -> dict[str, Any]:
    """OLMo 2, as TransformerLens' own ``allenai/OLMo-2-*`` entries (post-norm blocks, full-width qk-norm)."""
    return {
        "d_model": c.hidden_size,
        "d_head": c.hidden_size // c.num_attention_heads,
        "n_heads": c.num_attention_heads,
        "d_mlp": c.intermediate_size,
        "n_layers": c.num_hidden_layers,
        "n_ctx": c.max_position_embeddings,
        "eps": c.rms_norm_eps,
        "d_vocab": c.vocab_size,
        "act_fn": c.hidden_act,
        "initializer_range": c.initializer_range,
        "normalization_type": "RMS",
        "rotary_base": _rope(c).get("rope_theta", 500_000.0),
        "rotary_dim": c.hidden_size // c.num_attention_heads,
        "attn_types": ["global"] * c.num_hidden_layers,
        "positional_embedding_type": "rotary",
        "gated_mlp": True,
    }


def _tl_config_from_file(config: dict[str, Any]) -> dict[str, Any]:
    """TransformerLens' ``convert_hf_model_config`` on a copy of the config in a neutral folder.

    TransformerLens picks some configs by substrings of the path it is given ("llama", "gemma"...),
    which a user's folder name may contain; a folder named ``checkpoint`` makes it read config.json.
    GPT-2 configs saved by transformers ≥ 5 lack the ``n_ctx`` TransformerLens reads: it is
    ``n_positions``.
    """
    if config.get("model_type") == "gpt2" and "n_ctx" not in config:
        config = {**config, "n_ctx": config.get("n_positions", 1024)}
    from transformer_lens.loading_from_pretrained import convert_hf_model_config

    families = ("llama", "gemma", "olmo", "phi", "qwen", "mistral")
    if any(word in tempfile.gettempdir().lower() for word in families):
        raise RuntimeError(f"the temporary folder {tempfile.gettempdir()} contains a model-family name; "
                           "set TMPDIR elsewhere")
    with tempfile.TemporaryDirectory(prefix="interp-config-") as tmp:
        tmp = Path(tmp)
        while any(word in tmp.name.lower() for word in families):  # mkdtemp's random suffix, rarely
            tmp = Path(tempfile.mkdtemp(prefix="interp-config-", dir=tmp))
        neutral = tmp / "checkpoint"
        neutral.mkdir()
        (neutral / "config.json").write_text(json.dumps(config))
        return convert_hf_model_config(str(neutral))


def tl_config(folder: Path, config: dict[str, Any], label: str = "name") -> dict[str, Any]:
    """The TransformerLens config dict of a Hugging Face checkpoint folder, from its config.json."""
    from transformers import AutoConfig

    arch = architecture_of(config, str(folder), label)
    hf_config = AutoConfig.from_pretrained(str(folder))
    _refuse_unsupported_settings(arch, hf_config, str(folder), label)
    if arch in _TL_FROM_CONFIG:
        cfg = _tl_config_from_file(config)
        head_dim = getattr(hf_config, "head_dim", None)
        if head_dim and head_dim != cfg["d_head"]:  # some branches assume d_model / n_heads
            cfg.update(d_head=head_dim, rotary_dim=head_dim)
        n_ctx = getattr(hf_config, "max_position_embeddings", None) or getattr(hf_config, "n_positions", None)
        if n_ctx:  # some branches cap n_ctx themselves; interp caps it in one place (DEFAULT_N_CTX)
            cfg["n_ctx"] = int(n_ctx)
        rope = _rope(hf_config)
        if arch == "LlamaForCausalLM" and str(rope.get("rope_type") or rope.get("type")) == "llama3":
            cfg.update(use_NTK_by_parts_rope=True,
                       NTK_original_ctx_len=rope.get("original_max_position_embeddings", n_ctx),
                       NTK_by_parts_low_freq_factor=rope.get("low_freq_factor", 1.0),
                       NTK_by_parts_high_freq_factor=rope.get("high_freq_factor", 4.0),
                       NTK_by_parts_factor=rope.get("factor", 1.0))
    elif arch == "Olmo2ForCausalLM":
        cfg = _olmo2_cfg(hf_config)
    else:
        cfg = _gemma_cfg(arch, hf_config)
    cfg["original_architecture"] = arch
    cfg["tokenizer_name"] = str(folder)
    cfg["model_name"] = folder.name
    return {k: v for k, v in cfg.items() if k not in ("dtype", "device", "n_params", "quantization_method")}


def check_weight_files(folder: Path, label: str = "name") -> None:
    """Every safetensors shard of ``folder`` has a readable header and the size it declares."""

    shards = sorted(folder.glob("*.safetensors"))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{label}: {index} is not a valid safetensors index ({exc})") from exc
        missing = sorted(n for n in names if not (folder / n).is_file())
        if missing:
            raise FileNotFoundError(f"{label}: {folder} lacks the weight shard(s) {missing} listed in {index.name}")
    if not shards and not list(folder.glob("pytorch_model*.bin")):
        raise FileNotFoundError(f"{label}: {folder} has no weights (no *.safetensors or pytorch_model*.bin file)")
    for shard in shards:
        problem = safetensors_problem(shard)
        if problem:
            raise ValueError(f"{label}: weight file {shard} is corrupt or truncated ({problem})")


class SafetensorsFileError(ValueError):
    """A safetensors file whose header cannot be read or does not fit the file; ``problem`` says why."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"path: {path} is not a whole safetensors file ({problem})")
        self.path, self.problem = path, problem


def safetensors_header(path: str | Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the byte offset where its tensor data starts.

    The header maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (bytes
    from the data start, ``8 + header length``) and holds ``"__metadata__"`` when the file has it.
    safetensors' own reader (:func:`safetensors.safe_open`, memory-mapped) checks the header: valid
    JSON, known dtypes, each tensor's bytes = its shape × dtype size, offsets contiguous and covering
    the file; no tensor is read. The byte offsets come from the header itself (safetensors does not
    expose them). A file shorter than its header declares (a truncated download) is named as such.

    Raises:
        SafetensorsFileError: (a ValueError naming the file) the header cannot be read, is malformed,
            or does not fit the file's size.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SafetensorsFileError(path, " ".join(f"{type(exc).__name__}: {exc}".split())) from exc
    raw, raw_problem = _raw_header(path, size)
    library_problem, keys = None, None
    try:
        with safe_open(str(path), framework="pt") as opened:
            keys = set(opened.keys())
    except (SafetensorError, OSError) as exc:
        library_problem = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
    if raw is not None and raw[1] + raw[2] > size:  # a readable header asking for more bytes than the file has
        raise SafetensorsFileError(path, f"truncated: {size} bytes, but its header declares {raw[1] + raw[2]}")
    if library_problem is not None:
        raise SafetensorsFileError(path, library_problem)
    if raw is None:
        raise SafetensorsFileError(path, raw_problem or "unreadable header")
    header, start, _ = raw
    tensors = {name for name in header if name != "__metadata__"}
    if tensors != keys:
        raise SafetensorsFileError(path, f"its header lists {len(tensors)} tensors, safetensors reads {len(keys)}")
    return header, start


def _raw_header(path: Path, size: int) -> tuple[tuple[dict[str, Any], int, int] | None, str | None]:
    """``((header, data start, declared data length), None)`` read by hand, or ``(None, why not)``."""
    try:
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                return None, f"truncated: {size} bytes, too short for a header"
            n = int.from_bytes(prefix, "little")
            if 8 + n > size:
                return None, f"truncated: {size} bytes, but its header alone declares {8 + n}"
            header = json.loads(handle.read(n))
        if not isinstance(header, dict):
            return None, "the header is not a JSON object"
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
        if not all(isinstance(e, int) and not isinstance(e, bool) for e in ends):
            return None, "a tensor's data_offsets are not integers"
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        return None, " ".join(f"malformed header ({type(exc).__name__}: {exc})".split())[:200]
    return (header, 8 + n, max(ends, default=0)), None


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file (unreadable or malformed header, or shorter than
    the header declares), or None: :func:`safetensors_header`'s check. Reads the header only; the
    tensor bytes themselves are not checksummed."""
    try:
        safetensors_header(path)
    except SafetensorsFileError as exc:
        return exc.problem
    return None


def load_checkpoint(
    folder: Path, label: str = "name", *, edit: Callable[[Any], None] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor], Any, dict[str, torch.Tensor] | None]:
    """``(TL config dict, unprocessed TL state dict, tokenizer, edited state dict)`` of a Hugging Face folder.

    The weights are read by transformers (float32) and converted by TransformerLens' converter for
    the checkpoint's architecture (``get_pretrained_state_dict`` with that model). ``edit``, when
    given, changes the transformers model in place (e.g. merges a LoRA) after the first conversion;
    the edited model is converted too (else the last item is None)."""
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import get_pretrained_state_dict
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = read_config(folder, label)
    cfg_dict = tl_config(folder, config, label)
    check_weight_files(folder, label)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{label}: {folder} has no usable tokenizer ({exc})") from exc
    hf_model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    hf_model.eval()
    cfg = HookedTransformerConfig.from_dict(dict(cfg_dict, dtype=torch.float32, device="cpu"))

    def convert() -> dict[str, torch.Tensor]:  # copies: converters may return the model's own tensors
        with torch.no_grad():
            state = get_pretrained_state_dict(str(folder), cfg, hf_model=hf_model)
            return {k: v.detach().to(torch.float32).clone() for k, v in state.items()}

    state = convert()
    edited = None
    if edit is not None:
        edit(hf_model)
        edited = convert()
    return cfg_dict, state, tokenizer, edited


def hub_folder(repo_id: str, label: str = "name") -> Path:
    """The local snapshot folder of hub id ``repo_id``: the Hugging Face cache (offline, or when it holds
    the files), else downloaded. Its config.json is fetched and checked before any weight file."""
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        config_file = Path(hf_hub_download(repo_id, "config.json"))
    except HFValidationError as exc:
        raise ValueError(f"{label}: {repo_id!r} is neither a known model, a folder nor a valid hub id ({exc})") from exc
    except Exception as exc:  # offline cache miss, no network, no such repo: huggingface_hub's own errors
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        where = "is not in the local Hugging Face cache (HF_HUB_OFFLINE is set)" if offline else \
            f"could not be fetched from the hub ({type(exc).__name__})"
        raise ValueError(f"{label}: {repo_id!r} {where}") from exc
    config = read_config(config_file.parent, label)
    architecture_of(config, repo_id, label)
    snapshot = snapshot_download(repo_id, allow_patterns=[*_WEIGHT_PATTERNS, *_SMALL_PATTERNS])
    return Path(snapshot)
