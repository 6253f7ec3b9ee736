"""DirectionSet: named residual-space vectors, their derived sets, PCA and safe files.

Expectations come from plain torch / numpy (numpy's SVD for PCA, norms, explicit stacking); the PCA
checks run on real SmolLM2 token embeddings. Random data use torch.Generator seeds given inline.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from interp.directions import DirectionSet

D = 576  # SmolLM2's d_model


def _gaussian(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def embeddings(smollm2) -> torch.Tensor:
    """400 real token-embedding rows of SmolLM2 (tokens 1000..1399) as PCA samples."""
    return smollm2.W_E[1000:1400].detach().float().clone()


@pytest.fixture()
def small() -> DirectionSet:
    vectors = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0], [1.0, 1.0, 1.0]])
    return DirectionSet(("a", "b", "c"), vectors, layer=4, source="hand-made", metadata={"note": "x"})


# ---------------------------------------------------------------------------------- construction
def test_construction_stores_a_float32_copy(small):
    original = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    ds = DirectionSet(["x"], original)
    original[0, 0] = 99.0
    assert ds.vectors.dtype == torch.float32
    assert ds.vectors.tolist() == [[1.0, 2.0]], "DirectionSet must not alias the caller's tensor"
    assert ds.names == ("x",) and isinstance(ds.names, tuple)
    assert len(small) == 3 and small.d_model == 3
    from_lists = DirectionSet(("p", "q"), [[1, 2], [3, 4]])
    assert from_lists.vectors.dtype == torch.float32 and from_lists.vectors.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(AttributeError):
        small.layer = 3  # frozen


@pytest.mark.parametrize(
    ("names", "vectors", "error", "words"),
    [
        (("a", "b"), torch.ones(3, 4), ValueError, ["names", "2 names", "3 rows"]),
        (("a", "a"), torch.ones(2, 4), ValueError, ["names", "unique", "'a'"]),
        (("a", ""), torch.ones(2, 4), TypeError, ["names", "non-empty"]),
        ("ab", torch.ones(2, 4), TypeError, ["names", "sequence"]),
        (("a", "b"), torch.tensor([[1.0, float("nan")], [1.0, 0.0]]), ValueError, ["vectors", "NaN", "[0]"]),
        (("a",), torch.tensor([[float("inf"), 1.0]]), ValueError, ["vectors", "infinite"]),
        (("a",), torch.ones(1, 2, 3), ValueError, ["vectors", "[n, d_model]"]),
        ((), torch.ones(0, 4), ValueError, ["vectors", "empty"]),
        (("a",), torch.ones(1, 0), ValueError, ["vectors", "width 0"]),
        (("a",), "not numbers", TypeError, ["vectors", "[n, d_model]"]),
    ],
)
def test_construction_rejects_bad_fields(names, vectors, error, words):
    with pytest.raises(error) as info:
        DirectionSet(names, vectors)
    for word in words:
        assert word in str(info.value), f"{word!r} missing from error message: {info.value}"


def test_construction_rejects_bad_layer_and_metadata():
    with pytest.raises(TypeError, match="layer"):
        DirectionSet(("a",), torch.ones(1, 2), layer=1.5)
    with pytest.raises(TypeError, match="metadata"):
        DirectionSet(("a",), torch.ones(1, 2), metadata=[1, 2])


def test_zero_rows_are_allowed_until_normalised():
    ds = DirectionSet(("keep", "zero"), torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"vectors: cannot unit-normalise zero vectors: \['zero'\]"):
        ds.unit()


# ---------------------------------------------------------------------------------- access
def test_getitem_iter_and_contains(small):
    assert torch.equal(small["b"], torch.tensor([0.0, 0.0, 2.0]))
    assert torch.equal(small[0], torch.tensor([3.0, 4.0, 0.0]))
    assert torch.equal(small[-1], torch.tensor([1.0, 1.0, 1.0]))
    assert torch.equal(small[np.int64(1)], small.vectors[1])
    pairs = list(small)
    assert [n for n, _ in pairs] == ["a", "b", "c"]
    assert torch.equal(torch.stack([v for _, v in pairs]), small.vectors)
    assert "c" in small and "z" not in small
    with pytest.raises(KeyError, match="'z'"):
        small["z"]
    with pytest.raises(IndexError, match="row 3"):
        small[3]
    with pytest.raises(TypeError, match="names"):
        small[1.0]


def test_subset_keeps_the_requested_order(small):
    sub = small.subset(["c", "a"])
    assert sub.names == ("c", "a")
    assert torch.equal(sub.vectors, torch.stack([small.vectors[2], small.vectors[0]]))
    assert (sub.layer, sub.source, sub.metadata) == (4, "hand-made", {"note": "x"})
    with pytest.raises(ValueError, match=r"names: unknown directions \['nope'\]"):
        small.subset(["a", "nope"])
    with pytest.raises(ValueError, match="names: is empty"):
        small.subset([])


def test_unit_divides_each_row_by_its_norm(small):
    unit = small.unit()
    expected = np.array([[0.6, 0.8, 0.0], [0.0, 0.0, 1.0], [1 / np.sqrt(3)] * 3])
    np.testing.assert_allclose(unit.vectors.numpy(), expected, atol=1e-7)
    assert unit.names == small.names and unit.layer == 4


def test_with_negations_follows_each_row_with_its_negative(small):
    neg = small.with_negations()
    assert neg.names == ("a", "-a", "b", "-b", "c", "-c")
    expected = torch.stack([small.vectors[0], -small.vectors[0], small.vectors[1], -small.vectors[1],
                            small.vectors[2], -small.vectors[2]])
    assert torch.equal(neg.vectors, expected)
    twice = DirectionSet(("-x",), torch.ones(1, 2)).with_negations()
    assert twice.names == ("-x", "x")


def test_concat_stacks_rows_and_keeps_parts(small):
    other = DirectionSet(("d",), torch.tensor([[0.0, 1.0, 0.0]]), layer=4, source="other", metadata={"k": 1})
    both = small.concat(other)
    assert both.names == ("a", "b", "c", "d")
    assert torch.equal(both.vectors, torch.cat([small.vectors, other.vectors]))
    assert both.layer == 4 and both.source == "hand-made + other"
    assert [p["metadata"] for p in both.metadata["parts"]] == [{"note": "x"}, {"k": 1}]
    assert small.concat(DirectionSet(("e",), torch.ones(1, 3), layer=7)).layer is None


def test_concat_rejects_other_width_and_clashing_names(small):
    with pytest.raises(ValueError, match="other: has d_model 4 but this DirectionSet has d_model 3"):
        small.concat(DirectionSet(("d",), torch.ones(1, 4)))
    with pytest.raises(ValueError, match=r"other: names \['a'\]"):
        small.concat(DirectionSet(("a",), torch.ones(1, 3)))
    with pytest.raises(TypeError, match="other"):
        small.concat(torch.ones(1, 3))


def test_from_dict_and_to_dataframe():
    ds = DirectionSet.from_dict({"u": torch.tensor([3.0, 4.0]), "v": [0.0, 2.0]}, layer=2, source="s")
    assert ds.names == ("u", "v") and ds.layer == 2
    frame = ds.to_dataframe()
    assert list(frame.columns) == ["index", "name", "norm", "layer", "source"]
    assert frame["name"].tolist() == ["u", "v"]
    np.testing.assert_allclose(frame["norm"].to_numpy(), [5.0, 2.0])
    with pytest.raises(ValueError, match="vectors: entries have different widths"):
        DirectionSet.from_dict({"u": torch.ones(2), "v": torch.ones(3)})
    with pytest.raises(ValueError, match="vectors: entry 'u'"):
        DirectionSet.from_dict({"u": torch.ones(2, 2)})


# ---------------------------------------------------------------------------------- random
def test_random_is_reproducible_unit_norm_and_seed_dependent():
    first = DirectionSet.random(20, D, seed=7)
    again = DirectionSet.random(20, D, seed=7)
    other = DirectionSet.random(20, D, seed=8)
    assert first.names == tuple(f"Random{i}" for i in range(1, 21))
    assert torch.equal(first.vectors, again.vectors), "same seed must give identical vectors"
    assert not torch.allclose(first.vectors, other.vectors), "another seed must give other vectors"
    np.testing.assert_allclose(first.vectors.norm(dim=1).numpy(), np.ones(20), atol=1e-6)
    # Independent draw: torch.Generator seeded 7, randn, divide by norm.
    draw = torch.randn(20, D, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(first.vectors, draw / draw.norm(dim=1, keepdim=True))
    assert DirectionSet.random(2, 8, prefix="R").names == ("R1", "R2")


def test_random_seed_42_matches_the_seed_notebook_draw():
    """Seed 000 drew its baseline with torch.manual_seed(42) and one randn(hidden) per vector."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(42)
        rows = [torch.randn(D, dtype=torch.float32) for _ in range(5)]
    finally:
        torch.random.set_rng_state(state)
    notebook = torch.stack([r / r.norm() for r in rows])
    torch.testing.assert_close(DirectionSet.random(5, D, seed=42).vectors, notebook, rtol=0, atol=1e-7)


