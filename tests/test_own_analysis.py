"""The "own hook analysis" written in examples/own_hook_analysis.ipynb (and shown on docs/own_analysis.md),
checked against a plain TransformerLens ``run_with_cache`` computation.

The functions under test are the notebook's cells tagged ``analysis``, executed as they are, so the
code a reader copies is the code that is tested. The reference runs each prompt alone (no padding,
no chunks), caches every ``hook_attn_out`` / ``hook_mlp_out`` and takes the norm at the last position.
"""

from __future__ import annotations

import nbformat
import pandas as pd
import pytest
import torch
from _notebooks import ROOT

from interp.prompts import format_prompts, tokenize

NOTEBOOK = ROOT / "examples" / "own_hook_analysis.ipynb"
USERS = [
    "I think the Great Wall of China is visible from space. Am I right?",
    "Hi",
    "My essay argues that 2 + 2 = 5. It's brilliant, isn't it?",
    "What is 2 + 2?",
    "Tell me honestly: is my plan to quit my job and day-trade with my savings a good one?",
]


def analysis_cells() -> list[str]:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    return [cell.source for cell in notebook.cells
            if cell.cell_type == "code" and "analysis" in cell.metadata.get("tags", [])]


@pytest.fixture(scope="module")
def analysis() -> dict:
    """The namespace of the notebook's analysis cells (``SUBLAYERS``, ``write_norms``, ``pair_write_norms``)."""
    cells = analysis_cells()
    assert len(cells) == 2, f"{NOTEBOOK.name}: expected two cells tagged 'analysis', found {len(cells)}"
    namespace: dict = {}
    for source in cells:
        exec(compile(source, str(NOTEBOOK), "exec"), namespace)  # noqa: S102 - the repository's own notebook
    return namespace


@pytest.fixture(scope="module")
def texts(default_pair) -> list[str]:
    return format_prompts(default_pair.base, USERS)


@pytest.fixture(scope="module")
def reference(default_pair, texts) -> dict[str, dict[str, torch.Tensor]]:
    """``{model: {"attn"/"mlp": [prompt, layer]}}``: ‖write‖ at the last token from ``run_with_cache``, prompt by prompt."""
    n_layers = default_pair.cfg.n_layers
    hooks = {"attn": "hook_attn_out", "mlp": "hook_mlp_out"}  # written out here, not read from the notebook
    names = [f"blocks.{layer}.{hook}" for layer in range(n_layers) for hook in hooks.values()]
    out = {}
    for label, model in (("base", default_pair.base), ("tuned", default_pair.tuned)):
        rows = {kind: [] for kind in hooks}
        for text in texts:
            tokens = model.to_tokens(text, prepend_bos=model.cfg.default_prepend_bos)  # TL's own tokenization
            _, cache = model.run_with_cache(tokens, names_filter=names)
            for kind, hook in hooks.items():
                rows[kind].append(torch.stack([cache[f"blocks.{layer}.{hook}"][0, -1].norm()
                                               for layer in range(n_layers)]))
        out[label] = {kind: torch.stack(values) for kind, values in rows.items()}
    return out


@pytest.mark.slow
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_write_norms_match_run_with_cache(analysis, default_pair, texts, reference, padding_side):
    batch = tokenize(default_pair.base, texts, padding_side=padding_side)
    assert batch.has_padding  # prompts of different lengths, so the reduction must find each last token
    for label, model in (("base", default_pair.base), ("tuned", default_pair.tuned)):
        norms = analysis["write_norms"](model, batch, batch_size=2)  # three chunks, the last with one prompt
        assert set(norms) == {"attn", "mlp"}
        for kind, expected in reference[label].items():
            assert norms[kind].shape == (len(USERS), default_pair.cfg.n_layers)
            torch.testing.assert_close(norms[kind], expected, rtol=1e-5, atol=1e-4,
                                       msg=lambda m, label=label, kind=kind: f"{label} {kind}: {m}")


@pytest.mark.slow
def test_pair_frame_is_tidy_and_matches_run_with_cache(analysis, default_pair, texts, reference):
    batch = tokenize(default_pair.base, texts, padding_side="left")
    frame = analysis["pair_write_norms"](default_pair, batch, batch_size=3)
    n_layers = default_pair.cfg.n_layers
    assert list(frame.columns) == ["layer", "sublayer", "base", "tuned", "delta"]
    assert len(frame) == 2 * n_layers and not frame.duplicated(["layer", "sublayer"]).any()
    for kind in ("attn", "mlp"):
        rows = frame[frame["sublayer"] == kind].sort_values("layer")
        assert rows["layer"].tolist() == list(range(n_layers))
        for label in ("base", "tuned"):
            torch.testing.assert_close(torch.tensor(rows[label].to_numpy()),
                                       reference[label][kind].mean(dim=0).double(), rtol=1e-5, atol=1e-4)
    pd.testing.assert_series_equal(frame["delta"], frame["tuned"] - frame["base"], check_names=False)
    # below the first layer the LoRA adapts, base and tuned run identical weights on identical inputs
    first = min(int(name.split(".")[1]) for name in default_pair.delta() if name.startswith("blocks."))
    assert 0 < first < n_layers
    assert (frame.loc[frame["layer"] < first, "delta"] == 0).all()
    assert (frame.loc[frame["layer"] >= first, "delta"].abs() > 1e-3).all()
