"""safetensors_header / safetensors_problem on small files written here: the header and data offsets
against the raw bytes and safetensors' own reader, truncated files named as truncated without reading a
tensor, and malformed headers a ValueError naming the file (never a bare KeyError)."""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import interp.loading.checkpoint as checkpoint
from interp.loading.checkpoint import SafetensorsFileError, safetensors_header, safetensors_problem


@pytest.fixture()
def tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"w": torch.randn(3, 4, generator=gen), "b": torch.randn(5, generator=gen).to(torch.bfloat16),
            "n": torch.arange(6, dtype=torch.int64)}


@pytest.fixture()
def good(tmp_path, tensors):
    path = tmp_path / "good.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", "note": "x"})
    return path


def _raw(path, header: dict, data: bytes = b"") -> None:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def test_header_and_offsets_equal_the_bytes_and_safetensors_reader(good, tensors):
    header, start = safetensors_header(good)
    data = good.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    assert start == 8 + n
    assert header["__metadata__"] == {"format": "pt", "note": "x"}
    with safe_open(str(good), framework="pt") as opened:
        assert header["__metadata__"] == opened.metadata()
        assert sorted(k for k in header if k != "__metadata__") == sorted(opened.keys()) == sorted(tensors)
        for name, tensor in tensors.items():
            entry = header[name]
            assert entry["shape"] == list(tensor.shape) == opened.get_slice(name).get_shape()
            begin, end = entry["data_offsets"]
            # the byte range holds exactly the tensor's little-endian bytes
            expected = tensor.contiguous().view(torch.uint8).numpy().tobytes()
            assert data[start + begin:start + end] == expected, name
    assert safetensors_problem(good) is None


@pytest.mark.parametrize("cut", [1, 100])
def test_a_truncated_file_is_named_without_reading_a_tensor(good, monkeypatch, cut):
    data = good.read_bytes()
    good.write_bytes(data[:-cut])
    real = checkpoint.safe_open

    class NoTensorReads:
        def __init__(self, *args, **kwargs):
            self.inner = real(*args, **kwargs)

        def __enter__(self):
            self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def __getattr__(self, name):
            if name in ("get_tensor", "get_tensors", "get_slice"):
                pytest.fail(f"{name} called: a tensor was read")
            return getattr(self.inner, name)

    monkeypatch.setattr(checkpoint, "safe_open", NoTensorReads)
    message = f"path: {good} is not a whole safetensors file (truncated: {len(data) - cut} bytes, but its header " \
              f"declares {len(data)})"
    with pytest.raises(ValueError, match=re.escape(message)):
        safetensors_header(good)
    assert safetensors_problem(good) == f"truncated: {len(data) - cut} bytes, but its header declares {len(data)}"


def test_a_huge_declared_tensor_in_a_small_file_is_truncated(tmp_path):
    path = tmp_path / "huge.safetensors"
    _raw(path, {"x": {"dtype": "F32", "shape": [1 << 30], "data_offsets": [0, 4 << 30]}}, b"\0" * 16)
    with pytest.raises(SafetensorsFileError, match=r"truncated: \d+ bytes, but its header declares \d+"):
        safetensors_header(path)


@pytest.mark.parametrize("content", [
    b"\xff" * 64,  # a header length far past the end of the file
    b"\x01\x02\x03",  # too short for a header length
    struct.pack("<Q", 5) + b"{oops",  # not JSON
    struct.pack("<Q", 2) + b"[]",  # JSON, not an object
], ids=["garbage", "tiny", "not-json", "not-object"])
def test_unreadable_headers_are_a_value_error_naming_the_file(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(f"path: {path} is not a whole safetensors file (")):
        safetensors_header(path)
    assert isinstance(safetensors_problem(path), str)


@pytest.mark.parametrize("entry", [
    {"dtype": "F32", "shape": [2]},  # no data_offsets
    {"dtype": "F32", "shape": [2], "data_offsets": "0-8"},
    {"dtype": "F32", "shape": [2], "data_offsets": [0]},
    {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]},  # bytes do not match the shape
    {"dtype": "NOPE", "shape": [2], "data_offsets": [0, 8]},
    "not a dict",
], ids=["no-offsets", "offsets-string", "one-offset", "size-mismatch", "dtype", "entry-string"])
def test_malformed_entries_are_a_value_error_not_a_key_error(tmp_path, entry):
    path = tmp_path / "malformed.safetensors"
    _raw(path, {"x": entry}, np.zeros(2, dtype=np.float32).tobytes())
    with pytest.raises(ValueError, match=re.escape(f"path: {path} is not a whole safetensors file (")):
        safetensors_header(path)
    assert isinstance(safetensors_problem(path), str)


def test_a_missing_file_is_a_value_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"path: {tmp_path / 'none.safetensors'} is not a whole")):
        safetensors_header(tmp_path / "none.safetensors")
