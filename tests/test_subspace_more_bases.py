"""The candidate bases added to complete the notebook's list, each against a plain numpy/torch build of
its definition, and the extra captures they need against TransformerLens hooks of unpadded runs.

Random tensors use ``torch.Generator().manual_seed(<literal>)``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.subspace.activation_library import ExtraCaptures, activation_bases, extra_captures
from interp.subspace.captures import ProbeActivations
from interp.subspace.probes import CRITICAL_SYSTEM, SYCOPHANTIC_SYSTEM, chat_texts, probe_prompts
from interp.subspace.weight_library import weight_bases

K = 4
K_BROAD = 64


def _proj_dist(a: np.ndarray, b: np.ndarray) -> float:
    """‖P_A − P_B‖_F / √(2k): 0 for equal spans, 1 for orthogonal ones."""
    pa, pb = a @ a.T, b @ b.T
    return float(np.linalg.norm(pa - pb) / np.sqrt(2 * max(a.shape[1], b.shape[1])))


def _top(g: np.ndarray, k: int) -> np.ndarray:
    vals, vecs = np.linalg.eigh(g)
    return vecs[:, ::-1][:, :k]


def _orth(m: np.ndarray) -> np.ndarray:
    u, s, _ = np.linalg.svd(m, full_matrices=False)
    return u[:, s > 1e-6 * s[0]]


def _pca(x: np.ndarray, k: int, center: bool = True) -> np.ndarray:
    """Top-k right singular vectors of the (centred) samples ``[n, d]``, as ``[d, k]``."""
    if center:
        x = x - x.mean(0)
    _, s, vh = np.linalg.svd(x, full_matrices=False)
    keep = min(k, int((s > 1e-4 * s[0]).sum()))
    return vh[:keep].T


# ------------------------------------------------------------------ weight-derived


def _layer_mats(model, layer: int) -> dict[str, np.ndarray]:  # noqa: ANN001
    """Residual views [d, cols] of one layer's (processed: norm weights folded in) weights, in numpy."""
    blk = model.blocks[layer]

    def heads(w: torch.Tensor) -> np.ndarray:  # [head, d, d_head] -> [d, head·d_head]
        w = w.detach().double().numpy()
        return np.concatenate(list(w), axis=1)

    w_o = blk.attn.W_O.detach().double().numpy()  # [head, d_head, d]
    return {
        "write": np.concatenate([np.concatenate(list(w_o), axis=0).T, blk.mlp.W_out.detach().double().numpy().T], 1),
        "q": heads(blk.attn.W_Q), "k": heads(blk.attn._W_K), "v": heads(blk.attn._W_V),
        "in": blk.mlp.W_in.detach().double().numpy(), "gate": blk.mlp.W_gate.detach().double().numpy(),
    }


@pytest.fixture(scope="module")
def smollm2_weights(smollm2):
    mats = [_layer_mats(smollm2, layer) for layer in range(smollm2.cfg.n_layers)]
    w_u = smollm2.W_U.detach().double().numpy()
    lm_gram = w_u @ w_u.T
    read_gram = [sum(m[key] @ m[key].T for key in ("q", "k", "v", "in", "gate")) for m in mats]
    return {"mats": mats, "lm_gram": lm_gram, "read_gram": read_gram}


