"""Would a pair fit in memory? The size of two checkpoints as loaded, against the memory available.

Used to pick the streamed path automatically (``interp report`` without ``--stream`` on a pair too
large to load): only the shard headers are read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from interp.streaming.checkpoint import Checkpoint, open_checkpoint

__all__ = ["MemoryCheck", "available_memory_bytes", "loaded_bytes", "should_stream"]

# Loading converts and processes a whole model, briefly holding about this many copies of its weights.
LOAD_OVERHEAD = 1.5


def loaded_bytes(ckpt: Checkpoint, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of every tensor of ``ckpt`` held in ``dtype`` (what a loaded HookedTransformer keeps)."""
    width = torch.empty((), dtype=dtype).element_size()
    total = 0
    for info in ckpt.tensors.values():
        n = 1
        for s in info.shape:
            n *= s
        total += n * width
    return total


def available_memory_bytes() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` (Linux); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class MemoryCheck:
    """``stream``: whether the pair should be streamed; ``reason``: one sentence saying why."""

    stream: bool
    needed_bytes: int
    available_bytes: int | None
    reason: str


def should_stream(
    base: str | os.PathLike[str],
    tuned: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    available: int | None = None,
) -> MemoryCheck:
    """Whether loading ``base`` and ``tuned`` (checkpoint folders / cached hub ids) in ``dtype`` would
    exceed the memory available (``available`` bytes, default :func:`available_memory_bytes`)."""
    needed = int(LOAD_OVERHEAD * sum(loaded_bytes(open_checkpoint(s), dtype) for s in (base, tuned)))
    if available is None:
        available = available_memory_bytes()
    gib = 2**30
    if available is None:
        return MemoryCheck(False, needed, None, "available memory unknown: loading the pair in memory")
    if needed > available:
        return MemoryCheck(True, needed, available,
                           f"the pair needs ~{needed / gib:.1f} GiB to load as {dtype} and {available / gib:.1f} GiB is "
                           "available: streaming it layer by layer")
    return MemoryCheck(False, needed, available,
                       f"the pair needs ~{needed / gib:.1f} GiB to load, {available / gib:.1f} GiB available")
