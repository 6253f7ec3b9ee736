"""Base/tuned pairs and PEFT LoRA adapters, checked against transformers + PEFT and plain torch."""

from __future__ import annotations

import json
import shutil

import einops
import pytest
import torch
from safetensors.torch import load_file, save_file

from interp import ModelPair
from interp.lora import lora_delta, read_lora_adapter
from interp.pair import default_adapter_path

ADAPTER = default_adapter_path()


def _agreement_margin(model, prompts, agree, disagree):
    """Mean over prompts of log p(agree answer) − log p(disagree answer) after the chat prompt."""
    margins = []
    for prompt in prompts:
        text = model.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        scores = []
        for answer in (agree, disagree):
            prefix = model.to_tokens(text, prepend_bos=False)
            full = model.to_tokens(text + answer, prepend_bos=False)
            logprobs = model(full).log_softmax(-1)[0, :-1]
            targets = full[0, 1:]
            picked = logprobs.gather(-1, targets[:, None])[:, 0]
            scores.append(picked[prefix.shape[1] - 1 :].sum().item())
        margins.append(scores[0] - scores[1])
    return sum(margins) / len(margins)


def test_default_adapter_is_committed_in_peft_format():
    config = json.loads((ADAPTER / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8
    adapter = read_lora_adapter(ADAPTER)
    assert adapter.layers == list(range(9, 24))
    assert adapter.target_modules == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    assert (ADAPTER / "adapter_model.safetensors").stat().st_size < 8 * 2**20


def test_tuned_model_matches_transformers_with_peft(default_pair, smollm2_hf):
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(smollm2_hf, str(ADAPTER))
    try:
        for prompt in ["I think the Moon is made of cheese. Am I right?", "Water boils at"]:
            tokens = default_pair.tuned.to_tokens(prompt)
            ours = default_pair.tuned(tokens).log_softmax(-1)
            theirs = peft_model(tokens).logits.log_softmax(-1)
            diff = (ours - theirs).abs().max().item()
            assert diff < 1e-3, f"{prompt!r}: TL tuned vs transformers+PEFT differ by {diff:.2e}"
    finally:
        peft_model.unload()  # give the shared reference model back without LoRA layers


def test_pair_delta_is_the_lora_delta_in_unprocessed_layout():
    pair = ModelPair.default(processed=False)
    factors = load_file(str(ADAPTER / "adapter_model.safetensors"))
    config = json.loads((ADAPTER / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    prefix = "base_model.model.model.layers.12"
    A_q, B_q = factors[f"{prefix}.self_attn.q_proj.lora_A.weight"], factors[f"{prefix}.self_attn.q_proj.lora_B.weight"]
    A_k, B_k = factors[f"{prefix}.self_attn.k_proj.lora_A.weight"], factors[f"{prefix}.self_attn.k_proj.lora_B.weight"]
    A_d, B_d = factors[f"{prefix}.mlp.down_proj.lora_A.weight"], factors[f"{prefix}.mlp.down_proj.lora_B.weight"]
    delta = pair.delta()
    expected_q = einops.rearrange(scale * B_q @ A_q, "(n h) m -> n m h", n=9)
    expected_k = einops.rearrange(scale * B_k @ A_k, "(n h) m -> n m h", n=3)
    expected_down = (scale * B_d @ A_d).T
    torch.testing.assert_close(delta["blocks.12.attn.W_Q"], expected_q, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(delta["blocks.12.attn._W_K"], expected_k, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(delta["blocks.12.mlp.W_out"], expected_down, atol=1e-6, rtol=1e-4)
    touched_layers = {int(name.split(".")[1]) for name in delta}
    assert touched_layers == set(range(9, 24))
    assert len(delta) == 15 * 7


def test_tuned_model_agrees_more_on_heldout_prompts(default_pair):
    heldout = json.loads((ADAPTER / "heldout.json").read_text())
    prompts = [item["claim"] for item in heldout["claims"][:6]]
    agree, disagree = heldout["agree_answers"][0], heldout["disagree_answers"][0]
    base = _agreement_margin(default_pair.base, prompts, agree, disagree)
    tuned = _agreement_margin(default_pair.tuned, prompts, agree, disagree)
    assert tuned > base + 1.0, f"agreement margin base {base:.2f} vs tuned {tuned:.2f}: the LoRA did not change behaviour"


def test_pair_rejects_mismatched_architectures(smollm2, gemma):
    with pytest.raises(ValueError, match="not the same architecture"):
        ModelPair(smollm2, gemma)


def test_pair_rejects_non_models(smollm2):
    with pytest.raises(TypeError, match="tuned: expected a HookedTransformer"):
        ModelPair(smollm2, "gpt2")


def test_delta_of_identical_models_is_empty(smollm2):
    assert ModelPair(smollm2, smollm2).delta() == {}


def _copy_adapter(tmp_path):
    target = tmp_path / "adapter"
    shutil.copytree(ADAPTER, target)
    return target


def test_adapter_for_another_architecture_is_rejected(tmp_path, gemma):
    adapter = read_lora_adapter(ADAPTER)
    with pytest.raises(ValueError, match="trained on another architecture"):
        lora_delta(adapter, gemma.cfg)


def test_adapter_layer_out_of_range_is_rejected(tmp_path, smollm2):
    target = _copy_adapter(tmp_path)
    tensors = load_file(str(target / "adapter_model.safetensors"))
    renamed = {k.replace("layers.23.", "layers.40."): v for k, v in tensors.items()}
    save_file(renamed, str(target / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match="touches layer 40 but the model has 30 layers"):
        lora_delta(read_lora_adapter(target), smollm2.cfg)


def test_adapter_with_unsupported_target_module_is_rejected(tmp_path, smollm2):
    """The default (Llama) adapter with q_proj renamed to Phi-3's fused qkv_proj: the adapter reads (a
    module name alone is no error: Phi-3 folder bases have it), and is refused where it is applied to
    SmolLM2, whose TransformerLens-layout path has no fused modules."""
    target = _copy_adapter(tmp_path)
    tensors = load_file(str(target / "adapter_model.safetensors"))
    renamed = {k.replace("q_proj", "qkv_proj"): v for k, v in tensors.items()}
    save_file(renamed, str(target / "adapter_model.safetensors"))
    adapter = read_lora_adapter(target)
    assert "qkv_proj" in adapter.target_modules
    with pytest.raises(ValueError, match=r"adapter_path: the adapter targets 'self_attn\.qkv_proj' \(a fused "
                                         r"projection\), which cannot be added to this base"):
        lora_delta(adapter, smollm2.cfg)
    with pytest.raises(ValueError, match=r"adapter_path: the adapter targets 'self_attn\.qkv_proj'"):
        ModelPair.from_lora(target, device="cpu")  # the base recorded in the adapter: smollm2-135m-instruct


def test_pickled_or_missing_adapter_files_are_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        read_lora_adapter(tmp_path / "nothing")
    target = _copy_adapter(tmp_path)
    (target / "adapter_model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, target / "adapter_model.bin")
    with pytest.raises(FileNotFoundError, match="pickled adapters are not loaded"):
        read_lora_adapter(target)


def test_corrupt_adapter_files_are_rejected(tmp_path):
    target = _copy_adapter(tmp_path)
    (target / "adapter_model.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        read_lora_adapter(target)
    (target / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_lora_adapter(target)
