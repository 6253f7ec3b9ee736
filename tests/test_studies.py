"""circuit_study and attention_study on the default pair, checked against independent computations:
z-scores read straight from the circuit table, and attention entropies from TransformerLens' own
hook_pattern on one unpadded prompt."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.activations import attention_study
from interp.circuits import circuit_study
from interp.directions import DirectionSet

LAYERS = [0, 10, 12]  # the default LoRA tunes layers 9-23


@pytest.fixture(scope="module")
def circuits(default_pair):
    d = default_pair.cfg.d_model
    named = DirectionSet.random(2, d, seed=3, prefix="PC")
    semantic = DirectionSet.random(6, d, seed=4, prefix="Role")
    return circuit_study(default_pair, named, semantic=semantic, layers=LAYERS, n_random=6, random_seed=5)


def test_circuit_study_summary_equals_the_table(circuits):
    assert circuits.tuned_layers == (10, 12) and circuits.layers == tuple(LAYERS)
    assert len(circuits.probes) == 2 * 2 + 6
    table = circuits.table
    for circuit in ("qk", "vo"):
        for name in ("PC1", "PC2"):
            for relation, key in (("self", name), ("opposite", f"-{name}")):
                z = {}
                for model in ("base", "tuned"):
                    rows = table[(table.circuit == circuit) & (table.model == model) & (table["query"] == name)
                                 & (table["key"] == key) & table.layer.isin([10, 12])].sort_values("layer")
                    z[model] = rows["z"].to_numpy()
                expected = np.abs(z["tuned"] - z["base"]).mean()
                got = circuits.summary[(circuits.summary.circuit == circuit) & (circuits.summary.direction == name)
                                       & (circuits.summary.relation == relation)]["mean_abs_delta_z"].item()
                np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert circuits.deltas.loc[circuits.deltas.layer == 0, "delta_z"].abs().max() == 0
    wide = circuits.summary_wide()
    assert list(wide["direction"]) == ["PC1", "PC2"] and {"QK self", "VO opposite"} <= set(wide.columns)


def test_circuit_study_mlp_pass_and_projections(circuits):
    assert circuits.mlp_direction == "PC1"
    first = circuits.mlp_table[circuits.mlp_table.direction == "PC1"].set_index("layer")
    assert first.loc[0, "delta_norm"] == 0 and first.loc[10, "delta_norm"] > 0
    assert circuits.peak_layer == int(first["delta_norm"].idxmax())
    assert circuits.projection_layer == circuits.peak_layer  # the random directions carry no layer
    assert len(circuits.projections) == 6 and len(circuits.projection_ends) == 6  # 3 at each end


def test_circuit_study_equals_separate_tables_of_the_probes_and_the_random_negations(circuits, default_pair):
    """One weight_circuits table of every probe, split, equals the two tables computed apart: the
    named probes with the random directions, and the random directions with their negations."""
    from interp.circuits import compare_mlp_pass, self_opposite, tuned_minus_base, weight_circuits
    from interp.circuits.nulls import mlp_null_table

    named, randoms = circuits.directions, DirectionSet.random(6, default_pair.cfg.d_model, seed=5)
    probes = named.with_negations().concat(randoms)
    assert circuits.probes.names == probes.names
    table = weight_circuits(default_pair, probes, layers=LAYERS)
    got = circuits.table
    for column in ("circuit", "model", "layer", "query", "key"):
        assert got[column].tolist() == table[column].tolist(), column
    for column in ("value", "baseline_mean", "baseline_std", "z"):
        np.testing.assert_allclose(got[column], table[column], rtol=1e-5, atol=1e-5, err_msg=column)
    random_deltas = tuned_minus_base(self_opposite(weight_circuits(default_pair, randoms.with_negations(),
                                                                   layers=LAYERS), list(randoms.names)))
    keys = ["circuit", "relation", "query", "key", "layer"]
    want = random_deltas.sort_values(keys, ignore_index=True)
    have = circuits.random_deltas.sort_values(keys, ignore_index=True)
    assert have[keys].equals(want[keys]) and len(want) == 2 * 2 * 6 * len(LAYERS)
    for column in ("z_base", "z_tuned", "delta_z"):
        np.testing.assert_allclose(have[column], want[column], rtol=1e-5, atol=1e-5, err_msg=column)
    first = compare_mlp_pass(default_pair, named.subset(["PC1"]).with_negations(), layers=LAYERS)
    assert circuits.mlp.names == ("PC1", "-PC1") and circuits.mlp.layers == first.layers
    for got_out, want_out in ((circuits.mlp.base, first.base), (circuits.mlp.tuned, first.tuned)):
        # float32 rounding of a larger batch: within 1e-5 of the outputs' scale
        torch.testing.assert_close(got_out, want_out, rtol=0, atol=1e-5 * float(want_out.abs().max()))
    mlp_nulls = mlp_null_table(compare_mlp_pass(default_pair, named, layers=LAYERS),
                               compare_mlp_pass(default_pair, randoms, layers=LAYERS), layers=[10, 12])
    assert circuits.mlp_nulls[["direction", "probe"]].equals(mlp_nulls[["direction", "probe"]])
    np.testing.assert_allclose(circuits.mlp_nulls["delta_norm"], mlp_nulls["delta_norm"], rtol=1e-5)
    np.testing.assert_allclose(circuits.mlp_nulls["p_value"], mlp_nulls["p_value"])


def test_circuit_study_runs_one_circuit_table_and_one_mlp_pass_per_direction(default_pair, monkeypatch):
    """weight_circuits once; every direction (named, −first, random at each named norm) through each
    model's MLP exactly once."""
    import importlib

    mlp_module = importlib.import_module("interp.circuits.mlp_pass")  # the package re-exports the function
    study_module = importlib.import_module("interp.circuits.study")

    tables, passed = [], {}
    real_table, real_pass = study_module.weight_circuits, mlp_module.mlp_pass

    def counting_table(*args, **kwargs):
        tables.append(args)
        return real_table(*args, **kwargs)

    def counting_pass(model, directions, **kwargs):
        passed.setdefault(id(model), []).append(torch.as_tensor(directions).detach().clone())
        return real_pass(model, directions, **kwargs)

    monkeypatch.setattr(study_module, "weight_circuits", counting_table)
    monkeypatch.setattr(mlp_module, "mlp_pass", counting_pass)
    d = default_pair.cfg.d_model
    unit = DirectionSet.random(2, d, seed=3, prefix="PC")
    # PC1 and PC2 unit, PC3 of norm 2: two norm groups, each with its own scaled random directions
    named = unit.concat(DirectionSet(("PC3",), 2 * DirectionSet.random(1, d, seed=8).vectors))
    circuit_study(default_pair, named, layers=[0, 10], n_random=3, random_seed=5)
    assert len(tables) == 1, f"weight_circuits ran {len(tables)} times"
    assert set(passed) == {id(default_pair.base), id(default_pair.tuned)}
    randoms = DirectionSet.random(3, d, seed=5).vectors
    expected = torch.cat([named.vectors, -named.vectors[:1], randoms, 2 * randoms])
    for calls in passed.values():
        rows = torch.cat(calls)
        assert len(rows) == len(expected) == 3 + 1 + 3 * 2, f"{len(rows)} directions passed through one model"
        assert len(torch.unique(rows, dim=0)) == len(rows), "a direction went through the MLP twice"
        # each expected direction is passed (once, by the count above)
        distance = torch.cdist(expected, rows).min(dim=1).values
        assert distance.max() < 1e-6, f"directions missing from the MLP pass: {distance.tolist()}"


