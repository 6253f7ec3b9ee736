"""ModelPair.check (the one pair validator) and delta_frame (the one tuned − base table)."""

from __future__ import annotations

import types

import pandas as pd
import pytest

from interp.pair import ModelPair, delta_frame


def test_check_accepts_pairs_and_tuples_and_names_the_argument(smollm2, gemma):
    pair = ModelPair(smollm2, smollm2)
    assert ModelPair.check(pair) is pair
    wrapped = ModelPair.check((smollm2, smollm2), name="model")
    assert isinstance(wrapped, ModelPair) and wrapped.base is smollm2 and wrapped.tuned is smollm2
    with pytest.raises(ValueError, match=r"model\.tuned: not the same architecture.*d_model \(base 576, tuned 640\)"):
        ModelPair.check((smollm2, gemma), name="model")
    with pytest.raises(TypeError, match="pair: expected a ModelPair"):
        ModelPair.check(smollm2)
    with pytest.raises(TypeError, match=r"pair\.base: expected a HookedTransformer"):
        ModelPair.check(("x", smollm2))
    planted = types.SimpleNamespace(base=smollm2, delta=dict)
    assert ModelPair.check(planted, needs_tuned=False) is planted
    with pytest.raises(TypeError, match="pair: expected"):
        ModelPair.check(planted)


def test_delta_frame_long_and_wide():
    base = pd.DataFrame({"layer": [0, 1], "head": [0, 0], "x": [1.0, 2.0], "note": ["a", "b"]})
    tuned = pd.DataFrame({"layer": [1, 0], "head": [0, 0], "x": [5.0, 3.0], "note": ["c", "d"]})
    long = delta_frame(base, tuned, keys=["layer", "head"], values=["x"])
    assert list(long.columns[:1]) == ["model"]
    assert long["model"].tolist() == ["base"] * 2 + ["tuned"] * 2 + ["delta"] * 2
    delta = long[long["model"] == "delta"].set_index("layer")["x"]
    assert delta.to_dict() == {0: 2.0, 1: 3.0}
    assert long[long["model"] == "delta"]["note"].isna().all()
    wide = delta_frame(base, tuned, keys=["layer", "head"], values=["x"], layout="wide").set_index("layer")
    assert wide.loc[0, "x_base"] == 1.0 and wide.loc[0, "x_tuned"] == 3.0 and wide.loc[0, "delta_x"] == 2.0
    assert wide.loc[1, "note_tuned"] == "c"
    with pytest.raises(ValueError, match="layout"):
        delta_frame(base, tuned, keys=["layer"], values=["x"], layout="tall")
    with pytest.raises(ValueError, match=r"tuned: missing columns \['y'\]"):
        delta_frame(base.assign(y=1.0), tuned, keys=["layer"], values=["y"])
