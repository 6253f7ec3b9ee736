"""The circuitsvis attention view: offline HTML (inline bundle, no remote script), the real patterns of the
default pair in its panels, clear errors, and a render in headless Chromium with no console messages."""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch
from _chromium import OFFLINE, chromium, console_messages, run_chromium  # noqa: F401  (chromium is a fixture)

from interp.plots.attention_view import AttentionView, attention_view, circuitsvis_bundle, pair_attention_view

PROMPT = "The cat sat on the mat because it was warm."
LAYER = 15  # the default LoRA adapts layers 9-23


def _panels(view: AttentionView) -> list[dict]:
    """The props of each ``CircuitsVis.render(id, CircuitsVis.AttentionHeads, props)`` call, in order."""
    calls = re.findall(r'^CircuitsVis\.render\("([^"]+)", CircuitsVis\.AttentionHeads, (\{.*\})\);$', view.html, re.M)
    for uid, _ in calls:
        assert f"<div id='{uid}'></div>" in view.html, uid
    return [json.loads(props) for _, props in calls]


@pytest.fixture(scope="module")
def pair_patterns(default_pair):
    """Tokens and layer-LAYER patterns ``[head, q, k]`` of the base and tuned models, from run_with_cache."""
    name = f"blocks.{LAYER}.attn.hook_pattern"
    _, base_cache = default_pair.base.run_with_cache(PROMPT, names_filter=name)
    _, tuned_cache = default_pair.tuned.run_with_cache(PROMPT, names_filter=name)
    tokens = default_pair.base.to_str_tokens(PROMPT)
    return tokens, base_cache[name][0], tuned_cache[name][0]


@pytest.fixture(scope="module")
def view(pair_patterns):
    tokens, base, tuned = pair_patterns
    return pair_attention_view(tokens, base, tuned, head_names=[f"L{LAYER}H{h}" for h in range(base.shape[0])])


def test_html_inlines_the_bundle_and_loads_nothing_remote(view):
    bundle = circuitsvis_bundle()
    assert len(bundle) > 500_000 and bundle in view.html, "the circuitsvis bundle is not inlined"
    assert view.html.count(bundle) == 1, "the bundle should be inlined once for all panels"
    assert not re.search(r"<script[^>]*\bsrc\s*=", view.html, re.I), "a <script src=...> would load from elsewhere"
    outside_bundle = view.html.replace(bundle, "")
    assert "http://" not in outside_bundle and "https://" not in outside_bundle and "import " not in outside_bundle
    assert "unpkg" not in view.html and "cdn.jsdelivr" not in view.html
    # the inline script is not cut short by a "</script>" inside the bundle
    assert view.html.lower().count("</script>") == 1
    # the text form (what a console or a notebook's text/plain output shows) is one short line
    assert repr(view).startswith("AttentionView('attention: base, tuned, tuned − base', 3 panels, ") and len(repr(view)) < 100


@pytest.mark.slow
def test_panels_hold_base_tuned_and_their_difference(view, pair_patterns):
    tokens, base, tuned = pair_patterns
    panels = _panels(view)
    assert [p["tokens"] for p in panels] == [tokens] * 3
    assert panels[0]["attentionHeadNames"][0] == f"L{LAYER}H0"
    for props, expected in zip(panels, (base, tuned, tuned - base), strict=True):
        got = torch.tensor(props["attention"])
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected.float(), rtol=1e-4, atol=1e-7)
        assert props["maskUpperTri"] is True  # a causal model: nothing above the diagonal
    assert (panels[0]["minValue"], panels[0]["maxValue"]) == (0.0, 1.0)
    bound = float((tuned - base).abs().max())
    assert bound > 0, "the LoRA changed nothing in this layer's attention"
    assert panels[2]["minValue"] == -panels[2]["maxValue"] == pytest.approx(-bound)
    assert "<h4 style='margin:4px 0'>tuned − base</h4>" in view.html


def test_awkward_tokens_are_escaped():
    pattern = torch.full((1, 2, 2), 0.5)
    view = attention_view(["</script><b>", "'\"&"], {"x<y": pattern})
    assert _panels(view)[0]["tokens"] == ["</script><b>", "'\"&"]
    assert "x&lt;y" in view.html and view.html.lower().count("</script>") == 1