def test_weight_bases_of_the_notebook_match_numpy_builds(smollm2, smollm2_weights):
    layers = [4, 9]
    names = ["global_write_not_global_read", "causally_isolated", "input_super_not_lm_read"]
    built = {b.name: b for b in weight_bases(smollm2, layers, K, k_broad=K_BROAD, include=names)}
    mats, lm_gram, read_gram = smollm2_weights["mats"], smollm2_weights["lm_gram"], smollm2_weights["read_gram"]
    d = lm_gram.shape[0]
    lm_broad = _top(lm_gram, K_BROAD)
    global_broad = _top(sum(read_gram) + lm_gram, K_BROAD)
    p_global = np.eye(d) - global_broad @ global_broad.T
    write_all = sum(m["write"] @ m["write"].T for m in mats)  # Σ_l W_l W_lᵀ: the Gram of all layers' writes
    expected_global = _top(p_global @ write_all @ p_global, K)
    for layer in layers:
        m = mats[layer]
        input_super = _top(read_gram[layer], K)
        kv_super = _top(m["k"] @ m["k"].T + m["v"] @ m["v"].T, K)
        forbid = _orth(np.concatenate([input_super, kv_super, lm_broad], axis=1))
        p = np.eye(d) - forbid @ forbid.T
        expected = {
            "global_write_not_global_read": expected_global,
            "causally_isolated": np.linalg.svd(p @ m["write"], full_matrices=False)[0][:, :K],
            "input_super_not_lm_read": _orth((np.eye(d) - lm_broad @ lm_broad.T) @ input_super)[:, :K],
        }
        for name, want in expected.items():
            dist = _proj_dist(built[name].at(layer).double().numpy(), want)
            assert dist < 1e-3, f"{name} layer {layer}: distance {dist:.2e}"
    assert built["global_write_not_global_read"].axis_kind == "write"
    assert built["causally_isolated"].axis_kind == "write"
    assert built["input_super_not_lm_read"].axis_kind == "read"


# ------------------------------------------------------------------ activation-derived (synthetic captures)


@pytest.fixture(scope="module")
def synthetic():
    """Seeded random captures with the shapes ProbeActivations and ExtraCaptures hold."""
    gen = torch.Generator().manual_seed(41)
    n_layers, n, t, d, d_mlp, all_layers = 2, 6, 5, 24, 40, 7

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    attn = torch.rand(2, n_layers, n, t, generator=gen)
    acts = ProbeActivations(
        layers=(3, 4), clean=r(n_layers, n, d), clean_pre=r(n_layers, n, d), mlp_out=r(n_layers, n, d),
        gate_mean=r(n_layers, d_mlp).abs(), positive=r(n_layers, n, d), negative=r(n_layers, n, d),
        positive_tokens=r(n_layers, n, t, d), negative_tokens=r(n_layers, n, t, d),
        positive_attn=attn[0], negative_attn=attn[1],
    )
    extra = ExtraCaptures(
        clean_all=r(all_layers, n, d), positive_mlp_in=r(n_layers, n, d), negative_mlp_in=r(n_layers, n, d),
        positive_up=r(n_layers, n, d_mlp), negative_up=r(n_layers, n, d_mlp),
    )
    return acts, extra


def test_activation_bases_of_the_notebook_match_numpy_builds(synthetic):
    acts, extra = synthetic
    names = ["global_persona_resid_pca", "attn_min_x_diffnorm_taskdiff", "suppressed", "amplified", "added_features",
             "up_proj_input_contrast"]
    built = {b.name: b for b in activation_bases(acts, K, include=names, extra=extra)}
    assert list(built) == names
    # the notebook's magnitude features, on [prompt, layer, d] magnitudes of the clean captures at every layer
    mag = np.abs(extra.clean_all.double().numpy()).transpose(1, 0, 2)
    step = mag[:, 1:] - mag[:, :-1]
    same_everywhere = {
        "suppressed": _pca(np.minimum(np.maximum(step, 0).sum(1), np.maximum(-step, 0).sum(1)), K),
        "amplified": _pca(np.maximum(mag[:, -1] - mag[:, 0], 0), K),
        "added_features": _pca(np.maximum(step, 0).sum(1), K),
        "global_persona_resid_pca": _pca(np.concatenate([acts.positive.double().numpy().reshape(-1, 24),
                                                         acts.negative.double().numpy().reshape(-1, 24)]), K),
    }
    for j, layer in enumerate(acts.layers):
        for name, want in same_everywhere.items():
            assert _proj_dist(built[name].at(layer).double().numpy(), want) < 1e-4, f"{name} layer {layer}"
        diff = (acts.positive_tokens[j] - acts.negative_tokens[j]).double().numpy()  # [n, t, d]
        norm = np.linalg.norm(diff, axis=-1)
        weight = np.minimum(acts.positive_attn[j].double().numpy(), acts.negative_attn[j].double().numpy())
        weight = weight * norm / (norm.sum() / (norm > 0).sum())
        samples = (diff * np.sqrt(weight)[..., None]).reshape(-1, diff.shape[-1])
        want = _pca(samples, K, center=False)
        assert _proj_dist(built["attn_min_x_diffnorm_taskdiff"].at(layer).double().numpy(), want) < 1e-4
        up_in = (extra.positive_mlp_in[j] - extra.negative_mlp_in[j]).double().numpy()
        assert _proj_dist(built["up_proj_input_contrast"].at(layer).double().numpy(), _pca(up_in, K, center=False)) < 1e-4


