"""A model, or a base/tuned pair, whose weights stay on disk and are read one layer at a time.

>>> pair = StreamedPair.open("path/to/gemma-2-27b", "path/to/gemma-2-27b-it")
>>> table = streamed_weight_circuits(pair, probes)     # same DataFrame as weight_circuits(ModelPair)
>>> print(pair.stats)                                   # peak resident memory, bytes read, seconds
"""

from __future__ import annotations

import functools
import os
import resource
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from transformer_lens import HookedTransformer

from interp.pair import ModelPair
from interp.progress import progress_bar
from interp.streaming.checkpoint import Checkpoint, open_checkpoint, prefetch
from interp.streaming.convert import LayerPart, layer_model, tl_config_dict

__all__ = ["StreamStats", "StreamedModel", "StreamedPair", "open_streamed"]


@dataclass(frozen=True)
class StreamStats:
    """What a streamed run cost: layers converted, bytes copied out of the checkpoints, the process's
    peak resident memory (``ru_maxrss``, a high-water mark since the process started) and seconds."""

    layers: int
    bytes_read: int
    peak_rss_bytes: int
    seconds: float

    def __str__(self) -> str:
        return (f"streamed {self.layers} layer conversions in {self.seconds:.1f} s: read {self.bytes_read / 2**30:.2f} GiB, "
                f"peak resident memory {self.peak_rss_bytes / 2**30:.2f} GiB")


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (Linux reports kB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if os.uname().sysname == "Darwin" else peak * 1024)


def _run_streamed(obj: Any, analysis: str, args: tuple, kwargs: dict) -> Any:
    """``obj.analyses[analysis](obj, ...)``, or a TypeError saying which streamed type runs it."""
    if analysis not in obj.analyses:
        runs = ", ".join(sorted(obj.analyses)) or "nothing (import interp.streaming)"
        raise TypeError(f"{analysis}: a {type(obj).__name__} cannot be given here (it runs: {runs}); "
                        "pairs are StreamedPair.open(base, tuned), models open_streamed(checkpoint)")
    return obj.analyses[analysis](obj, *args, **kwargs)


@dataclass(eq=False)
class StreamedModel:
    """A checkpoint read layer by layer: :meth:`layer` gives one converted block as a HookedTransformer.

    ``cfg_dict`` is the whole model's TransformerLens config; ``processed`` as in
    :func:`interp.load_model`. ``tokenizer`` (optional) is the checkpoint folder's own.
    """

    checkpoint: Checkpoint
    cfg_dict: dict[str, Any]
    processed: bool = True
    tokenizer: Any = None
    name: str = "model"
    conversions: int = field(default=0)
    stats: StreamStats | None = None  # of the last streamed forward run on this model
    show_progress: bool = True  # False silences every progress bar and stats line of this model

    #: The library's functions call a streamed model's analyses through this table (filled by
    #: :mod:`interp.streaming` with its ``streamed_*`` functions), so they need not import streaming.
    analyses: ClassVar[dict[str, Any]] = {}
    streamed: ClassVar[bool] = True  # what interp.pair.is_streamed reads

    def run(self, analysis: str, *args: Any, **kwargs: Any) -> Any:
        """The streamed version of the library function ``analysis`` on this model."""
        return _run_streamed(self, analysis, args, kwargs)

    @property
    def n_layers(self) -> int:
        return int(self.cfg_dict["n_layers"])

    @property
    def d_model(self) -> int:
        return int(self.cfg_dict["d_model"])

    @functools.cached_property
    def cfg(self) -> Any:
        """The whole model's HookedTransformerConfig (no weights), with this stream's processing."""
        from transformer_lens import HookedTransformerConfig

        cfg = dict(self.cfg_dict)
        if self.processed and cfg["normalization_type"] in ("RMS", "LN"):
            cfg["normalization_type"] += "Pre"
        return HookedTransformerConfig.from_dict(cfg)

    def layer(
        self,
        layer: int,
        *,
        part: LayerPart = "all",
        neurons: tuple[int, int] | None = None,
        vocab_rows: list[int] | None = None,
        unembed: bool = False,
    ) -> HookedTransformer:
        """Layer ``layer`` as a one-block HookedTransformer (:func:`interp.streaming.convert.layer_model`)."""
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < self.n_layers:
            raise ValueError(f"layer: expected an int in [0, {self.n_layers}), got {layer!r}")
        model = layer_model(self.checkpoint, self.cfg_dict, layer, processed=self.processed, part=part,
                            neurons=neurons, vocab_rows=vocab_rows, unembed=unembed)
        self.conversions += 1
        return model


def open_streamed(
    source: str | os.PathLike[str], *, processed: bool = True, tokenizer: Any = None, name: str | None = None
) -> StreamedModel:
    """A :class:`StreamedModel` of a checkpoint folder or cached hub id (header and config read only).

    ``tokenizer``: default the folder's own (``AutoTokenizer``), or None when the folder has none.
    """
    if not isinstance(processed, bool):
        raise TypeError(f"processed: expected a bool, got {type(processed).__name__}")
    ckpt = open_checkpoint(source)
    cfg = tl_config_dict(ckpt)
    if tokenizer is None:
        tokenizer = _folder_tokenizer(ckpt)
    return StreamedModel(ckpt, cfg, processed=processed, tokenizer=tokenizer, name=name or ckpt.folder.name)


