"""Results display themselves (headline table as HTML) and save / load as parquet + safetensors + JSON,
exactly, refusing folders of another class or format version."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch

from interp.results import RESULT_FORMAT_VERSION, Result, ResultFormatError, ResultLayout, read_meta


@dataclass(frozen=True)
class Inner(Result):
    """A nested result."""

    result_layout: ClassVar[ResultLayout] = ResultLayout(headline="rows", tables=("rows",), metadata=("note",))
    rows: pd.DataFrame
    note: str


@dataclass(frozen=True)
class Scores(Result):
    """Scores of a few heads, for the tests."""

    result_layout: ClassVar[ResultLayout] = ResultLayout(
        headline="heads", tables=("heads", "layers", "missing"), tensors=("matrix", "counts", "flags", "half"),
        metadata=("labels", "options", "scale", "nothing"), results=("inner",), figures=("plot_heads",),
        derived_tables=("top",))
    heads: pd.DataFrame
    layers: pd.DataFrame
    missing: pd.DataFrame | None
    matrix: torch.Tensor
    counts: torch.Tensor
    flags: torch.Tensor
    half: torch.Tensor
    labels: tuple[str, ...]
    options: dict
    scale: float
    nothing: None
    inner: Inner

    def top(self) -> pd.DataFrame:
        return self.heads.nlargest(2, "score")

    def plot_heads(self):  # pragma: no cover - listed in the summary only
        raise NotImplementedError


@dataclass(frozen=True)
class Methodical(Result):
    """Headline computed by a method, as interp's results do with ``to_frame``."""

    result_layout: ClassVar[ResultLayout] = ResultLayout(headline="to_frame", tensors=("values",))
    values: torch.Tensor

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"i": range(len(self.values)), "value": self.values.numpy()})


def _scores() -> Scores:
    gen = torch.Generator().manual_seed(0)
    heads = pd.DataFrame({
        "layer": np.repeat(np.arange(3), 4).astype(np.int64),
        "head": np.tile(np.arange(4), 3).astype(np.int32),
        "score": torch.randn(12, generator=gen).double().numpy(),
        "score32": torch.randn(12, generator=gen).numpy(),
        "name": pd.array([f"L{i // 4}H{i % 4}" for i in range(12)], dtype="string"),
        "kind": pd.Categorical(["prev", "induction", "dup"] * 4),
        "maybe": pd.array([1, None, 3] * 4, dtype="Int64"),
        "flag": [True, False] * 6,
        "nan": [math.nan, 1.5, -math.inf] * 4,
    })
    layers = heads.groupby(["layer", "kind"], observed=True)[["score"]].mean()  # a MultiIndex, categorical level
    inner = Inner(pd.DataFrame({"x": [1.0, 2.0]}, index=pd.Index(["a", "b"], name="key")), note="nested")
    return Scores(heads=heads, layers=layers, missing=None, matrix=torch.randn(3, 4, 5, generator=gen),
                  counts=torch.arange(12).reshape(3, 4), flags=torch.tensor([True, False, True]),
                  half=torch.randn(4, generator=gen).to(torch.bfloat16),
                  labels=("plain", "chat"), options={"query": "last", "layers": (0, 2), "nested": {"k": [1, (2, 3)]}},
                  scale=float("nan"), nothing=None, inner=inner)


def _assert_same(loaded: Scores, original: Scores) -> None:
    assert type(loaded) is Scores
    for name in ("heads", "layers"):
        pd.testing.assert_frame_equal(getattr(loaded, name), getattr(original, name), check_exact=True)
        assert list(getattr(loaded, name).dtypes) == list(getattr(original, name).dtypes), name
    assert loaded.missing is None and loaded.nothing is None
    for name in ("matrix", "counts", "flags", "half"):
        a, b = getattr(loaded, name), getattr(original, name)
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), name
    assert loaded.labels == ("plain", "chat") and type(loaded.labels) is tuple
    assert loaded.options == original.options
    assert type(loaded.options["layers"]) is tuple and type(loaded.options["nested"]["k"][1]) is tuple
    assert math.isnan(loaded.scale)
    pd.testing.assert_frame_equal(loaded.inner.rows, original.inner.rows, check_exact=True)
    assert loaded.inner.note == "nested"


def test_save_load_round_trips_tables_tensors_metadata_exactly(tmp_path):
    original = _scores()
    folder = original.save(tmp_path / "scores")
    _assert_same(Scores.load(folder), original)
    # only parquet, safetensors and JSON on disk: nothing that unpickles
    suffixes = {p.suffix for p in folder.rglob("*") if p.is_file()}
    assert suffixes == {".parquet", ".safetensors", ".json"}, suffixes
    meta = json.loads((folder / "result.json").read_text())
    assert meta["format_version"] == RESULT_FORMAT_VERSION
    assert meta["class"] == f"{__name__}.Scores"


def test_save_twice_overwrites_and_still_round_trips(tmp_path):
    original = _scores()
    original.save(tmp_path / "s")
    original.save(tmp_path / "s")
    _assert_same(Scores.load(tmp_path / "s"), original)


def test_headline_from_a_method_and_tensor_only_result(tmp_path):
    result = Methodical(torch.tensor([0.25, -1.0, 3.5]))
    loaded = Methodical.load(result.save(tmp_path / "m"))
    assert torch.equal(loaded.values, result.values) and loaded.values.dtype == torch.float32
    html = result._repr_html_()
    assert "<table" in html and "3.50" in html and "-1.00" in html


