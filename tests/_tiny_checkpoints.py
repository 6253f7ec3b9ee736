"""Tiny random-weight Hugging Face checkpoints, one per architecture interp converts.

Each is built by transformers from ``torch.manual_seed(seed)`` (2 layers, d_model 64, grouped-query
attention where the architecture has it, biases where it has them), with every norm gain randomised
so that a dropped or mis-offset norm shows, and saved with ``save_pretrained`` together with
SmolLM2's tokenizer (vocabulary 49152, read from the offline GGUF conversion).
"""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 49152

# architecture -> (config class name, config kwargs)
CONFIGS: dict[str, tuple[str, dict]] = {
    "LlamaForCausalLM": ("LlamaConfig", dict(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        rope_theta=10000.0, tie_word_embeddings=False)),
    "MistralForCausalLM": ("MistralConfig", dict(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        sliding_window=None, head_dim=16)),
    "Qwen2ForCausalLM": ("Qwen2Config", dict(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        tie_word_embeddings=True)),
    "Qwen3ForCausalLM": ("Qwen3Config", dict(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, tie_word_embeddings=True)),
    "Gemma2ForCausalLM": ("Gemma2Config", dict(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, query_pre_attn_scalar=18, attn_logit_softcapping=5.0, final_logit_softcapping=8.0,
        sliding_window=3)),
    "Gemma3ForCausalLM": ("Gemma3TextConfig", dict(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, query_pre_attn_scalar=16, sliding_window=3,
        layer_types=["sliding_attention", "full_attention"])),
    "GPT2LMHeadModel": ("GPT2Config", dict(n_embd=64, n_layer=2, n_head=4, n_positions=64)),
    "Phi3ForCausalLM": ("Phi3Config", dict(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        sliding_window=None, pad_token_id=0, tie_word_embeddings=False)),
    "Olmo2ForCausalLM": ("Olmo2Config", dict(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        pad_token_id=0, eos_token_id=0)),
}


def smollm2_tokenizer():
    """SmolLM2's tokenizer, from interp's cached conversion of the offline GGUF (converted first if absent)."""
    from transformers import AutoTokenizer

    from interp.loading import OFFLINE_MODELS, _converted_folder, load_raw

    folder = _converted_folder(OFFLINE_MODELS["smollm2-135m-instruct"].locate(), "smollm2-135m-instruct")
    if (folder / "done.json").is_file():
        try:
            return AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        except (OSError, ValueError):
            pass
    return load_raw("smollm2-135m-instruct").tokenizer


def build_model(arch: str, seed: int = 0, **overrides):
    """A transformers model of ``arch`` with random weights and random norm gains (float32, eager attention)."""
    import transformers

    config_name, kwargs = CONFIGS[arch]
    config = getattr(transformers, config_name)(vocab_size=VOCAB, **{**kwargs, **overrides})
    config.architectures = [arch]
    torch.manual_seed(seed)
    model = getattr(transformers, arch)(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or ".ln_" in name or name.startswith("transformer.ln_f"):
                param.copy_(param + 0.3 * torch.randn(param.shape, generator=gen))
            elif name.endswith(".bias"):
                param.copy_(0.1 * torch.randn(param.shape, generator=gen))
    model.config._attn_implementation = "eager"
    return model


def save_checkpoint(model, tokenizer, folder: Path) -> Path:
    """``save_pretrained`` of the model and the tokenizer into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def hf_logprobs(model, tokens: torch.Tensor) -> torch.Tensor:
    """transformers' own forward pass (float32 log-probs)."""
    with torch.no_grad():
        return model(tokens).logits.float().log_softmax(-1)


def hub_cache(root: Path, repo_id: str, folder: Path) -> Path:
    """A Hugging Face hub cache under ``root/hub`` holding ``folder``'s files as ``repo_id``
    (``refs/main`` → one snapshot), as ``huggingface_hub`` lays it out."""
    import shutil

    commit = "0" * 40
    repo = root / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return root / "hub"


def use_hub_cache(monkeypatch, hub: Path) -> None:
    """Point huggingface_hub (offline) at ``hub`` for one test."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(hub.parent))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def checkpoint_builder(root: Path, tokenizer):
    """``get(arch) -> (transformers model, folder)``: :func:`build_model` saved under ``root/arch`` on
    first use, kept for later calls (a module-scoped fixture's cache)."""
    built = {}

    def get(arch):
        if arch not in built:
            model = build_model(arch)
            built[arch] = (model, save_checkpoint(model, tokenizer, root / arch))
        return built[arch]

    return get