def test_up_proj_output_written_contrast_maps_the_up_outputs_back_through_w_out(smollm2):
    gen = torch.Generator().manual_seed(42)
    layers, n, d, d_mlp = (3, 4), 6, smollm2.cfg.d_model, smollm2.cfg.d_mlp
    zeros = torch.zeros(2, n, d)
    acts = ProbeActivations(layers=layers, clean=zeros + 1, clean_pre=zeros, mlp_out=zeros, gate_mean=torch.zeros(2, d_mlp),
                            positive=zeros, negative=zeros, positive_tokens=zeros[:, :, None],
                            negative_tokens=zeros[:, :, None], positive_attn=zeros[..., :1], negative_attn=zeros[..., :1])
    up = torch.randn(2, 2, n, d_mlp, generator=gen)
    extra = ExtraCaptures(positive_mlp_in=zeros, negative_mlp_in=zeros, positive_up=up[0], negative_up=up[1])
    basis = activation_bases(acts, K, model=smollm2, include=["up_proj_output_written_contrast"], extra=extra)[0]
    for j, layer in enumerate(layers):
        w_down = smollm2.blocks[layer].mlp.W_out.detach().double().numpy()  # [d_mlp, d]: HF down_proj.weight.T
        written = (up[0, j] - up[1, j]).double().numpy() @ w_down
        assert _proj_dist(basis.at(layer).double().numpy(), _pca(written, K, center=False)) < 1e-4
    with pytest.raises(ValueError, match="need inputs that were not passed"):
        activation_bases(acts, K, include=["up_proj_output_written_contrast"], extra=extra)  # no model
    with pytest.raises(ValueError, match="need inputs that were not passed"):
        activation_bases(acts, K, model=smollm2, include=["suppressed"])  # no clean_all


# ------------------------------------------------------------------ the captures


@pytest.mark.parametrize("model_name", ["smollm2", "smollm2_raw"])
def test_extra_captures_match_unpadded_single_prompt_hooks(model_name, request):
    """x̂ is TL's ln2.hook_normalized (the processed model folds ln2's weight into W_in, the raw one
    applies it in ln2: both give the same x̂), the up output is mlp.hook_pre_linear, and clean_all is
    resid_post at every layer, each at the last token of an unpadded single-prompt run."""
    model = request.getfixturevalue(model_name)
    prompts = probe_prompts()[:3]
    layers = [2, 5]
    extra = extra_captures(model, prompts, layers, positive_system=SYCOPHANTIC_SYSTEM, negative_system=CRITICAL_SYSTEM,
                           chat_template=True)
    for i in (0, 2):
        text = chat_texts(model.tokenizer, [prompts[i]], SYCOPHANTIC_SYSTEM)[0]
        _, cache = model.run_with_cache(model.to_tokens(text, prepend_bos=False), stop_at_layer=6)
        for j, layer in enumerate(layers):
            torch.testing.assert_close(extra.positive_mlp_in[j, i], cache[f"blocks.{layer}.ln2.hook_normalized"][0, -1],
                                       rtol=1e-3, atol=1e-3)
            torch.testing.assert_close(extra.positive_up[j, i], cache[f"blocks.{layer}.mlp.hook_pre_linear"][0, -1],
                                       rtol=1e-3, atol=1e-3)
        clean = chat_texts(model.tokenizer, [prompts[i]])[0]
        _, cache = model.run_with_cache(model.to_tokens(clean, prepend_bos=False))
        for layer in (0, 7, model.cfg.n_layers - 1):
            torch.testing.assert_close(extra.clean_all[layer, i], cache[f"blocks.{layer}.hook_resid_post"][0, -1],
                                       rtol=1e-3, atol=1e-3)
    raw = extra_captures(model, prompts, layers, positive_system="a", negative_system="b", needs=["clean_all"],
                         chat_template=False)
    assert raw.positive_mlp_in is None
    _, cache = model.run_with_cache(model.to_tokens(prompts[1]), names_filter="blocks.3.hook_resid_post",
                                    stop_at_layer=4)
    torch.testing.assert_close(raw.clean_all[3, 1], cache["blocks.3.hook_resid_post"][0, -1], rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="needs: unknown captures"):
        extra_captures(model, prompts, layers, positive_system="a", negative_system="b", needs=["everything"])


