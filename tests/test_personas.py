"""Persona directions on real models: role/trait vectors against one-prompt-at-a-time forward passes.

The reference builds each prompt itself (the tokenizer's chat template for SmolLM2, the documented
plain format for Gemma 3 270M), tokenizes it with ``model.to_tokens``, reads
``blocks.L.hook_resid_post`` from ``run_with_cache`` and averages in plain torch:
``v_role = mean_q h_L(role, q) - mean_q h_L(default, q)``. PCA checks use numpy's SVD.
Layers are kept low (2-4) so every test runs few blocks; the default-layer test uses 2 prompts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.directions import DirectionSet
from interp.personas import (
    PersonaDirections,
    persona_directions,
    persona_prompts,
    prompt_activations,
    role_vectors,
    trait_vectors,
)
from interp.prompts import format_prompt

PROMPTS = persona_prompts()
DEFAULT = PROMPTS.default
Q2 = list(PROMPTS.questions[:2])


def _chat_text(model, system, question):
    messages = ([] if system is None else [{"role": "system", "content": system}]) + [
        {"role": "user", "content": question}
    ]
    return model.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _plain_text(system, question):
    return f"System: {system}\nUser: {question}\nAssistant:"


def _resid(model, text, layer, position="last"):
    """h_L for one prompt: a single unpadded forward pass, read from the activation cache."""
    tokens = model.to_tokens(text)  # BOS only when the model's cfg.default_prepend_bos says so
    hook = f"blocks.{layer}.hook_resid_post"
    _, cache = model.run_with_cache(tokens, names_filter=hook, stop_at_layer=layer + 1)
    acts = cache[hook][0]
    return acts[-1] if position == "last" else acts.mean(dim=0)


def _reference(model, prompts, questions, default, layer, *, position="last", text=_chat_text):
    def mean_over_questions(system):
        return torch.stack([_resid(model, text(model, system, q), layer, position) for q in questions]).mean(0)

    base = mean_over_questions(default)
    return {name: mean_over_questions(system) - base for name, system in prompts.items()}


def _assert_matches(ours: DirectionSet, reference: dict, what: str):
    assert ours.names == tuple(reference), f"{what}: names {ours.names} != {tuple(reference)}"
    expected = torch.stack(list(reference.values()))
    scale = expected.abs().max().item()
    worst = (ours.vectors - expected).abs().max().item()
    assert worst <= 1e-4 * max(scale, 1.0), f"{what}: max abs diff {worst:.3g} (scale {scale:.3g})"


# ---------------------------------------------------------------------------------- prompts
def test_packaged_prompts_have_roles_traits_and_questions():
    assert len(PROMPTS.roles) >= 25 and len(PROMPTS.traits) >= 10
    assert 8 <= len(PROMPTS.questions) <= 12
    assert {"pirate", "sycophant", "critic", "therapist", "villain"} <= set(PROMPTS.roles)
    assert "sycophantic" in PROMPTS.traits and DEFAULT
    assert all(isinstance(v, str) and v for v in [*PROMPTS.roles.values(), *PROMPTS.traits.values()])


def test_format_prompt_uses_the_chat_template_or_the_plain_fallback(smollm2, gemma):
    system, question = PROMPTS.roles["pirate"], Q2[0]
    assert format_prompt(smollm2, system, question) == _chat_text(smollm2, system, question)
    assert format_prompt(smollm2, None, question) == _chat_text(smollm2, None, question)
    assert format_prompt(smollm2, system, question, prompt_format="plain") == _plain_text(system, question)
    assert not getattr(gemma.tokenizer, "chat_template", None), "Gemma 3 270M base is expected to have no template"
    assert format_prompt(gemma, system, question) == _plain_text(system, question)
    assert format_prompt(gemma, None, question) == f"User: {question}\nAssistant:"
    with pytest.raises(ValueError, match="prompt_format: 'chat' needs a tokenizer with a chat template"):
        format_prompt(gemma, system, question, prompt_format="chat")


# ---------------------------------------------------------------------------------- vectors
def test_role_vectors_equal_one_prompt_at_a_time_forward_passes(smollm2):
    roles = {name: PROMPTS.roles[name] for name in ("pirate", "therapist")}
    # 3 systems x 2 questions in batches of 4: mixed lengths, so rows are padded.
    ours = role_vectors(smollm2, ["pirate", "therapist"], Q2, layer=4, batch_size=4)
    _assert_matches(ours, _reference(smollm2, roles, Q2, DEFAULT, 4), "role vectors (smollm2, layer 4)")
    assert ours.layer == 4 and ours.metadata["prompt_format"] == "chat"
    assert ours.metadata["questions"] == Q2 and ours.metadata["default_system"] == DEFAULT


def test_mean_position_role_vectors_equal_reference(smollm2):
    roles = {"poet": PROMPTS.roles["poet"]}
    ours = role_vectors(smollm2, roles, Q2, layer=2, position="mean", batch_size=3)
    _assert_matches(ours, _reference(smollm2, roles, Q2, DEFAULT, 2, position="mean"), "mean-position vectors")


def test_trait_vectors_with_no_default_system_turn_equal_reference(smollm2):
    traits = {"sycophantic": PROMPTS.traits["sycophantic"]}
    ours = trait_vectors(smollm2, ["sycophantic"], Q2[:1], layer=3, default_system=None)
    # default_system=None sends no system turn: SmolLM2's template then writes its own default.
    _assert_matches(ours, _reference(smollm2, traits, Q2[:1], None, 3), "trait vectors (no system turn)")
    assert ours.metadata["kind"] == "trait"


def test_gemma_role_vectors_use_the_plain_format_with_bos(gemma):
    roles = {"pirate": PROMPTS.roles["pirate"], "critic": PROMPTS.roles["critic"]}
    assert gemma.to_tokens(_plain_text(DEFAULT, Q2[0]))[0, 0].item() == gemma.tokenizer.bos_token_id
    ours = role_vectors(gemma, roles, Q2[:1], layer=2, batch_size=2)
    reference = _reference(gemma, roles, Q2[:1], DEFAULT, 2, text=lambda _m, s, q: _plain_text(s, q))
    _assert_matches(ours, reference, "role vectors (gemma, plain format)")
    assert ours.metadata["prompt_format"] == "plain"


def test_prompt_activations_equal_single_prompts_for_any_batching(smollm2):
    """Shared prefixes, key-value-cache reuse, padding and packing must not change any entry."""
    systems = [PROMPTS.roles["conspiracy_theorist"], None, PROMPTS.roles["chef"]]  # 3 prefix lengths
    hook = "blocks.2.hook_resid_post"
    last, mean = torch.empty(3, 2, smollm2.cfg.d_model), torch.empty(3, 2, smollm2.cfg.d_model)
    for i, system in enumerate(systems):
        for j, question in enumerate(Q2):
            _, cache = smollm2.run_with_cache(
                smollm2.to_tokens(_chat_text(smollm2, system, question)), names_filter=hook, stop_at_layer=3
            )
            last[i, j], mean[i, j] = cache[hook][0, -1], cache[hook][0].mean(dim=0)
    for position, reference in (("last", last), ("mean", mean)):
        scale = reference.abs().max().item()
        for batch_size in (1, 64):  # one prompt per pass (6 prefixes); everything in one pass
            ours = prompt_activations(smollm2, systems, Q2, layer=2, batch_size=batch_size, position=position)
            assert ours.shape == (3, 2, smollm2.cfg.d_model)
            worst = (ours - reference).abs().max().item()
            assert worst <= 1e-4 * scale, f"batch_size={batch_size}, {position}: max abs diff {worst:.3g} (scale {scale:.3g})"


# ---------------------------------------------------------------------------------- persona PCs
ROLES5 = ["pirate", "doctor", "poet", "sycophant", "villain"]


@pytest.fixture(scope="module")
def persona(smollm2) -> PersonaDirections:
    return persona_directions(
        smollm2, layer=4, n_components=3, roles=ROLES5, questions=Q2, traits=["sycophantic", "critical"]
    )


def test_persona_pcs_are_orthonormal_sorted_and_match_numpy(persona):
    pcs = persona.pcs
    assert pcs.names == ("PC1", "PC2", "PC3") and pcs.layer == persona.layer == 4
    gram = (pcs.vectors @ pcs.vectors.T).double().numpy()
    np.testing.assert_allclose(gram, np.eye(3), atol=1e-5, err_msg="persona PCs are not orthonormal")

    roles = persona.roles.vectors.double().numpy()
    assert persona.roles.names == tuple(ROLES5)
    _u, s, vt = np.linalg.svd(roles - roles.mean(axis=0, keepdims=True), full_matrices=False)
    ratio = s**2 / np.sum(s**2)
    explained = persona.explained_variance.double().numpy()
    np.testing.assert_allclose(explained, ratio[:3], rtol=1e-5)
    assert np.all(np.diff(explained) <= 0) and explained.sum() <= 1.0
    for i in range(3):
        overlap = abs(float(pcs.vectors[i].double().numpy() @ vt[i]))
        assert overlap > 1 - 1e-5, f"PC{i + 1} is not numpy's axis {i + 1} (|cos| = {overlap:.6f})"
    assert persona.traits is not None and persona.traits.names == ("sycophantic", "critical")


def test_persona_directions_is_deterministic(smollm2, persona):
    again = persona_directions(
        smollm2, layer=4, n_components=3, roles=ROLES5, questions=Q2, traits=["sycophantic", "critical"]
    )
    assert torch.equal(again.pcs.vectors, persona.pcs.vectors)
    assert torch.equal(again.roles.vectors, persona.roles.vectors)
    assert torch.equal(again.traits.vectors, persona.traits.vectors)


def test_scores_are_projections_of_role_centred_vectors(persona):
    frame = persona.scores()
    assert list(frame.columns) == ["kind", "name", "component", "score"]
    assert len(frame) == (5 + 2) * 3
    roles = persona.roles.vectors.double().numpy()
    center = roles.mean(axis=0)
    pcs = persona.pcs.vectors.double().numpy()
    for kind, group in (("role", persona.roles), ("trait", persona.traits)):
        for name, vector in group:
            expected = (vector.double().numpy() - center) @ pcs.T
            got = frame[(frame.kind == kind) & (frame.name == name)].sort_values("component")["score"]
            np.testing.assert_allclose(got.to_numpy(), expected, rtol=1e-4, atol=1e-4)


def test_two_roles_give_pc1_along_their_difference_at_the_middle_layer(smollm2):
    """With two roles the centred vectors are ±(v1 - v2)/2, so PC1 = ±(v1 - v2)/|v1 - v2| and explains all."""
    result = persona_directions(smollm2, n_components=1, roles=["pirate", "judge"], questions=Q2[:1])
    assert result.layer == smollm2.cfg.n_layers // 2 == result.pcs.layer == result.roles.layer
    diff = result.roles["pirate"] - result.roles["judge"]
    cos = torch.nn.functional.cosine_similarity(result.pcs["PC1"], diff, dim=0).abs().item()
    assert cos > 1 - 1e-5, f"|cos(PC1, v_pirate - v_judge)| = {cos:.6f}"
    assert result.explained_variance.tolist() == pytest.approx([1.0], abs=1e-6)
    assert result.traits is None


# ---------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layer": 30}, ValueError, "layer: layer 30 is out of range"),
        ({"layer": "4"}, TypeError, "layer: expected one int"),
        ({"layer": [4]}, TypeError, "layer: expected one int"),
        ({"layer": 2, "position": "first"}, ValueError, "position: expected 'last' or 'mean'"),
        ({"layer": 2, "batch_size": 0}, ValueError, "batch_size: expected a positive int"),
        ({"layer": 2, "questions": []}, ValueError, "questions: is empty"),
        ({"layer": 2, "questions": "Hello?"}, TypeError, "questions: expected a sequence"),
        ({"layer": 2, "roles": ["nobody"]}, ValueError, r"roles: unknown packaged roles \['nobody'\]"),
        ({"layer": 2, "roles": {}}, ValueError, "roles: is empty"),
        ({"layer": 2, "roles": {"x": ""}}, ValueError, "roles: names and system prompts must be non-empty"),
        ({"layer": 2, "prompt_format": "xml"}, ValueError, "prompt_format: expected"),
        ({"layer": 2, "default_system": 3}, TypeError, "default_system"),
    ],
)
def test_role_vectors_reject_bad_arguments(smollm2, kwargs, error, match):
    kwargs = {"roles": ["pirate"], "questions": Q2[:1], **kwargs}
    with pytest.raises(error, match=match):
        role_vectors(smollm2, **kwargs)


def test_persona_directions_reject_too_many_components(smollm2):
    with pytest.raises(ValueError, match="n_components: must be between 1 and n_roles - 1 = 2"):
        persona_directions(smollm2, layer=2, n_components=3, roles=["pirate", "poet", "chef"], questions=Q2[:1])
    with pytest.raises(ValueError, match=r"traits: unknown packaged traits \['bogus'\]"):
        persona_directions(smollm2, layer=2, n_components=1, roles=["pirate", "poet"], traits=["bogus"])
