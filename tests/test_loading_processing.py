"""Weight processing without defensive copies (``process_state(..., owned=True)``, what a streamed
layer uses) equals TransformerLens' own ``ProcessWeights.process_weights`` bit for bit, on every
architecture interp loads; and a streamed layer of each architecture holds exactly the in-memory
model's block.

Checkpoints: tiny random-weight models saved with ``save_pretrained`` (tests/_tiny_checkpoints.py:
``torch.manual_seed(0)``, norm gains and biases randomised, so a fold or a centring that is skipped or
applied twice shows).
"""

from __future__ import annotations

import pytest
import torch
from _tiny_checkpoints import CONFIGS, checkpoint_builder, smollm2_tokenizer
from transformer_lens import HookedTransformerConfig
from transformer_lens.weight_processing import ProcessWeights

from interp.loading import load_raw
from interp.loading.processing import process_state, processing_options
from interp.streaming import open_streamed

ARCHS = list(CONFIGS)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_builder(tmp_path_factory.mktemp("tiny"), smollm2_tokenizer())


def _parameters(folder):
    """The unprocessed parameters of a loaded model (missing biases filled as load_model fills them) and its config."""
    raw = load_raw(folder)
    model = raw.build(processed=False, device="cpu")
    state = {name: p.detach().clone() for name, p in model.named_parameters()}
    return state, HookedTransformerConfig.from_dict(raw.cfg_dict)


@pytest.mark.parametrize("arch", ARCHS)
def test_owned_processing_equals_transformerlens_process_weights(checkpoints, arch):
    state, cfg = _parameters(checkpoints(arch)[1])
    before = {k: v.clone() for k, v in state.items()}
    reference = ProcessWeights.process_weights(
        {k: v.clone() for k, v in state.items()}, cfg, refactor_factored_attn_matrices=False,
        **processing_options(cfg))
    ours = process_state({k: v.clone() for k, v in state.items()}, cfg, owned=True)
    assert sorted(ours) == sorted(reference)
    differ = [k for k in reference if not torch.equal(ours[k], reference[k])]
    assert not differ, f"{arch}: owned processing differs from process_weights in {differ}"
    # processing did something on this architecture (so the equality is not between two no-ops)
    assert any(not torch.equal(reference[k], before[k]) for k in before)
    copied = process_state(state, cfg)  # the default path leaves the caller's tensors alone
    assert all(torch.equal(state[k], before[k]) for k in before)
    assert all(torch.equal(copied[k], reference[k]) for k in reference)


@pytest.mark.parametrize("processed", [False, True], ids=["unprocessed", "processed"])
@pytest.mark.parametrize("arch", ARCHS)
def test_streamed_layer_holds_the_in_memory_block(checkpoints, arch, processed):
    folder = checkpoints(arch)[1]
    model = load_raw(folder).build(processed=processed, device="cpu")
    streamed = open_streamed(folder, processed=processed)
    for layer in range(model.cfg.n_layers):
        block = streamed.layer(layer)
        ours = {n: p for n, p in block.named_parameters() if n.startswith("blocks.0.")}
        theirs = {n.replace(f"blocks.{layer}.", "blocks.0.", 1): p for n, p in model.named_parameters()
                  if n.startswith(f"blocks.{layer}.")}
        assert sorted(ours) == sorted(theirs), arch
        for name, value in theirs.items():
            torch.testing.assert_close(ours[name], value, rtol=1e-6, atol=1e-7, msg=f"{arch} layer {layer} {name}")


def test_owned_processing_refuses_half_precision(checkpoints):
    state, cfg = _parameters(checkpoints("LlamaForCausalLM")[1])
    with pytest.raises(ValueError, match="state: owned processing expects float32"):
        process_state({k: v.to(torch.bfloat16) for k, v in state.items()}, cfg, owned=True)


@pytest.mark.parametrize("arch", ARCHS)
def test_streamed_mlp_blocks_hold_the_in_memory_neurons(checkpoints, arch):
    """``layer(part="mlp", neurons=(a, b))`` (the MLP pass's and the delta tables' blocks): the MLP
    parameters are the in-memory model's neurons a:b, the norms whole, on every architecture."""
    folder = checkpoints(arch)[1]
    model = load_raw(folder).build(processed=True, device="cpu")
    streamed = open_streamed(folder, processed=True)
    d_mlp = model.cfg.d_mlp
    axis = {"W_in": 1, "W_gate": 1, "b_in": 0, "W_out": 0}
    for start, stop in ((0, 40), (40, d_mlp)):
        block = dict(streamed.layer(1, part="mlp", neurons=(start, stop)).named_parameters())
        for name, value in model.named_parameters():
            if not name.startswith("blocks.1.mlp.") and not name.startswith("blocks.1.ln2"):
                continue
            param = name.rsplit(".", 1)[1]
            want = value.narrow(axis[param], start, stop - start) if param in axis else value
            torch.testing.assert_close(block[name.replace("blocks.1.", "blocks.0.", 1)], want, rtol=1e-6, atol=1e-7,
                                       msg=f"{arch} neurons {start}:{stop} {name}")
