"""A safetensors checkpoint read tensor by tensor, memory-mapped, never whole.

A checkpoint is a folder with ``config.json`` and either ``model.safetensors`` or shards listed in
``model.safetensors.index.json`` (``weight_map``: tensor name → shard file); a hub id resolves to
its snapshot in the local Hugging Face cache. Every shard's header is checked when the checkpoint
is opened (a shard missing from the index, a truncated shard, a tensor the index names but the
shard lacks), so a broken checkpoint fails before any weight is read. Each read opens the shard,
copies the requested rows/columns out of the memory map and closes it again, so the pages of a
tensor do not stay resident after it is used; :attr:`Checkpoint.bytes_read` counts what was copied.
"""

from __future__ import annotations

import json
import mmap
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from interp.loading.checkpoint import SafetensorsFileError, safetensors_header

__all__ = ["Checkpoint", "CheckpointError", "layer_index", "open_checkpoint", "prefetch"]

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


# safetensors dtype names torch can view a memory map as (others are read through safetensors)
_TORCH_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                 "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                 "BOOL": torch.bool}


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be read as it claims to be (missing or truncated shards...)."""


@dataclass(frozen=True)
class _TensorInfo:
    shard: Path
    dtype: str
    shape: tuple[int, ...]
    start: int = 0  # byte range of the tensor's data in the shard file
    stop: int = 0


@dataclass
class Checkpoint:
    """The tensors of a safetensors checkpoint, read lazily (see the module docstring).

    ``config`` is the folder's ``config.json``; ``tensors`` maps every tensor name to its shard,
    dtype and shape (from the shard headers, no data read).
    """

    folder: Path
    config: dict[str, Any]
    tensors: dict[str, _TensorInfo]
    bytes_read: int = field(default=0)

    def has(self, name: str) -> bool:
        return name in self.tensors

    def shape(self, name: str) -> tuple[int, ...]:
        return self._info(name).shape

    def _info(self, name: str) -> _TensorInfo:
        if name not in self.tensors:
            raise KeyError(f"checkpoint {self.folder} has no tensor {name!r}")
        return self.tensors[name]

    def read(
        self, name: str, *, rows: slice | None = None, cols: slice | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Tensor ``name`` (optionally ``[rows]`` / ``[:, cols]`` of a matrix), copied out of the shard's
        memory map in one pass, converted to ``dtype`` on the way (default: as stored)."""
        info = self._info(name)
        stored = _TORCH_DTYPES.get(info.dtype)
        if stored is None:  # a dtype torch cannot view: safetensors converts it
            with safe_open(str(info.shard), framework="pt") as handle:
                part = handle.get_slice(name)
                tensor = part[rows if rows is not None else slice(None)] if cols is None else part[
                    rows if rows is not None else slice(None), cols]
            tensor = tensor if dtype is None else tensor.to(dtype)
        else:
            with info.shard.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY) as mapped:
                flat = torch.frombuffer(mapped, dtype=stored, count=_numel(info.shape), offset=info.start)
                view = flat.view(info.shape)
                if rows is not None or cols is not None:
                    view = view[rows if rows is not None else slice(None)] if cols is None else view[
                        rows if rows is not None else slice(None), cols]
                tensor = view.to(dtype or stored, copy=True)  # the one copy; the map closes next
                del flat, view
        self.bytes_read += tensor.numel() * _DTYPE_BYTES.get(info.dtype, tensor.element_size())  # as stored
        return tensor

    def prefetch(self, names: list[str]) -> threading.Thread | None:
        """:func:`prefetch` of these tensors of this checkpoint."""
        return prefetch([(self, names)])

    def layer_names(self, layer: int) -> list[str]:
        """Names of the stored tensors of layer ``layer`` (``...layers.{layer}.`` / ``...h.{layer}.``)."""
        return [n for n in self.tensors if layer_index(n) == layer]

    def read_rows(self, name: str, indices: list[int]) -> torch.Tensor:
        """Rows ``indices`` of matrix ``name`` (e.g. the embeddings of a few tokens), one slice per run
        of consecutive indices."""
        info = self._info(name)
        out = []
        with safe_open(str(info.shard), framework="pt") as handle:
            part = handle.get_slice(name)
            start = 0
            while start < len(indices):
                stop = start + 1
                while stop < len(indices) and indices[stop] == indices[stop - 1] + 1:
                    stop += 1
                out.append(part[indices[start] : indices[stop - 1] + 1])
                start = stop
        tensor = torch.cat(out)
        self.bytes_read += tensor.numel() * tensor.element_size()
        return tensor


_PREFETCH_LOCK = threading.Lock()  # one prefetch reads at a time: the disk is read sequentially
_PREFETCH_CHUNK = 16 * 2**20


