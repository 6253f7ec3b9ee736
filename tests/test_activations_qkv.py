"""Seed 002 on real models: Q/K/V at " her", neuron similarity matrices against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.activations import qkv_similarity_study
from interp.activations.qkv_structure import (
    BLOCKS,
    block_values,
    histogram_frame,
    neuron_similarity,
    shuffle_entries,
    similarity_histograms,
)

SENTENCES = [
    "I saw her at the market.", "She gave her the book.", "They asked her for advice.",
    "We invited her to dinner.", "The dog followed her home.", "He saw her at the park yesterday.",
    "Did you give her your address?", "I haven't seen her in ages.", "I told her the truth.",
    "The teacher praised her for his work.", "I met her last summer.", "The child hugged her tightly.",
    "They warned her about the danger.", "She drove her to the airport.", "We waited for her for hours.",
    "They surprised her with a gift.", "She called her on the phone.", "The jury found her not guilty.",
    "I remembered her from school.", "They elected her as president.",
]


@pytest.fixture(scope="module")
def smol_study(smollm2):
    return qkv_similarity_study(smollm2, SENTENCES, " her", layer=6, seed=0)


def _seed_cosine(acts: np.ndarray, centre: bool) -> np.ndarray:
    """The seed's numpy computation, verbatim in spirit."""
    if centre:
        acts = acts - np.mean(acts, axis=0, keepdims=True)
    norm = acts / np.linalg.norm(acts, axis=0, keepdims=True)
    return norm.T @ norm


