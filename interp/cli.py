"""The ``interp`` command line: ``interp report``, ``interp models``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_OK, EXIT_USAGE, EXIT_INPUT, EXIT_FAILURE = 0, 2, 3, 1


def _cmd_models(args: argparse.Namespace) -> int:
    from interp.loading import OFFLINE_MODELS, cache_dir

    converted = cache_dir() / "converted"
    for name, entry in OFFLINE_MODELS.items():
        cached = any(converted.glob(f"{name}-*/done.json")) if converted.is_dir() else False
        print(f"{name:24s} {'cached' if cached else 'not yet converted':18s} {entry.description}")
    print("\nAlso: any TransformerLens model name (needs a network or the HF cache), a .gguf path, "
          "or a local Hugging Face folder.")
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from interp.report import build_report

    path = build_report(
        base=args.base,
        tuned=args.tuned,
        adapter=args.adapter,
        directions=args.directions,
        layers=args.layers,
        out_dir=args.out,
        quiet=args.quiet,
    )
    print(f"report written to {path}")
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interp", description="What did tuning change in a model?")
    sub = parser.add_subparsers(dest="command", required=True)
    models = sub.add_parser("models", help="list the known offline models and whether they are cached")
    models.set_defaults(run=_cmd_models)
    report = sub.add_parser("report", help="run every analysis on a base/tuned pair and write an HTML report")
    report.add_argument("--base", default="smollm2-135m-instruct", help="base model name or path")
    group = report.add_mutually_exclusive_group()
    group.add_argument("--tuned", help="tuned model name or path")
    group.add_argument("--adapter", help="PEFT LoRA adapter folder applied to --base")
    report.add_argument("--directions", help="a DirectionSet file (.safetensors) of probe directions")
    report.add_argument("--layers", type=int, nargs="+", help="layers to analyse (default: all)")
    report.add_argument("--out", default="reports", help="output folder (default: ./reports)")
    report.add_argument("--quiet", action="store_true", help="no progress bars")
    report.set_defaults(run=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError, ModuleNotFoundError) as exc:
        print(f"interp {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
