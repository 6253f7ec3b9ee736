"""Run every ``benchmarks/bench_*.py`` and write ``benchmarks/RESULTS.md``.

Usage: ``python -m benchmarks.run [NAME ...]`` (names without the ``bench_`` prefix select a subset).
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
from pathlib import Path

import torch

from benchmarks._harness import BenchRow

HERE = Path(__file__).parent


# Benchmarks that run only when named (``python -m benchmarks.run streaming``): they write tens of GB.
OPT_IN = {"bench_streaming"}


def _modules(selected: list[str]) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if selected:
        return [n for n in names if n.removeprefix("bench_") in selected or n in selected]
    return [n for n in names if n not in OPT_IN]


def _table(rows: list[tuple[str, BenchRow]]) -> str:
    lines = [
        "| benchmark | figure | interp | reference | ratio (reference/interp time) | interp peak MB | reference peak MB | memory ratio | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for module, row in rows:
        lines.append(
            f"| {module} | {row.figure} | {row.interp_s:.4f} s | {row.reference_s:.4f} s ({row.reference}) | "
            f"{row.speedup:.2f}× | {row.interp_peak_mb:.1f} | {row.reference_peak_mb:.1f} | "
            f"{row.memory_ratio:.2f} | {row.notes} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_grad_enabled(False)
    selected = list(sys.argv[1:] if argv is None else argv)
    rows: list[tuple[str, BenchRow]] = []
    started = time.time()
    for name in _modules(selected):
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        for row in module.run():
            print(f"   {row.figure}: interp {row.interp_s:.4f}s, reference {row.reference_s:.4f}s "
                  f"({row.speedup:.2f}×), peak {row.interp_peak_mb:.0f}/{row.reference_peak_mb:.0f} MB", flush=True)
            rows.append((name.removeprefix("bench_"), row))
    header = (
        "# Benchmark results\n\n"
        f"Written by `make bench` on {time.strftime('%Y-%m-%d %H:%M')} "
        f"({platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads); "
        f"total {time.time() - started:.0f} s.\n\n"
        "Each figure times interp and its reference in the same process, alternately, and reports the median; "
        "peak memory is the extra resident memory of one call (RSS sampled during the call, minus RSS before it).\n\n"
    )
    out = HERE / "RESULTS.md"
    if selected and out.exists():
        out = HERE / f"RESULTS-{'-'.join(selected)}.md"
    out.write_text(header + _table(rows) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
