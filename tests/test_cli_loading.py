"""``interp report`` / ``interp directions`` on any checkpoints: folders, hub ids, adapters, --device, --dtype.

Tiny random-weight Llama checkpoints (tests/_tiny_checkpoints.py) in temporary folders."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from _tiny_checkpoints import build_model, save_checkpoint, smollm2_tokenizer

from interp.cli import EXIT_INPUT, EXIT_OK, main


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(base folder, tuned folder): the tuned one has layer 1's MLP down-projection changed."""
    root = tmp_path_factory.mktemp("cli")
    tokenizer = smollm2_tokenizer()
    base = build_model("LlamaForCausalLM")
    base_folder = save_checkpoint(base, tokenizer, root / "base")
    with torch.no_grad():
        base.model.layers[1].mlp.down_proj.weight += 0.1 * torch.randn(64, 96, generator=torch.Generator().manual_seed(5))
    return base_folder, save_checkpoint(base, tokenizer, root / "tuned")


def _report(tmp_path, *extra):
    return main(["report", *extra, "--sections", "weights", "--out", str(tmp_path), "--quiet",
                 "--no-cache", "--device", "cpu"])


def test_report_compares_two_folders(folders, tmp_path, capsys):
    base, tuned = folders
    assert _report(tmp_path, "--base", str(base), "--tuned", str(tuned)) == EXIT_OK
    assert "report written to" in capsys.readouterr().out
    assert "What changed in the weights" in (tmp_path / "report.html").read_text()
    changed = pd.read_csv(tmp_path / "tables" / "weights-largest.csv")
    assert list(zip(changed["layer"], changed["tensor"], strict=True)) == [(1, "mlp.W_out")]


def test_report_with_an_adapter_reads_its_base(folders, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folders[0]))
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["o_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(generator=torch.Generator().manual_seed(6))
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    assert _report(tmp_path / "out", "--adapter", str(tmp_path / "adapter")) == EXIT_OK
    changed = pd.read_csv(tmp_path / "out" / "tables" / "weights-largest.csv")
    assert sorted(zip(changed["layer"], changed["tensor"], strict=True)) == [(0, "attn.W_O"), (1, "attn.W_O")]


def test_device_and_dtype_reach_the_loader(folders, tmp_path, monkeypatch):
    seen = []

    def fake_load_pair(*args):
        seen.append(args)
        raise ValueError("stop here")

    monkeypatch.setattr("interp.report.build.load_pair", fake_load_pair)
    main(["report", "--base", str(folders[0]), "--tuned", str(folders[1]), "--out", str(tmp_path),
          "--quiet", "--device", "cpu", "--dtype", "bfloat16"])
    assert seen and seen[0][3:] == ("cpu", "bfloat16")


def test_unavailable_device_exits_3_before_loading(folders, tmp_path, monkeypatch, capsys):
    def no_loading(*args, **kwargs):
        raise AssertionError("loaded a model although --device was invalid")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("interp.report.build.load_pair", no_loading)
    monkeypatch.setattr("interp.loading.load_model", no_loading)
    assert main(["report", "--base", str(folders[0]), "--tuned", str(folders[1]), "--device", "cuda:7",
                 "--out", str(tmp_path)]) == EXIT_INPUT
    assert "--device: 'cuda:7' asks for CUDA, which is not available" in capsys.readouterr().err
    assert main(["directions", "--model", str(folders[0]), "--device", "cuda:7"]) == EXIT_INPUT
    assert "--device: 'cuda:7'" in capsys.readouterr().err


def test_hub_id_not_in_the_cache_exits_3(folders, tmp_path, capsys):
    assert main(["report", "--base", str(folders[0]), "--tuned", "someone/not-downloaded", "--out", str(tmp_path),
                 "--quiet", "--device", "cpu"]) == EXIT_INPUT
    assert "'someone/not-downloaded' is not in the local Hugging Face cache" in capsys.readouterr().err


def test_directions_on_a_folder_model(folders, tmp_path, capsys):
    out = tmp_path / "pcs.safetensors"
    assert main(["directions", "--model", str(folders[0]), "--layer", "1", "--n-components", "2", "--roles",
                 "pirate", "poet", "teacher", "--questions", "2", "--out", str(out), "--quiet", "--device", "cpu",
                 "--dtype", "float32"]) == EXIT_OK
    from interp import DirectionSet

    saved = DirectionSet.load(out)
    assert saved.vectors.shape == (2, 64) and saved.layer == 1


def test_models_lists_cached_hub_checkpoints_of_supported_architectures(folders, tmp_path, monkeypatch, capsys):
    import json

    from _tiny_checkpoints import hub_cache, use_hub_cache

    hub = hub_cache(tmp_path, "someone/tiny-llama", folders[0])
    unsupported = hub_cache(tmp_path, "someone/tiny-falcon", folders[0])
    config = next((unsupported / "models--someone--tiny-falcon" / "snapshots").glob("*/config.json"))
    config.write_text(json.dumps({**json.loads(config.read_text()), "architectures": ["FalconForCausalLM"]}))
    use_hub_cache(monkeypatch, hub)
    assert main(["models"]) == EXIT_OK
    out = capsys.readouterr().out
    listed = out.split("can load offline:")[1]
    assert "someone/tiny-llama" in listed and "someone/tiny-falcon" not in listed
