"""Pairs of any two checkpoints and LoRA adapters on any supported architecture, against PEFT.

Tiny random-weight checkpoints (tests/_tiny_checkpoints.py) saved into temporary folders. PEFT's own
``get_delta_weight`` and ``merge_and_unload`` are the references for adapters; LoRA factors are
Gaussian from ``torch.Generator().manual_seed(7)`` (PEFT initialises B to zero).
"""

from __future__ import annotations

import json

import einops
import pytest
import torch
from _tiny_checkpoints import (
    build_model,
    checkpoint_builder,
    hf_logprobs,
    hub_cache,
    save_checkpoint,
    smollm2_tokenizer,
    use_hub_cache,
)

from interp import ModelPair
from interp.loading import load_model
from interp.lora import lora_delta, read_lora_adapter

TOKENS = torch.tensor([[1, 502, 33, 9000, 48000, 17, 250, 4, 7777, 12]])
TARGETS = {
    "LlamaForCausalLM": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "Qwen2ForCausalLM": ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
    "GPT2LMHeadModel": ["c_attn", "c_proj", "c_fc"],
    "Gemma3ForCausalLM": ["q_proj", "v_proj", "up_proj"],
    "Phi3ForCausalLM": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],  # Phi-3's fused projections
}


@pytest.fixture(scope="module")
def tokenizer():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def base_folders(tmp_path_factory, tokenizer):
    get = checkpoint_builder(tmp_path_factory.mktemp("bases"), tokenizer)
    return lambda arch: get(arch)[1]


