"""Run the report's sections on a pair and write ``report.html`` (plus every table as CSV).

Each section runs on its own: if its analysis raises, the section shows the error, the others are
still written, and :attr:`Report.failed` names it (the CLI then exits with code 4).

A pair too large for memory is streamed (:mod:`interp.streaming`, ``stream=True`` or automatically when
:func:`interp.streaming.memory.should_stream` says so): the weight and circuit sections read one layer
of both models at a time; the sections in :data:`WHOLE_MODEL_SECTIONS` are skipped with a note.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import io
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import torch

from interp.pair import DEFAULT_BASE, ModelPair, default_adapter_path
from interp.progress import progress_bar
from interp.report.html import Section, render
from interp.report.options import ReportOptions
from interp.report.sections import SECTIONS
from interp.results import Result, ResultLayout

__all__ = ["WHOLE_MODEL_SECTIONS", "Report", "ReportInputError", "SectionOutcome", "build_report", "check_options",
           "choose_stream", "load_pair", "report_contents", "run_sections", "write_report"]

#: Sections that need whole-model activations: skipped, with a note, when the pair is streamed.
WHOLE_MODEL_SECTIONS = ("activations", "subspace")


class ReportInputError(ValueError):
    """The pair could not be loaded or the options do not fit it (raised before any section runs)."""


@dataclass(frozen=True)
class SectionOutcome:
    """How one section went: its summary lines, or the error that stopped it."""

    key: str
    title: str
    seconds: float
    summary: tuple[str, ...]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, eq=False)
class Report(Result):
    """A written report: the HTML file, the folder of CSV tables, each section's outcome, and every
    table and figure of the report (``tables[name]`` is also ``tables_dir / f"{name}.csv"``;
    ``figures`` are named ``"{section key}-{i}"``, or ``"{section key}-{i}-{j}"`` inside a row).

    In a notebook it shows its summary and one row per section (:meth:`overview`); ``save`` /
    ``load`` keep all of it (figures as plotly JSON) in a folder, without the HTML file.
    """

    result_layout: ClassVar[ResultLayout] = ResultLayout(
        headline="overview", table_maps=("tables",),
        metadata=("path", "tables_dir", "summary", "sections", "seconds", "figures"))

    path: Path
    tables_dir: Path
    summary: tuple[str, ...]
    sections: tuple[SectionOutcome, ...]
    seconds: float
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, go.Figure] = field(default_factory=dict)

    @property
    def failed(self) -> tuple[str, ...]:
        """Keys of the sections whose analysis raised."""
        return tuple(s.key for s in self.sections if not s.ok)

    def overview(self) -> pd.DataFrame:
        """One row per section: ``section`` (key), ``title``, ``status`` ("ok"/"failed"), ``seconds``,
        and its numbers of ``tables`` and ``figures``."""
        def count(names: Sequence[str], key: str) -> int:
            return sum(name.startswith(f"{key}-") for name in names)

        return pd.DataFrame({
            "section": [s.key for s in self.sections], "title": [s.title for s in self.sections],
            "status": ["ok" if s.ok else "failed" for s in self.sections],
            "seconds": [round(s.seconds, 1) for s in self.sections],
            "tables": [count(list(self.tables), s.key) for s in self.sections],
            "figures": [count(list(self.figures), s.key) for s in self.sections],
        })

    def _repr_html_(self) -> str:
        """The summary lines, then the per-section overview and what else is inside."""
        lines = "".join(f"<li>{html.escape(line)}</li>" for line in self.summary)
        return (f"<div class='interp-report'><p>{html.escape(str(self.path))}</p><ul>{lines}</ul></div>"
                + super()._repr_html_())

    def _saved_value(self, name: str, value: Any) -> Any:
        if name in ("path", "tables_dir"):
            return str(value)
        if name == "sections":
            return [dataclasses.asdict(s) for s in value]
        if name == "figures":
            return {key: figure.to_json() for key, figure in value.items()}
        return value

    @classmethod
    def _restored_values(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "path": Path(values["path"]), "tables_dir": Path(values["tables_dir"]),
                "sections": tuple(SectionOutcome(**s) for s in values["sections"]),
                "figures": {key: pio.from_json(text) for key, text in values["figures"].items()}}


def report_contents(sections: Sequence[Section]) -> tuple[dict[str, pd.DataFrame], dict[str, go.Figure]]:
    """Every table (by its CSV name) and every figure (``"{key}-{i}"``, ``"{key}-{i}-{j}"`` in a row) of
    ``sections``."""
    tables: dict[str, pd.DataFrame] = {}
    figures: dict[str, go.Figure] = {}
    for section in sections:
        for table in section.tables:
            if table.name in tables:
                raise ValueError(f"sections: two tables are named {table.name!r}")
            tables[table.name] = table.frame
        for i, row in enumerate(section.figures):
            if isinstance(row, list):
                figures.update({f"{section.key}-{i}-{j}": figure for j, figure in enumerate(row)})
            else:
                figures[f"{section.key}-{i}"] = row
    return tables, figures


def load_pair(
    base: str | None = DEFAULT_BASE,
    tuned: str | None = None,
    adapter: str | None = None,
    device: str = "auto",
    dtype: str | torch.dtype = "float32",
) -> ModelPair:
    """The pair a report is about: ``base`` and ``tuned`` (any sources :func:`interp.load_model`
    accepts), or ``base`` + a PEFT ``adapter`` (``base=None``: the adapter's own
    ``base_model_name_or_path``); with neither, the committed default LoRA on the default base.
    ``device``/``dtype`` as in :func:`interp.load_model`."""
    if tuned is not None and adapter is not None:
        raise ValueError("tuned/adapter: give one of them, not both")
    settings = dict(device=device, dtype=dtype)
    if tuned is not None:
        return ModelPair.from_names(base or DEFAULT_BASE, tuned, **settings)
    if adapter is None and base not in (None, DEFAULT_BASE):
        raise ValueError(f"adapter: give --tuned or --adapter when --base is not the default model {DEFAULT_BASE!r}")
    if adapter is not None:
        folder = Path(adapter).expanduser()
        if not folder.exists():
            raise FileNotFoundError(f"adapter: no such folder {str(folder)!r}")
        if not (folder / "adapter_config.json").is_file():
            raise ValueError(f"adapter: {str(folder)!r} is not a PEFT adapter folder (it has no adapter_config.json)")
        return ModelPair.from_lora(base, adapter, **settings)
    return ModelPair.from_lora(base or DEFAULT_BASE, default_adapter_path(), **settings)


def choose_stream(base: str | None, tuned: str | None, adapter: str | None, stream: bool | None) -> tuple[bool, str]:
    """Whether to stream the pair, and why. ``stream=True``: yes (it needs ``tuned``, two safetensors
    checkpoints); ``False``: no; ``None``: when :func:`interp.streaming.memory.should_stream` says the two
    checkpoints would not fit in the memory available (never for an adapter pair or GGUF models)."""
    if stream is not None and not isinstance(stream, bool):
        raise TypeError(f"stream: expected True, False or None, got {stream!r}")
    if stream is False:
        return False, ""
    if tuned is None or adapter is not None:
        if stream:
            raise ValueError("stream: a streamed report needs base and tuned safetensors checkpoints (--tuned), "
                             "not an adapter")
        return False, ""
    if stream:
        return True, "streaming the pair layer by layer, as asked"
    from interp.streaming import CheckpointError
    from interp.streaming.memory import should_stream

    try:
        check = should_stream(base or DEFAULT_BASE, tuned)
    except (CheckpointError, ValueError, OSError):  # not safetensors checkpoints (GGUF names): loaded whole
        return False, ""
    return check.stream, check.reason


def _skipped(key: str) -> tuple[Section, SectionOutcome]:
    title = SECTIONS[key][0]
    section = Section(title, key=key)
    note = (f"{title}: skipped; the pair was streamed layer by layer (it does not fit in memory, or --stream was "
            "given), and this section needs whole-model activations.")
    section.add_text(note)
    section.seconds = 0.0
    return section, SectionOutcome(key, title, 0.0, (note,))


def _stream_facts(pair: object) -> str:
    from interp.streaming.model import peak_rss_bytes

    read = pair.base.checkpoint.bytes_read + pair.tuned.checkpoint.bytes_read
    return (f"Streamed run: read {read / 2**30:.2f} GiB from the two checkpoints; peak resident memory "
            f"{peak_rss_bytes() / 2**30:.2f} GiB.")


def _short_error(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = "".join(traceback.format_list(frames[-3:]))
    return f"{type(exc).__name__}: {exc}\n\nwhere it was raised:\n{where}"


def run_sections(
    pair: ModelPair, options: ReportOptions, *, bar: Any | None = None
) -> list[tuple[Section, SectionOutcome]]:
    """Run every section in ``options.sections`` (report order), catching each one's errors; for a
    streamed pair the sections of :data:`WHOLE_MODEL_SECTIONS` are skipped with a note."""
    from interp.streaming import StreamedPair

    out = []
    for key in (k for k in SECTIONS if k in options.sections):
        title, builder = SECTIONS[key]
        if isinstance(pair, StreamedPair) and key in WHOLE_MODEL_SECTIONS:
            out.append(_skipped(key))
            if bar is not None:
                bar.update(1)
            continue
        if bar is not None:
            bar.set_description(f"report: {key}")
        started = time.perf_counter()
        try:
            with torch.no_grad():  # the analyses read weights and activations; no graph is needed
                section, lines = builder(pair, options)
            error = None
        except Exception as exc:  # noqa: BLE001 - a failed analysis must not lose the rest of the report
            section, lines, error = Section(title, key=key), [], _short_error(exc)
            section.error = error
        seconds = time.perf_counter() - started
        section.seconds = seconds
        out.append((section, SectionOutcome(key, title, seconds, tuple(lines), error)))
        if bar is not None:
            bar.update(1)
    return out


def _config_section(pair: ModelPair, options: ReportOptions, outcomes: Sequence[SectionOutcome],
                    load_seconds: float | None) -> Section:
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "source tree (not pip-installed)"

    section = Section("Run configuration", key="configuration")
    cfg = pair.cfg
    facts = {
        "pair": pair.name, "architecture": cfg.original_architecture, "layers": cfg.n_layers,
        "d_model": cfg.d_model, "heads (query / key-value)": f"{cfg.n_heads} / {cfg.n_key_value_heads or cfg.n_heads}",
        "d_head": cfg.d_head, "d_mlp": cfg.d_mlp,
        "interp": installed("interp"), "transformer_lens": installed("transformer-lens"),
        "torch": torch.__version__, "python": platform.python_version(), "torch threads": torch.get_num_threads(),
    }
    if load_seconds is not None:
        facts["loading the pair (s)"] = f"{load_seconds:.1f}"
    facts.update({f"section {o.key} (s)": f"{o.seconds:.1f}" + (" FAILED" if o.error else "") for o in outcomes})
    section.add_table("facts", "Models, versions and timings", pd.DataFrame({"item": list(facts),
                                                                              "value": [str(v) for v in facts.values()]}))
    settings = options.describe()
    section.add_table("options", "Report settings (interp.report.ReportOptions)",
                      pd.DataFrame({"option": list(settings), "value": [str(v) for v in settings.values()]}))
    return section


def write_report(
    out_dir: str | Path, title: str, summary: list[str], sections: list[Section], *, subtitle: str = ""
) -> tuple[Path, Path]:
    """Write ``out_dir/report.html`` and ``out_dir/tables/<table>.csv``; returns both paths."""
    out = Path(out_dir)
    tables_dir = out / "tables"
    tables_dir.mkdir(parents=True, exist_ok=True)
    for section in sections:
        for table in section.tables:
            table.frame.to_csv(tables_dir / f"{table.name}.csv", index=False)
    path = out / "report.html"
    path.write_text(render(title, summary, sections, subtitle=subtitle), encoding="utf-8")
    return path, tables_dir


def build_report(
    pair: ModelPair | None = None,
    *,
    base: str = DEFAULT_BASE,
    tuned: str | None = None,
    adapter: str | None = None,
    options: ReportOptions | None = None,
    out_dir: str | Path = "reports",
    quiet: bool = False,
    device: str = "auto",
    dtype: str | torch.dtype = "float32",
    stream: bool | None = None,
) -> Report:
    """Run every analysis on the pair and write ``out_dir/report.html``.

    A pair that cannot be loaded or options that do not fit it raise before any analysis runs; an
    analysis that raises only marks its section as failed (see :attr:`Report.failed`).

    Args:
        pair: An already loaded :class:`interp.ModelPair`; None loads one from ``base`` and
            ``tuned``/``adapter`` (see :func:`load_pair`; nothing given = the embedded default pair).
            With a pair, ``base``/``tuned``/``adapter``/``device``/``dtype`` must be left at their
            defaults (a ReportInputError names any that is not: it would be ignored).
        base: The base model: any source :func:`interp.load_model` accepts (registry name, GGUF file,
            Hugging Face folder or hub id).
        tuned: The tuned model, any such source.
        adapter: Folder of a PEFT LoRA adapter (``base=None``: the adapter's own recorded base).
        options: What to compute (default :class:`ReportOptions`, with persona directions cached under
            ``interp.cache_dir()/report``).
        out_dir: Folder for ``report.html`` and ``tables/*.csv``.
        quiet: Turn progress bars off.
        device: "auto" (CUDA, then MPS, then CPU) or a device name, for the loaded pair.
        dtype: The loaded pair's dtype.
        stream: Read ``base`` and ``tuned`` (safetensors checkpoints) one layer at a time instead of
            loading them (:func:`choose_stream`; None: only when they would not fit in memory, saying so
            on stderr); ``pair`` may also be an :class:`interp.streaming.StreamedPair`. Sections needing
            whole-model activations are then skipped with a note; the bytes read and peak resident
            memory end the summary.

    Returns:
        A :class:`Report`: the paths written, summary lines, each section's outcome, and every table and
        figure; it displays itself in a notebook and saves with ``save``.

    Raises:
        ReportInputError: The pair could not be loaded, loading arguments were given with a pair, or the
            options do not fit it.
    """
    from interp.streaming import StreamedPair

    started = time.perf_counter()
    if options is None:
        from interp.report.cache import default_cache_dir

        options = ReportOptions(cache_dir=default_cache_dir())
    if not isinstance(options, ReportOptions):
        raise TypeError(f"options: expected a ReportOptions, got {type(options).__name__}")
    if quiet:
        options = options.replace(progress=False)
    n_stages = len(options.sections) + (pair is None) + 1
    with progress_bar(total=n_stages, desc="report", unit="stage", progress=options.progress) as bar:
        load_seconds, streamed, reason = None, False, ""
        if isinstance(pair, ModelPair) and stream:
            raise ReportInputError("stream: give base and tuned checkpoints (or a StreamedPair), not a loaded pair")
        if pair is not None:
            _refuse_loading_arguments(base=base, tuned=tuned, adapter=adapter, device=device, dtype=dtype)
        if pair is None:
            try:
                streamed, reason = choose_stream(base, tuned, adapter, stream)
            except (ValueError, TypeError) as exc:
                raise ReportInputError(str(exc)) from exc
        if pair is None and streamed:
            print(f"interp report: {reason}", file=sys.stderr)
            try:
                pair = StreamedPair.open(base or DEFAULT_BASE, tuned)
            except (ValueError, TypeError, FileNotFoundError) as exc:
                raise ReportInputError(str(exc)) from exc
            load_seconds = time.perf_counter() - started
            bar.update(1)
        elif pair is None:
            bar.set_description("report: loading the pair")
            # TransformerLens prints "Moving model to device" per model; keep stdout clean when quiet
            silenced = contextlib.nullcontext() if options.progress else contextlib.redirect_stdout(io.StringIO())
            try:
                with silenced:
                    pair = load_pair(base, tuned, adapter, device, dtype)
            except (ValueError, TypeError, FileNotFoundError) as exc:
                raise ReportInputError(str(exc)) from exc
            load_seconds = time.perf_counter() - started
            bar.update(1)
        elif not isinstance(pair, ModelPair | StreamedPair):
            raise TypeError(f"pair: expected an interp.ModelPair or interp.streaming.StreamedPair, "
                            f"got {type(pair).__name__}")
        if isinstance(pair, StreamedPair) and not options.progress:  # quiet: no per-layer bars either
            for streamed_model in (pair, pair.base, pair.tuned):
                streamed_model.show_progress = False
        try:
            check_options(pair, options)
        except (ValueError, TypeError) as exc:
            raise ReportInputError(str(exc)) from exc
        results = run_sections(pair, options, bar=bar)
        sections = [s for s, _ in results]
        outcomes = tuple(o for _, o in results)
        summary = [line for o in outcomes for line in o.summary]
        failed = [o.title for o in outcomes if o.error]
        if failed:
            summary.append(f"{len(failed)} section(s) failed and show their error below: {', '.join(failed)}.")
        if isinstance(pair, StreamedPair):
            summary.append(_stream_facts(pair))
            if options.progress:
                print(summary[-1], file=sys.stderr)
        sections.append(_config_section(pair, options, outcomes, load_seconds))
        bar.set_description("report: writing HTML")
        elapsed = time.perf_counter() - started
        subtitle = (f"base vs tuned · {pair.cfg.n_layers} layers, d_model {pair.cfg.d_model} · built in "
                    f"{elapsed:.0f} s on {platform.node() or 'this machine'} · "
                    f"{time.strftime('%Y-%m-%d %H:%M')}")
        path, tables_dir = write_report(out_dir, f"interp report: {pair.name}", summary, sections, subtitle=subtitle)
        bar.update(1)
    tables, figures = report_contents(sections)
    return Report(path, tables_dir, tuple(summary), outcomes, time.perf_counter() - started, tables, figures)


def _refuse_loading_arguments(**given: object) -> None:
    """With a pair given, the arguments that would load one (``base``, ``tuned``, ``adapter``,
    ``device``, ``dtype``) must keep their defaults: a ReportInputError names those that do not."""
    defaults = {"base": DEFAULT_BASE, "tuned": None, "adapter": None, "device": "auto", "dtype": "float32"}
    ignored = [name for name, value in given.items() if not (value is defaults[name] or value == defaults[name])]
    if ignored:
        raise ReportInputError(
            f"{', '.join(ignored)}: a pair was given, so these arguments, which load a pair, would be ignored; "
            "pass either pair= or base/tuned/adapter/device/dtype (load_pair(...) loads one with those)"
        )


def check_options(pair: ModelPair, options: ReportOptions) -> None:
    """Arguments that depend on the model: layer indices in range, directions of width d_model."""
    from interp._validate import as_layers

    n_layers, d_model = pair.cfg.n_layers, pair.cfg.d_model
    for name in ("layers", "sweep_layers"):
        value = getattr(options, name)
        if value is not None:
            as_layers(list(value), n_layers, name=name)
    if options.persona_layer is not None:
        as_layers(options.persona_layer, n_layers, name="persona_layer")
    if options.directions is not None and options.directions.d_model != d_model:
        raise ValueError(
            f"directions: the vectors have width {options.directions.d_model} but the model's d_model is {d_model}"
        )
