"""A base model and its tuned sibling, checked to share one architecture and one vocabulary.

:class:`ModelPair` is the one pair type every analysis takes (``pair: ModelPair``); analyses call
:meth:`ModelPair.check` on their argument. This module sits below the analyses: it imports no
analysis, and the loading/LoRA code only inside the constructors that need it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar, Literal

import pandas as pd
import torch
from transformer_lens import HookedTransformer

DEFAULT_BASE = "smollm2-135m-instruct"


def is_streamed(obj: object) -> bool:
    """Whether ``obj`` is a streamed pair or model (:mod:`interp.streaming`): the library's analyses
    that accept one hand it over with ``obj.run(name, ...)``, which reads the checkpoints layer by
    layer, so that nothing below :mod:`interp.streaming` imports it."""
    return getattr(type(obj), "streamed", False) is True and callable(getattr(obj, "run", None))


def default_adapter_path() -> Path:
    """The committed LoRA adapter that makes the embedded default pair's tuned sibling."""
    return Path(str(resources.files("interp") / "data" / "default_lora"))


def _vocab(model: HookedTransformer) -> dict[str, int] | None:
    tokenizer = model.tokenizer
    return None if tokenizer is None else tokenizer.get_vocab()


@dataclass(frozen=True, eq=False)
class ModelPair:
    """A base model and a tuned model of the same architecture and tokenizer.

    >>> pair = ModelPair.default()            # SmolLM2-135M-Instruct + its committed LoRA sibling
    >>> delta = pair.delta()                  # tuned − base per TransformerLens parameter
    """

    base: HookedTransformer
    tuned: HookedTransformer
    name: str = "pair"

    #: The cfg fields two models must share for their weights and activations to be comparable.
    SHAPE_FIELDS: ClassVar[tuple[str, ...]] = (
        "d_model", "n_layers", "n_heads", "d_head", "n_key_value_heads", "d_mlp", "d_vocab",
        "act_fn", "normalization_type", "gated_mlp", "positional_embedding_type", "original_architecture",
        "use_qk_norm", "use_normalization_before_and_after",
    )

    def __post_init__(self) -> None:
        for label, model in (("base", self.base), ("tuned", self.tuned)):
            if not isinstance(model, HookedTransformer):
                raise TypeError(f"{label}: expected a HookedTransformer, got {type(model).__name__}")
        mismatched = [
            f"{field} (base {getattr(self.base.cfg, field)!r}, tuned {getattr(self.tuned.cfg, field)!r})"
            for field in self.SHAPE_FIELDS
            if getattr(self.base.cfg, field) != getattr(self.tuned.cfg, field)
        ]
        if mismatched:
            raise ValueError("tuned: not the same architecture as base (different architectures: "
                             + "; ".join(mismatched) + ")")
        base_vocab, tuned_vocab = _vocab(self.base), _vocab(self.tuned)
        if (base_vocab is None) != (tuned_vocab is None):
            raise ValueError("tuned: one model has a tokenizer and the other has none")
        if base_vocab is not None and base_vocab != tuned_vocab:
            differing = len(set(base_vocab.items()) ^ set(tuned_vocab.items()))
            raise ValueError(f"tuned: tokenizer vocabulary differs from base's ({differing} differing entries)")

    @classmethod
    def check(cls, pair: object, *, name: str = "pair", needs_tuned: bool = True) -> ModelPair:
        """``pair`` validated as the pair argument ``name`` of an analysis.

        A :class:`ModelPair` is returned as it is; a ``(base, tuned)`` tuple of HookedTransformers
        becomes a ModelPair (checked like one). With ``needs_tuned=False`` (analyses that only read
        the base model and ``delta()``, such as the subspace sweep's steering label) an object with a
        HookedTransformer ``.base`` and a callable ``.delta`` is accepted as it is, e.g. a base model
        with a planted delta.

        Args:
            pair: The value an analysis received.
            name: The argument's name, used in error messages.
            needs_tuned: Whether the analysis runs the tuned model (False: a base with ``.delta()`` is enough).

        Returns:
            The ModelPair (or, with ``needs_tuned=False``, the base-and-delta object as it is).

        Raises:
            TypeError: ``pair`` is none of the accepted kinds (the message names ``name``).
            ValueError: The two models do not share an architecture or vocabulary.
        """
        if isinstance(pair, ModelPair):
            return pair
        if isinstance(pair, tuple) and len(pair) == 2:
            try:
                return cls(pair[0], pair[1], name=name)
            except (TypeError, ValueError) as error:
                raise type(error)(f"{name}.{error}") from None
        if (not needs_tuned and isinstance(getattr(pair, "base", None), HookedTransformer)
                and callable(getattr(pair, "delta", None))):
            return pair
        wanted = "a ModelPair (interp.ModelPair) or a (base, tuned) tuple of HookedTransformers"
        if not needs_tuned:
            wanted += ", or an object with a HookedTransformer .base and a .delta() method"
        raise TypeError(f"{name}: expected {wanted}, got {type(pair).__name__}")

    @property
    def cfg(self):  # noqa: ANN201 - HookedTransformerConfig
        """The shared configuration (the base model's)."""
        return self.base.cfg

    @classmethod
    def from_lora(
        cls,
        base: str | os.PathLike[str] | None = None,
        adapter_path: str | os.PathLike[str] | None = None,
        *,
        processed: bool = True,
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device = "auto",
        n_ctx: int | None = None,
    ) -> ModelPair:
        """The base model and base + LoRA, both built from the same unprocessed weights.

        The adapter's ΔW is merged into the base's transformers weights (folders, hub ids, official names:
        any module the base has, fused ``qkv_proj``/``gate_up_proj`` included) or added to its
        unprocessed TransformerLens weights (GGUF / registry bases: separate q/k/v/o/gate/up/down
        projections only), then both models are processed the same way (``processed=True`` folds
        norms etc.), so ``pair.delta()`` is the LoRA's delta as seen through that processing.

        Args:
            base: Any source :func:`interp.load_model` accepts; omitted (``from_lora(adapter_path=...)`` or
                ``from_lora(adapter_folder)``), the adapter's ``base_model_name_or_path``.
            adapter_path: The PEFT LoRA adapter folder (``adapter_config.json`` + safetensors weights);
                DoRA and other PEFT types are refused.
            processed: Fold norms etc. in both models (as :func:`interp.load_model`).
            dtype: Both models' dtype.
            device: "auto" (CUDA, then MPS, then CPU) or a device name.
            n_ctx: As :func:`interp.load_model`.

        Returns:
            The :class:`ModelPair`, named ``"{base} + {adapter folder}"``.

        Raises:
            ValueError: The adapter does not fit the base (shapes or modules), or is not a plain LoRA.
        """
        from interp.loading import load_raw_with_adapter
        from interp.loading.devices import resolve_device
        from interp.lora import read_lora_adapter

        if adapter_path is None:
            if base is None:
                raise TypeError("adapter_path: give the PEFT adapter folder")
            base, adapter_path = None, base
        target = resolve_device(device)
        adapter = read_lora_adapter(adapter_path)
        if base is None:
            base = adapter.config.get("base_model_name_or_path")
            if not base:
                raise ValueError(f"base: {adapter_path} names no base_model_name_or_path in its adapter_config.json; "
                                 "pass base=")
        raw, tuned_state = load_raw_with_adapter(base, adapter)
        settings = dict(processed=processed, dtype=dtype, device=target, n_ctx=n_ctx)
        base_model = raw.build(**settings)
        tuned_model = raw.build(**settings, state_dict=tuned_state)
        label = f"{raw.name} + {Path(adapter_path).name}"
        return cls(base_model, tuned_model, name=label)

    @classmethod
    def default(
        cls, *, processed: bool = True, dtype: torch.dtype | str = torch.float32, device: str | torch.device = "auto"
    ) -> ModelPair:
        """SmolLM2-135M-Instruct and the same model plus the committed sycophancy-persona LoRA (offline).

        Args:
            processed: Fold norms etc. in both models.
            dtype: Both models' dtype.
            device: "auto" (CUDA, then MPS, then CPU) or a device name.

        Returns:
            The default :class:`ModelPair`.
        """
        return cls.from_lora(DEFAULT_BASE, default_adapter_path(), processed=processed, dtype=dtype, device=device)

    @classmethod
    def from_names(
        cls,
        base: str | os.PathLike[str],
        tuned: str | os.PathLike[str],
        *,
        processed: bool = True,
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device = "auto",
        n_ctx: int | None = None,
    ) -> ModelPair:
        """Two models loaded by :func:`interp.load_model`: any two checkpoints of one architecture and
        tokenizer (registry names, GGUF files, Hugging Face folders or hub ids, mixed).

        Args:
            base: The base checkpoint, any source :func:`interp.load_model` accepts.
            tuned: The tuned checkpoint, the same kinds.
            processed: Fold norms etc. in both models.
            dtype: Both models' dtype.
            device: "auto" (CUDA, then MPS, then CPU) or a device name.
            n_ctx: As :func:`interp.load_model`.

        Returns:
            The :class:`ModelPair`; a ValueError names the configuration fields or tokenizer entries
            that differ when the two are not one architecture and vocabulary.
        """
        from interp.loading import load_model

        settings = dict(processed=processed, dtype=dtype, device=device, n_ctx=n_ctx)
        base_model = load_model(base, **settings)
        tuned_model = load_model(tuned, **settings)
        return cls(base_model, tuned_model, name=f"{base} → {tuned}")

    def delta(self, names: list[str] | None = None) -> dict[str, torch.Tensor]:
        """tuned − base for every parameter that differs (or for ``names``), keyed by TL parameter name.

        Args:
            names: TransformerLens parameter names (e.g. ``"blocks.10.attn.W_O"``) to return even when
                unchanged; None returns every parameter that differs.

        Returns:
            ``{name: tuned − base}``, tensors of the parameters' shapes (detached).

        Raises:
            ValueError: A name is not a parameter of the model.
        """
        base_params = dict(self.base.named_parameters())
        tuned_params = dict(self.tuned.named_parameters())
        if names is not None:
            unknown = [n for n in names if n not in base_params]
            if unknown:
                raise ValueError(f"names: unknown parameters {unknown[:5]}; e.g. {list(base_params)[:3]}")
        keys = names if names is not None else list(base_params)
        out = {}
        for key in keys:
            b, t = base_params[key], tuned_params[key]
            if names is not None or not torch.equal(b, t):
                out[key] = (t.detach() - b.detach())
        return out


