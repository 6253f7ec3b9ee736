"""The report on the default pair: every section present, offline HTML, and numbers that equal the
analyses computed directly (plain torch, TransformerLens forward passes, interp's analysis functions)."""

from __future__ import annotations

import html
import re

import _report_fixture
import numpy as np
import pandas as pd
import pytest
import torch
from _report_fixture import html_table

from interp import DirectionSet
from interp.report import ReportOptions, build_report, check_options
from interp.report.sections import SECTIONS

quick_report = _report_fixture.quick_report  # the session's one quick report, shared with test_report_browser.py


def _csv(built, name: str) -> pd.DataFrame:
    return pd.read_csv(built.report.tables_dir / f"{name}.csv")


# ------------------------------------------------------------------------------------ structure
def test_every_section_runs_and_is_titled(quick_report):
    report = quick_report.report
    assert report.failed == (), "sections failed:\n" + "\n".join(s.error or "" for s in report.sections)
    assert [s.key for s in report.sections] == list(SECTIONS)
    for title, _ in SECTIONS.values():
        assert f">{title}<" in quick_report.html or f">{title} <" in quick_report.html, f"section {title!r} missing"
    assert "Run configuration" in quick_report.html
    assert report.path.name == "report.html" and report.path.is_file()


def test_report_is_offline_with_one_plotly_bundle(quick_report):
    html = quick_report.html
    assert "<script src=" not in html, "a script is loaded from a URL (CDN)"
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']?(https?:)?//""", html), "a resource is fetched"
    bundles = re.findall(r"plotly\.js v\d+\.\d+\.\d+", html)
    assert len(bundles) == 1, f"expected plotly.js inlined once, found {len(bundles)} bundle headers"
    n_divs = html.count('class="plotly-graph-div"')
    assert n_divs >= 12, f"expected at least 12 figures, found {n_divs}"
    assert html.count("Plotly.newPlot(") == n_divs


def test_summary_names_the_strongest_effect_of_every_section(quick_report):
    summary = quick_report.report.summary
    for prefix in ("Weights:", "QK:", "VO:", "MLP:", "Attention:", "Heads whose entropy", "Head types:", "Subspaces:"):
        assert any(line.startswith(prefix) for line in summary), f"no summary line starting {prefix!r}: {summary}"
    summary_html = quick_report.html.split("<div class='summary'>", 1)[1].split("</div>", 1)[0]
    assert all(line.split(":")[0] in summary_html for line in summary)


def test_summary_lines_carry_their_null(quick_report):
    """Every headline change is stated with its null: random directions for the weight circuits and the MLP
    pass, a bootstrap interval and sign-flip p over prompts / sequences for attention and head types."""
    summary = quick_report.report.summary
    n_random = quick_report.options.n_random
    for prefix in ("QK:", "VO:", "MLP:"):
        line = next(line for line in summary if line.startswith(prefix))
        assert f"percentile of {n_random} random directions (p = " in line and "distinguishable" in line, line
    for prefix in ("Attention:", "Head types:"):
        line = next(line for line in summary if line.startswith(prefix))
        assert "bootstrap CI" in line and "sign-flip p = " in line and "distinguishable from no change" in line, line
    # two prompt variants: no sign-flip p-value can go below 2/2² = 0.5, so nothing is called distinguishable
    attention = next(line for line in summary if line.startswith("Attention:"))
    assert "not distinguishably" in attention and ": not distinguishable from no change" in attention
    # the null table is about the same numbers as the per-direction table
    nulls = _csv(quick_report, "circuits-delta-z-null")
    wide = _csv(quick_report, "circuits-mean-abs-delta-z").set_index("direction")
    for row in nulls.itertuples():
        assert row.abs_delta_z == pytest.approx(wide.loc[row.direction, f"{row.circuit} {row.relation}"], rel=1e-6)
        assert 1 / (n_random + 1) <= row.p_value <= 1 and row.n_random == n_random


def test_every_table_is_also_written_as_csv(quick_report):
    names = re.findall(r"<table data-table='([^']+)'>", quick_report.html)
    assert len(names) == len(set(names)) >= 10
    for name in names:
        header, rows = html_table(quick_report.html, name)
        frame = _csv(quick_report, name)
        assert list(frame.columns) == header, f"{name}: CSV columns {list(frame.columns)} vs HTML {header}"
        assert len(frame) == len(rows), f"{name}: {len(frame)} CSV rows vs {len(rows)} HTML rows"