@pytest.mark.parametrize(("kwargs", "word"), [({"n": 0, "d_model": 4}, "n"), ({"n": 2, "d_model": 0}, "d_model")])
def test_random_rejects_bad_sizes(kwargs, word):
    with pytest.raises(ValueError, match=f"^{word}:"):
        DirectionSet.random(**kwargs)


# ---------------------------------------------------------------------------------- PCA
def test_from_pca_matches_numpy_svd_on_real_embeddings(embeddings):
    k = 6
    pcs = DirectionSet.from_pca(embeddings, k, layer=0, source="W_E rows")
    x = embeddings.double().numpy()
    centred = x - x.mean(axis=0, keepdims=True)
    _u, s, vt = np.linalg.svd(centred, full_matrices=False)
    ratio = s**2 / np.sum(s**2)

    assert pcs.names == tuple(f"PC{i}" for i in range(1, k + 1)) and pcs.layer == 0
    gram = (pcs.vectors @ pcs.vectors.T).double().numpy()
    np.testing.assert_allclose(gram, np.eye(k), atol=1e-5, err_msg="PCs are not orthonormal")
    np.testing.assert_allclose(pcs.metadata["explained_variance_ratio"], ratio[:k], rtol=1e-6)
    np.testing.assert_allclose(pcs.metadata["explained_variance"], s[:k] ** 2 / (len(x) - 1), rtol=1e-6)
    assert sum(pcs.metadata["explained_variance_ratio"]) <= 1.0
    assert np.all(np.diff(pcs.metadata["explained_variance_ratio"]) <= 0), "not sorted by variance"
    # Same axes as numpy up to sign; our sign makes the largest-|entry| positive.
    for i in range(k):
        ours = pcs.vectors[i].double().numpy()
        sign = np.sign(ours @ vt[i])
        np.testing.assert_allclose(ours, sign * vt[i], atol=2e-5, err_msg=f"PC{i + 1} differs from numpy")
        assert ours[np.argmax(np.abs(ours))] > 0, f"PC{i + 1} breaks the sign convention"