def test_probe_activations_with_needs_equal_the_separate_captures(smollm2):
    """probe_activations(needs=...) captures the ExtraCaptures in its own three passes: every field equals
    probe_activations without needs and extra_captures run on their own (each tested against unpadded
    single-prompt hooks), and activation_bases reads them from acts.extra."""
    from interp.subspace.captures import CAPTURES, probe_activations

    prompts, layers = probe_prompts()[:3], [2, 5]
    systems = {"positive_system": SYCOPHANTIC_SYSTEM, "negative_system": CRITICAL_SYSTEM}
    shared = probe_activations(smollm2, prompts, layers, **systems, needs=CAPTURES)
    alone = probe_activations(smollm2, prompts, layers, **systems)
    extra = extra_captures(smollm2, prompts, layers, **systems)
    assert alone.extra.clean_all is None and alone.extra.positive_up is None
    for name in ("clean", "clean_pre", "mlp_out", "gate_mean", "positive", "negative", "positive_tokens",
                 "negative_tokens", "positive_attn", "negative_attn"):
        torch.testing.assert_close(getattr(shared, name), getattr(alone, name), rtol=1e-6, atol=1e-6, msg=name)
    for name in ("clean_all", "positive_mlp_in", "negative_mlp_in", "positive_up", "negative_up"):
        torch.testing.assert_close(getattr(shared.extra, name), getattr(extra, name), rtol=1e-6, atol=1e-6, msg=name)
    only = probe_activations(smollm2, prompts, layers, **systems, needs=["persona_mlp"])
    assert only.extra.clean_all is None and only.extra.negative_up is not None
    names = ["suppressed", "up_proj_input_contrast"]
    from_acts = activation_bases(shared, K, model=smollm2, include=names)
    given = activation_bases(alone, K, model=smollm2, include=names, extra=extra)
    for a, b in zip(from_acts, given, strict=True):
        torch.testing.assert_close(a.vectors, b.vectors, rtol=1e-5, atol=1e-5, msg=a.name)
    with pytest.raises(ValueError, match="needs: unknown captures"):
        probe_activations(smollm2, prompts, layers, **systems, needs=["everything"])
    with pytest.raises(TypeError, match="needs: expected a collection"):
        probe_activations(smollm2, prompts, layers, **systems, needs="clean_all")


def test_every_library_definition_is_filled_in():
    """Each registry record names its family, axis kind and a definition whose {fields} all format."""
    from interp.subspace.activation_library import ACTIVATION_BASES
    from interp.subspace.weight_library import WEIGHT_BASES

    assert not set(WEIGHT_BASES) & set(ACTIVATION_BASES)
    for name, recipe in [*WEIGHT_BASES.items(), *ACTIVATION_BASES.items()]:
        assert recipe.name == name and recipe.family and recipe.axis_kind in ("write", "read", "mixed")
        text = recipe.definition.format(k=8, k_broad=64)
        assert len(text) > 20 and "{" not in text, name