# ------------------------------------------------------------------------------------ numbers
def test_weight_change_table_equals_plain_torch_norms(quick_report, default_pair):
    base = dict(default_pair.base.named_parameters())
    tuned = dict(default_pair.tuned.named_parameters())
    expected = []
    for name, b in base.items():
        if torch.equal(tuned[name], b):
            continue
        delta = tuned[name].detach().double() - b.detach().double()
        parts = name.split(".")
        layer, tensor = (int(parts[1]), ".".join(parts[2:])) if parts[0] == "blocks" else (-1, name)
        expected.append((layer, tensor, delta.norm().item(), delta.norm().item() / b.double().norm().item()))
    expected.sort(key=lambda row: -row[3])
    top = expected[:10]
    frame = _csv(quick_report, "weights-largest")
    assert list(zip(frame["layer"], frame["tensor"], strict=True)) == [(r[0], r[1]) for r in top]
    np.testing.assert_allclose(frame["relative"], [r[3] for r in top], rtol=1e-4)
    np.testing.assert_allclose(frame["delta_fro"], [r[2] for r in top], rtol=1e-4)
    _, rows = html_table(quick_report.html, "weights-largest")
    assert [row[3] for row in rows] == [f"{v:.4g}" for v in frame["relative"]], "HTML shows other numbers than the CSV"
    assert f"{top[0][3]:.3%}" in quick_report.report.summary[0]


def _last_token_entropy(quick_report, pair, layers):
    """``−Σ p ln p`` of the last token's attention for each variant prompt, from ``hook_pattern`` of an
    unbatched forward pass per prompt: ``{"base"/"tuned": [prompt, layer, head]}`` and
    ``{"base"/"tuned": [token count per prompt]}``."""
    tokenizer = pair.base.tokenizer
    texts = []
    for system, user in quick_report.options.variants.values():
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in layers]
    entropy, n_tokens = {}, {}
    for label, model in (("base", pair.base), ("tuned", pair.tuned)):
        per_prompt, lengths = [], []
        for text in texts:
            tokens = model.to_tokens(text)
            lengths.append(tokens.shape[1])
            _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names, stop_at_layer=max(layers) + 1)
            last = torch.stack([cache[name][0, :, -1, :] for name in names])  # [layer, head, key]
            per_prompt.append(-(torch.special.xlogy(last, last)).sum(-1))
        entropy[label], n_tokens[label] = torch.stack(per_prompt), np.array(lengths)
    return entropy, n_tokens


def test_entropy_of_most_changed_heads_matches_a_forward_pass(quick_report, default_pair):
    """Entropy of the last token's attention, from ``hook_pattern`` of an unbatched forward pass per prompt."""
    frame = _csv(quick_report, "activations-entropy-heads")
    layers = sorted(set(frame["layer"]))
    entropy, _ = _last_token_entropy(quick_report, default_pair, layers)
    expected = {label: per_prompt.mean(0) for label, per_prompt in entropy.items()}
    for row in frame.itertuples():
        i = layers.index(row.layer)
        base, tuned = expected["base"][i, row.head].item(), expected["tuned"][i, row.head].item()
        assert row.base == pytest.approx(base, abs=2e-4), f"L{row.layer}H{row.head} base entropy"
        assert row.tuned == pytest.approx(tuned, abs=2e-4), f"L{row.layer}H{row.head} tuned entropy"
        assert row.delta == pytest.approx(tuned - base, abs=3e-4)
    # the table lists the heads with the largest |Δ| first, and they are the largest overall
    delta = (expected["tuned"] - expected["base"]).abs()
    assert abs(frame["delta"].iloc[0]) <= delta.max().item() + 3e-4


def test_per_pc_table_equals_the_circuit_analysis(quick_report, default_pair):
    """The mean |Δz| table is what interp.circuits computes on the same probes (recomputed here)."""
    from interp.circuits import mean_abs_delta, self_opposite, tuned_minus_base, weight_circuits
    from interp.personas import persona_directions, persona_prompts

    options = quick_report.options
    layer = default_pair.cfg.n_layers // 2
    persona = persona_directions(default_pair.base, layer=layer, n_components=options.n_components,
                                 roles=list(options.roles), questions=list(persona_prompts().questions[: options.n_questions]))
    probes = persona.pcs.with_negations().concat(DirectionSet.random(options.n_random, 576, seed=options.random_seed))
    deltas = tuned_minus_base(self_opposite(weight_circuits(default_pair, probes), list(persona.pcs.names)))
    expected = mean_abs_delta(deltas, list(range(9, 24)))
    frame = _csv(quick_report, "circuits-mean-abs-delta-z").set_index("direction")
    for row in expected.itertuples():
        column = f"{row.circuit.upper()} {row.relation}"
        assert frame.loc[row.direction, column] == pytest.approx(row.mean_abs_delta_z, rel=1e-3, abs=1e-5), \
            f"{row.direction} {column}"
    ratios = persona.pcs.metadata["explained_variance_ratio"]
    np.testing.assert_allclose(frame["explained_variance"], ratios, rtol=1e-5)