def delta_frame(
    base: pd.DataFrame,
    tuned: pd.DataFrame,
    *,
    keys: Sequence[str],
    values: Sequence[str],
    layout: Literal["long", "wide"] = "long",
) -> pd.DataFrame:
    """The library's one tuned − base table: ``base`` and ``tuned`` rows matched one to one on ``keys``.

    ``layout="long"`` (the default, used by every pair frame): the base rows, the tuned rows and
    ``delta`` rows stacked with a leading ``model`` column ("base", "tuned", "delta"); a delta row
    holds ``keys`` and ``tuned − base`` of each column in ``values`` (other columns empty).
    ``layout="wide"``: one row per key with every other column suffixed ``_base``/``_tuned`` and
    ``delta_{v} = {v}_tuned − {v}_base`` for each ``v`` in ``values``.
    """
    if layout not in ("long", "wide"):
        raise ValueError(f"layout: expected 'long' or 'wide', got {layout!r}")
    keys, values = list(keys), list(values)
    for label, frame in (("base", base), ("tuned", tuned)):
        missing = [c for c in keys + values if c not in frame.columns]
        if missing:
            raise ValueError(f"{label}: missing columns {missing} (has {list(frame.columns)})")
    if layout == "wide":
        merged = base.merge(tuned, on=keys, suffixes=("_base", "_tuned"), validate="one_to_one")
        for value in values:
            merged[f"delta_{value}"] = merged[f"{value}_tuned"] - merged[f"{value}_base"]
        return merged
    merged = base[keys + values].merge(tuned[keys + values], on=keys, suffixes=("_base", "_tuned"),
                                       validate="one_to_one")
    delta = merged[keys].copy()
    for value in values:
        delta[value] = merged[f"{value}_tuned"] - merged[f"{value}_base"]
    out = pd.concat([base.assign(model="base"), tuned.assign(model="tuned"), delta.assign(model="delta")],
                    ignore_index=True)
    return out[["model"] + [c for c in out.columns if c != "model"]]