def _folder_tokenizer(ckpt: Checkpoint) -> Any:
    if not any((ckpt.folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ckpt.folder))


@dataclass(eq=False)
class StreamedPair:
    """A base and a tuned :class:`StreamedModel` of one architecture, read layer ``l`` of both together.

    ``stats`` holds the :class:`StreamStats` of the last streamed analysis run on the pair.
    """

    base: StreamedModel
    tuned: StreamedModel
    name: str = "pair"
    stats: StreamStats | None = None
    show_progress: bool = True  # False silences every progress bar and stats line of this pair's analyses

    #: As :attr:`StreamedModel.analyses`: ``weight_circuits``, ``compare_mlp_pass``, ``delta_diagnostics``,
    #: ``delta_norms`` and ``changed_layers`` of the library dispatch here for a streamed pair.
    analyses: ClassVar[dict[str, Any]] = {}
    streamed: ClassVar[bool] = True  # what interp.pair.is_streamed reads

    def run(self, analysis: str, *args: Any, **kwargs: Any) -> Any:
        """The streamed version of the library function ``analysis`` on this pair."""
        return _run_streamed(self, analysis, args, kwargs)

    def __post_init__(self) -> None:
        for label, model in (("base", self.base), ("tuned", self.tuned)):
            if not isinstance(model, StreamedModel):
                raise TypeError(f"{label}: expected a StreamedModel, got {type(model).__name__}")
        if self.base.processed != self.tuned.processed:
            raise ValueError("tuned: one model is processed and the other is not")
        mismatched = [
            f"{f} (base {self.base.cfg_dict.get(f)!r}, tuned {self.tuned.cfg_dict.get(f)!r})"
            for f in ModelPair.SHAPE_FIELDS
            if f != "original_architecture" and self.base.cfg_dict.get(f) != self.tuned.cfg_dict.get(f)
        ]
        if self.base.cfg_dict["original_architecture"] != self.tuned.cfg_dict["original_architecture"]:
            mismatched.append(f"architecture (base {self.base.cfg_dict['original_architecture']!r}, "
                              f"tuned {self.tuned.cfg_dict['original_architecture']!r})")
        if mismatched:
            raise ValueError("tuned: not the same architecture as base: " + "; ".join(mismatched))
        b, t = self.base.tokenizer, self.tuned.tokenizer
        if b is not None and t is not None and b.get_vocab() != t.get_vocab():
            raise ValueError("tuned: tokenizer vocabulary differs from base's")

    @classmethod
    def open(
        cls, base: str | os.PathLike[str], tuned: str | os.PathLike[str], *, processed: bool = True
    ) -> StreamedPair:
        """Two checkpoints (folders or cached hub ids) streamed as a pair."""
        return cls(open_streamed(base, processed=processed), open_streamed(tuned, processed=processed),
                   name=f"{base} → {tuned}")

    @property
    def n_layers(self) -> int:
        return self.base.n_layers

    @property
    def d_model(self) -> int:
        return self.base.d_model

    @property
    def cfg(self) -> Any:
        """The shared configuration (the base model's), as :attr:`interp.ModelPair.cfg`."""
        return self.base.cfg

    def layers(self, layers: Iterable[int], *, progress: bool = True, desc: str = "layers") -> Iterator[int]:
        """Iterate over ``layers`` with a progress bar (unless ``progress`` or :attr:`show_progress` is
        False); :attr:`stats` is set when the iteration ends."""
        progress = progress and self.show_progress
    
        start = time.perf_counter()
        read0 = self.base.checkpoint.bytes_read + self.tuned.checkpoint.bytes_read
        conv0 = self.base.conversions + self.tuned.conversions
        layer_list = list(layers)
        for i, layer in enumerate(progress_bar(layer_list, desc=desc, unit="layer", progress=progress)):
            ahead = layer_list[i : i + 2] if i == 0 else layer_list[i + 1 : i + 2]
            # the disk reads layer l + 1 (base, then tuned) while layer l is computed
            prefetch([(model.checkpoint, model.checkpoint.layer_names(upcoming))
                      for upcoming in ahead for model in (self.base, self.tuned)])
            yield layer
        self.stats = StreamStats(
            layers=self.base.conversions + self.tuned.conversions - conv0,
            bytes_read=self.base.checkpoint.bytes_read + self.tuned.checkpoint.bytes_read - read0,
            peak_rss_bytes=peak_rss_bytes(),
            seconds=time.perf_counter() - start,
        )
        if progress:
            print(self.stats, file=sys.stderr)


def as_streamed_pair(pair: object, *, name: str = "pair") -> StreamedPair:
    if not isinstance(pair, StreamedPair):
        raise TypeError(f"{name}: expected an interp.streaming.StreamedPair, got {type(pair).__name__}")
    return pair