def test_sweep_summary_is_ranked_by_joint_geometric_mean(quick_report):
    frame = _csv(quick_report, "subspace-sweep-summary")
    np.testing.assert_allclose(frame["joint"], np.sqrt(frame["mean_R_act"] * frame["mean_R_w_combined"]), rtol=1e-6)
    assert (np.diff(frame["joint"].to_numpy()) <= 1e-12).all(), "summary is not sorted by joint"
    assert {"weight_ceiling", "act_ceiling", "random"} <= set(frame["basis"])
    random_joint = frame.loc[frame["basis"] == "random", "joint"].item()
    assert 0.2 < random_joint < 5, f"the random control basis should score near 1, got {random_joint}"


# ------------------------------------------------------------------------------------ behaviour
def test_a_failing_section_is_shown_and_the_rest_is_written(default_pair, tmp_path, monkeypatch):
    def broken(pair, options):
        raise RuntimeError("the analysis broke on purpose")

    title, _ = SECTIONS["circuits"]
    monkeypatch.setitem(SECTIONS, "circuits", (title, broken))
    options = ReportOptions.quick(sections=("weights", "circuits"), cache_dir=None, progress=False)
    report = build_report(default_pair, options=options, out_dir=tmp_path, quiet=True)
    assert report.failed == ("circuits",)
    html = report.path.read_text()
    assert "RuntimeError: the analysis broke on purpose" in html
    assert "What changed in the weights" in html and "weights-largest" in html
    assert any("1 section(s) failed" in line for line in report.summary)


def test_user_directions_replace_the_persona_pcs(default_pair, tmp_path):
    generator = torch.Generator().manual_seed(7)  # seed 7: three arbitrary probe directions
    mine = DirectionSet(("alpha", "beta", "gamma"), torch.randn(3, 576, generator=generator), source="test probes")
    options = ReportOptions.quick(sections=("circuits",), directions=mine, cache_dir=None, progress=False,
                                  layers=tuple(range(8, 16)))
    report = build_report(default_pair, options=options, out_dir=tmp_path, quiet=True)
    assert report.failed == (), report.sections[0].error
    frame = pd.read_csv(report.tables_dir / "circuits-mean-abs-delta-z.csv")
    assert list(frame["direction"]) == ["alpha", "beta", "gamma"]
    peaks = pd.read_csv(report.tables_dir / "circuits-mlp-peak.csv")
    assert set(peaks["layer"]) <= set(range(8, 16))
    assert "3 directions from test probes" in report.path.read_text()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sections": ("weights", "nope")}, "sections"),
        ({"n_random": 1}, "n_random"),
        ({"n_components": 0}, "n_components"),
        ({"variants": {}}, "variants"),
        ({"variants": {"a": "no system prompt"}}, "variants"),
        ({"sweep_claims": 2}, "sweep_claims"),
    ],
)
def test_bad_options_name_the_argument(changes, message):
    with pytest.raises(ValueError, match=message):
        ReportOptions(**changes)


def test_model_dependent_options_are_checked_against_the_pair(default_pair):
    with pytest.raises(ValueError, match=r"layers: layer 30 is out of range"):
        check_options(default_pair, ReportOptions(layers=(3, 30)))
    with pytest.raises(ValueError, match=r"directions: the vectors have width 64 but the model's d_model is 576"):
        check_options(default_pair, ReportOptions(directions=DirectionSet.random(2, 64)))
    with pytest.raises(TypeError, match="options"):
        build_report(default_pair, options={"layers": [1]})  # type: ignore[arg-type]


