"""interp's own results (from the offline models) display their headline table and round-trip
exactly through ``save`` / ``load``; a folder of another format version or class is refused.

Equality is checked field by field against the object that was saved: tables with
``assert_frame_equal(check_exact=True)``, tensors with ``torch.equal`` (dtype included), metadata
with ``==``, nested results and DirectionSets recursively; derived tables (``to_frame`` etc.) are
compared too, so a loaded result answers every question the original did.
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch

from interp.activations import attention_study
from interp.activations.attention_metrics import (
    attention_pattern,
    pair_attention_metrics,
    pair_attention_pattern,
)
from interp.activations.head_types import head_type_scores
from interp.activations.qkv_structure import qkv_similarity_study
from interp.circuits import circuit_study
from interp.circuits.mlp_pass import compare_mlp_pass
from interp.directions import DirectionSet
from interp.personas import persona_directions
from interp.prompts import SavedVocabulary, TokenBatch, tokenize
from interp.results import Result, ResultFormatError
from interp.subspace import CLAIMS, subspace_sweep

PROMPTS = ["The cat sat on the mat because the cat was tired.", "A cat and a dog: the cat ran."]


def _directions(pair, n: int, seed: int, prefix: str) -> DirectionSet:
    return DirectionSet.random(n, pair.cfg.d_model, seed=seed, prefix=prefix)


BUILDERS = {
    "CircuitStudy": lambda pair, model: circuit_study(
        pair, _directions(pair, 2, 3, "PC"), semantic=_directions(pair, 4, 4, "Role"), layers=[0, 10], n_random=4),
    "AttentionStudy": lambda pair, model: attention_study(
        pair, {"plain": (None, "What is 2 plus 2?"), "expert": ("You are an expert.", "What is 2 plus 2?")},
        keywords=["plus"], layers=[0, 10], head_type_length=6, head_type_sequences=2, progress=False),
    "MLPPassComparison": lambda pair, model: compare_mlp_pass(pair, _directions(pair, 2, 1, "d"), layers=[9, 10]),
    "PairAttentionMetrics": lambda pair, model: pair_attention_metrics(
        pair, PROMPTS, layers=[1, 10], keywords=["cat"], progress=False),
    "AttentionPattern": lambda pair, model: attention_pattern(model, PROMPTS[0], layer=2, head=1),
    "PairAttentionPattern": lambda pair, model: pair_attention_pattern(pair, PROMPTS[1], layer=10, head=0),
    "HeadTypeScores": lambda pair, model: head_type_scores(model, length=6, n_sequences=2, layers=[0, 1],
                                                           progress=False),
    "QKVSimilarityStudy": lambda pair, model: qkv_similarity_study(model, PROMPTS, " cat", layer=1, bins=10,
                                                                   progress=False),
    "SweepResult": lambda pair, model: subspace_sweep(pair, k=4, layers=[10], claims=CLAIMS[:6],
                                                      include=["attn_write", "mlp_write"]),
    "PersonaDirections": lambda pair, model: persona_directions(
        model, layer=2, n_components=2, roles=["pirate", "poet", "chef"], questions=["Who are you?"],
        traits=["critical"]),
    "TokenBatch": lambda pair, model: tokenize(model, PROMPTS, padding_side="left"),
}


def assert_same(saved, loaded, where: str = "result") -> None:
    """Every stored field equal (exactly), recursively, and every derived table equal."""
    assert type(loaded) is type(saved), where
    if isinstance(saved, DirectionSet):
        assert loaded.names == saved.names and loaded.layer == saved.layer and loaded.source == saved.source, where
        assert loaded.metadata == saved.metadata, where
        assert torch.equal(loaded.vectors, saved.vectors), where
        return
    layout, kinds = saved._checked_layout()
    for field in dataclasses.fields(saved):
        a, b = getattr(saved, field.name), getattr(loaded, field.name)
        name = f"{where}.{field.name}"
        if a is None:
            assert b is None, name
        elif kinds[field.name] == "table":
            pd.testing.assert_frame_equal(b, a, check_exact=True, obj=name)
        elif kinds[field.name] == "tensor":
            assert b.dtype == a.dtype and torch.equal(b, a.cpu()), name
        elif kinds[field.name] in ("result", "object"):
            assert_same(a, b, name)
        elif field.name == "tokenizer":
            assert isinstance(b, SavedVocabulary), name
            ids = sorted(set(saved.tokens.flatten().tolist()))
            assert b.pieces == {i: a.decode([i]) for i in ids}, name
        else:
            assert b == a and type(b) is type(a), name
    for method in (layout.headline, *layout.derived_tables):
        if method not in layout.tables:
            pd.testing.assert_frame_equal(getattr(loaded, method)(), getattr(saved, method)(), check_exact=True,
                                          obj=f"{where}.{method}()")


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_result_displays_and_round_trips(kind, default_pair, tmp_path):
    result = BUILDERS[kind](default_pair, default_pair.base)
    assert isinstance(result, Result) and type(result).__name__ == kind

    html = result._repr_html_()
    headline = result.headline_table()
    assert len(headline) > 0, "the headline table of a real result is empty"
    assert headline.to_html(max_rows=10, max_cols=12, border=0) in html
    assert f"<b>{kind}</b>" in html

    folder = result.save(tmp_path / kind)
    meta = json.loads((folder / "result.json").read_text())
    assert meta["class"].endswith(f".{kind}")
    assert not [p for p in folder.rglob("*") if p.suffix in (".pkl", ".pickle", ".pt")]
    loaded = type(result).load(folder)
    assert_same(result, loaded)
    assert loaded._repr_html_() == html

    (folder / "result.json").write_text(json.dumps({**meta, "format_version": meta["format_version"] + 1}))
    with pytest.raises(ResultFormatError, match=r"result format version \d+, but this interp reads version"):
        type(result).load(folder)


def test_loaded_token_batch_shows_its_tokens_but_cannot_tokenize(default_pair, tmp_path):
    batch = tokenize(default_pair.base, PROMPTS)
    loaded = TokenBatch.load(batch.save(tmp_path / "batch"))
    for i in range(len(PROMPTS)):
        assert loaded.str_tokens(i) == default_pair.base.to_str_tokens(PROMPTS[i])
    with pytest.raises(TypeError, match="tokenize new text with the model"):
        loaded.tokenizer.encode("cat")


def test_incompatible_folders_are_refused(default_pair, tmp_path):
    result = compare_mlp_pass(default_pair, _directions(default_pair, 1, 0, "d"), layers=[10])
    folder = result.save(tmp_path / "mlp")
    meta = json.loads((folder / "result.json").read_text())
    (folder / "result.json").write_text(json.dumps({**meta, "format_version": meta["format_version"] + 1}))
    with pytest.raises(ResultFormatError, match="result format version"):
        type(result).load(folder)
    (folder / "result.json").write_text(json.dumps(meta))
    with pytest.raises(ResultFormatError, match="holds a interp.circuits.mlp_pass.MLPPassComparison"):
        TokenBatch.load(folder)
