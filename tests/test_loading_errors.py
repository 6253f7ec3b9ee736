"""Bad input to the loaders: clear errors naming the argument; GGUF files interp cannot convert exactly
are refused by name; a damaged converted-weight cache is reported in one warning and rebuilt."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from _tiny_checkpoints import build_model, save_checkpoint, smollm2_tokenizer

from interp import ModelPair
from interp.loading import OFFLINE_MODELS, load_model, resolve_device


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    return save_checkpoint(build_model("LlamaForCausalLM"), smollm2_tokenizer(), tmp_path_factory.mktemp("tiny") / "m")


def _copy(folder, target):
    shutil.copytree(folder, target)
    return target


# ---------------------------------------------------------------------------------------- folders


def test_folder_without_config_json(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="name: folder .* has no config.json"):
        load_model(tmp_path, device="cpu")


def test_missing_path_is_not_mistaken_for_a_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="name: no such folder"):
        load_model(str(tmp_path / "absent"), device="cpu")


def test_unsupported_architecture_is_refused_before_reading_weights(tmp_path):
    config = {"architectures": ["FalconForCausalLM"], "model_type": "falcon", "hidden_size": 64}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")  # never read
    with pytest.raises(ValueError, match="name: architecture 'FalconForCausalLM' .* not supported; supported: "
                                         "LlamaForCausalLM, .*GPT2LMHeadModel"):
        load_model(tmp_path, device="cpu")


def test_config_without_architectures_or_with_bad_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="name: .* has no 'architectures' entry"):
        load_model(tmp_path, device="cpu")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="name: .*config.json is not valid JSON"):
        load_model(tmp_path, device="cpu")


def test_settings_the_converter_would_drop_are_refused(llama_folder, tmp_path):
    folder = _copy(llama_folder, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "attention_bias": True}))
    with pytest.raises(ValueError, match="name: .* has attention_bias=True, which TransformerLens' converter drops"):
        load_model(folder, device="cpu")
    (folder / "config.json").write_text(json.dumps({**config, "rope_parameters": {
        "rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0, "original_max_position_embeddings": 512}}))
    with pytest.raises(ValueError, match="name: .* uses rope scaling 'yarn'"):
        load_model(folder, device="cpu")


@pytest.mark.parametrize("config_class,arch,changes,message", [
    ("Qwen2Config", "Qwen2ForCausalLM", {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6,
                                                             "original_max_position_embeddings": 512}},
     "uses rope scaling 'yarn', which TransformerLens does not implement for Qwen2ForCausalLM"),
    ("Gemma2Config", "Gemma2ForCausalLM", {"attention_bias": True}, "has attention_bias=True"),
    ("Qwen3Config", "Qwen3ForCausalLM", {"use_sliding_window": True}, "has use_sliding_window=True"),
    ("Olmo2Config", "Olmo2ForCausalLM", {"num_key_value_heads": 2}, "has grouped-query attention"),
])
def test_settings_refused_from_config_alone(tmp_path, config_class, arch, changes, message):
    """Refused from config.json, before any weight file is looked at (this folder has none)."""
    import transformers

    config = getattr(transformers, config_class)(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                                 num_attention_heads=4, vocab_size=128, **changes)
    config.architectures = [arch]
    config.save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match=f"name: .*{message}"):
        load_model(tmp_path, device="cpu")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_or_truncated_weight_shard(llama_folder, tmp_path, damage):
    folder = _copy(llama_folder, tmp_path / "m")
    shard = folder / "model.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\xff" * 64)
    with pytest.raises(ValueError, match="name: weight file .*model.safetensors is corrupt or truncated"):
        load_model(folder, device="cpu")


def test_missing_shard_of_an_index(llama_folder, tmp_path):
    folder = _copy(llama_folder, tmp_path / "m")
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(FileNotFoundError, match="lacks the weight shard"):
        load_model(folder, device="cpu")


# ---------------------------------------------------------------------------------------- devices


def test_unavailable_cuda_device_is_a_clear_error(llama_folder, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device: 'cuda:7' asks for CUDA, which is not available"):
        load_model(llama_folder, device="cuda:7")
    with pytest.raises(ValueError, match="device: 'cuda:7'"):
        ModelPair.from_names(llama_folder, llama_folder, device="cuda:7")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match="device: 'cuda:7' does not exist: this machine has 2 CUDA device"):
        resolve_device("cuda:7")


def test_unknown_device_names_and_types(monkeypatch):
    with pytest.raises(ValueError, match="device: 'banana' is not a device name"):
        resolve_device("banana")
    with pytest.raises(TypeError, match="device: expected"):
        resolve_device(3.5)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None:
        monkeypatch.setattr(mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device: 'mps' asks for MPS"):
        resolve_device("mps")


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    mps = torch.backends.mps
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(mps, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")


def test_auto_is_the_default_and_loads_here(llama_folder):
    model = load_model(llama_folder)
    assert model.cfg.device == str(resolve_device("auto"))
    assert next(model.parameters()).device.type == resolve_device("auto").type


def test_n_devices_needs_that_many_cuda_devices(llama_folder):
    with pytest.raises(ValueError, match="n_devices: splitting a model over 2 devices needs CUDA devices"):
        load_model(llama_folder, device="cpu", n_devices=2)
    with pytest.raises(ValueError, match="n_devices: expected a positive int"):
        load_model(llama_folder, device="cpu", n_devices=0)


def test_n_ctx_is_honoured_or_refused(llama_folder):
    model = load_model(llama_folder, device="cpu", n_ctx=100)
    assert model.cfg.n_ctx == 100
    with pytest.raises(ValueError, match="n_ctx: 100000 is more than the checkpoint's context of 2048"):
        load_model(llama_folder, device="cpu", n_ctx=100_000)
    with pytest.raises(ValueError, match="n_ctx: expected a positive int"):
        load_model(llama_folder, device="cpu", n_ctx=0)


# ---------------------------------------------------------------------------------------- GGUF


def _tiny_llama_gguf(path, *, tensors=(), **metadata):
    """A 1-layer Llama GGUF of zeros (no tokenizer: the refusals come before it is read)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(16)
    writer.add_feed_forward_length(32)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    for key, value in metadata.items():
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_uint32(key, value)
    names = {"token_embd.weight": (10, 16), "output_norm.weight": (16,), **dict(tensors)}
    for name, shape in names.items():
        writer.add_tensor(name, np.zeros(shape, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("what,metadata,tensors,message", [
    ("llama3", {}, {"rope_freqs.weight": (4,)}, "per-frequency rope scaling \\(a rope_freqs tensor"),
    ("yarn", {"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0}, {}, "rope scaling 'yarn'"),
    ("linear", {"llama.rope.scaling.factor": 2.0}, {}, "rope scaling factor 2.0"),
    ("experts", {"llama.expert_count": 8}, {}, "8 experts per layer"),
    ("head", {"llama.attention.key_length": 12}, {}, "key length 12 ≠ embedding_length / head_count = 8"),
])
def test_gguf_that_would_convert_wrongly_is_refused_by_name(tmp_path, what, metadata, tensors, message):
    path = _tiny_llama_gguf(tmp_path / f"{what}.gguf", tensors=tensors, **metadata)
    with pytest.raises(ValueError, match=f"path: .*{what}.gguf is a llama GGUF with {message}"):
        load_model(path, device="cpu")


def test_gguf_of_another_architecture_is_refused(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "q.gguf"), "qwen2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="GGUF architecture 'qwen2' is not supported"):
        load_model(tmp_path / "q.gguf", device="cpu")


# ---------------------------------------------------------------------------------------- cache


def _cache_copy(tmp_path, monkeypatch):
    """INTERP_CACHE_DIR at tmp_path holding the shared cache's SmolLM2 conversion (weights linked)."""
    from interp.loading import _converted_folder, _processed_name, load_raw

    source = load_raw("smollm2-135m-instruct").cache_folder
    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path))
    target = _converted_folder(OFFLINE_MODELS["smollm2-135m-instruct"].locate(), "smollm2-135m-instruct")
    target.mkdir(parents=True)
    for name in ("config.json", "done.json"):
        shutil.copy(source / name, target / name)
    shutil.copytree(source / "tokenizer", target / "tokenizer")
    (target / "model.safetensors").symlink_to(source / "model.safetensors")
    return source, target, _processed_name()


def _one_rebuild_warning(record):
    messages = [str(w.message) for w in record if "rebuilding" in str(w.message)]
    assert len(messages) == 1 and "\n" not in messages[0], messages
    return messages[0]


def test_truncated_processed_weights_are_rebuilt_with_one_warning(smollm2, tmp_path, monkeypatch):
    source, target, processed = _cache_copy(tmp_path, monkeypatch)
    with open(source / processed, "rb") as handle:
        (target / processed).write_bytes(handle.read(1 << 20))  # the first MiB: a truncated file
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = load_model("smollm2-135m-instruct", device="cpu")
    assert "unreadable" in _one_rebuild_warning(record) and processed in _one_rebuild_warning(record)
    tokens = smollm2.to_tokens("The capital of France is")
    torch.testing.assert_close(model(tokens), smollm2(tokens), rtol=0, atol=0)
    assert (target / processed).stat().st_size == (source / processed).stat().st_size, "rewritten whole"


def test_corrupt_cached_config_is_rebuilt_from_the_gguf(smollm2, tmp_path, monkeypatch):
    _, target, _ = _cache_copy(tmp_path, monkeypatch)
    (target / "config.json").write_text("{not json")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = load_model("smollm2-135m-instruct", processed=False, device="cpu")
    assert "JSONDecodeError" in _one_rebuild_warning(record)
    assert json.loads((target / "config.json").read_text())["n_layers"] == 30
    assert not (target / "model.safetensors").is_symlink(), "the weights were converted again"
    tokens = smollm2.to_tokens("The capital of France is")
    diff = (model(tokens).log_softmax(-1) - smollm2(tokens).log_softmax(-1)).abs().max().item()
    assert diff < 1e-3


def test_processed_weights_of_the_wrong_shapes_are_rebuilt_with_one_warning(smollm2, tmp_path, monkeypatch):
    """A processed-weights file that reads fine but holds other tensors (another model's, another
    TransformerLens layout) is removed with one warning and rebuilt from the unprocessed weights."""
    from safetensors.torch import save_file

    source, target, processed = _cache_copy(tmp_path, monkeypatch)
    save_file({"embed.W_E": torch.zeros(3, 5)}, str(target / processed))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = load_model("smollm2-135m-instruct", device="cpu")
    assert processed in _one_rebuild_warning(record)
    tokens = smollm2.to_tokens("The capital of France is")
    torch.testing.assert_close(model(tokens), smollm2(tokens), rtol=0, atol=0)
    assert (target / processed).stat().st_size == (source / processed).stat().st_size, "rewritten whole"