def test_loading_arguments_given_with_a_pair_are_refused_before_any_work(default_pair, tmp_path, monkeypatch):
    """tuned/adapter/device/dtype (and a base other than the default) load a pair: given with a pair
    they would be ignored, so build_report names them and runs nothing."""
    import interp.report.build as build
    from interp.report import ReportInputError

    for step in ("load_pair", "check_options", "run_sections", "write_report"):
        monkeypatch.setattr(build, step, lambda *a, _step=step, **k: pytest.fail(f"{_step} ran"))
    with pytest.raises(ReportInputError, match=r"^tuned: a pair was given, so these arguments"):
        build_report(default_pair, tuned="gemma-3-270m", out_dir=tmp_path, quiet=True)
    with pytest.raises(ReportInputError, match=r"^adapter, device, dtype: a pair was given"):
        build_report(default_pair, adapter="some/adapter", device="cpu", dtype="bfloat16", out_dir=tmp_path, quiet=True)
    with pytest.raises(ReportInputError, match=r"^base: a pair was given"):
        build_report(default_pair, base="gemma-3-270m", out_dir=tmp_path, quiet=True)
    with pytest.raises(ReportInputError, match=r"^dtype: a pair was given"):
        build_report(default_pair, dtype=torch.bfloat16, out_dir=tmp_path, quiet=True)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------ layout (no model)
def test_render_keeps_block_order_escapes_text_and_formats_numbers():
    import plotly.graph_objects as go

    from interp.report import Section, render

    section = Section("Demo <section>", key="demo")
    section.add_text("a < b & c")
    section.add_heading("Part two")
    section.add_table("t", "Numbers", pd.DataFrame({"name": ["x", "<y>"], "value": [1234.5678, float("nan")],
                                                    "n": [3, 4]}))
    section.add_figure(go.Figure(go.Scatter(x=[0, 1], y=[1, 0])), go.Figure(go.Bar(x=[1], y=[2])))
    html = render("Title", ["first finding"], [section])
    order = [html.index(s) for s in ("a &lt; b &amp; c", "<h3>Part two</h3>", "data-table='demo-t'", "plotly-graph-div")]
    assert order == sorted(order), "blocks are not rendered in the order they were added"
    header, rows = html_table(html, "demo-t")
    assert header == ["name", "value", "n"]
    assert rows == [["x", "1235", "3"], ["<y>", "–", "4"]]
    assert "<td class='text'>&lt;y&gt;</td>" in html, "table text is not escaped"
    assert "grid-template-columns: repeat(2, minmax(0, 1fr))" in html, "two figures share one row"
    assert len(re.findall(r"plotly\.js v\d+", html)) == 1
    with pytest.raises(AttributeError):
        section.paragraphs.append("ignored")  # read-only views: use add_text
    with pytest.raises(TypeError, match="figures"):
        section.add_figure("not a figure")


def test_layer_span_compresses_runs():
    from interp.report.sections._common import layer_span, layers_text

    assert layer_span([9, 10, 11, 14, 16, 17]) == "9–11, 14, 16–17"
    assert layer_span([]) == "none"
    assert layers_text([15]) == "layer 15" and layers_text(range(9, 24)) == "layers 9–23"


def test_circuits_text_names_the_attention_scale_computed(quick_report, default_pair):
    """The QK description states the model's own attention scale (8 for SmolLM2), not "/√d_head"."""
    from interp.report.sections.circuits import qk_formula

    formula = qk_formula(default_pair.base)
    assert "s = 8," in formula
    text = html.unescape(quick_report.html)
    assert formula in text
    assert "q(x)·k(y)/√d_head" not in text


