"""Streamed pairs equal loaded pairs: a tiny random Gemma 2 (softcaps, post-norms, local/global layers,
query_pre_attn_scalar ≠ head_dim) saved as small safetensors shards, base and perturbed tuned.

The in-memory reference is ``interp.load_model(folder)`` (the whole checkpoint converted and processed
at once); it is itself checked against transformers' own forward pass.
"""

from __future__ import annotations

import copy
import json
import shutil

import pandas as pd
import pytest
import torch
from _circuit_checks import seeded_directions

from interp import ModelPair
from interp.circuits import compare_mlp_pass, weight_circuits
from interp.directions import DirectionSet
from interp.loading import load_model
from interp.personas import persona_directions, role_vectors
from interp.streaming import (
    LOCAL_WEIGHT_BASES,
    CheckpointError,
    StreamedPair,
    changed_layers,
    open_checkpoint,
    open_streamed,
    should_stream,
    streamed_compare_mlp_pass,
    streamed_delta,
    streamed_delta_diagnostics,
    streamed_delta_norms,
    streamed_persona_directions,
    streamed_role_vectors,
    streamed_run_with_cache,
    streamed_weight_bases,
    streamed_weight_circuits,
    streamed_weight_targets,
)
from interp.subspace.weight_diff import delta_diagnostics, delta_norms

N_LAYERS = 4


def _tokenizer():
    from transformers import AutoTokenizer

    from interp.loading import OFFLINE_MODELS

    path = OFFLINE_MODELS["smollm2-135m-instruct"].locate()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _gemma2(vocab: int, n_layers: int = N_LAYERS, seed: int = 0):
    import transformers

    cfg = transformers.Gemma2Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
        sliding_window=5, attn_logit_softcapping=20.0, final_logit_softcapping=30.0,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = transformers.Gemma2ForCausalLM(cfg).eval()
    for name, p in model.named_parameters():
        if "norm" in name:  # random gains, so a norm left out or misplaced shows
            p.data = torch.randn_like(p) * 0.3
        else:
            p.data = torch.randn_like(p) * 0.08
    return model