def test_bad_input_is_named():
    good = torch.full((2, 3, 3), 1 / 3)
    tokens = ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"patterns\['base'\]: 3 positions but 2 tokens"):
        attention_view(["a", "b"], {"base": good})
    with pytest.raises(ValueError, match=r"base and tuned: shapes \(2, 3, 3\) and \(1, 3, 3\) differ"):
        pair_attention_view(tokens, good, good[:1])
    with pytest.raises(ValueError, match=r"tuned: expected shape \[head, query, key\]"):
        pair_attention_view(tokens, good, good[0])
    with pytest.raises(TypeError, match=r"tokens: expected a sequence of token strings"):
        attention_view("abc", {"p": good})
    with pytest.raises(ValueError, match=r"head_names: expected 2 names"):
        attention_view(tokens, {"p": good}, head_names=["only one"])
    with pytest.raises(ValueError, match=r"patterns\['p'\]: contains NaN"):
        attention_view(tokens, {"p": good.clone().fill_(float("nan"))})
    with pytest.raises(ValueError, match=r"diverging: \['d'\] are not panel titles"):
        attention_view(tokens, {"p": good}, diverging=["d"])
    with pytest.raises(TypeError, match=r"base: expected a torch.Tensor"):
        pair_attention_view(tokens, [[0.5]], good)


def test_missing_circuitsvis_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "circuitsvis", None)  # `import circuitsvis` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'interp\[notebook\]'"):
        attention_view(["a"], {"p": torch.ones(1, 1, 1)})


@pytest.mark.slow
def test_view_renders_offline_in_chromium_without_console_messages(chromium, view, tmp_path):  # noqa: F811
    page = view.write_html(tmp_path / "attention.html")
    result = run_chromium(chromium, tmp_path / "profile", OFFLINE, "--virtual-time-budget=10000",
                          "--enable-logging=stderr", "--v=0", "--dump-dom", page.resolve().as_uri())
    assert result.returncode == 0, f"chromium --dump-dom failed ({result.returncode}):\n{result.stderr[-3000:]}"
    messages = console_messages(result.stderr)
    assert not messages, "console messages while rendering the view:\n" + "\n".join(messages[:20])
    rendered = re.sub(r"<script.*?</script>", "", result.stdout, flags=re.S)  # what React drew, not its source
    n_heads = len(_panels(view)[0]["attention"])
    assert rendered.count("Head Selector") == 3, "circuitsvis did not draw all three panels"
    assert rendered.count("<canvas") >= 3 * (n_heads + 1), "missing head thumbnails or the enlarged pattern"
    for uid in re.findall(r"<div id='([^']+)'></div>", view.html):
        assert f'<div id="{uid}"></div>' not in rendered, f"panel {uid} stayed empty"


def test_console_check_catches_a_script_error(chromium, tmp_path):  # noqa: F811
    """The console filter above would see an error: a page that throws is caught by it."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>throw new Error('deliberate')</script></body></html>")
    result = run_chromium(chromium, tmp_path / "profile", OFFLINE, "--virtual-time-budget=2000",
                          "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri())
    assert any("Uncaught Error: deliberate" in line for line in console_messages(result.stderr)), result.stderr[-2000:]


def test_attention_pattern_views_show_hook_pattern(default_pair, pair_patterns):
    from interp.activations import attention_pattern, pair_attention_pattern

    tokens, base, tuned = pair_patterns
    head = 3
    single = attention_pattern(default_pair.base, PROMPT, layer=LAYER, head=head).view()
    (panel,) = _panels(single)
    assert panel["tokens"] == tokens and panel["attentionHeadNames"] == [f"L{LAYER}H{head}"]
    torch.testing.assert_close(torch.tensor(panel["attention"])[0], base[head].float(), rtol=1e-4, atol=1e-7)

    pair = pair_attention_pattern(default_pair, PROMPT, layer=LAYER, head=head)
    panels = _panels(pair.view())
    assert [p["tokens"] for p in panels] == [tokens] * 3
    for props, expected in zip(panels, (base[head], tuned[head], tuned[head] - base[head]), strict=True):
        torch.testing.assert_close(torch.tensor(props["attention"])[0], expected.float(), rtol=1e-4, atol=1e-7)
    assert panels[2]["minValue"] < 0 < panels[2]["maxValue"]
    frame = pair.to_frame()
    delta = frame[frame["model"] == "delta"].set_index(["query", "key"])["attention"]
    assert delta.loc[(5, 2)] == pytest.approx(float(tuned[head, 5, 2] - base[head, 5, 2]), abs=1e-6)