def test_from_pca_sign_is_independent_of_the_data_sign(embeddings):
    """X and -X have the same principal axes; the sign convention must pick the same vectors."""
    a = DirectionSet.from_pca(embeddings, 4)
    b = DirectionSet.from_pca(-embeddings, 4)
    torch.testing.assert_close(a.vectors, b.vectors, atol=1e-5, rtol=0)


def test_from_pca_recovers_a_planted_low_rank_subspace():
    # 300 samples in 64-d: rank-3 signal (std 10, 6, 3) in a random orthonormal basis + noise std 0.01.
    gen = torch.Generator().manual_seed(1234)
    basis, _ = torch.linalg.qr(torch.randn(64, 3, generator=gen, dtype=torch.float64))
    coeffs = torch.randn(300, 3, generator=gen, dtype=torch.float64) * torch.tensor([10.0, 6.0, 3.0])
    data = coeffs @ basis.T + 0.01 * torch.randn(300, 64, generator=gen, dtype=torch.float64) + 5.0
    pcs = DirectionSet.from_pca(data, 3)
    planted = (basis @ basis.T).numpy()
    found = (pcs.vectors.T @ pcs.vectors).double().numpy()
    np.testing.assert_allclose(found, planted, atol=1e-3, err_msg="PCA did not recover the planted subspace")
    assert sum(pcs.metadata["explained_variance_ratio"]) > 0.9999


@pytest.mark.parametrize(
    ("data", "k", "error", "match"),
    [
        (torch.ones(5, 4).cumsum(0), 5, ValueError, "n_components: must be between 1 and"),
        (torch.ones(5, 4).cumsum(0), 0, ValueError, "n_components"),
        (torch.ones(1, 4), 1, ValueError, "activations: PCA needs at least 2 samples"),
        (torch.ones(5, 4), 1, ValueError, "activations: all samples are identical"),
        (torch.ones(5, 4, 2), 1, ValueError, "activations: expected shape"),
        (torch.ones(5, 4).cumsum(0), 1.0, TypeError, "n_components"),
    ],
)
def test_from_pca_rejects_bad_input(data, k, error, match):
    with pytest.raises(error, match=match):
        DirectionSet.from_pca(data, k)