def test_repr_html_shows_headline_table_and_what_else_is_inside():
    result = _scores()
    html = result._repr_html_()
    # the headline table: its columns and the first rows' values, formatted as pandas formats them
    expected = result.heads.head(5).to_html(border=0)
    for cell in ("L0H0", "L1H0", "induction", "score32"):
        assert cell in expected and cell in html, cell
    for score in result.heads["score"].head(5):
        assert f"{score:.6f}" in html
    assert "Scores</b>: Scores of a few heads, for the tests." in html
    assert "heads (12 rows × 9 columns)" in html
    # the rest is listed with shapes
    assert f"table layers: {len(result.layers)} rows × 1 columns" in html
    assert "table missing: None" in html
    assert "table top(): 2 rows × 9 columns" in html
    assert "tensor matrix: [3, 4, 5] float32" in html and "tensor half: [4] bfloat16" in html
    assert "result inner: Inner" in html and "figure plot_heads()" in html


def test_repr_html_truncates_a_long_headline():
    result = Methodical(torch.arange(1000, dtype=torch.float32))
    html = result._repr_html_()
    assert "999.0" in html and "500.0" not in html and "..." in html
    assert len(html) < 5000


def test_load_refuses_another_format_version(tmp_path):
    folder = _scores().save(tmp_path / "s")
    meta = json.loads((folder / "result.json").read_text())
    meta["format_version"] = RESULT_FORMAT_VERSION + 1
    (folder / "result.json").write_text(json.dumps(meta))
    with pytest.raises(ResultFormatError, match=f"format version {RESULT_FORMAT_VERSION + 1}.*reads version "
                                                f"{RESULT_FORMAT_VERSION}"):
        Scores.load(folder)


def test_load_refuses_another_class_and_non_result_folders(tmp_path):
    folder = Methodical(torch.ones(2)).save(tmp_path / "m")
    with pytest.raises(ResultFormatError, match=r"holds a .*Methodical, not a .*Scores; load it with Methodical.load"):
        Scores.load(folder)
    with pytest.raises(ResultFormatError, match="has no result.json"):
        Scores.load(tmp_path / "nowhere")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "result.json").write_text('{"some": "json"}')
    with pytest.raises(ResultFormatError, match="not interp result metadata"):
        read_meta(tmp_path / "other")


def test_table_that_parquet_would_change_is_refused_with_its_name(tmp_path):
    bad = Inner(pd.DataFrame({"mixed": [1, "two", 3.0]}), note="x")
    with pytest.raises(TypeError, match=r"Inner.rows cannot be saved as parquet"):
        bad.save(tmp_path / "bad")


def test_bad_metadata_and_wrong_kinds_are_named(tmp_path):
    with pytest.raises(TypeError, match=r"Inner.note is declared metadata but holds ndarray"):
        Inner(pd.DataFrame({"x": [1]}), note=np.zeros(2)).save(tmp_path / "a")
    with pytest.raises(TypeError, match=r"Methodical.values is declared a tensor but holds list"):
        Methodical([1.0]).save(tmp_path / "b")


def test_layout_must_classify_every_field():
    @dataclass(frozen=True)
    class Half(Result):
        result_layout: ClassVar[ResultLayout] = ResultLayout(headline="a", tables=("a",))
        a: pd.DataFrame
        b: int

    with pytest.raises(TypeError, match=r"unclassified \['b'\]"):
        Half(pd.DataFrame(), 1)._repr_html_()

    @dataclass(frozen=True)
    class NoHeadline(Result):
        result_layout: ClassVar[ResultLayout] = ResultLayout(headline="nope", metadata=("a",))
        a: int

    with pytest.raises(TypeError, match=r"headline of .*NoHeadline is 'nope'"):
        NoHeadline(1).save("unused")


@pytest.mark.slow
def test_real_attention_metric_frames_round_trip(smollm2, tmp_path):
    """Frames from a real analysis on the offline model survive save → load exactly."""
    from interp.activations import attention_metrics

    metrics = attention_metrics(smollm2, ["What is 15 plus 27?", "The cat sat on the mat."],
                                keywords=["15", "cat"], labels=["sum", "cat"])

    @dataclass(frozen=True)
    class MetricsTables(Result):
        """Attention metrics as tables."""

        result_layout: ClassVar[ResultLayout] = ResultLayout(
            headline="heads", tables=("heads", "layers", "keywords"), tensors=("entropy",), metadata=("labels",))
        heads: pd.DataFrame
        layers: pd.DataFrame
        keywords: pd.DataFrame
        entropy: torch.Tensor
        labels: tuple[str, ...]

    original = MetricsTables(metrics.to_frame(), metrics.layer_frame(), metrics.keyword_frame(), metrics.entropy,
                             metrics.labels)
    loaded = MetricsTables.load(original.save(tmp_path / "metrics"))
    for name in ("heads", "layers", "keywords"):
        pd.testing.assert_frame_equal(getattr(loaded, name), getattr(original, name), check_exact=True)
    assert torch.equal(loaded.entropy, original.entropy) and loaded.labels == ("sum", "cat")
    html = original._repr_html_()
    assert "max_token" in html and "mean_entropy" in html
    assert f"{original.heads['entropy'].iloc[0]:.6f}" in html
    assert f"table keywords: {len(original.keywords)} rows × {original.keywords.shape[1]} columns" in html


def test_corrupt_metadata_is_a_result_format_error(tmp_path):
    from interp.results import META_FILE, ResultFormatError, read_meta

    (tmp_path / META_FILE).write_text("{not json")
    with pytest.raises(ResultFormatError, match="not readable interp result metadata"):
        read_meta(tmp_path)
