"""Results that display and save themselves: a mixin for interp's result dataclasses.

A result dataclass inherits :class:`Result` and declares, in one :class:`ResultLayout`, what each of
its fields is: a table (``pandas.DataFrame``), a tensor (``torch.Tensor``), plain metadata (JSON:
``None``, bool, int, float, str and lists, tuples and str-keyed dicts of them), a nested
:class:`Result`, or an object that saves itself to one file (e.g. a ``DirectionSet``, whose
``save(file)`` / ``load(file)`` write and read one safetensors file); and which table is the headline (a table field or a method returning a DataFrame).
From that declaration it gets

* ``_repr_html_``: in a notebook, the headline table plus a note of what else is inside (other
  tables with their shapes, tensors with shapes and dtypes, nested results, figure methods);
* ``save(path)`` / ``load(path)``: a folder with one parquet file per table, one safetensors file
  for all tensors, one sub-folder per nested result and ``result.json`` holding the metadata, the
  class and :data:`RESULT_FORMAT_VERSION`. No pickle anywhere; ``load`` refuses a folder written
  for another class or by another format version.

>>> @dataclass(frozen=True)
... class Scores(Result):
...     result_layout: ClassVar[ResultLayout] = ResultLayout(headline="table", tables=("table",),
...                                                           tensors=("matrix",), metadata=("label",))
...     table: pd.DataFrame
...     matrix: torch.Tensor
...     label: str
>>> Scores(frame, torch.eye(3), "demo").save("runs/scores")
>>> Scores.load("runs/scores")
"""

from __future__ import annotations

import dataclasses
import html
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

RESULT_FORMAT_VERSION = 1
"""Version of the folder layout written by :meth:`Result.save`; bumped whenever a change would make
an older interp misread a newer folder (or the reverse)."""

META_FILE = "result.json"
TENSOR_FILE = "tensors.safetensors"
OBJECT_SUFFIX = ".safetensors"
_FORMAT_NAME = "interp-result"
_HEADLINE_ROWS = 10
_HEADLINE_COLS = 12
R = TypeVar("R", bound="Result")


@dataclass(frozen=True)
class ResultLayout:
    """Which fields of a result dataclass are tables, tensors, metadata or nested results.

    Args:
        headline: The table shown first in a notebook: a table field, or the name of a method that
            takes no arguments and returns a DataFrame (e.g. ``"to_frame"``).
        tables: ``pandas.DataFrame`` fields, saved as parquet.
        table_maps: Fields holding a ``{name: DataFrame}`` dict, saved as one parquet file per entry in
            a sub-folder of the field's name (names must be file-name safe; their order is kept).
        tensors: ``torch.Tensor`` fields, saved together in one safetensors file (loaded on the CPU).
        metadata: Fields holding JSON-like values, saved in ``result.json``.
        results: Fields holding another :class:`Result`, saved in a sub-folder of the same name.
        objects: ``(field, class)`` pairs for fields holding an object (or None) that saves itself:
            ``value.save(folder / f"{field}.safetensors")`` and ``class.load(that file)`` (e.g.
            ``("directions", DirectionSet)``).
        figures: Methods that build a figure, listed in the notebook summary.
        derived_tables: Further methods returning DataFrames, listed (with shapes) in the summary.
    """

    headline: str
    tables: tuple[str, ...] = ()
    table_maps: tuple[str, ...] = ()
    tensors: tuple[str, ...] = ()
    metadata: tuple[str, ...] = ()
    results: tuple[str, ...] = ()
    objects: tuple[tuple[str, type], ...] = ()
    figures: tuple[str, ...] = ()
    derived_tables: tuple[str, ...] = ()

    def stored(self) -> dict[str, str]:
        """Field name → kind for every stored field, checking no field is listed twice.

        Returns:
            ``{field name: "table" | "table_map" | "tensor" | "metadata" | "result" | "object"}``.
        """
        kinds: dict[str, str] = {}
        for kind, names in (("table", self.tables), ("table_map", self.table_maps), ("tensor", self.tensors), ("metadata", self.metadata),
                            ("result", self.results), ("object", tuple(name for name, _ in self.objects))):
            for name in names:
                if name in kinds:
                    raise TypeError(f"ResultLayout lists field {name!r} as both {kinds[name]} and {kind}")
                kinds[name] = kind
        return kinds