# ---------------------------------------------------------------------------------- files
@pytest.fixture()
def pcs_with_metadata(embeddings) -> DirectionSet:
    return DirectionSet.from_pca(embeddings, 3, layer=15, source="persona PCA test").with_negations()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_save_load_round_trip(tmp_path, pcs_with_metadata, suffix):
    path = pcs_with_metadata.save(tmp_path / f"dirs{suffix}")
    loaded = DirectionSet.load(path)
    assert loaded.names == pcs_with_metadata.names
    assert torch.equal(loaded.vectors, pcs_with_metadata.vectors)
    assert loaded.layer == 15 and loaded.source == "persona PCA test"
    assert loaded.metadata == pcs_with_metadata.metadata


def test_safetensors_header_is_plain_json(tmp_path, small):
    from safetensors import safe_open

    path = small.save(tmp_path / "s.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
        assert list(handle.keys()) == ["vectors"]
    assert json.loads(header["names"]) == ["a", "b", "c"]
    assert json.loads(header["metadata"]) == {"note": "x"}
    assert json.loads(header["layer"]) == 4


def test_load_plain_tensor_files(tmp_path):
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    torch.save({"first": a, "second": b}, tmp_path / "named.pt")
    named = DirectionSet.load(tmp_path / "named.pt")
    assert named.names == ("first", "second") and torch.equal(named.vectors, torch.stack([a, b]))

    torch.save(torch.stack([a, b]), tmp_path / "bare.pt")
    bare = DirectionSet.load(tmp_path / "bare.pt", names=["x", "y"])
    assert bare.names == ("x", "y") and torch.equal(bare.vectors, torch.stack([a, b]))
    assert DirectionSet.load(tmp_path / "bare.pt").names == ("0", "1")

    save_file({"u": a, "v": b.to(torch.bfloat16)}, str(tmp_path / "named.safetensors"))
    from_st = DirectionSet.load(tmp_path / "named.safetensors")
    assert from_st.names == ("u", "v") and from_st.vectors.dtype == torch.float32
    assert torch.equal(from_st.vectors, torch.stack([a, b]))


class _Payload:
    """A pickled object whose unpickling would create a marker file (it must never run)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_load_refuses_pickled_objects_without_running_them(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"vectors": torch.ones(1, 2), "names": ["a"], "extra": _Payload(str(marker))}, path)
    with pytest.raises(ValueError) as info:
        DirectionSet.load(path)
    message = str(info.value)
    assert str(path) in message and "pickled objects" in message and "weights_only=True" in message, message
    assert not marker.exists(), "loading executed pickled code"

    with open(tmp_path / "plain_pickle.pt", "wb") as handle:
        pickle.dump(_Payload(str(marker)), handle)
    with pytest.raises(ValueError, match="plain_pickle.pt"):
        DirectionSet.load(tmp_path / "plain_pickle.pt")
    assert not marker.exists(), "loading executed pickled code"


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_load_rejects_corrupt_files(tmp_path, suffix):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(b"\x00\x01 this is not a tensor file \xff" * 8)
    with pytest.raises(ValueError, match=f"path: .*corrupt{suffix}.* is not a readable"):
        DirectionSet.load(path)


def test_load_rejects_truncated_safetensors(tmp_path, small):
    path = small.save(tmp_path / "cut.safetensors")
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError, match="cut.safetensors"):
        DirectionSet.load(path)


def test_load_rejects_missing_files_and_unknown_suffixes(tmp_path, small):
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        DirectionSet.load(tmp_path / "nowhere.safetensors")
    (tmp_path / "dirs.npy").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"dirs.npy.*unsupported suffix"):
        DirectionSet.load(tmp_path / "dirs.npy")
    with pytest.raises(ValueError, match="path: .*must end in"):
        small.save(tmp_path / "dirs.json")


def test_load_rejects_valid_files_with_invalid_contents(tmp_path):
    torch.save({"names": ["a", "b"], "vectors": torch.ones(3, 2)}, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match=r"mismatch.pt.*2 names for 3 rows"):
        DirectionSet.load(tmp_path / "mismatch.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list.pt.*holds a list"):
        DirectionSet.load(tmp_path / "list.pt")


def test_save_rejects_metadata_that_is_not_json(tmp_path):
    ds = DirectionSet(("a",), torch.ones(1, 2), metadata={"t": torch.ones(2)})
    with pytest.raises(ValueError, match="metadata: must be JSON-serialisable"):
        ds.save(tmp_path / "x.safetensors")
    assert not Path(tmp_path / "x.safetensors").exists()
