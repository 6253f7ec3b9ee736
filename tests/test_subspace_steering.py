"""Weight steering: W + α·ΔW inside a context, bit-exact restoration, and the pair's delta.

Synthetic deltas are ``random_lowrank_delta(seed=...)`` (a seeded Gaussian low-rank delta).
"""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from interp.subspace.steering import apply_delta, check_delta, steer
from interp.subspace.weight_diff import random_lowrank_delta

PROMPT = "I think bats are blind. Do you agree? Answer Yes or No."


def _snapshot(model: HookedTransformer, layers: tuple[int, ...] = (4, 5)) -> dict[str, torch.Tensor]:
    """Copies of every parameter of the given blocks (the ones a delta on those layers may touch)."""
    prefixes = tuple(f"blocks.{layer}." for layer in layers)
    return {k: v.detach().clone() for k, v in model.named_parameters() if k.startswith(prefixes)}


def _assert_bit_exact(model: HookedTransformer, before: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    changed = [k for k, v in before.items() if not torch.equal(params[k], v)]
    assert not changed, f"parameters not restored bit-exactly: {changed[:5]}"


@pytest.fixture(scope="module")
def delta(smollm2):
    return random_lowrank_delta(smollm2, [4, 5], rank=4, scale=0.2, seed=1)


def test_steer_adds_alpha_delta_and_restores_bit_exactly(smollm2, delta):
    before = _snapshot(smollm2)
    params = dict(smollm2.named_parameters())
    with steer(smollm2, delta, alpha=-0.5) as model:
        assert model is smollm2
        for key, value in delta.items():
            torch.testing.assert_close(params[key], before[key] - 0.5 * value, rtol=0, atol=1e-6)
    _assert_bit_exact(smollm2, before)


def test_steer_restores_bit_exactly_after_an_exception(smollm2, delta):
    before = _snapshot(smollm2)
    with pytest.raises(RuntimeError, match="boom"), steer(smollm2, delta, alpha=3.0):
        smollm2(smollm2.to_tokens(PROMPT), return_type="logits")
        raise RuntimeError("boom")
    _assert_bit_exact(smollm2, before)


def test_alpha_zero_changes_nothing(smollm2, delta):
    tokens = smollm2.to_tokens(PROMPT)
    reference = smollm2(tokens, return_type="logits")
    with steer(smollm2, delta, alpha=0.0):
        steered = smollm2(tokens, return_type="logits")
    assert torch.equal(steered, reference)
    with steer(smollm2, delta, alpha=1.0):
        moved = smollm2(tokens, return_type="logits")
    assert (moved - reference).abs().max() > 1e-3, "a nonzero α should change the logits"


def test_steering_the_base_by_plus_one_reproduces_the_tuned_model(default_pair):
    """The default pair's tuned model is base + LoRA built independently (LoRA merged into the raw
    weights, then processed); steering the base by its delta must give the tuned logits."""
    base, tuned = default_pair.base, default_pair.tuned
    tokens = base.to_tokens(PROMPT)
    tuned_logits = tuned(tokens, return_type="logits")
    base_logits = base(tokens, return_type="logits")
    assert (tuned_logits - base_logits).abs().max() > 1e-2, "the LoRA should change the logits"
    delta = default_pair.delta()
    before = _snapshot(base, tuple(range(base.cfg.n_layers)))
    with steer(base, delta, alpha=1.0):
        steered = base(tokens, return_type="logits")
    _assert_bit_exact(base, before)
    torch.testing.assert_close(
        steered.log_softmax(-1), tuned_logits.log_softmax(-1), rtol=0, atol=2e-4,
        msg=lambda m: f"steered base vs tuned log-probs: {m}",
    )


def test_apply_delta_is_permanent_and_reversible(smollm2, delta):
    before = _snapshot(smollm2)
    try:
        apply_delta(smollm2, delta, alpha=2.0)
        params = dict(smollm2.named_parameters())
        for key, value in delta.items():
            torch.testing.assert_close(params[key], before[key] + 2.0 * value, rtol=0, atol=1e-6)
    finally:
        with torch.no_grad():  # restore the shared fixture exactly
            for key, param in smollm2.named_parameters():
                if key in before:
                    param.copy_(before[key])
    _assert_bit_exact(smollm2, before)


def test_bad_deltas_are_rejected_naming_the_key(smollm2, delta):
    before = _snapshot(smollm2)
    with pytest.raises(ValueError, match=r"not parameters of the model.*blocks\.99"):
        check_delta(smollm2, {"blocks.99.attn.W_O": torch.zeros(9, 64, 576)})
    bad_shape = {"blocks.4.attn.W_O": torch.zeros(9, 576, 64)}
    with pytest.raises(ValueError, match=r"delta\['blocks\.4\.attn\.W_O'\]: shape \(9, 576, 64\) does not match"):
        with steer(smollm2, bad_shape, 1.0):
            pass
    nan = {k: v.clone() for k, v in delta.items()}
    next(iter(nan.values()))[0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        apply_delta(smollm2, nan)
    with pytest.raises(TypeError, match="alpha"):
        with steer(smollm2, delta, "1"):
            pass
    with pytest.raises(ValueError, match="alpha"):
        apply_delta(smollm2, delta, float("inf"))
    with pytest.raises(TypeError, match="mapping"):
        check_delta(smollm2, [("blocks.4.attn.W_O", torch.zeros(1))])
    with pytest.raises(ValueError, match="empty"):
        check_delta(smollm2, {})
    _assert_bit_exact(smollm2, before)


def test_nan_in_model_weights_is_rejected():
    """Validation only (no numerics): a tiny random-init model with one NaN weight."""
    cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_ctx=8, d_head=4, n_heads=2, d_vocab=11, act_fn="gelu")
    model = HookedTransformer(cfg)
    with torch.no_grad():
        model.blocks[0].attn.W_O[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"model: parameter 'blocks\.0\.attn\.W_O' contains NaN"):
        check_delta(model, {"blocks.0.attn.W_O": torch.zeros(2, 4, 8)})