def test_circuit_study_rejects_bad_input(default_pair):
    with pytest.raises(TypeError, match="directions: expected a DirectionSet"):
        circuit_study(default_pair, torch.ones(2, default_pair.cfg.d_model))
    with pytest.raises(TypeError, match="pair: expected a ModelPair"):
        circuit_study(default_pair.base, DirectionSet.random(1, default_pair.cfg.d_model))


def _last_token_entropy(model, text: str, layer: int) -> torch.Tensor:
    name = f"blocks.{layer}.attn.hook_pattern"
    _, cache = model.run_with_cache(model.to_tokens(text), names_filter=name)
    p = cache[name][0, :, -1]  # [head, key]
    return -(p * p.clamp_min(1e-30).log()).sum(-1)


def test_attention_study_entropy_equals_transformer_lens(default_pair):
    turns = {"plain": (None, "What is 15 plus 27?"), "expert": ("You are an expert.", "What is 15 plus 27?")}
    study = attention_study(default_pair, turns, keywords=["plus"], layers=[0, 10], head_type_length=10,
                            head_type_sequences=2, progress=False)
    tokenizer = default_pair.base.tokenizer
    expected_text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "You are an expert."}, {"role": "user", "content": "What is 15 plus 27?"}],
        tokenize=False, add_generation_prompt=True)
    assert study.texts["expert"] == expected_text
    for label, text in study.texts.items():
        for layer in (0, 10):
            base = _last_token_entropy(default_pair.base, text, layer)
            tuned = _last_token_entropy(default_pair.tuned, text, layer)
            rows = study.heads[(study.heads.label == label) & (study.heads.layer == layer)]
            for model, values in (("base", base), ("tuned", tuned), ("delta", tuned - base)):
                got = rows[rows.model == model].sort_values("head")["entropy"].to_numpy()
                np.testing.assert_allclose(got, values.numpy(), rtol=1e-4, atol=1e-5)
    change = study.entropy_change_by_layer().set_index("layer")
    assert change.loc[0, "mean_abs_delta"] == 0 and change.loc[10, "mean_abs_delta"] > 0
    heads = study.head_changes("entropy")
    assert len(heads) == 2 * default_pair.cfg.n_heads
    types = study.type_changes()
    assert set(types["type"]) == {"previous_token", "duplicate_token", "induction"}
    assert (types.loc[types.layer == 0, "delta"] == 0).all()
    keywords = study.keyword_table()
    assert set(keywords["keyword"]) == {"plus"}
    np.testing.assert_allclose(keywords["delta"], keywords["tuned"] - keywords["base"], atol=1e-7)