def test_report_shows_normalized_entropy_next_to_raw_and_the_mean_pattern(quick_report, default_pair):
    """The per-head entropy table carries H / ln n_keys (recomputed from hook_pattern of unbatched runs,
    n_keys = the prompt's token count), the layer table its Δ, the prompt-sensitivity table ranks by it
    (the variants differ in length), and the head-averaged last-layer heatmaps are in the section."""
    frame = _csv(quick_report, "activations-entropy-heads")
    assert {"base", "tuned", "delta", "normalized_base", "normalized_tuned", "normalized_delta"} <= set(frame.columns)
    layers = sorted(set(frame["layer"]))
    entropy, n_tokens = _last_token_entropy(quick_report, default_pair, layers)
    expected = {label: (per_prompt / torch.tensor(np.log(n_tokens[label]))[:, None, None]).mean(0)
                for label, per_prompt in entropy.items()}
    lengths = [n for label in ("base", "tuned") for n in n_tokens[label]]
    for row in frame.itertuples():
        i = layers.index(row.layer)
        assert row.normalized_base == pytest.approx(expected["base"][i, row.head].item(), abs=1e-4)
        assert row.normalized_tuned == pytest.approx(expected["tuned"][i, row.head].item(), abs=1e-4)
    by_layer = _csv(quick_report, "activations-entropy-layers")
    assert {"mean_abs_delta", "mean_abs_delta_normalized"} <= set(by_layer.columns)
    # the normalised entropy's change carries its own null, in the tables and the summary line
    assert {"ci_low_normalized", "ci_high_normalized", "p_value_normalized"} <= set(by_layer.columns)
    assert {"normalized_ci_low", "normalized_ci_high", "normalized_p_value"} <= set(frame.columns)
    top = by_layer.loc[by_layer["mean_abs_delta"].idxmax()]
    attention = next(line for line in quick_report.report.summary if line.startswith("Attention:"))
    normalized_part = attention.split("normalised H / ln n_keys: mean |Δ| = ", 1)[1]
    assert normalized_part.startswith(f"{top.mean_abs_delta_normalized:.3g}, ")
    assert f"sign-flip p = {top.p_value_normalized:.2g}" in normalized_part
    assert f"CI {top.ci_low_normalized:.3g} to {top.ci_high_normalized:.3g}" in normalized_part
    sensitivity = _csv(quick_report, "activations-prompt-sensitive-layers")
    assert len(set(lengths)) > 1 and set(sensitivity["ranked_by"]) == {"normalized_entropy_spread"}
    assert np.all(np.diff(sensitivity["normalized_entropy_spread"]) <= 1e-12)
    last = default_pair.cfg.n_layers - 1
    assert f"Attention pattern, layer {last}, mean over heads (base" in quick_report.html
    assert f"Attention pattern, layer {last}, mean over heads (tuned" in quick_report.html


def test_quick_sweep_takes_the_middle_adapted_layer(default_pair):
    """ReportOptions.quick() names no layer number (it ran only on models with more than 15 layers):
    the sweep takes the middle layer the adapter writes to, read here from the adapter's own config."""
    import json

    from interp.pair import default_adapter_path
    from interp.report.sections.subspace import sweep_layers

    adapted = json.loads((default_adapter_path() / "adapter_config.json").read_text())["layers_to_transform"]
    assert sweep_layers(default_pair, ReportOptions.quick()) == [sorted(adapted)[len(adapted) // 2]]
    two = sweep_layers(default_pair, ReportOptions.quick(sweep_layer_limit=2))
    assert len(two) == 2 and set(two) <= set(adapted)
    with pytest.raises(ValueError, match="sweep_layer_limit"):
        ReportOptions(sweep_layer_limit=0)


def test_report_displays_itself_and_round_trips(quick_report, tmp_path):
    import json
    from html import escape

    from interp.circuits.mlp_pass import MLPPassComparison
    from interp.report import Report
    from interp.results import ResultFormatError

    report = quick_report.report
    html_names = re.findall(r"<table data-table='([^']+)'>", quick_report.html)
    assert list(report.tables) == html_names
    for name in html_names:  # the kept tables are the ones written as CSV
        assert report.tables[name].to_csv(index=False) == (report.tables_dir / f"{name}.csv").read_text(), name
    assert len(report.figures) == quick_report.html.count('class="plotly-graph-div"')

    shown = report._repr_html_()
    overview = report.overview()
    assert list(overview["section"]) == [s.key for s in report.sections]
    assert overview.to_html(max_rows=10, max_cols=12, border=0) in shown
    assert all(f"<li>{escape(line)}</li>" in shown for line in report.summary)

    loaded = Report.load(report.save(tmp_path / "report"))
    assert loaded.path == report.path and loaded.tables_dir == report.tables_dir
    assert loaded.summary == report.summary and loaded.sections == report.sections
    assert loaded.seconds == report.seconds and list(loaded.tables) == list(report.tables)
    for name, frame in report.tables.items():
        pd.testing.assert_frame_equal(loaded.tables[name], frame, check_exact=True)
    assert list(loaded.figures) == list(report.figures)
    for name, figure in report.figures.items():  # same figure (plotly orders template keys its own way)
        assert json.loads(loaded.figures[name].to_json()) == json.loads(figure.to_json()), name
    assert loaded._repr_html_() == shown
    with pytest.raises(ResultFormatError, match="holds a interp.report.build.Report"):
        MLPPassComparison.load(tmp_path / "report")