def _perturbed(model, seed: int):
    tuned = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    for p in tuned.parameters():
        p.data = p.data + 0.02 * torch.randn(p.shape, generator=g)
    return tuned


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(base folder, tuned folder, base hf model, tuned hf model), shards of ~60 KB (a layer is ~100 KB)."""
    tokenizer = _tokenizer()
    base = _gemma2(len(tokenizer))
    tuned = _perturbed(base, 1)
    root = tmp_path_factory.mktemp("tiny2stream")
    out = []
    for label, model in (("base", base), ("tuned", tuned)):
        folder = root / label
        model.save_pretrained(folder, max_shard_size="60KB")
        tokenizer.save_pretrained(folder)
        out.append(folder)
    return out[0], out[1], base, tuned


def _in_memory(folder, processed: bool):
    """The in-memory path: the whole checkpoint loaded by interp.load_model."""
    return load_model(folder, processed=processed, device="cpu")


@pytest.fixture(scope="module")
def loaded(folders):
    base_dir, tuned_dir, _, _ = folders
    return {
        processed: (_in_memory(base_dir, processed), _in_memory(tuned_dir, processed))
        for processed in (False, True)
    }


@pytest.fixture(scope="module")
def directions():
    vectors = seeded_directions(8, 64, seed=3)
    return DirectionSet(("a", "b", "c", "d", "Random1", "Random2", "Random3", "Random4"), vectors)


def test_reference_reproduces_transformers_forward(folders, loaded):
    """The configuration read from config.json (softcaps, scale 1/sqrt(24), local window) is Gemma 2's:
    the in-memory reference's log-probs equal transformers' own forward pass."""
    _, _, base_hf, _ = folders
    tokens = torch.tensor([[2, 17, 300, 41, 9, 1000, 77, 5, 12, 13, 14, 15]])
    theirs = base_hf(tokens).logits.log_softmax(-1)
    for processed in (False, True):
        ours = loaded[processed][0](tokens).log_softmax(-1)
        diff = (ours - theirs).abs().max().item()
        assert diff < 1e-4, f"processed={processed}: TL reference vs transformers differ by {diff:.2e}"


def test_open_checkpoint_reads_headers_only(folders):
    base_dir = folders[0]
    ckpt = open_checkpoint(base_dir)
    index = json.loads((base_dir / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(ckpt.tensors) == set(index)
    assert set(ckpt.layer_names(2)) == {n for n in index if n.startswith("model.layers.2.")}
    thread = ckpt.prefetch(ckpt.layer_names(2))  # into the page cache, in the background: nothing is counted
    assert thread is not None
    thread.join(timeout=60)
    assert not thread.is_alive() and ckpt.bytes_read == 0
    assert ckpt.prefetch(["no.such.tensor"]) is None
    # layers span shard boundaries (the test's premise)
    spanning = [layer for layer in range(N_LAYERS)
                if len({index[n] for n in index if n.startswith(f"model.layers.{layer}.")}) > 1]
    assert spanning, "no layer spans two shards; shrink max_shard_size"


@pytest.mark.parametrize("processed", [False, True])
@pytest.mark.parametrize("per_head", [False, True])
def test_streamed_weight_circuits_equal_in_memory(folders, loaded, directions, processed, per_head):
    pair = StreamedPair.open(folders[0], folders[1], processed=processed)
    streamed = streamed_weight_circuits(pair, directions, per_head=per_head, progress=False)
    expected = weight_circuits(loaded[processed], directions, per_head=per_head)
    pd.testing.assert_frame_equal(streamed, expected, check_exact=False, rtol=1e-5, atol=1e-5)


def test_streamed_circuits_read_only_attention_tensors(folders, directions):
    """Bytes read = the attention-side tensors of the requested layers of both models, nothing else."""
    pair = StreamedPair.open(folders[0], folders[1])
    streamed_weight_circuits(pair, directions, layers=[1, 3], progress=False)
    expected = 0
    for folder in folders[:2]:
        from safetensors import safe_open

        index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
        for name, shard in index.items():
            if any(name.startswith(f"model.layers.{layer}.") for layer in (1, 3)) and ".mlp." not in name:
                with safe_open(str(folder / shard), "pt") as f:
                    t = f.get_tensor(name)
                expected += t.numel() * t.element_size()
    assert pair.stats is not None
    assert pair.stats.bytes_read == expected
    assert pair.stats.layers == 4 and pair.stats.peak_rss_bytes > 0


def _stored_bytes(folder, keep) -> int:
    from safetensors import safe_open

    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    total = 0
    for name, shard in index.items():
        if keep(name):
            with safe_open(str(folder / shard), "pt") as f:
                t = f.get_tensor(name)
            total += t.numel() * t.element_size()
    return total


def test_streamed_mlp_pass_reads_no_attention_tensor(folders, directions):
    pair = StreamedPair.open(folders[0], folders[1])
    streamed_compare_mlp_pass(pair, directions, layers=[1], neuron_block=None, progress=False)
    expected = sum(_stored_bytes(f, lambda n: n.startswith("model.layers.1.") and ".self_attn." not in n)
                   for f in folders[:2])
    assert pair.stats.bytes_read == expected


@pytest.mark.parametrize("processed", [False, True])
@pytest.mark.parametrize("neuron_block", [None, 40, "auto"])
def test_streamed_mlp_pass_equals_in_memory(folders, loaded, directions, processed, neuron_block):
    pair = StreamedPair.open(folders[0], folders[1], processed=processed)
    streamed = streamed_compare_mlp_pass(pair, directions, layers=[0, 2, 3], neuron_block=neuron_block, progress=False)
    expected = compare_mlp_pass(loaded[processed], directions, layers=[0, 2, 3])
    for which in ("base", "tuned"):
        got, want = getattr(streamed, which), getattr(expected, which)
        err = ((got - want).norm() / want.norm()).item()
        assert err < 1e-5, f"{which}: streamed MLP pass differs from in-memory by {err:.2e} (relative)"
    pd.testing.assert_frame_equal(streamed.table(), expected.table(), check_exact=False, rtol=1e-4, atol=1e-6)


def test_streamed_forward_hooks_equal_run_with_cache(folders, loaded):
    """Right-padded batch: every real position of every requested hook equals run_with_cache."""
    model = open_streamed(folders[0], processed=True)
    reference = loaded[True][0]
    tokens = torch.tensor([[5, 900, 31, 7, 7, 64, 2, 11, 3], [8, 8, 1200, 4, 0, 0, 0, 0, 0]])
    mask = torch.tensor([[1] * 9, [1] * 4 + [0] * 5])
    names = ["hook_embed", "blocks.0.hook_resid_post", "blocks.2.attn.hook_attn_scores", "blocks.2.hook_mlp_out",
             "blocks.3.hook_resid_post"]
    streamed = streamed_run_with_cache(model, tokens, names, attention_mask=mask)
    for row, length in ((0, 9), (1, 4)):
        _, cache = reference.run_with_cache(tokens[row : row + 1, :length])
        for name in names:
            got = streamed[name][row : row + 1]
            want = cache[name]
            if "attn_scores" in name:  # masked entries are -inf (or the mask value) in both
                got = got[..., :length, :length]
                finite = torch.isfinite(want) & (want > -1e4)
                assert torch.equal(finite, torch.isfinite(got) & (got > -1e4)), f"{name}: masks differ"
                got, want = got[finite], want[finite]
            else:
                got = got[:, :length]
            err = ((got - want).norm() / want.norm()).item()
            assert err < 1e-5, f"{name} row {row}: streamed vs run_with_cache differ by {err:.2e} (relative)"


@pytest.mark.parametrize("processed", [False, True])
def test_streamed_persona_directions_equal_in_memory(folders, loaded, processed):
    roles = ["pirate", "poet", "scientist", "chef"]
    questions = ["What is the best way to spend a weekend?", "How do plants grow?"]
    model = open_streamed(folders[0], processed=processed)
    reference = loaded[processed][0]
    kwargs = dict(layer=2, n_components=2, roles=roles, questions=questions, traits=["curious"], batch_size=3)
    got = streamed_persona_directions(model, progress=False, **kwargs)
    want = persona_directions(reference, **kwargs)
    for label, a, b in (("roles", got.roles, want.roles), ("traits", got.traits, want.traits)):
        assert a.names == b.names
        err = ((a.vectors - b.vectors).norm(dim=1) / b.vectors.norm(dim=1)).max().item()
        assert err < 1e-5, f"{label}: streamed vs in-memory vectors differ by {err:.2e} (relative)"
    cos = (got.pcs.vectors * want.pcs.vectors).sum(-1).abs()
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5), f"PCs differ: |cos| {cos.tolist()}"
    assert torch.allclose(got.explained_variance, want.explained_variance, rtol=1e-5, atol=1e-7)
    vectors = streamed_role_vectors(model, roles, questions, layer=1, position="mean", progress=False)
    expected = role_vectors(reference, roles, questions, layer=1, position="mean")
    err = ((vectors.vectors - expected.vectors).norm(dim=1) / expected.vectors.norm(dim=1)).max().item()
    assert err < 1e-5, f"mean-position role vectors differ by {err:.2e} (relative)"


@pytest.mark.parametrize("processed", [False, True])
def test_streamed_delta_table_equals_in_memory(folders, loaded, processed):
    """Every row of the in-memory table, the embedding and unembedding (read 5000 tokens at a time:
    Gemma 2's W_E is scaled by √d_model, its W_U is not) and, unprocessed, the final norm included."""
    pair = StreamedPair.open(folders[0], folders[1], processed=processed)
    streamed = streamed_delta_diagnostics(pair, neuron_block=40, vocab_block=5000, progress=False)
    expected = delta_diagnostics(ModelPair(*loaded[processed]))
    outside = {"embed.W_E", "unembed.W_U"} | ({"ln_final.w"} if not processed else set())
    assert {n for n in expected["name"] if not n.startswith("blocks.")} == outside
    assert list(streamed["name"]) == list(expected["name"])
    pd.testing.assert_frame_equal(streamed, expected, check_exact=False, rtol=1e-4, atol=1e-6)
    norms = streamed_delta_norms(pair, neuron_block=40, vocab_block=5000, progress=False)
    pd.testing.assert_frame_equal(norms, delta_norms(ModelPair(*loaded[processed])), check_exact=False,
                                  rtol=1e-5, atol=1e-8)
    blocks = streamed_delta_diagnostics(pair, global_tensors=False, progress=False)
    assert list(blocks["name"]) == [n for n in expected["name"] if n.startswith("blocks.")]
    assert (streamed_delta_norms(pair, layers=[1, 2], progress=False)["layer"] >= 1).all()
    one = streamed_delta(pair, 2, neuron_block=None)
    reference = ModelPair(*loaded[processed]).delta()
    for name, value in one.items():
        assert torch.allclose(value, reference[name], atol=1e-6), name
    assert set(one) == {n for n in reference if n.startswith("blocks.2.")}


def test_unembedding_singular_values_equal_an_svd_in_float64(folders, loaded):
    """The streamed σ of ΔW_U (√ eigenvalues of the accumulated Gram) against a float64 SVD of the
    loaded models' ΔW_U; the norms against float64 sums."""
    from interp.streaming.vocab import global_deltas

    pair = StreamedPair.open(folders[0], folders[1], processed=True)
    by_name = {g.name: g for g in global_deltas(pair, singular=True, vocab_block=7000)}
    base, tuned = loaded[True]
    delta = (tuned.W_U - base.W_U).detach().double()
    torch.testing.assert_close(by_name["unembed.W_U"].singular, torch.linalg.svdvals(delta), rtol=1e-6, atol=1e-9)
    assert by_name["embed.W_E"].delta_sq == pytest.approx((tuned.W_E - base.W_E).double().pow(2).sum().item(), rel=1e-9)
    assert by_name["embed.W_E"].base_sq == pytest.approx(base.W_E.double().pow(2).sum().item(), rel=1e-9)
    assert not by_name["unembed.b_U"].changed and "unembed.b_U" not in ModelPair(base, tuned).delta()


def test_changed_layers_reads_stored_tensors(folders, tmp_path):
    """Only layer 2 of a copy is changed: the stored tensors say so before any conversion."""
    from safetensors.torch import load_file, save_file

    assert changed_layers(StreamedPair.open(folders[0], folders[1]), progress=False) == list(range(N_LAYERS))
    copy_dir = tmp_path / "copy"
    shutil.copytree(folders[0], copy_dir)
    index = json.loads((copy_dir / "model.safetensors.index.json").read_text())["weight_map"]
    shard = copy_dir / index["model.layers.2.mlp.up_proj.weight"]
    tensors = load_file(str(shard))
    tensors["model.layers.2.mlp.up_proj.weight"][0, 0] += 1.0
    save_file(tensors, str(shard), metadata={"format": "pt"})
    assert changed_layers(StreamedPair.open(folders[0], copy_dir), progress=False) == [2]


def test_should_stream_compares_loaded_size_with_available_memory(folders):
    from safetensors import safe_open

    total = 0
    for folder in folders[:2]:
        for shard in folder.glob("*.safetensors"):
            with safe_open(str(shard), "pt") as f:
                total += sum(f.get_tensor(k).numel() * 4 for k in f.keys())  # float32 bytes
    small = should_stream(folders[0], folders[1], available=total)  # needs 1.5 × the float32 weights
    assert small.stream and small.needed_bytes == int(1.5 * total) and "streaming it layer by layer" in small.reason
    assert not should_stream(folders[0], folders[1], available=10 * total).stream


def test_streamed_weight_side_subspace_scores_equal_in_memory(folders, loaded):
    """Layer-local weight bases, R_w targets and their scores energy(B, T) equal the in-memory ones."""
    from interp.subspace.scores import write_targets
    from interp.subspace.weight_library import post_norm_gains, weight_bases

    pair = StreamedPair.open(folders[0], folders[1], processed=True)
    layers = [1, 3]
    bases = streamed_weight_bases(pair.base, layers, k=4, include=LOCAL_WEIGHT_BASES, progress=False)
    expected = weight_bases(loaded[True][0], layers, k=4, include=LOCAL_WEIGHT_BASES)
    targets = streamed_weight_targets(pair, layers, neuron_block=40, progress=False)
    gains = post_norm_gains(loaded[True][0], layers)
    assert gains is not None  # Gemma 2: the post-norms scale ΔW into residual coordinates
    reference = write_targets(ModelPair(*loaded[True]).delta(), layers, gains=gains)
    assert set(targets) == set(reference) == {"attn.W_O", "mlp.W_out", "combined"}
    for kind in reference:
        got_t, want_t = targets[kind].dense(), reference[kind].dense()
        err = ((got_t - want_t).norm() / want_t.norm()).item()
        assert err < 1e-5, f"target {kind}: differs by {err:.2e} (relative)"
    for got, want in zip(bases, expected, strict=True):
        assert (got.name, got.layers, got.ranks) == (want.name, want.layers, want.ranks)
        p_got = got.vectors @ got.vectors.transpose(-1, -2)
        p_want = want.vectors @ want.vectors.transpose(-1, -2)
        assert (p_got - p_want).abs().max() < 1e-4, f"basis {got.name}: subspaces differ"
        for kind in reference:
            r_got = targets[kind].energy(got.vectors).sum(-1)
            r_want = reference[kind].energy(want.vectors).sum(-1)
            assert torch.allclose(r_got, r_want, rtol=1e-4, atol=1e-6), f"R_w of {got.name} on {kind}"


def _same_bases(got, want, tol=1e-4):
    """Same names, metadata, layers and ranks, and the same subspaces: projectors QQᵀ within ``tol``
    (eigenvector signs and order within a basis are arbitrary)."""
    assert [b.name for b in got] == [b.name for b in want]
    for g, w in zip(got, want, strict=True):
        assert (g.family, g.axis_kind, g.definition, g.layers, g.ranks) == (
            w.family, w.axis_kind, w.definition, w.layers, w.ranks), g.name
        p_got = g.vectors @ g.vectors.transpose(-1, -2)
        p_want = w.vectors @ w.vectors.transpose(-1, -2)
        err = (p_got - p_want).abs().max().item()
        assert err < tol, f"basis {g.name}: projectors differ by {err:.2e}"


@pytest.mark.parametrize("processed", [False, True])
def test_every_streamed_weight_basis_equals_in_memory(folders, loaded, processed):
    """By default every basis of weight_bases, the ones reading every layer or the unembedding included
    (global_*, write_not_*, lm_head_read, logits_null, causally_isolated, attention_sink's BOS row)."""
    from interp.subspace.weight_library import WEIGHT_BASES, weight_bases

    model = open_streamed(folders[0], processed=processed)
    layers = [1, 3]
    got = streamed_weight_bases(model, layers, k=4, k_broad=16, vocab_block=7000, progress=False)
    want = weight_bases(loaded[processed][0], layers, k=4, k_broad=16)
    assert [b.name for b in want] == list(WEIGHT_BASES)
    _same_bases(got, want)
    one = weight_bases(model, [2], k=4, k_broad=16, include=["logits_null", "write_not_downstream_read"])  # dispatch
    _same_bases(one, weight_bases(loaded[processed][0], [2], k=4, k_broad=16,
                                  include=["logits_null", "write_not_downstream_read"]))


def test_streamed_weight_bases_read_only_what_they_need(folders):
    """Layer-local bases and attention_sink convert the requested layers only; the unembedding's are
    read in blocks of vocabulary rows; sums over layers convert every layer once."""
    model = open_streamed(folders[0])
    n_blocks = -(-model.cfg_dict["d_vocab"] // 7000)
    for include, conversions in ((["write", "attention_sink"], 1), (["lm_head_read", "kv_super"], 1 + n_blocks),
                                 (["global_write"], N_LAYERS), (["global_read"], N_LAYERS + n_blocks)):
        before = model.conversions
        streamed_weight_bases(model, [2], k=4, k_broad=16, include=include, vocab_block=7000, progress=False)
        assert model.conversions - before == conversions, include
    with pytest.raises(ValueError, match="include: unknown weight bases"):
        streamed_weight_bases(model, [2], include=["no_such_basis"], progress=False)
    with pytest.raises(ValueError, match="vocab_block"):
        streamed_weight_bases(model, [2], include=["lm_head_read"], vocab_block=0, progress=False)


# ------------------------------------------------------------------------------------------- errors


def test_shard_missing_from_folder_is_named(folders, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folders[0], broken)
    index = json.loads((broken / "model.safetensors.index.json").read_text())["weight_map"]
    shard = index["model.layers.2.self_attn.q_proj.weight"]
    (broken / shard).unlink()
    with pytest.raises(CheckpointError, match=f"{shard}.*missing"):
        open_checkpoint(broken)


def test_tensor_missing_from_index_is_named(folders, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folders[0], broken)
    path = broken / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    del index["weight_map"]["model.layers.1.mlp.down_proj.weight"]
    path.write_text(json.dumps(index))
    model = open_streamed(broken)
    with pytest.raises(ValueError, match="model.layers.1.mlp.down_proj"):
        model.layer(1)


def test_truncated_shard_is_named(folders, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folders[0], broken)
    index = json.loads((broken / "model.safetensors.index.json").read_text())["weight_map"]
    shard = broken / index["model.layers.3.mlp.up_proj.weight"]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=f"{shard.name} is truncated"):
        open_checkpoint(broken)


def test_shard_with_a_malformed_header_is_named(folders, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folders[0], broken)
    index = json.loads((broken / "model.safetensors.index.json").read_text())["weight_map"]
    shard = broken / index["model.layers.3.mlp.up_proj.weight"]
    data = bytearray(shard.read_bytes())
    length = int.from_bytes(data[:8], "little")
    data[8 : 8 + length] = b"{" + b" " * (length - 1)  # same length, not JSON
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{shard.name} is unreadable"):
        open_checkpoint(broken)


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        open_checkpoint(tmp_path)


def test_pair_with_different_layer_counts_is_refused(folders, tmp_path):
    other = _gemma2(len(_tokenizer()), n_layers=3)
    other.save_pretrained(tmp_path / "three")
    with pytest.raises(ValueError, match=r"n_layers \(base 4, tuned 3\)"):
        StreamedPair.open(folders[0], tmp_path / "three")


def test_bad_arguments_are_named(folders, directions):
    pair = StreamedPair.open(folders[0], folders[1])
    with pytest.raises(ValueError, match="neuron_block"):
        streamed_compare_mlp_pass(pair, directions, neuron_block=0, progress=False)
    with pytest.raises(ValueError, match="layers"):
        streamed_weight_circuits(pair, directions, layers=[7], progress=False)
    with pytest.raises(ValueError, match="directions"):
        streamed_weight_circuits(pair, torch.randn(3, 5), progress=False)
    with pytest.raises(TypeError, match="model"):
        streamed_weight_circuits(object(), directions, progress=False)
    with pytest.raises(ValueError, match="names"):
        streamed_run_with_cache(pair.base, torch.tensor([[1, 2]]), ["blocks.9.hook_resid_post"])


def test_streamed_forward_of_the_embedding_alone_reads_no_block(folders, loaded):
    """Only hook_embed asked for: it equals run_with_cache's and no block is converted; a rotary model's
    hook_pos_embed is a clear error naming ``names``."""
    model = open_streamed(folders[0], processed=True)
    tokens = torch.tensor([[5, 900, 31, 7]])
    before = model.conversions
    got = streamed_run_with_cache(model, tokens, ["hook_embed"])
    _, cache = loaded[True][0].run_with_cache(tokens)
    torch.testing.assert_close(got["hook_embed"], cache["hook_embed"], rtol=1e-6, atol=1e-6)
    assert model.conversions - before <= 1, "only the embedding part is converted"
    with pytest.raises(ValueError, match="names: the model has no hook 'hook_pos_embed'"):
        streamed_run_with_cache(model, tokens, ["hook_pos_embed"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float8_e4m3fn])
def test_checkpoint_read_converts_in_one_pass_as_safetensors_reads(tmp_path, dtype):
    """``Checkpoint.read(..., dtype=)`` (a view of the memory map converted once; float8 through
    safetensors) equals safetensors' own tensor converted, whole and sliced by rows and columns."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from interp.streaming import open_checkpoint

    g = torch.Generator().manual_seed(3)
    values = {"model.layers.0.a": torch.randn(37, 53, generator=g).to(dtype), "model.b": torch.randn(5, generator=g).to(dtype)}
    save_file(values, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text("{}")
    ckpt = open_checkpoint(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as handle:
        reference = handle.get_tensor("model.layers.0.a").float()
    assert torch.equal(ckpt.read("model.layers.0.a", dtype=torch.float32), reference)
    assert torch.equal(ckpt.read("model.layers.0.a", rows=slice(3, 20), dtype=torch.float32), reference[3:20])
    assert torch.equal(ckpt.read("model.layers.0.a", cols=slice(10, 41), dtype=torch.float32), reference[:, 10:41])
    stored = ckpt.read("model.layers.0.a")
    assert stored.dtype == dtype and torch.equal(stored.float(), reference)
    width = torch.empty((), dtype=dtype).element_size()
    assert ckpt.bytes_read == width * (37 * 53 * 2 + 17 * 53 + 37 * 31)


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "GPT2LMHeadModel"])
def test_global_tensors_of_untied_and_layernorm_models_equal_in_memory(arch, tmp_path):
    """An untied unembedding (Llama: lm_head read in blocks of tokens, not the embedding) and GPT-2
    (LayerNorm: ln_final's bias folded into b_U, W_U and b_U centred over the vocabulary, W_E and the
    learned positions centred row by row): the delta tables equal the in-memory ones, and so does every
    weight basis the model defines (GPT-2's ungated MLP: no ``mlp_gate_read``, which is refused by name)."""
    from _tiny_checkpoints import build_model, save_checkpoint, smollm2_tokenizer

    from interp.subspace.weight_library import weight_bases

    tokenizer = smollm2_tokenizer()
    base = build_model(arch)
    folders = [save_checkpoint(base, tokenizer, tmp_path / "base"),
               save_checkpoint(_perturbed(base, 2), tokenizer, tmp_path / "tuned")]
    outside = {"LlamaForCausalLM": {"embed.W_E", "unembed.W_U"},
               "GPT2LMHeadModel": {"embed.W_E", "pos_embed.W_pos", "unembed.W_U", "unembed.b_U"}}[arch]
    for processed in (False, True):
        models = [load_model(folder, processed=processed, device="cpu") for folder in folders]
        pair = StreamedPair.open(*folders, processed=processed)
        expected = delta_diagnostics(ModelPair(*models))
        if processed:
            assert {n for n in expected["name"] if not n.startswith("blocks.")} == outside
        streamed = streamed_delta_diagnostics(pair, vocab_block=7000, progress=False)
        pd.testing.assert_frame_equal(streamed, expected, check_exact=False, rtol=1e-4, atol=1e-6)
        pd.testing.assert_frame_equal(streamed_delta_norms(pair, vocab_block=7000, progress=False),
                                      delta_norms(ModelPair(*models)), check_exact=False, rtol=1e-5, atol=1e-8)
        got = streamed_weight_bases(pair.base, [0, 1], k=4, k_broad=16, vocab_block=7000, progress=False)
        want = weight_bases(models[0], [0, 1], k=4, k_broad=16)
        assert ("mlp_gate_read" in [b.name for b in want]) == (arch == "LlamaForCausalLM")
        _same_bases(got, want)
    if arch == "GPT2LMHeadModel":
        with pytest.raises(ValueError, match="model: has no gated MLP"):
            weight_bases(models[0], [0], k=4, include=["mlp_gate_read"])