class ResultFormatError(ValueError):
    """A folder is not a saved result of the requested class and format version."""


class Result:
    """Mixin for result dataclasses: notebook display and ``save`` / ``load`` (module docstring)."""

    result_layout: ClassVar[ResultLayout]

    # ----------------------------------------------------------------- the declaration, checked once
    @classmethod
    def _checked_layout(cls) -> tuple[ResultLayout, dict[str, str]]:
        """The class's layout and its field kinds, after checking they match the dataclass fields."""
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__qualname__} must be a dataclass to be a Result")
        layout = getattr(cls, "result_layout", None)
        if not isinstance(layout, ResultLayout):
            raise TypeError(f"{cls.__qualname__} must set `result_layout: ClassVar[ResultLayout] = "
                            f"ResultLayout(...)`, got {layout!r}")
        kinds = layout.stored()
        init_fields = [f.name for f in dataclasses.fields(cls) if f.init]
        missing = [name for name in init_fields if name not in kinds]
        unknown = [name for name in kinds if name not in init_fields]
        if missing or unknown:
            raise TypeError(f"result_layout of {cls.__qualname__} does not match its fields: "
                            f"unclassified {missing}, not init fields {unknown}")
        headline_ok = layout.headline in layout.tables or callable(getattr(cls, layout.headline, None))
        if not headline_ok:
            raise TypeError(f"result_layout.headline of {cls.__qualname__} is {layout.headline!r}: expected "
                            f"one of its table fields {list(layout.tables)} or a method returning a DataFrame")
        return layout, kinds

    def headline_table(self) -> pd.DataFrame:
        """The headline table named by ``result_layout.headline``.

        Returns:
            The table field, or the DataFrame returned by the headline method.
        """
        layout, _ = self._checked_layout()
        value = getattr(self, layout.headline)
        table = value() if layout.headline not in layout.tables else value
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"{type(self).__qualname__}.{layout.headline} gave {type(table).__name__}, "
                            "expected a pandas DataFrame")
        return table

    # ---------------------------------------------------------------------------------- display
    def _repr_html_(self) -> str:
        """Compact notebook summary: the headline table and a list of everything else inside."""
        layout, _ = self._checked_layout()
        name = type(self).__qualname__
        doc = (type(self).__doc__ or "").strip().splitlines()
        title = f"<b>{html.escape(name)}</b>" + (f": {html.escape(doc[0])}" if doc else "")
        headline = self.headline_table()
        parts = [f"<div class='interp-result'><p>{title}</p>",
                 f"<p>{html.escape(layout.headline)} ({_shape(headline)})</p>",
                 headline.to_html(max_rows=_HEADLINE_ROWS, max_cols=_HEADLINE_COLS, border=0)]
        inside = self._inside(layout)
        if inside:
            items = "".join(f"<li>{html.escape(line)}</li>" for line in inside)
            parts.append(f"<details><summary>Also inside</summary><ul>{items}</ul></details>")
        parts.append("</div>")
        return "".join(parts)

    def _inside(self, layout: ResultLayout) -> list[str]:
        """One line per table, tensor, nested result and figure that is not the headline."""
        lines = []
        for name in layout.tables:
            if name != layout.headline:
                value = getattr(self, name)
                lines.append(f"table {name}: " + ("None" if value is None else _shape(value)))
        for name in layout.table_maps:
            value = getattr(self, name)
            lines.append(f"tables {name}: " + ("None" if value is None else f"{len(value)} ({', '.join(list(value)[:8])}"
                                                                                 f"{', ...' if len(value) > 8 else ''})"))
        for name in layout.derived_tables:
            if name != layout.headline:
                lines.append(f"table {name}(): {_shape(getattr(self, name)())}")
        for name in layout.tensors:
            value = getattr(self, name)
            described = "None" if value is None else f"{list(value.shape)} {str(value.dtype).removeprefix('torch.')}"
            lines.append(f"tensor {name}: {described}")
        for name in layout.results:
            value = getattr(self, name)
            lines.append(f"result {name}: " + ("None" if value is None else type(value).__qualname__))
        for name, _ in layout.objects:
            value = getattr(self, name)
            described = type(value).__qualname__ + (f" of {len(value)}" if hasattr(value, "__len__") else "")
            lines.append(f"{name}: " + ("None" if value is None else described))
        lines.extend(f"figure {name}()" for name in layout.figures)
        return lines

    # ---------------------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write the result to the folder ``path`` (created; files of an earlier save are overwritten).

        Args:
            path: Folder to write.

        Returns:
            The folder, as a ``Path``.
        """
        layout, kinds = self._checked_layout()
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        meta: dict[str, Any] = {"format": _FORMAT_NAME, "format_version": RESULT_FORMAT_VERSION,
                                "class": _class_name(type(self)), "tables": {}, "tensors": [],
                                "results": [], "none": [], "metadata": {}}
        tensors: dict[str, torch.Tensor] = {}
        meta["objects"] = []
        meta["table_maps"] = {}
        objects = dict(layout.objects)
        for name, kind in kinds.items():
            value = self._saved_value(name, getattr(self, name))
            if value is None and kind != "metadata":
                meta["none"].append(name)
            elif kind == "table":
                meta["tables"][name] = _save_table(value, folder / f"{name}.parquet", f"{_class_name(type(self))}.{name}")
            elif kind == "tensor":
                if not isinstance(value, torch.Tensor):
                    raise TypeError(f"{type(self).__qualname__}.{name} is declared a tensor but holds "
                                    f"{type(value).__name__}")
                tensors[name] = value.detach().to("cpu").clone().contiguous()
                meta["tensors"].append(name)
            elif kind == "result":
                if not isinstance(value, Result):
                    raise TypeError(f"{type(self).__qualname__}.{name} is declared a nested result but holds "
                                    f"{type(value).__name__}")
                value.save(folder / name)
                meta["results"].append(name)
            elif kind == "table_map":
                if not isinstance(value, dict) or not all(isinstance(k, str) and _SAFE_NAME.fullmatch(k) for k in value):
                    raise TypeError(f"{type(self).__qualname__}.{name} is declared a table map but is not a dict with "
                                    "file-name-safe string keys (letters, digits, '.', '_', '-'; not starting with '.')")
                (folder / name).mkdir(exist_ok=True)
                meta["table_maps"][name] = [
                    _save_table(frame, folder / name / f"{key}.parquet", f"{type(self).__qualname__}.{name}[{key!r}]")
                    for key, frame in value.items()]
            elif kind == "object":
                if not isinstance(value, objects[name]):
                    raise TypeError(f"{type(self).__qualname__}.{name} is declared a {objects[name].__qualname__} "
                                    f"but holds {type(value).__name__}")
                value.save(folder / f"{name}{OBJECT_SUFFIX}")
                meta["objects"].append(name)
            else:
                meta["metadata"][name] = _encode(value, f"{type(self).__qualname__}.{name}")
        if tensors:
            save_file(tensors, str(folder / TENSOR_FILE))
        (folder / META_FILE).write_text(json.dumps(meta, indent=1, allow_nan=False))
        return folder

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        """Read a result written by :meth:`save` of this class.

        Args:
            path: Folder written by ``save``.

        Returns:
            An instance of this class equal to the one saved (tensors on the CPU).

        Raises:
            ResultFormatError: The folder is not a saved result, was written for another class, or by
                another result-format version.
        """
        layout, kinds = cls._checked_layout()
        folder = Path(path)
        meta = read_meta(folder)
        if meta["format_version"] != RESULT_FORMAT_VERSION:
            raise ResultFormatError(f"{folder} was written in interp result format version {meta['format_version']}, "
                                    f"but this interp reads version {RESULT_FORMAT_VERSION}; recompute the result "
                                    "or load it with the interp version that wrote it")
        if meta["class"] != _class_name(cls):
            raise ResultFormatError(f"{folder} holds a {meta['class']}, not a {_class_name(cls)}; load it with "
                                    f"{meta['class'].rsplit('.', 1)[-1]}.load")
        saved = (set(meta["tables"]) | set(meta["tensors"]) | set(meta["results"]) | set(meta["none"])
                 | set(meta["metadata"]) | set(meta.get("objects", [])) | set(meta.get("table_maps", {})))
        if saved != set(kinds):
            raise ResultFormatError(f"{folder} stores fields {sorted(saved)}, but {cls.__qualname__} has "
                                    f"{sorted(kinds)}")
        tensors = load_file(str(folder / TENSOR_FILE)) if meta["tensors"] else {}
        values: dict[str, Any] = {name: None for name in meta["none"]}
        for name, file in meta["tables"].items():
            values[name] = pd.read_parquet(folder / file)
        values.update({name: tensors[name] for name in meta["tensors"]})
        for name in meta["results"]:
            nested = _field_type(cls, name, read_meta(folder / name)["class"])
            values[name] = nested.load(folder / name)
        values.update({name: _decode(value) for name, value in meta["metadata"].items()})
        for name, files in meta.get("table_maps", {}).items():
            values[name] = {Path(file).stem: pd.read_parquet(folder / name / file) for file in files}
        objects = dict(layout.objects)
        for name in meta.get("objects", []):
            values[name] = objects[name].load(folder / f"{name}{OBJECT_SUFFIX}")
        return cls(**cls._restored_values(values))

    # ------------------------------------------------------ hooks for fields stored in another form
    def _saved_value(self, name: str, value: Any) -> Any:
        """The form in which field ``name`` is saved (default: as it is). A class whose field has no
        storable form overrides this and :meth:`_restored_values`."""
        return value

    @classmethod
    def _restored_values(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Constructor arguments from the loaded values (default: unchanged); undoes :meth:`_saved_value`."""
        return values


