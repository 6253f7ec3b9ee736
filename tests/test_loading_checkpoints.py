"""Hugging Face checkpoints by architecture: tiny random-weight models saved with ``save_pretrained``
load by folder and by hub id (offline, from a Hugging Face cache layout) and match transformers' own
forward pass; interp's weight circuits match TransformerLens' hooks on them.

Every checkpoint is built once per module (tests/_tiny_checkpoints.py: ``torch.manual_seed(0)``, norm
gains randomised). Tokens are fixed ids below the vocabulary size.
"""

from __future__ import annotations

import math

import pytest
import torch
from _circuit_checks import assert_close_to_scale, diag_scores_by_hook, one_token_hooks, seeded_directions
from _tiny_checkpoints import (
    CONFIGS,
    build_model,
    checkpoint_builder,
    hf_logprobs,
    hub_cache,
    save_checkpoint,
    smollm2_tokenizer,
    use_hub_cache,
)

from interp.circuits import mlp_pass, qk_affinity, vo_outputs
from interp.loading import SUPPORTED_ARCHITECTURES, load_model

ARCHS = list(CONFIGS)
TOKENS = torch.tensor([[1, 502, 33, 9000, 48000, 17, 250, 4, 7777, 12, 40000, 3]])
PRE_NORM = [arch for arch in ARCHS if arch != "Olmo2ForCausalLM"]


@pytest.fixture(scope="module")
def tokenizer():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer):
    """arch -> (transformers model, folder), built on first use."""
    return checkpoint_builder(tmp_path_factory.mktemp("tiny"), tokenizer)


def test_every_tested_architecture_is_supported_and_vice_versa():
    assert sorted(ARCHS) == sorted(SUPPORTED_ARCHITECTURES)


@pytest.mark.parametrize("processed", [False, True], ids=["unprocessed", "processed"])
@pytest.mark.parametrize("arch", ARCHS)
def test_folder_logprobs_equal_transformers_forward(checkpoints, arch, processed):
    hf, folder = checkpoints(arch)
    model = load_model(folder, processed=processed, device="cpu")
    assert model.cfg.original_architecture == arch
    ours = model(TOKENS).float().log_softmax(-1)
    worst = (ours - hf_logprobs(hf, TOKENS)).abs().max().item()
    assert worst <= 1e-4, f"{arch} ({'processed' if processed else 'unprocessed'}): log-probs differ by {worst:.2e}"


@pytest.mark.parametrize("processed", [False, True], ids=["unprocessed", "processed"])
@pytest.mark.parametrize("arch", PRE_NORM)
def test_weight_circuits_equal_transformerlens_hooks(checkpoints, arch, processed):
    """QK affinity = hook_attn_scores diagonal, VO outputs = hook_result per head, MLP pass = hook_mlp_out."""
    _, folder = checkpoints(arch)
    model = load_model(folder, processed=processed, device="cpu")
    dirs = seeded_directions(5, model.cfg.d_model, seed=401)
    qk = qk_affinity(model, dirs).diagonal(dim1=-2, dim2=-1)
    assert_close_to_scale(qk, diag_scores_by_hook(model, range(model.cfg.n_layers), dirs), what=f"{arch} QK diagonal")
    previous = model.cfg.use_attn_result
    model.set_use_attn_result(True)
    try:
        results = one_token_hooks(model, range(model.cfg.n_layers), dirs, "hook_resid_pre", "attn.hook_result")  # [layer, n, head, d]
    finally:
        model.set_use_attn_result(previous)
    heads, total = vo_outputs(model, dirs)
    assert_close_to_scale(heads, results.transpose(1, 2), what=f"{arch} VO per head")
    attn_out = one_token_hooks(model, range(model.cfg.n_layers), dirs, "hook_resid_pre", "hook_attn_out")
    assert_close_to_scale(total, attn_out, what=f"{arch} VO layer output")
    mlp = one_token_hooks(model, range(model.cfg.n_layers), dirs, "hook_resid_mid", "hook_mlp_out")
    assert_close_to_scale(mlp_pass(model, dirs), mlp, what=f"{arch} MLP pass")


def test_post_norm_olmo2_loads_but_circuits_refuse_it(checkpoints):
    _, folder = checkpoints("Olmo2ForCausalLM")
    model = load_model(folder, device="cpu")
    assert model.cfg.normalization_type == "RMS", "post-norm blocks are not folded"
    with pytest.raises(ValueError, match="post-norm"):
        qk_affinity(model, seeded_directions(2, model.cfg.d_model, seed=1))