def test_pair_of_two_folders_delta_is_the_perturbation(base_folders, tokenizer, tmp_path):
    """A fine-tune saved with save_pretrained: layer 1's q_proj and layer 0's (grouped) v_proj changed."""
    from transformers import AutoModelForCausalLM

    base_folder = base_folders("LlamaForCausalLM")
    tuned = AutoModelForCausalLM.from_pretrained(str(base_folder), dtype=torch.float32)
    gen = torch.Generator().manual_seed(3)
    d_q = 0.05 * torch.randn(64, 64, generator=gen)
    d_v = 0.05 * torch.randn(32, 64, generator=gen)
    with torch.no_grad():
        tuned.model.layers[1].self_attn.q_proj.weight += d_q
        tuned.model.layers[0].self_attn.v_proj.weight += d_v
    tuned_folder = save_checkpoint(tuned, tokenizer, tmp_path / "finetune")
    pair = ModelPair.from_names(base_folder, tuned_folder, processed=False, device="cpu")
    delta = pair.delta()
    assert sorted(delta) == ["blocks.0.attn._W_V", "blocks.1.attn.W_Q"]
    torch.testing.assert_close(delta["blocks.1.attn.W_Q"], einops.rearrange(d_q, "(n h) m -> n m h", n=4),
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(delta["blocks.0.attn._W_V"], einops.rearrange(d_v, "(n h) m -> n m h", n=2),
                               rtol=1e-4, atol=1e-6)
    assert (pair.tuned(TOKENS).log_softmax(-1) - hf_logprobs(tuned.eval(), TOKENS)).abs().max() <= 1e-4


def test_pair_of_a_hub_id_and_a_folder(base_folders, tokenizer, tmp_path, monkeypatch):
    """Mixed sources: the base by hub id from the (offline) Hugging Face cache, the tuned by folder."""
    from transformers import AutoModelForCausalLM

    base_folder = base_folders("Gemma3ForCausalLM")
    use_hub_cache(monkeypatch, hub_cache(tmp_path, "google/tiny-gemma-3", base_folder))
    tuned = AutoModelForCausalLM.from_pretrained(str(base_folder), dtype=torch.float32)
    d_up = 0.05 * torch.randn(96, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        tuned.model.layers[0].mlp.up_proj.weight += d_up
    tuned_folder = save_checkpoint(tuned, tokenizer, tmp_path / "tuned")
    pair = ModelPair.from_names("google/tiny-gemma-3", tuned_folder, processed=False, device="cpu")
    assert sorted(pair.delta()) == ["blocks.0.mlp.W_in"]
    torch.testing.assert_close(pair.delta()["blocks.0.mlp.W_in"], d_up.T, rtol=1e-4, atol=1e-6)


def _peft_adapter(base_folder, arch, folder, **options):
    """A PEFT LoRA on the transformers model read from ``base_folder`` (so the adapter records that
    folder as its base), with Gaussian factors; returns (peft model, adapter folder)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_folder), dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS[arch], fan_in_fan_out=arch == "GPT2LMHeadModel",
                        **options)
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(0.2 * torch.randn(param.shape, generator=gen))
    peft_model.save_pretrained(str(folder))
    return peft_model, folder


@pytest.mark.parametrize("arch,options", [
    ("LlamaForCausalLM", dict(use_rslora=True, rank_pattern={"q_proj": 2}, alpha_pattern={"down_proj": 3})),
    ("Qwen2ForCausalLM", dict()),
    ("GPT2LMHeadModel", dict(rank_pattern={"c_fc": 2})),
    ("Gemma3ForCausalLM", dict(alpha_pattern={"layers.1.self_attn.v_proj": 12})),
    ("Phi3ForCausalLM", dict(rank_pattern={"gate_up_proj": 2}, alpha_pattern={"layers.0.self_attn.qkv_proj": 5})),
])
def test_adapter_delta_equals_peft_merge(base_folders, tokenizer, tmp_path, arch, options):
    from peft.tuners.lora import LoraLayer
    from transformers.pytorch_utils import Conv1D

    base_folder = base_folders(arch)
    peft_model, adapter_folder = _peft_adapter(base_folder, arch, tmp_path / "adapter", **options)
    adapter = read_lora_adapter(adapter_folder)
    # 1. per module: interp's ΔW is PEFT's own get_delta_weight
    checked = 0
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer):
            path = name.removeprefix("base_model.model.")
            (where,) = [key for key, value in adapter.module_paths.items() if value == path]
            ours = adapter.delta_hf(*where)
            if isinstance(module.base_layer, Conv1D):
                ours = ours.T
            torch.testing.assert_close(ours, module.get_delta_weight("default"), rtol=1e-5, atol=1e-7)
            checked += 1
    assert checked == len(adapter.factors) > 0
    # 2. the pair (base read from the adapter's base_model_name_or_path) against PEFT's merged model
    merged = peft_model.merge_and_unload().eval()
    merged_folder = save_checkpoint(merged, tokenizer, tmp_path / "merged")
    pair = ModelPair.from_lora(adapter_path=adapter_folder, processed=False, device="cpu")
    reference = load_model(merged_folder, processed=False, device="cpu")
    expected = {name: param - pair.base.get_parameter(name) for name, param in reference.named_parameters()}
    expected = {name: value for name, value in expected.items() if value.abs().max() > 0}
    delta = pair.delta()
    assert sorted(delta) == sorted(expected)
    for name, value in expected.items():
        torch.testing.assert_close(delta[name], value, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    worst = (pair.tuned(TOKENS).log_softmax(-1) - hf_logprobs(merged, TOKENS)).abs().max().item()
    assert worst <= 1e-4, f"{arch}: tuned log-probs differ from PEFT's merged model by {worst:.2e}"


@pytest.mark.parametrize("arch,official,n_changed", [
    ("Phi3ForCausalLM", "microsoft/Phi-3-mini-4k-instruct", 14),  # W_Q, _W_K, _W_V, W_O, W_gate, W_in, W_out x 2
    ("GPT2LMHeadModel", "gpt2", 12),  # W_Q, W_K, W_V (c_attn), W_O, W_in, W_out x 2
])
def test_adapter_on_an_official_name_is_merged_on_the_transformers_side(base_folders, tokenizer, tmp_path,
                                                                        monkeypatch, arch, official, n_changed):
    """An adapter whose base_model_name_or_path is one of TransformerLens' official names (as adapters
    on the hub record it), read offline from a Hugging Face cache holding a tiny model under that name:
    fused and Conv1D modules, which TransformerLens' layout path refuses, are merged by transformers."""
    base_folder = base_folders(arch)
    hub = hub_cache(tmp_path, official, base_folder)
    if arch == "GPT2LMHeadModel":  # gpt2's own config.json has n_ctx, which TransformerLens reads; transformers 5 drops it
        (cached_config,) = hub.glob("models--gpt2/snapshots/*/config.json")
        cached_config.write_text(json.dumps({**json.loads(cached_config.read_text()), "n_ctx": 64}))
    use_hub_cache(monkeypatch, hub)
    peft_model, adapter_folder = _peft_adapter(base_folder, arch, tmp_path / "adapter")
    config_path = adapter_folder / "adapter_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "base_model_name_or_path": official}))
    merged = peft_model.merge_and_unload().eval()
    reference = load_model(save_checkpoint(merged, tokenizer, tmp_path / "merged"), processed=False, device="cpu")
    pair = ModelPair.from_lora(adapter_folder, processed=False, device="cpu")
    base = load_model(base_folder, processed=False, device="cpu")
    expected = {name: param - base.get_parameter(name) for name, param in reference.named_parameters()}
    expected = {name: value for name, value in expected.items() if value.abs().max() > 0}
    delta = pair.delta()
    assert len(expected) == n_changed and sorted(delta) == sorted(expected)
    for name, value in expected.items():
        torch.testing.assert_close(delta[name], value, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    assert (pair.base(TOKENS).log_softmax(-1) - hf_logprobs(_hf(base_folder), TOKENS)).abs().max() <= 1e-4
    assert (pair.tuned(TOKENS).log_softmax(-1) - hf_logprobs(merged, TOKENS)).abs().max() <= 1e-4


def _hf(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def test_processed_adapter_pair_tracks_the_merged_model(base_folders, tokenizer, tmp_path):
    peft_model, adapter_folder = _peft_adapter(base_folders("Qwen2ForCausalLM"), "Qwen2ForCausalLM",
                                               tmp_path / "adapter")
    merged = peft_model.merge_and_unload().eval()
    pair = ModelPair.from_lora(base_folders("Qwen2ForCausalLM"), adapter_folder, device="cpu")
    assert pair.base.cfg.normalization_type == "RMSPre"
    assert (pair.tuned(TOKENS).log_softmax(-1) - hf_logprobs(merged, TOKENS)).abs().max() <= 1e-4


def test_adapter_whose_shapes_do_not_fit_the_base_is_refused(base_folders, tmp_path):
    _, adapter_folder = _peft_adapter(base_folders("LlamaForCausalLM"), "LlamaForCausalLM", tmp_path / "adapter")
    other = save_checkpoint(build_model("LlamaForCausalLM", intermediate_size=80), smollm2_tokenizer(),
                            tmp_path / "wider")
    with pytest.raises(ValueError, match=r"adapter_path: layer \d+ mlp\.\w+_proj delta has shape .* another architecture"):
        ModelPair.from_lora(other, adapter_folder, device="cpu")
    _, gpt2_adapter = _peft_adapter(base_folders("GPT2LMHeadModel"), "GPT2LMHeadModel", tmp_path / "gpt2")
    with pytest.raises(ValueError, match="adapter_path: the base model has no module 'transformer.h.0.attn.c_attn'"):
        ModelPair.from_lora(base_folders("LlamaForCausalLM"), gpt2_adapter, device="cpu")


def test_phi3_fused_adapter_is_refused_where_the_base_lacks_its_modules(base_folders, tmp_path):
    """Phi-3's qkv_proj/gate_up_proj exist only in Phi-3: a Llama folder base names its own modules, and
    TransformerLens' layout (the path of GGUF / registry / official-name bases) refuses fused modules."""
    from transformer_lens import HookedTransformerConfig

    _, adapter_folder = _peft_adapter(base_folders("Phi3ForCausalLM"), "Phi3ForCausalLM", tmp_path / "phi3")
    adapter = read_lora_adapter(adapter_folder)
    assert adapter.target_modules == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    with pytest.raises(ValueError, match=r"adapter_path: the base model has no module 'model\.layers\.0\.mlp\."
                                         r"gate_up_proj' .*its per-layer modules are mlp\.down_proj, mlp\.gate_proj, "
                                         r"mlp\.up_proj, self_attn\.k_proj, self_attn\.o_proj, self_attn\.q_proj, "
                                         r"self_attn\.v_proj: the adapter was trained on another architecture"):
        ModelPair.from_lora(base_folders("LlamaForCausalLM"), adapter_folder, device="cpu")
    llama_cfg = HookedTransformerConfig(n_layers=2, d_model=64, n_ctx=32, d_head=16, n_heads=4, d_mlp=96,
                                        act_fn="silu", d_vocab=100, n_key_value_heads=2, gated_mlp=True,
                                        normalization_type="RMS", positional_embedding_type="rotary")
    with pytest.raises(ValueError, match=r"adapter_path: the adapter targets 'mlp\.gate_up_proj' \(a fused "
                                         r"projection\), which cannot be added to this base in TransformerLens' layout"):
        lora_delta(adapter, llama_cfg)


@pytest.mark.parametrize("module", ["lm_head", "embed_tokens"])
def test_adapter_on_a_module_outside_the_layers_is_refused(base_folders, tmp_path, module):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_folders("LlamaForCausalLM")))
    get_peft_model(model, LoraConfig(r=2, target_modules=[module])).save_pretrained(str(tmp_path / "outside"))
    with pytest.raises(ValueError, match=rf"adapter_path: unexpected tensor '\S*{module}\.\S*' \(expected "
                                         r"a LoRA factor of a module inside a layer"):
        read_lora_adapter(tmp_path / "outside")


def test_dora_and_other_peft_types_are_refused(base_folders, tmp_path):
    from peft import IA3Config, get_peft_model
    from transformers import AutoModelForCausalLM

    _, dora = _peft_adapter(base_folders("LlamaForCausalLM"), "LlamaForCausalLM", tmp_path / "dora", use_dora=True)
    with pytest.raises(ValueError, match="DoRA"):
        read_lora_adapter(dora)
    model = AutoModelForCausalLM.from_pretrained(str(base_folders("LlamaForCausalLM")))
    get_peft_model(model, IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"])
                   ).save_pretrained(str(tmp_path / "ia3"))
    with pytest.raises(ValueError, match="peft_type is 'IA3'; only LORA adapters are supported"):
        ModelPair.from_lora(adapter_path=tmp_path / "ia3", device="cpu")


def test_adapter_without_a_recorded_base_needs_base(base_folders, tmp_path):
    _, adapter_folder = _peft_adapter(base_folders("LlamaForCausalLM"), "LlamaForCausalLM", tmp_path / "adapter")
    config_path = adapter_folder / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = None
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="base: .* names no base_model_name_or_path"):
        ModelPair.from_lora(adapter_folder, device="cpu")


def test_pair_of_different_architectures_is_refused(base_folders):
    with pytest.raises(ValueError, match="tuned: not the same architecture as base"):
        ModelPair.from_names(base_folders("LlamaForCausalLM"), base_folders("Qwen2ForCausalLM"), device="cpu")