def read_meta(folder: str | Path) -> dict[str, Any]:
    """The ``result.json`` of a saved result folder, after checking it is one.

    Args:
        folder: A folder written by :meth:`Result.save`.

    Returns:
        The parsed metadata: ``format_version``, ``class`` and what is stored where.
    """
    file = Path(folder) / META_FILE
    if not file.is_file():
        raise ResultFormatError(f"{folder} is not a saved interp result: it has no {META_FILE}")
    try:
        meta = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultFormatError(f"{file} is not readable interp result metadata ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT_NAME or "format_version" not in meta:
        raise ResultFormatError(f"{file} is not interp result metadata (expected format {_FORMAT_NAME!r} "
                                "and a format_version)")
    return meta


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _shape(frame: pd.DataFrame) -> str:
    return f"{frame.shape[0]} rows × {frame.shape[1]} columns"


def _field_type(cls: type, name: str, saved_class: str) -> type:
    """The Result subclass recorded in a nested field's folder, looked up among the Result classes
    already imported (nothing is imported by a name read from a file)."""
    candidates = [sub for sub in _all_subclasses(Result) if _class_name(sub) == saved_class]
    if not candidates:
        raise ResultFormatError(f"{cls.__qualname__}.{name} was saved as a {saved_class}, which is not a "
                                "Result class imported in this session")
    return candidates[0]


def _all_subclasses(base: type) -> list[type]:
    found = []
    for sub in base.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


def _save_table(frame: Any, file: Path, where: str) -> str:
    """Write ``frame`` as parquet after checking that reading it back gives exactly the same frame."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{where} is declared a table but holds {type(frame).__name__}")
    buffer = io.BytesIO()
    try:
        frame.to_parquet(buffer)
        back = pd.read_parquet(io.BytesIO(buffer.getvalue()))
        pd.testing.assert_frame_equal(back, frame, check_exact=True, check_index_type=True,
                                      check_column_type=True, check_frame_type=True, check_names=True,
                                      check_flags=True, check_freq=True)
    except (ValueError, TypeError, AssertionError, ImportError) as error:
        raise TypeError(f"{where} cannot be saved as parquet without changing it (use string column names "
                        f"and one type per column): {error}") from error
    file.write_bytes(buffer.getvalue())
    return file.name


_TUPLE = "__tuple__"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def _encode(value: Any, where: str) -> Any:
    """JSON form of a metadata value; tuples are tagged so that they come back as tuples."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, where) for v in value]}
    if isinstance(value, list):
        return [_encode(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        if _TUPLE in value or "__float__" in value:
            raise TypeError(f"{where}: metadata dicts may not use the reserved key {_TUPLE!r} or '__float__'")
        return {k: _encode(v, where) for k, v in value.items()}
    raise TypeError(f"{where} is declared metadata but holds {type(value).__name__}; metadata must be None, "
                    "bool, int, float, str, or lists, tuples and str-keyed dicts of them")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {_TUPLE}:
            return tuple(_decode(v) for v in value[_TUPLE])
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: _decode(v) for k, v in value.items()}
    return value
