"""The library's own functions on a streamed pair (``StreamedPair.open``) give the in-memory results,
and the report and CLI run streamed (asked, or when the pair would not fit), skipping with a note the
sections that need whole-model activations. Fixtures: the tiny sharded Gemma 2 pair of test_streaming."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from test_streaming import directions, folders, loaded  # noqa: F401 (fixtures)

from interp import ModelPair
from interp.circuits import circuit_study, compare_mlp_pass, weight_circuits
from interp.cli import EXIT_INPUT, EXIT_OK, main
from interp.personas import persona_directions, role_vectors
from interp.report import ReportOptions
from interp.report.build import build_report
from interp.streaming import StreamedModel, StreamedPair
from interp.subspace.weight_diff import delta_diagnostics, delta_norms


@pytest.fixture(scope="module")
def streamed(folders):  # noqa: F811
    return StreamedPair.open(folders[0], folders[1])


def _block_rows(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    return frame[frame[column].astype(str).str.startswith("blocks.") if column == "name"
                 else frame[column] >= 0].reset_index(drop=True)


def test_model_pair_streamed_opens_a_streamed_pair(streamed, folders):  # noqa: F811
    assert isinstance(streamed, StreamedPair)
    assert isinstance(streamed.base, StreamedModel) and streamed.base.processed
    assert streamed.n_layers == 4
    raw = StreamedPair.open(folders[0], folders[1], processed=False)
    assert not raw.base.processed and not raw.tuned.processed


def test_weight_circuits_and_mlp_pass_dispatch_to_the_streamed_path(streamed, loaded, directions):  # noqa: F811
    pair = ModelPair(*loaded[True])
    pd.testing.assert_frame_equal(weight_circuits(streamed, directions, layers=[0, 2]),
                                  weight_circuits(pair, directions, layers=[0, 2]),
                                  check_exact=False, rtol=1e-4, atol=1e-5)
    got, want = compare_mlp_pass(streamed, directions), compare_mlp_pass(pair, directions)
    assert got.layers == want.layers and got.names == want.names
    for which in ("base", "tuned"):
        a, b = getattr(got, which), getattr(want, which)
        assert ((a - b).norm() / b.norm()).item() < 1e-5, which
    pd.testing.assert_frame_equal(got.table(), want.table(), check_exact=False, rtol=1e-4, atol=1e-6)


def test_weight_delta_tables_dispatch_to_the_streamed_path(streamed, loaded):  # noqa: F811
    """The whole tables, embedding and unembedding rows included."""
    pair = ModelPair(*loaded[True])
    pd.testing.assert_frame_equal(delta_diagnostics(streamed), delta_diagnostics(pair),
                                  check_exact=False, rtol=1e-4, atol=1e-6)
    got, want = delta_norms(streamed), delta_norms(pair)
    assert len(want) > len(_block_rows(want, "layer")) and list(got["tensor"]) == list(want["tensor"])
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-4, atol=1e-6)


def test_circuit_study_of_a_streamed_pair_equals_in_memory(streamed, loaded, directions):  # noqa: F811
    named = directions.subset(["a", "b"])
    got = circuit_study(streamed, named, n_random=4)
    want = circuit_study(ModelPair(*loaded[True]), named, n_random=4)
    assert got.tuned_layers == want.tuned_layers == (0, 1, 2, 3)
    pd.testing.assert_frame_equal(got.table, want.table, check_exact=False, rtol=1e-4, atol=1e-5)
    pd.testing.assert_frame_equal(got.mlp_table, want.mlp_table, check_exact=False, rtol=1e-4, atol=1e-5)


def test_persona_functions_accept_a_streamed_model(streamed, loaded):  # noqa: F811
    roles, questions = ["pirate", "poet", "chef"], ["How do plants grow?"]
    got = persona_directions(streamed.base, layer=2, n_components=2, roles=roles, questions=questions)
    want = persona_directions(loaded[True][0], layer=2, n_components=2, roles=roles, questions=questions)
    err = ((got.roles.vectors - want.roles.vectors).norm(dim=1) / want.roles.vectors.norm(dim=1)).max().item()
    assert err < 1e-5, f"role vectors differ by {err:.2e} (relative)"
    cos = (got.pcs.vectors * want.pcs.vectors).sum(-1).abs()
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5)
    a = role_vectors(streamed.tuned, roles, questions, layer=1)
    b = role_vectors(loaded[True][1], roles, questions, layer=1)
    assert ((a.vectors - b.vectors).norm(dim=1) / b.vectors.norm(dim=1)).max().item() < 1e-5
    with pytest.raises(TypeError, match="model: expected a HookedTransformer or an interp.streaming.StreamedModel"):
        role_vectors("not a model", roles, questions, layer=1)


def _options(**changes):
    return ReportOptions.quick(cache_dir=None, progress=False, roles=("pirate", "poet", "teacher", "chef"),
                               n_components=2, **changes)


def test_streamed_report_runs_weights_and_circuits_and_skips_the_rest(folders, loaded, tmp_path, capsys):  # noqa: F811
    report = build_report(base=str(folders[0]), tuned=str(folders[1]), options=_options(), out_dir=tmp_path,
                          stream=True)
    assert report.failed == ()
    by_key = {s.key: s for s in report.sections}
    assert set(by_key) == {"weights", "circuits", "activations", "subspace"}
    for key in ("activations", "subspace"):
        assert by_key[key].seconds == 0.0 and "skipped" in by_key[key].summary[0]
        assert "whole-model activations" in by_key[key].summary[0]
    assert any(line.startswith("Streamed run: read ") and "peak resident memory" in line for line in report.summary)
    html = report.path.read_text()
    assert "needs whole-model activations" in html
    weights = pd.read_csv(report.tables_dir / "weights-largest.csv")
    expected = delta_norms(ModelPair(*loaded[True])).nlargest(10, "relative")
    assert list(weights["tensor"]) == list(expected["tensor"])
    assert torch.allclose(torch.tensor(weights["relative"].to_numpy()), torch.tensor(expected["relative"].to_numpy()),
                          rtol=1e-4)
    err = capsys.readouterr().err
    assert "streaming the pair layer by layer, as asked" in err
    assert "weight norms" not in err and "streamed " not in err  # progress=False: no per-layer bars or stats lines


def test_report_streams_automatically_when_the_pair_would_not_fit(folders, tmp_path, capsys, monkeypatch):  # noqa: F811
    import interp.streaming.memory as memory

    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 1000)
    report = build_report(base=str(folders[0]), tuned=str(folders[1]), options=_options(sections=("weights",)),
                          out_dir=tmp_path)
    assert report.failed == () and any(line.startswith("Streamed run:") for line in report.summary)
    err = capsys.readouterr().err
    assert "and 0.0 GiB is available: streaming it layer by layer" in err


def test_report_refuses_stream_with_an_adapter_or_a_loaded_pair(loaded, tmp_path):  # noqa: F811
    from interp.report.build import ReportInputError

    with pytest.raises(ReportInputError, match="stream: a streamed report needs base and tuned"):
        build_report(adapter="some/adapter", options=_options(), out_dir=tmp_path, stream=True)
    with pytest.raises(ReportInputError, match="stream: give base and tuned checkpoints"):
        build_report(ModelPair(*loaded[True]), options=_options(), out_dir=tmp_path, stream=True)


def test_cli_report_stream(folders, tmp_path, capsys):  # noqa: F811
    code = main(["report", "--base", str(folders[0]), "--tuned", str(folders[1]), "--stream", "--quick",
                 "--sections", "weights", "activations", "--no-cache", "--out", str(tmp_path)])
    assert code == EXIT_OK
    out = capsys.readouterr()
    assert "Streamed run: read " in out.out and "skipped" in out.out
    assert "weight norms" in out.err and "peak resident memory" in out.err  # a bar per layer, then the stats
    assert (tmp_path / "report.html").is_file() and (tmp_path / "tables" / "weights-largest.csv").is_file()
    code = main(["report", "--base", str(folders[0]), "--tuned", str(folders[1]), "--stream", "--layers", "9",
                 "--out", str(tmp_path)])
    assert code == EXIT_INPUT and "--layers" in capsys.readouterr().err


def test_target_cat_of_per_layer_targets_scores_as_the_stacked_target():
    """Targets built one layer at a time (compressed, of different ranks; or dense) and joined by
    Target.cat give the energies of the target of the stacked matrices (an independent einsum)."""
    from interp.subspace.targets import Target

    g = torch.Generator().manual_seed(0)
    d = 48
    low = [torch.randn(d, cols, generator=g) for cols in (3, 7)]  # compressed to ranges of width 3 and 7
    dense = torch.randn(d, 80, generator=g)
    basis = torch.linalg.qr(torch.randn(3, d, 4, generator=g, dtype=torch.float64))[0]
    for mats in (low, [low[0], dense]):
        joined = Target.cat([Target.from_matrix(m[None]) for m in mats])
        if mats is low:  # both compressed: joined compressed, the narrower range zero-padded
            assert joined.u is not None and joined.u.shape == (2, d, 7)
        doubles = [m.double() for m in mats]
        want = torch.stack([torch.einsum("dc,ec,dk,ek->k", m, m, b, b) / m.pow(2).sum()
                            for m, b in zip(doubles, basis[:2], strict=True)])
        assert torch.allclose(joined.energy(basis[:2]), want, rtol=1e-5, atol=1e-9)
        assert torch.allclose(joined.dense(), torch.stack([m @ m.T / m.pow(2).sum() for m in doubles]),
                              rtol=1e-4, atol=1e-6)  # T is built from float32 matrices
    with pytest.raises(ValueError, match="targets: expected at least one Target"):
        Target.cat([])


def test_a_streamed_model_where_a_pair_belongs_is_a_clear_type_error(folders):  # noqa: F811
    from interp.streaming import open_streamed

    model = open_streamed(folders[0])
    with pytest.raises(TypeError, match="weight_circuits: a StreamedModel cannot be given here"):
        weight_circuits(model, torch.randn(4, model.d_model))
    with pytest.raises(TypeError, match="delta_norms: a StreamedModel cannot be given here"):
        delta_norms(model)
    with pytest.raises(TypeError, match="prompt_activations: a StreamedPair cannot be given here"):
        role_vectors(StreamedPair.open(folders[0], folders[1]), {"a": "You are a.", "b": "You are b."},
                     ["Hi?"], layer=0)