def test_gemma2_softcap_and_query_pre_attn_scalar_in_qk_affinity(tokenizer, tmp_path):
    """Gemma 2 with query_pre_attn_scalar 18 ≠ head_dim 16 (as gemma-2-27b's 144 vs 128) and an
    attention-logit softcap of 5: the model's scale is √18, and QK affinity caps like the model.
    Weights of std 0.3 push raw scores past the cap, where tanh is far from linear."""
    hf = build_model("Gemma2ForCausalLM", initializer_range=0.3)
    folder = save_checkpoint(hf, tokenizer, tmp_path / "gemma2-softcap")
    model = load_model(folder, device="cpu")
    assert (model(TOKENS).log_softmax(-1) - hf_logprobs(hf, TOKENS)).abs().max().item() <= 1e-4
    assert model.cfg.attn_scale == pytest.approx(math.sqrt(18))
    assert model.cfg.attn_scores_soft_cap == 5.0 and model.cfg.output_logits_soft_cap == 8.0
    dirs = seeded_directions(6, model.cfg.d_model, seed=402)
    ours = qk_affinity(model, dirs).diagonal(dim1=-2, dim2=-1)
    expected = diag_scores_by_hook(model, range(model.cfg.n_layers), dirs)
    assert_close_to_scale(ours, expected, what="Gemma 2 QK diagonal with softcap")
    assert ours.abs().max() < 5.0 and ours.abs().max() > 4.0, "scores reach the softcap's non-linear range"
    # plain torch from the transformers weights: layer 0, head 0, first direction
    layer = hf.model.layers[0]
    x = dirs[0]
    normed = x * torch.rsqrt(x.pow(2).mean() + hf.config.rms_norm_eps) * (1 + layer.input_layernorm.weight)
    q = (layer.self_attn.q_proj.weight @ normed)[:16]
    k = (layer.self_attn.k_proj.weight @ normed)[:16]
    raw = (q @ k) / math.sqrt(18)
    torch.testing.assert_close(ours[0, 0, 0], 5.0 * torch.tanh(raw / 5.0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_hub_id_loads_offline_from_the_hugging_face_cache(checkpoints, tmp_path, monkeypatch, arch):
    hf, folder = checkpoints(arch)
    use_hub_cache(monkeypatch, hub_cache(tmp_path, "someone/tiny-finetune", folder))
    model = load_model("someone/tiny-finetune", processed=False, device="cpu")
    worst = (model(TOKENS).log_softmax(-1) - hf_logprobs(hf, TOKENS)).abs().max().item()
    assert worst <= 1e-4
    with pytest.raises(ValueError, match="not in the local Hugging Face cache"):
        load_model("someone/not-downloaded", device="cpu")


def test_folder_name_containing_a_family_name_uses_its_config(checkpoints, tmp_path):
    """TransformerLens picks configs by substrings of a name; a Qwen 2 fine-tune saved in a folder
    called 'my-llama-gemma-2-tune' must still load as Qwen 2 (biases, tied embeddings)."""
    import shutil

    hf, folder = checkpoints("Qwen2ForCausalLM")
    odd = tmp_path / "my-llama-gemma-2-tune"
    shutil.copytree(folder, odd)
    model = load_model(odd, processed=False, device="cpu")
    assert model.cfg.original_architecture == "Qwen2ForCausalLM"
    assert (model(TOKENS).log_softmax(-1) - hf_logprobs(hf, TOKENS)).abs().max().item() <= 1e-4


def test_learned_positions_follow_n_ctx(checkpoints):
    """GPT-2's learned position table is cut to n_ctx; more than the checkpoint's context is refused."""
    hf, folder = checkpoints("GPT2LMHeadModel")
    model = load_model(folder, processed=False, device="cpu", n_ctx=16)
    assert model.cfg.n_ctx == 16 and model.W_pos.shape == (16, 64)
    torch.testing.assert_close(model.W_pos, hf.transformer.wpe.weight[:16])
    assert (model(TOKENS).log_softmax(-1) - hf_logprobs(hf, TOKENS)).abs().max().item() <= 1e-4
    with pytest.raises(ValueError, match="n_ctx: 65 is more than the checkpoint's context of 64"):
        load_model(folder, device="cpu", n_ctx=65)


def test_llama3_rope_scaling_folder_equals_transformers(tokenizer, tmp_path):
    """Llama 3.1/3.2-style NTK-by-parts rope scaling (factor 8, original context 16 < head wavelengths)
    read from config.json: TransformerLens' implementation equals transformers'."""
    rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
    hf = build_model("LlamaForCausalLM", rope_parameters=rope, max_position_embeddings=128)
    folder = save_checkpoint(hf, tokenizer, tmp_path / "llama3-rope")
    model = load_model(folder, processed=False, device="cpu")
    assert model.cfg.use_NTK_by_parts_rope and model.cfg.NTK_by_parts_factor == 8.0
    long_tokens = torch.arange(100, 160)[None]  # 60 positions, past the original context of 16
    worst = (model(long_tokens).log_softmax(-1) - hf_logprobs(hf, long_tokens)).abs().max().item()
    assert worst <= 1e-4, f"llama3 rope scaling: log-probs differ by {worst:.2e}"
    plain = build_model("LlamaForCausalLM", max_position_embeddings=128)
    assert (hf_logprobs(plain, long_tokens) - hf_logprobs(hf, long_tokens)).abs().max() > 1e-3, "scaling matters"


@pytest.mark.parametrize("arch", ["MistralForCausalLM", "Phi3ForCausalLM"])
def test_sliding_window_attention_equals_transformers(tokenizer, tmp_path, arch):
    """Mistral / Phi-3 with a sliding window (3) shorter than the sequence (12 tokens)."""
    hf = build_model(arch, sliding_window=3)
    folder = save_checkpoint(hf, tokenizer, tmp_path / arch)
    model = load_model(folder, processed=False, device="cpu")
    assert model.cfg.use_local_attn and model.cfg.window_size == 3
    worst = (model(TOKENS).log_softmax(-1) - hf_logprobs(hf, TOKENS)).abs().max().item()
    assert worst <= 1e-4, f"{arch} with a sliding window: log-probs differ by {worst:.2e}"
    full = build_model(arch)
    assert (hf_logprobs(full, TOKENS) - hf_logprobs(hf, TOKENS)).abs().max() > 1e-3, "the window matters"
