"""The ``interp`` command line: exit codes and messages for bad arguments, ``interp models``,
``interp directions`` writing a loadable file, and ``interp report`` end to end (one section)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from interp import DirectionSet
from interp.cli import EXIT_CODES, EXIT_INPUT, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, main

ROOT = Path(__file__).resolve().parents[1]


def _no_loading(*args, **kwargs):
    raise AssertionError("the command loaded a model although its arguments were invalid")


@pytest.fixture
def no_model_loading(monkeypatch):
    """Invalid arguments must be rejected before any model is loaded."""
    monkeypatch.setattr("interp.report.build.load_pair", _no_loading)
    monkeypatch.setattr("interp.loading.load_model", _no_loading)


@pytest.fixture
def cached_models(smollm2):
    """The offline conversion is in the cache (so `--layers` can be checked from its config)."""
    return smollm2


# ------------------------------------------------------------------------------------ usage (exit 2)
def test_help_documents_every_exit_code(capsys):
    assert main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "exit codes:" in out
    for code, meaning in EXIT_CODES.items():
        assert f"{code}" in out and meaning[:30] in out, f"exit code {code} is not documented in --help"
    assert main(["report", "--help"]) == EXIT_OK
    assert "--directions" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "--tuned", "x", "--adapter", "y"], "not allowed with argument"),
        (["report", "--layers", "12-3"], "increasing range like 9-23, got '12-3'"),
        (["report", "--layers", "ten"], "expected a layer index"),
        (["report", "--sections", "everything"], "invalid choice: 'everything'"),
        (["report", "--threads", "0"], "expected a positive integer, got 0"),
        (["directions", "--n-components", "zero"], "expected a positive integer"),
        (["directions", "--kind", "mood"], "invalid choice: 'mood'"),
        (["no-such-command"], "invalid choice"),
        ([], "required"),
    ],
)
def test_malformed_command_lines_exit_2(argv, message, capsys, no_model_loading):
    assert main(argv) == EXIT_USAGE
    assert message in capsys.readouterr().err


# ------------------------------------------------------------------------------------ bad input (exit 3)
def test_unknown_model_names_the_flag_and_the_offline_models(capsys, no_model_loading):
    assert main(["report", "--base", "no-such-model", "--adapter", str(ROOT)]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "--base: unknown model 'no-such-model'" in err and "smollm2-135m-instruct, gemma-3-270m" in err
    assert main(["directions", "--model", "no-such-model"]) == EXIT_INPUT
    assert "--model: unknown model" in capsys.readouterr().err


def test_missing_adapter_exits_3(tmp_path, capsys, no_model_loading):
    assert main(["report", "--adapter", str(tmp_path / "missing")]) == EXIT_INPUT
    assert f"--adapter: no such folder '{tmp_path / 'missing'}'" in capsys.readouterr().err
    assert main(["report", "--adapter", str(tmp_path)]) == EXIT_INPUT  # a folder, but not a PEFT adapter
    assert "is not a PEFT adapter folder (no adapter_config.json)" in capsys.readouterr().err
    assert main(["report", "--base", "gemma-3-270m"]) == EXIT_INPUT  # a non-default base needs a tuned side
    assert "--tuned/--adapter: give one of them" in capsys.readouterr().err


def test_layers_out_of_range_exit_3_before_loading(cached_models, capsys, no_model_loading):
    assert main(["report", "--layers", "3", "30"]) == EXIT_INPUT
    assert "--layers: layer 30 is out of range for smollm2-135m-instruct (30 layers: 0..29)" in capsys.readouterr().err
    assert main(["report", "--layers", "25-31"]) == EXIT_INPUT
    assert main(["directions", "--layer", "-31"]) == EXIT_INPUT
    assert "--layer: layer -31 is out of range" in capsys.readouterr().err


def test_directions_file_of_the_wrong_width_exits_3(cached_models, tmp_path, capsys, no_model_loading):
    path = DirectionSet.random(3, 64, seed=0).save(tmp_path / "narrow.safetensors")
    assert main(["report", "--directions", str(path)]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "--directions: narrow.safetensors holds directions of width 64, but the model's d_model is 576" in err


def test_unreadable_or_missing_directions_file_exits_3(tmp_path, capsys, no_model_loading):
    assert main(["report", "--directions", str(tmp_path / "none.safetensors")]) == EXIT_INPUT
    assert "--directions: no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    assert main(["report", "--directions", str(junk)]) == EXIT_INPUT
    assert "--directions:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["directions", "--roles", "pirate", "wizard-of-oz"], "--roles: unknown roles ['wizard-of-oz']"),
        (["directions", "--roles", "pirate", "poet", "--n-components", "2"], "--n-components: must be between 1 and 1"),
        (["directions", "--questions", "99"], "--questions: there are 8 packaged questions, got 99"),
        (["directions", "--out", "pcs.json"], "--out: 'pcs.json' must end in .safetensors, .pt or .pth"),
    ],
)
def test_bad_directions_arguments_exit_3(argv, message, capsys, no_model_loading):
    assert main(argv) == EXIT_INPUT
    assert message in capsys.readouterr().err


def test_console_script_exit_code_in_a_real_process(tmp_path):
    """The module entry point returns the code to the shell (not just to ``main``'s caller)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "interp.cli", "report", "--adapter", str(tmp_path / "nope")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == EXIT_INPUT, result.stderr
    assert "interp report: error: --adapter: no such folder" in result.stderr


# ------------------------------------------------------------------------------------ interp models
def test_models_lists_offline_names_and_cache_state(cached_models, capsys):
    assert main(["models"]) == EXIT_OK
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()}
    assert "smollm2-135m-instruct" in lines and "gemma-3-270m" in lines
    assert " cached " in lines["smollm2-135m-instruct"], "smollm2 is loaded by a fixture, so it is cached"
    assert "Default pair: smollm2-135m-instruct + the committed LoRA" in out
    assert "TransformerLens" in out