def test_attention_study_reports_normalized_entropy_and_the_mean_pattern(default_pair):
    """Normalised entropy H / ln n_keys next to the raw one (n_keys = the tokens of the unpadded prompt),
    the per-head table with both, and seed 004's head-averaged pattern (first variant, last layer) equal
    to TL's hook_pattern averaged over heads, for base and tuned."""
    turns = {"short": (None, "Two plus two?"), "long": ("You are an expert.", "What is 15 plus 27? Think.")}
    study = attention_study(default_pair, turns, layers=[0, 12], head_type_length=6, head_type_sequences=1,
                            progress=False)
    last = default_pair.cfg.n_layers - 1
    assert study.pattern_variant == "short" and study.pattern_layer == last
    for label, text in study.texts.items():
        tokens = default_pair.base.to_tokens(text)
        n = tokens.shape[1]
        rows = study.heads[(study.heads.label == label) & (study.heads.model == "base") & (study.heads.layer == 12)]
        assert set(rows["n_keys"]) == {n}
        expected = _last_token_entropy(default_pair.base, text, 12) / np.log(n)
        np.testing.assert_allclose(rows.sort_values("head")["normalized_entropy"].to_numpy(), expected.numpy(),
                                   rtol=1e-4, atol=1e-5)
    heads = study.entropy_head_changes()
    np.testing.assert_allclose(heads["normalized_delta"], heads["normalized_tuned"] - heads["normalized_base"], atol=1e-6)
    assert (heads.loc[heads.layer == 0, "normalized_delta"].abs() < 1e-7).all()
    change = study.entropy_change_by_layer().set_index("layer")
    assert change.loc[0, "mean_abs_delta_normalized"] == 0 and change.loc[12, "mean_abs_delta_normalized"] > 0
    sensitivity = study.prompt_sensitivity("base")
    assert set(sensitivity["ranked_by"]) == {"normalized_entropy_spread"}
    name = f"blocks.{last}.attn.hook_pattern"
    for model_name, model in (("base", default_pair.base), ("tuned", default_pair.tuned)):
        _, cache = model.run_with_cache(model.to_tokens(study.texts["short"]), names_filter=name)
        torch.testing.assert_close(study.mean_patterns[model_name].pattern, cache[name][0].mean(0), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="pattern_variant"):
        attention_study(default_pair, turns, layers=[0], pattern_variant="nope", progress=False)
    with pytest.raises(ValueError, match="model: expected 'base' or 'tuned'"):
        study.prompt_sensitivity("delta")
