"""Streamed SmolLM2-135M-Instruct equals loaded SmolLM2: the real checkpoint (transformers' GGUF loader)
saved as 20 MB safetensors shards, so many layers span shard boundaries; tuned = base with a few
tensors of layers 3 and 13, the (tied) embedding and the final norm perturbed. Reference: ``interp.load_model(folder)``, itself checked against
transformers' forward pass."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch
from _circuit_checks import seeded_directions
from conftest import _transformers_gguf_model

from interp import ModelPair
from interp.circuits import compare_mlp_pass, weight_circuits
from interp.directions import DirectionSet
from interp.loading import load_model
from interp.personas import persona_directions
from interp.streaming import (
    StreamedPair,
    open_streamed,
    streamed_compare_mlp_pass,
    streamed_delta_diagnostics,
    streamed_delta_norms,
    streamed_persona_directions,
    streamed_weight_bases,
    streamed_weight_circuits,
)
from interp.subspace.weight_diff import delta_diagnostics, delta_norms
from interp.subspace.weight_library import weight_bases

LAYERS = [0, 3, 13, 29]


def _save(model, folder):
    """``save_pretrained`` in 20 MB shards (a GGUF-loaded model refuses to save itself: copy it first)."""
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        fresh = type(model)(config)
    fresh.load_state_dict({k: v.clone() for k, v in model.state_dict().items()}, assign=True)
    fresh.save_pretrained(folder, max_shard_size="20MB")


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    from transformers import AutoTokenizer

    from interp.loading import OFFLINE_MODELS

    path = OFFLINE_MODELS["smollm2-135m-instruct"].locate()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    base_hf = _transformers_gguf_model("smollm2-135m-instruct")
    root = tmp_path_factory.mktemp("smolstream")
    _save(base_hf, root / "base")
    tokenizer.save_pretrained(root / "base")
    base_state = {k: v.clone() for k, v in base_hf.state_dict().items()}
    g = torch.Generator().manual_seed(7)
    tuned_state = dict(base_state)
    for layer in (3, 13):
        for name in ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj", "post_attention_layernorm"):
            key = f"model.layers.{layer}.{name}.weight"
            tuned_state[key] = base_state[key] + 0.05 * torch.randn(base_state[key].shape, generator=g)
    embedding = base_state["model.embed_tokens.weight"]
    embedding = embedding + 0.01 * torch.randn(embedding.shape, generator=g)
    tuned_state["model.embed_tokens.weight"] = tuned_state["lm_head.weight"] = embedding  # tied: one tensor
    tuned_state["model.norm.weight"] = base_state["model.norm.weight"] + 0.05 * torch.randn(576, generator=g)
    base_hf.load_state_dict(tuned_state)
    _save(base_hf, root / "tuned")
    tokenizer.save_pretrained(root / "tuned")
    base_hf.load_state_dict(base_state)
    refs = {processed: (load_model(root / "base", processed=processed, device="cpu"),
                        load_model(root / "tuned", processed=processed, device="cpu"))
            for processed in (False, True)}
    return root, base_hf, refs


def test_folder_has_layers_across_shards_and_reference_matches_transformers(smol):
    root, base_hf, refs = smol
    index = json.loads((root / "base" / "model.safetensors.index.json").read_text())["weight_map"]
    spanning = [layer for layer in range(30) if len({index[n] for n in index if f"layers.{layer}." in n}) > 1]
    assert len(spanning) >= 3, f"only layers {spanning} span two shards"
    tokens = torch.tensor([[1, 504, 3458, 314, 260, 1345, 30, 216]])
    theirs = base_hf(tokens).logits.log_softmax(-1)
    for processed, (base, _) in refs.items():
        diff = (base(tokens).log_softmax(-1) - theirs).abs().max().item()
        assert diff < 1e-4, f"processed={processed}: reference vs transformers differ by {diff:.2e}"


@pytest.mark.parametrize("processed", [False, True])
def test_streamed_weight_circuits_equal_in_memory(smol, processed):
    root, _, refs = smol
    probes = DirectionSet(("u", "v", "w", "Random1", "Random2", "Random3"), seeded_directions(6, 576, seed=11))
    pair = StreamedPair.open(root / "base", root / "tuned", processed=processed)
    streamed = streamed_weight_circuits(pair, probes, layers=LAYERS, progress=False)
    expected = weight_circuits(refs[processed], probes, layers=LAYERS)
    pd.testing.assert_frame_equal(streamed, expected, check_exact=False, rtol=1e-5, atol=1e-5)


def test_streamed_mlp_pass_in_neuron_blocks_equals_in_memory(smol):
    root, _, refs = smol
    probes = seeded_directions(5, 576, seed=12)
    pair = StreamedPair.open(root / "base", root / "tuned", processed=True)
    streamed = streamed_compare_mlp_pass(pair, probes, layers=[3, 13], neuron_block=500, progress=False)
    expected = compare_mlp_pass(refs[True], probes, layers=[3, 13])
    for which in ("base", "tuned"):
        got, want = getattr(streamed, which), getattr(expected, which)
        err = ((got - want).norm() / want.norm()).item()
        assert err < 1e-5, f"{which}: streamed MLP pass differs by {err:.2e} (relative)"
    assert (streamed.delta[0].norm() > 0) and (streamed.delta[1].norm() > 0)  # the perturbation is seen


def test_streamed_persona_directions_equal_in_memory(smol):
    root, _, refs = smol
    kwargs = dict(layer=3, n_components=2, roles=["pirate", "poet", "scientist", "chef"],
                  questions=["How do plants grow?", "What makes a good friend?"])
    got = streamed_persona_directions(open_streamed(root / "tuned"), progress=False, **kwargs)
    want = persona_directions(refs[True][1], **kwargs)
    err = ((got.roles.vectors - want.roles.vectors).norm(dim=1) / want.roles.vectors.norm(dim=1)).max().item()
    assert err < 1e-5, f"role vectors differ by {err:.2e} (relative)"
    cos = (got.pcs.vectors * want.pcs.vectors).sum(-1).abs()
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5), f"PCs differ: |cos| {cos.tolist()}"


@pytest.mark.parametrize("processed", [False, True])
def test_streamed_delta_tables_with_tied_embeddings_equal_in_memory(smol, processed):
    """SmolLM2 ties W_U to W_E: the streamed embedding and unembedding rows (processed: the final norm
    folded into W_U and W_U centred over the 49152 tokens, which are read 20000 at a time) equal the
    in-memory table's (only layers 3 and 13 and the global tensors differ, so only those are read)."""
    root, _, refs = smol
    pair = StreamedPair.open(root / "base", root / "tuned", processed=processed)
    expected = delta_diagnostics(ModelPair(*refs[processed]))
    outside = {"embed.W_E", "unembed.W_U"} | ({"ln_final.w"} if not processed else set())
    assert {n for n in expected["name"] if not n.startswith("blocks.")} == outside
    streamed = streamed_delta_diagnostics(pair, layers=[3, 13], global_tensors=True, vocab_block=20000, progress=False)
    pd.testing.assert_frame_equal(streamed, expected, check_exact=False, rtol=1e-4, atol=1e-6)
    norms = streamed_delta_norms(pair, layers=[3, 13], global_tensors=True, vocab_block=20000, progress=False)
    pd.testing.assert_frame_equal(norms, delta_norms(ModelPair(*refs[processed])), check_exact=False,
                                  rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("processed", [False, True])
def test_every_streamed_weight_basis_equals_in_memory(smol, processed):
    """Every weight basis (unembedding centred over the vocabulary when processed; ln_final applied on
    the residual side when not) at two layers: the same subspaces as weight_bases of the loaded model."""
    from test_streaming import _same_bases

    root, _, refs = smol
    got = streamed_weight_bases(open_streamed(root / "base", processed=processed), [3, 13], k=4,
                                vocab_block=20000, progress=False)
    _same_bases(got, weight_bases(refs[processed][0], [3, 13], k=4))