def prefetch(requests: list[tuple[Checkpoint, list[str]]]) -> threading.Thread | None:
    """Read the bytes of the named tensors (checkpoint by checkpoint, in the order given) into the page
    cache in a background thread, sequentially through one 16 MB buffer, so that the next layer's disk
    reads overlap this layer's arithmetic. The memory is page cache, not this process's; nothing is
    counted in :attr:`Checkpoint.bytes_read`. (``posix_fadvise(WILLNEED)`` was tried first: on the
    machines measured it left the pages unread.) Returns the daemon thread (prefetches run one after
    another), or None when no named tensor exists."""
    ranges: list[tuple[Path, list[tuple[int, int]]]] = []
    for ckpt, names in requests:
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        for name in names:
            if name in ckpt.tensors:
                info = ckpt.tensors[name]
                by_shard.setdefault(info.shard, []).append((info.start, info.stop))
        ranges.extend((shard, _merged(spans)) for shard, spans in sorted(by_shard.items()))
    if not ranges:
        return None
    thread = threading.Thread(target=_read_ranges, args=(ranges,), daemon=True, name="interp-prefetch")
    thread.start()
    return thread


def _read_ranges(ranges: list[tuple[Path, list[tuple[int, int]]]]) -> None:
    """Read the byte ranges of each file and drop the bytes: the page cache keeps them."""
    with _PREFETCH_LOCK:
        buffer = memoryview(bytearray(_PREFETCH_CHUNK))
        for path, spans in ranges:
            try:
                with path.open("rb", buffering=0) as handle:
                    for start, stop in spans:
                        handle.seek(start)
                        while start < stop:
                            n = handle.readinto(buffer[: min(_PREFETCH_CHUNK, stop - start)])
                            if not n:
                                break
                            start += n
            except OSError:  # a prefetch is only a hint: the read that needs the bytes reports any error
                continue


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, stop in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], stop))
        else:
            out.append((start, stop))
    return out


def open_checkpoint(source: str | os.PathLike[str]) -> Checkpoint:
    """The checkpoint at ``source``: a folder, or a hub id whose snapshot is in the local HF cache.

    Raises :class:`CheckpointError` (a ValueError naming the file) for a folder without
    ``config.json`` or weights, a shard the index lists but the folder lacks, a truncated shard or a
    tensor the index places in a shard that does not hold it.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source: expected a folder or a hub id (str), got {type(source).__name__}")
    folder = _resolve(str(source))
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"source: {folder} has no config.json (not a Hugging Face model folder)")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"source: {config_path} is not valid JSON ({exc})") from None
    return Checkpoint(folder, config, _tensor_table(folder))


def _resolve(key: str) -> Path:
    folder = Path(key).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists():
        raise CheckpointError(f"source: {folder} is a file; expected a checkpoint folder")
    if key.count("/") == 1 and not key.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(key, local_files_only=True))
        except Exception as exc:  # not in the cache (and never fetched: local_files_only)
            raise CheckpointError(
                f"source: {key!r} is not a folder and not in the local Hugging Face cache ({type(exc).__name__})"
            ) from None
    raise CheckpointError(f"source: no checkpoint folder at {folder}")


def _tensor_table(folder: Path) -> dict[str, _TensorInfo]:
    index = folder / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"source: {index} is not a safetensors index ({exc!r})") from None
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise CheckpointError(
                f"source: shard(s) {missing} listed in {index.name} are missing from {folder}"
            )
        headers = {s: _header(folder / s) for s in shards}
        table = {}
        for name, shard in weight_map.items():
            if name not in headers[shard]:
                raise CheckpointError(f"source: {index.name} places {name!r} in {shard}, which has no such tensor")
            table[name] = _TensorInfo(folder / shard, *headers[shard][name])
        return table
    single = folder / SINGLE_NAME
    if single.is_file():
        return {name: _TensorInfo(single, *entry) for name, entry in _header(single).items()}
    raise CheckpointError(f"source: {folder} has neither {SINGLE_NAME} nor {INDEX_NAME}")


def _header(path: Path) -> dict[str, tuple[str, tuple[int, ...], int, int]]:
    """``{name: (dtype, shape, start, stop)}`` (byte range in the file) of a shard, from its header
    (:func:`interp.loading.checkpoint.safetensors_header`: checked against the file, no tensor read)."""
    try:
        header, data_start = safetensors_header(path)
    except SafetensorsFileError as exc:
        what = exc.problem if exc.problem.startswith("truncated") else f"unreadable ({exc.problem})"
        raise CheckpointError(f"source: shard {path.name} is {what}") from None
    header.pop("__metadata__", None)
    return {name: (entry["dtype"], tuple(int(x) for x in entry["shape"]),
                   data_start + entry["data_offsets"][0], data_start + entry["data_offsets"][1])
            for name, entry in header.items()}


def layer_index(name: str) -> int | None:
    """The first integer component of a tensor name (its layer), or None."""
    return next((int(p) for p in name.split(".") if p.isdigit()), None)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
