"""Model loading: a cached load of SmolLM2 into HookedTransformer (goal < 3 s) against a GGUF
conversion from scratch, and against transformers' own GGUF loader."""

from __future__ import annotations

import os
import tempfile

import torch

from benchmarks._harness import BenchRow, compare
from interp.loading import OFFLINE_MODELS, load_model


def _transformers_gguf(name: str) -> None:
    from transformers import AutoModelForCausalLM

    path = OFFLINE_MODELS[name].locate()
    AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)


def _fresh_conversion(name: str) -> None:
    previous = os.environ.get("INTERP_CACHE_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["INTERP_CACHE_DIR"] = tmp
        try:
            load_model(name)
        finally:
            if previous is None:
                os.environ.pop("INTERP_CACHE_DIR", None)
            else:
                os.environ["INTERP_CACHE_DIR"] = previous


def run() -> list[BenchRow]:
    name = "smollm2-135m-instruct"
    load_model(name)  # make sure the cache exists
    return [
        compare(
            "SmolLM2 cached load vs first conversion",
            lambda: load_model(name),
            lambda: _fresh_conversion(name),
            reference="GGUF conversion, empty cache",
            repeats=3,
            notes="goal: cached load < 3 s",
        ),
        compare(
            "SmolLM2 cached load vs transformers GGUF loader",
            lambda: load_model(name),
            lambda: _transformers_gguf(name),
            reference="transformers from_pretrained(gguf_file=...)",
            repeats=3,
            notes="transformers' model is not a HookedTransformer",
        ),
    ]