def test_qkv_rows_are_the_hooked_projections_at_the_target(smollm2, smol_study):
    her = smollm2.tokenizer.encode(" her", add_special_tokens=False)[0]
    for i, sentence in enumerate(SENTENCES[:4]):
        _, cache = smollm2.run_with_cache(sentence, names_filter=lambda n: n.startswith("blocks.6.attn.hook_"),
                                          stop_at_layer=7)
        idx = smollm2.to_tokens(sentence)[0].tolist().index(her)  # the seed's list.index
        for kind in "qkv":
            ref = cache[f"blocks.6.attn.hook_{kind}"][0]
            torch.testing.assert_close(getattr(smol_study.target, kind)[i], ref[idx], atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(getattr(smol_study.neighbour, kind)[i], ref[idx - 1], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["cosine", "correlation"])
def test_similarity_equals_plain_numpy_on_the_cached_activations(smol_study, kind):
    acts = smol_study.matrix("target")
    assert acts.shape == (len(SENTENCES), 576 + 192 + 192)  # Q 9x64 | K 3x64 | V 3x64 (GQA, unexpanded)
    ours = neuron_similarity(acts, kind).numpy()
    expected = _seed_cosine(acts.numpy().astype(np.float64), centre=kind == "correlation")
    np.testing.assert_allclose(ours, expected, atol=1e-5, err_msg=f"{kind} matrix differs from numpy")


def test_per_head_similarity_equals_numpy_per_head(smol_study):
    per_head = smol_study.target.per_head()  # [head, sample, 3 * d_head]
    assert per_head.shape == (9, len(SENTENCES), 3 * 64)
    ours = neuron_similarity(per_head, "cosine").numpy()
    q, k, v = (getattr(smol_study.target, x).numpy() for x in "qkv")
    for h in (0, 4, 8):
        g = h // 3  # 9 query heads share 3 KV heads
        acts = np.concatenate([q[:, h], k[:, g], v[:, g]], axis=1).astype(np.float64)
        np.testing.assert_allclose(ours[h], _seed_cosine(acts, centre=False), atol=1e-5)


def test_blocks_match_the_seeds_mask_extraction(smol_study):
    acts = smol_study.matrix("target")
    sim = neuron_similarity(acts, "cosine")
    labels = smol_study.target.labels()
    # the seed's mask: 1/2/3 per matrix, triu of the outer product, select by product value
    vector_mask = np.concatenate([np.full(576, 1), np.full(192, 2), np.full(192, 3)])
    matrix_mask = np.triu(vector_mask[:, None] @ vector_mask[None, :], 1)
    product = {"QQ": 1, "KK": 4, "VV": 9, "QK": 2, "QV": 3, "KV": 6}
    blocks = block_values(sim, labels)
    for block in BLOCKS:
        np.testing.assert_array_equal(blocks[block].numpy(), sim.numpy()[matrix_mask == product[block]],
                                      err_msg=f"block {block}")
    n = sim.shape[0]
    assert blocks["all"].numel() == n * (n - 1) // 2


def test_histograms_equal_numpy_histograms(smol_study):
    sim = neuron_similarity(smol_study.matrix("neighbour"), "cosine")
    values = block_values(sim, smol_study.target.labels())
    edges = np.linspace(-1, 1, 101)
    for block in ("QQ", "KV"):
        frame = histogram_frame(values[block], bins=100)
        counts, _ = np.histogram(values[block].numpy(), bins=edges)
        density, _ = np.histogram(values[block].numpy(), bins=edges, density=True)
        np.testing.assert_array_equal(frame["count"].to_numpy(), counts)
        np.testing.assert_allclose(frame["density"].to_numpy(), density, rtol=1e-10)
    study_rows = smol_study.histograms.query("condition == 'neighbour' and block == 'KV'")
    np.testing.assert_array_equal(study_rows["count"].to_numpy(), np.histogram(values["KV"].numpy(), bins=edges)[0])


def test_shuffled_baseline_is_a_seeded_permutation(smol_study):
    acts = smol_study.matrix("target")
    a = shuffle_entries(acts, seed=0)
    assert torch.equal(a, shuffle_entries(acts, seed=0))
    assert not torch.equal(a, shuffle_entries(acts, seed=1))
    assert torch.equal(torch.sort(a.flatten()).values, torch.sort(acts.flatten()).values)
    shuffled = smol_study.histograms.query("condition == 'shuffled'")
    expected = neuron_similarity(a, "cosine")
    n = expected.shape[0]
    upper = expected[torch.triu_indices(n, n, 1).unbind()].numpy()
    np.testing.assert_array_equal(shuffled["count"].to_numpy(), np.histogram(upper, bins=np.linspace(-1, 1, 101))[0])


def test_tidy_histogram_frame_layout(smol_study):
    frame = smol_study.histograms
    assert set(frame["condition"]) == {"target", "neighbour", "shuffled"}
    assert set(frame.query("condition != 'shuffled'")["block"]) == set(BLOCKS)
    widths = frame["bin_right"] - frame["bin_left"]
    integral = (frame["density"] * widths).groupby([frame["condition"], frame["block"]]).sum()
    np.testing.assert_allclose(integral.to_numpy(), 1.0, atol=1e-9)


def test_gemma_study_is_gqa_aware_per_head(gemma):
    study = qkv_similarity_study(gemma, SENTENCES[:12], " her", layer=3, per_head=True, bins=50)
    assert study.target.q.shape == (12, 4, 256) and study.target.k.shape == (12, 1, 256)
    assert study.matrix().shape == (4, 12, 768)
    assert set(study.histograms["head"]) == {0, 1, 2, 3}
    expected = _seed_cosine(study.matrix()[2].numpy().astype(np.float64), centre=False)
    np.testing.assert_allclose(neuron_similarity(study.matrix()[2]).numpy(), expected, atol=1e-5)
    concatenated = study.target.concatenated()
    assert concatenated.shape == (12, 4 * 256 + 256 + 256)
    frame = similarity_histograms(concatenated, study.target.labels(), kind="correlation", bins=20)
    assert frame.groupby("block")["count"].sum()["QK"] == 1024 * 256


def test_bad_study_inputs(smollm2):
    with pytest.raises(ValueError, match=r"does not occur in prompt\(s\) \[1\]"):
        qkv_similarity_study(smollm2, ["I saw her.", "No pronoun.", "Call her."], " her", layer=2)
    with pytest.raises(ValueError, match="layer 40 is out of range"):
        qkv_similarity_study(smollm2, SENTENCES[:3], " her", layer=40)
    with pytest.raises(ValueError, match="kind"):
        neuron_similarity(torch.ones(3, 4), "spearman")
    with pytest.raises(ValueError, match="at least 2 samples"):
        neuron_similarity(torch.ones(1, 4))
    with pytest.raises(ValueError, match="neighbour_offset"):
        qkv_similarity_study(smollm2, SENTENCES[:3], " her", layer=2, neighbour_offset=0)


def test_qkv_similarity_study_threads_prepend_bos(smollm2):
    """``prepend_bos`` reaches the tokenizer: with and without BOS the rows are TL's projections on
    ``to_tokens(sentence, prepend_bos=...)`` at the first " her"."""
    her = smollm2.tokenizer.encode(" her", add_special_tokens=False)[0]
    sentences = SENTENCES[:3]
    for bos in (False, True):
        study = qkv_similarity_study(smollm2, sentences, " her", layer=2, prepend_bos=bos)
        for i, sentence in enumerate(sentences):
            tokens = smollm2.to_tokens(sentence, prepend_bos=bos)
            assert (tokens[0, 0].item() == smollm2.tokenizer.bos_token_id) == bos
            _, cache = smollm2.run_with_cache(tokens, names_filter="blocks.2.attn.hook_q", stop_at_layer=3)
            idx = tokens[0].tolist().index(her)
            torch.testing.assert_close(study.target.q[i], cache["blocks.2.attn.hook_q"][0, idx], atol=2e-5, rtol=1e-4)


def test_seed_comparable_run_uses_correlation_for_data_and_baseline_alike(smollm2):
    """Seed 002's histograms are correlations (its correlation cell overwrites the cosine matrices) and
    it ran without BOS. ``kind="correlation", prepend_bos=False`` gives, for target, neighbour *and*
    the shuffled baseline, histograms of np.corrcoef on TL's hook_q/k/v at " her" of BOS-free tokens."""
    study = qkv_similarity_study(smollm2, SENTENCES, " her", layer=6, kind="correlation", prepend_bos=False, seed=0)
    assert study.kind == "correlation"
    her = smollm2.tokenizer.encode(" her", add_special_tokens=False)[0]
    rows = {"target": [], "neighbour": []}
    for sentence in SENTENCES:
        tokens = smollm2.to_tokens(sentence, prepend_bos=False)
        _, cache = smollm2.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.6.attn.hook_"),
                                          stop_at_layer=7)
        idx = tokens[0].tolist().index(her)
        flat = [cache[f"blocks.6.attn.hook_{k}"][0].flatten(1).numpy().astype(np.float64) for k in "qkv"]
        rows["target"].append(np.concatenate([f[idx] for f in flat]))
        rows["neighbour"].append(np.concatenate([f[idx - 1] for f in flat]))
    edges = np.linspace(-1, 1, 101)
    n = len(rows["target"][0])
    upper = np.triu_indices(n, 1)
    labels = study.target.labels()
    qq = (labels[upper[0]] == "Q") & (labels[upper[1]] == "Q")
    for condition in ("target", "neighbour"):
        acts = study.matrix(condition).numpy().astype(np.float64)
        # the rows are TL's projections on BOS-free single-sentence runs (batched: float32 round-off only)
        np.testing.assert_allclose(acts, np.stack(rows[condition]), atol=2e-4, rtol=1e-4)
        corr = np.corrcoef(acts, rowvar=False)
        got = study.histograms.query(f"condition == '{condition}' and block == 'QQ'")["count"].to_numpy()
        expected = np.histogram(corr[upper][qq], bins=edges)[0]
        assert got.sum() == expected.sum() == qq.sum()
        assert np.abs(got - expected).sum() <= 2, condition  # float32 vs float64 at a bin edge at most
    shuffled = shuffle_entries(study.matrix("target"), seed=0).numpy().astype(np.float64)
    corr = np.corrcoef(shuffled, rowvar=False)
    got = study.histograms.query("condition == 'shuffled'")["count"].to_numpy()
    np.testing.assert_array_equal(got, np.histogram(corr[upper], bins=edges)[0])
    # and the correlation baseline is not the cosine one the notebook drew
    cosine = _seed_cosine(shuffled, centre=False)
    assert not np.array_equal(got, np.histogram(cosine[upper], bins=edges)[0])
