"""Time and memory of interp against a reference implementation, measured in one run.

Both callables run alternately (interp, reference, interp, ...) so that machine load affects
both alike; the figure is the median wall time. Peak memory is the extra resident memory of one
call: the process's RSS sampled every 0.5 ms by a thread during the call, minus the RSS just before
it (after ``gc.collect`` and ``malloc_trim``), i.e. what the call needed on top of what was loaded.
"""

from __future__ import annotations

import ctypes
import gc
import os
import resource
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BenchRow:
    """One benchmark figure: interp's and the reference's median time and peak extra memory."""

    figure: str
    interp_s: float
    reference_s: float
    interp_peak_mb: float
    reference_peak_mb: float
    reference: str
    notes: str = ""

    @property
    def speedup(self) -> float:
        """reference time / interp time (> 1: interp is faster)."""
        return self.reference_s / self.interp_s if self.interp_s > 0 else float("inf")

    @property
    def memory_ratio(self) -> float:
        """interp peak / reference peak (< 1: interp needs less)."""
        return self.interp_peak_mb / self.reference_peak_mb if self.reference_peak_mb > 0 else float("nan")


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _trim() -> None:
    """Return freed heap pages to the OS so that the baseline RSS is honest (glibc only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # pragma: no cover - not glibc
        pass


def peak_extra_mb(fn: Callable[[], object], *, interval_s: float = 0.0005) -> float:
    """Peak extra resident memory (MB) of one call of ``fn``: RSS sampled by a thread during the call."""
    gc.collect()
    _trim()
    base = _rss_mb()
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_mb())
            time.sleep(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = fn()
        peak = max(peak, _rss_mb())
    finally:
        done.set()
        sampler.join()
    del result
    return max(peak - base, 0.0)


def timed_peak(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall time (s) and peak extra resident memory (MB) of one call of ``fn``, measured together."""
    seconds = 0.0

    def timed() -> None:
        nonlocal seconds
        t0 = time.perf_counter()
        fn()
        seconds = time.perf_counter() - t0

    peak = peak_extra_mb(timed)
    return seconds, peak


def median_time(fn: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def compare(
    figure: str,
    interp_fn: Callable[[], object],
    reference_fn: Callable[[], object],
    *,
    reference: str = "seed-style",
    repeats: int = 5,
    notes: str = "",
    measure_memory: bool = True,
) -> BenchRow:
    """Time ``interp_fn`` and ``reference_fn`` alternately (one warm-up each) and measure peak memory."""
    interp_fn()
    reference_fn()
    interp_times: list[float] = []
    reference_times: list[float] = []
    for _ in range(repeats):
        interp_times += median_time(interp_fn, 1)
        reference_times += median_time(reference_fn, 1)
    interp_mb = peak_extra_mb(interp_fn) if measure_memory else float("nan")
    reference_mb = peak_extra_mb(reference_fn) if measure_memory else float("nan")
    return BenchRow(
        figure=figure,
        interp_s=statistics.median(interp_times),
        reference_s=statistics.median(reference_times),
        interp_peak_mb=interp_mb,
        reference_peak_mb=reference_mb,
        reference=reference,
        notes=notes,
    )


def max_rss_mb() -> float:
    """This process's peak resident set size so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
