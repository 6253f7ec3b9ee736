"""Interactive attention patterns for a notebook: circuitsvis' ``AttentionHeads`` view, rendered offline.

:func:`attention_view` shows one or more ``[head, query, key]`` patterns of a prompt side by side
(one thumbnail per head; click a head to enlarge it, hover a token to see what it attends to);
:func:`pair_attention_view` shows base, tuned and ``tuned − base`` for one prompt.

circuitsvis ships its JavaScript bundle in its wheel, but its own ``_repr_html_`` first makes an HTTP
request to decide between that bundle and a CDN. Here the bundle is always inlined, once per view,
so displaying a view never touches the network. circuitsvis is an optional extra:
``pip install 'interp[notebook]'``.

>>> view = pair_attention_view(tokens, base_pattern[layer], tuned_pattern[layer])
>>> view                      # in Jupyter: renders inline
>>> view.write_html("attention.html")
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from jaxtyping import Float

_COUNTER = itertools.count()
_EXTRA_HINT = "pip install 'interp[notebook]'"


@dataclass(frozen=True, repr=False)
class AttentionView:
    """An interactive attention view: HTML with the circuitsvis bundle inlined (no network needed).

    ``html`` is a fragment for a notebook cell (``_repr_html_``); :meth:`to_page` wraps it into a
    standalone page.
    """

    html: str
    title: str

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:  # the HTML holds a 1.3 MB script: never print it as the text form
        return f"AttentionView({self.title!r}, {self.html.count('CircuitsVis.render(')} panels, {len(self.html) // 1024} kB of HTML)"

    def to_page(self) -> str:
        """A complete HTML document showing the view."""
        return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"</head><body>\n{self.html}\n</body></html>\n")

    def write_html(self, path: str | Path) -> Path:
        """Write :meth:`to_page` to ``path`` and return the path."""
        path = Path(path)
        path.write_text(self.to_page(), encoding="utf-8")
        return path


def circuitsvis_bundle() -> str:
    """circuitsvis' browser bundle (``dist/cdn/iife.js`` in its wheel), safe to inline in a ``<script>``.

    Raises:
        ImportError: circuitsvis is not installed (it is the ``notebook`` extra).
    """
    try:
        import circuitsvis
    except ImportError as error:
        raise ImportError(f"interactive attention views need circuitsvis, the 'notebook' extra of interp: "
                          f"{_EXTRA_HINT}") from error
    bundle = resources.files(circuitsvis).joinpath("dist", "cdn", "iife.js")
    if not bundle.is_file():
        raise ImportError(f"circuitsvis {getattr(circuitsvis, '__version__', '?')} has no dist/cdn/iife.js "
                          f"bundle; reinstall it with {_EXTRA_HINT}")
    # "</script>" inside the code would end the inline <script> early; "<\/script>" means the same in JS
    return re.sub(r"</(script)", r"<\\/\1", bundle.read_text(encoding="utf-8"), flags=re.IGNORECASE)


def attention_view(
    tokens: Sequence[str],
    patterns: Mapping[str, Float[torch.Tensor, "head query key"]],
    *,
    head_names: Sequence[str] | None = None,
    diverging: Sequence[str] = (),
    title: str = "attention",
) -> AttentionView:
    """Side-by-side circuitsvis ``AttentionHeads`` panels, one per pattern, for one prompt.

    Pattern ``A[h, q, k]`` is the attention of query token ``q`` on key token ``k`` in head ``h``.
    Ordinary panels colour ``[0, 1]``; panels named in ``diverging`` (differences) colour
    ``[-m, m]`` with ``m = max |A|``, negative values in their own colour.

    Args:
        tokens: The prompt's tokens as strings, one per query/key position.
        patterns: Panel title → pattern ``[head, query, key]``; all of the same shape.
        head_names: One name per head (default ``"H0"``, ``"H1"``, ...).
        diverging: Titles of panels holding signed differences.
        title: Title of the page written by ``write_html``.

    Returns:
        An :class:`AttentionView` that renders in a notebook and writes a standalone page.
    """
    bundle = circuitsvis_bundle()
    tokens = _check_tokens(tokens)
    if not isinstance(patterns, Mapping) or not patterns:
        raise ValueError("patterns: expected a non-empty mapping of panel title → [head, query, key] tensor")
    shape = None
    panels = []
    for name, pattern in patterns.items():
        pattern = _check_pattern(pattern, f"patterns[{name!r}]", len(tokens))
        if shape is not None and pattern.shape != shape:
            raise ValueError(f"patterns[{name!r}]: shape {tuple(pattern.shape)} differs from the first panel's "
                             f"{tuple(shape)}; every panel must show the same heads of the same prompt")
        shape = pattern.shape
        panels.append((str(name), pattern))
    unknown = [name for name in diverging if name not in patterns]
    if unknown:
        raise ValueError(f"diverging: {unknown} are not panel titles; expected some of {list(patterns)}")
    n_heads = shape[0]
    if head_names is None:
        head_names = [f"H{h}" for h in range(n_heads)]
    head_names = [str(name) for name in head_names]
    if len(head_names) != n_heads:
        raise ValueError(f"head_names: expected {n_heads} names (one per head), got {len(head_names)}")

    causal = all(bool((torch.triu(pattern, diagonal=1) == 0).all()) for _, pattern in panels)
    scripts, columns = [], []
    for name, pattern in panels:
        props: dict[str, object] = {"attention": _rounded(pattern), "tokens": list(tokens),
                                    "attentionHeadNames": head_names, "maskUpperTri": causal}
        if name in diverging:
            bound = float(pattern.abs().max()) or 1.0
            props.update(minValue=-bound, maxValue=bound, negativeColor="blue", positiveColor="red")
        else:
            props.update(minValue=0.0, maxValue=1.0)
        payload = json.dumps(props, ensure_ascii=False).replace("</", "<\\/")
        uid = f"interp-attn-{hashlib.sha1(payload.encode()).hexdigest()[:10]}-{next(_COUNTER)}"
        columns.append(f"<div style='flex:1 1 360px;min-width:360px'><h4 style='margin:4px 0'>{html.escape(name)}"
                       f"</h4><div id='{uid}'></div></div>")
        scripts.append(f"CircuitsVis.render({json.dumps(uid)}, CircuitsVis.AttentionHeads, {payload});")
    fragment = ("<div class='interp-attention-view'><div style='display:flex;flex-wrap:wrap;gap:16px'>"
                + "".join(columns) + "</div>\n<script type='module'>\n" + bundle + "\n" + "\n".join(scripts)
                + "\n</script></div>")
    return AttentionView(html=fragment, title=title)


def pair_attention_view(
    tokens: Sequence[str],
    base: Float[torch.Tensor, "head query key"],
    tuned: Float[torch.Tensor, "head query key"],
    *,
    head_names: Sequence[str] | None = None,
    names: tuple[str, str] = ("base", "tuned"),
    title: str = "attention: base, tuned, tuned − base",
) -> AttentionView:
    """Base, tuned and ``tuned − base`` attention of one prompt side by side (same tokens, same heads).

    Args:
        tokens: The prompt's tokens (the pair shares its tokenizer).
        base: Base model pattern ``[head, query, key]``.
        tuned: Tuned model pattern, same shape.
        head_names: One name per head (default ``"H0"``, ...).
        names: Titles of the base and tuned panels.
        title: Title of the page written by ``write_html``.

    Returns:
        An :class:`AttentionView` with three panels, the difference on a diverging scale.
    """
    base = _check_pattern(base, "base", None)
    tuned = _check_pattern(tuned, "tuned", None)
    if base.shape != tuned.shape:
        raise ValueError(f"base and tuned: shapes {tuple(base.shape)} and {tuple(tuned.shape)} differ; expected the "
                         "same heads of the same prompt")
    delta = f"{names[1]} − {names[0]}"
    return attention_view(tokens, {names[0]: base, names[1]: tuned, delta: tuned - base}, head_names=head_names,
                          diverging=(delta,), title=title)


def _check_tokens(tokens: Sequence[str]) -> list[str]:
    if isinstance(tokens, str) or not isinstance(tokens, Sequence) or not all(isinstance(t, str) for t in tokens):
        raise TypeError(f"tokens: expected a sequence of token strings, got {type(tokens).__name__}")
    if not tokens:
        raise ValueError("tokens: expected at least one token")
    return list(tokens)


def _check_pattern(pattern: torch.Tensor, name: str, n_tokens: int | None) -> torch.Tensor:
    if not isinstance(pattern, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [head, query, key], got {type(pattern).__name__}")
    if pattern.ndim != 3 or pattern.shape[1] != pattern.shape[2]:
        raise ValueError(f"{name}: expected shape [head, query, key] with query == key, got {tuple(pattern.shape)}")
    if not pattern.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point pattern, got {pattern.dtype}")
    if n_tokens is not None and pattern.shape[-1] != n_tokens:
        raise ValueError(f"{name}: {pattern.shape[-1]} positions but {n_tokens} tokens; pass the prompt's tokens "
                         "without padding")
    pattern = pattern.detach().to("cpu", torch.float32)
    if not torch.isfinite(pattern).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return pattern


def _rounded(pattern: torch.Tensor) -> list:
    """Nested lists with 5 significant digits (plenty for colour; keeps the page small)."""
    return [[[float(f"{v:.5g}") for v in row] for row in head] for head in pattern.tolist()]