# ------------------------------------------------------------------------------------ interp directions
def test_directions_writes_the_persona_pcs_it_computes(smollm2, tmp_path, monkeypatch, capsys):
    from interp.personas import persona_directions, persona_prompts

    monkeypatch.setattr("interp.loading.load_model", lambda name, **kwargs: smollm2)  # the session's model
    out = tmp_path / "pcs.safetensors"
    argv = ["directions", "--layer", "6", "--n-components", "2", "--roles", "pirate", "poet", "teacher",
            "--questions", "1", "--out", str(out), "--quiet"]
    with torch.enable_grad():  # as in a shell; the command must not build autograd graphs
        assert main(argv) == EXIT_OK
    assert f"written to {out}" in capsys.readouterr().out
    saved = DirectionSet.load(out)
    assert saved.names == ("PC1", "PC2") and saved.layer == 6 and saved.d_model == 576
    gram = saved.vectors @ saved.vectors.T
    torch.testing.assert_close(gram, torch.eye(2), atol=1e-5, rtol=0)  # orthonormal principal axes
    expected = persona_directions(smollm2, layer=6, n_components=2, roles=["pirate", "poet", "teacher"],
                                  questions=list(persona_prompts().questions[:1]))
    torch.testing.assert_close(saved.vectors, expected.pcs.vectors, atol=1e-4, rtol=0)


def test_directions_kind_all_is_usable_by_the_report(smollm2, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("interp.loading.load_model", lambda name, **kwargs: smollm2)
    out = tmp_path / "all.safetensors"
    argv = ["directions", "--layer", "-28", "--n-components", "1", "--roles", "pirate", "poet", "--questions", "1",
            "--kind", "all", "--out", str(out), "--quiet"]
    assert main(argv) == EXIT_OK
    saved = DirectionSet.load(out)
    assert saved.names[:3] == ("PC1", "pirate", "poet") and len(saved) == 3 + 12  # PCs, roles, packaged traits
    assert saved.layer == 2  # -28 counts from the end of 30 layers
    monkeypatch.setattr("interp.report.build.load_pair", _no_loading)
    assert main(["report", "--directions", str(out), "--layers", "40"]) == EXIT_INPUT  # width fine, layers not


# ------------------------------------------------------------------------------------ interp report
def test_report_command_writes_the_report_and_exits_0(default_pair, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("interp.report.build.load_pair", lambda *args: default_pair)
    argv = ["report", "--quick", "--sections", "weights", "--out", str(tmp_path), "--quiet", "--no-cache"]
    assert main(argv) == EXIT_OK
    out = capsys.readouterr().out
    assert f"report written to {(tmp_path / 'report.html').resolve()}" in out
    assert "What changed in the weights" in (tmp_path / "report.html").read_text()


def test_report_command_exits_4_when_a_section_fails(default_pair, tmp_path, monkeypatch, capsys):
    from interp.report.sections import SECTIONS

    def broken(pair, options):
        raise RuntimeError("no luck")

    monkeypatch.setattr("interp.report.build.load_pair", lambda *args: default_pair)
    monkeypatch.setitem(SECTIONS, "circuits", (SECTIONS["circuits"][0], broken))
    argv = ["report", "--quick", "--sections", "weights", "circuits", "--out", str(tmp_path), "--quiet", "--no-cache"]
    assert main(argv) == EXIT_PARTIAL
    captured = capsys.readouterr()
    assert "report written to" in captured.out
    assert "1 section(s) failed: circuits" in captured.err
    assert "RuntimeError: no luck" in (tmp_path / "report.html").read_text()


def test_report_command_rejects_layers_beyond_the_loaded_model(default_pair, tmp_path, monkeypatch, capsys):
    """Layers are checked against the loaded pair too (for models whose config cannot be peeked)."""
    monkeypatch.setattr("interp.report.build.load_pair", lambda *args: default_pair)
    monkeypatch.setattr("interp.cli._peek_dims", lambda name: None)
    assert main(["report", "--layers", "31", "--out", str(tmp_path), "--quiet"]) == EXIT_INPUT
    assert "--layers: layer 31 is out of range for a model with 30 layers" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()
