"""The subspace sweep on a model pair: which residual subspaces explain what tuning changed?

>>> result = subspace_sweep(ModelPair.default())
>>> result.summary.head()        # write/mixed/ceiling bases ranked by joint = √(R_act · R_w_combined)
>>> result.read_side             # read-side bases, reported apart (their R_w is cross-space alignment)
>>> result.conclusion()          # the winner, its share of the weight ceiling, the top-5 overlap

Every candidate basis is scored at every tuned layer on (i) the activation label δ (last-token
resid_post at +α minus −α weight steering, or tuned minus base) on held-out *eval* prompts, and
(ii) the residual-write weight deltas ΔW_O, ΔW_out and their Frobenius-balanced combination (in
residual coordinates: a post-norm's gain is applied), and compared with the ΔW basis by principal
angles. Activation-derived bases and the activation ceiling are fit on the *fit* prompts only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import einops
import numpy as np
import pandas as pd
import torch
from transformer_lens.utilities import to_numpy

from interp._validate import as_layers
from interp.pair import ModelPair
from interp.progress import progress_bar
from interp.results import Result, ResultLayout
from interp.subspace.activation_library import ACTIVATION_BASES, activation_bases
from interp.subspace.basis import Basis, check_rank, definitions_table, random_basis
from interp.subspace.captures import CAPTURES, pair_label, probe_activations, steering_label
from interp.subspace.library import check_include, compound_bases
from interp.subspace.probes import (
    CRITICAL_SYSTEM,
    SYCOPHANTIC_SYSTEM,
    chat_texts,
    probe_prompts,
    split_fit_eval,
)
from interp.subspace.scores import (
    activation_ceiling,
    ceiling_energy,
    monte_carlo_null,
    null_std,
    principal_cosines,
    residual_label_target,
    specific_scores,
    weight_ceiling,
    write_targets,
    z_score,
)
from interp.subspace.targets import Target
from interp.subspace.weight_diff import as_delta, write_layers
from interp.subspace.weight_library import WEIGHT_BASES, default_weight_bases, post_norm_gains, weight_bases

NULLS = ("exact", "monte_carlo")
RANDOM_BASIS_SEED = 10_000  # the sweep's `random` control basis uses seed RANDOM_BASIS_SEED + seed
_SHORT = {"attn.W_O": "W_O", "mlp.W_out": "W_out", "combined": "combined"}


@dataclass(frozen=True, eq=False)
class SweepResult(Result):
    """The sweep's tables: ``per_layer`` (one row per basis × layer), ``summary`` (write/mixed/ceiling
    bases, mean over layers, ranked by ``joint``), ``read_side`` (read bases, same columns),
    ``definitions`` (one row per basis) and the config used."""

    result_layout: ClassVar[ResultLayout] = ResultLayout(
        headline="summary", tables=("per_layer", "summary", "read_side", "definitions"),
        metadata=("layers", "config"))

    per_layer: pd.DataFrame
    summary: pd.DataFrame
    read_side: pd.DataFrame
    definitions: pd.DataFrame
    layers: tuple[int, ...]
    config: Mapping[str, object] = field(default_factory=dict)

    def _hypotheses(self, read: bool) -> pd.DataFrame:
        """Summary rows of the candidate hypotheses: no ceilings, no random control; read side if ``read``."""
        table = pd.concat([self.summary, self.read_side], ignore_index=True) if read else self.summary
        table = table[~table["axis_kind"].isin(["ceiling"]) & (table["source"] != "null")]
        if table.empty:
            raise ValueError("result: the sweep scored no candidate hypothesis (include selected none), "
                             "so there is no winner")
        return table

    @property
    def winner(self) -> str:
        """The write/mixed hypothesis with the highest ``joint`` score."""
        return str(self._hypotheses(read=False).iloc[0]["basis"])

    def top(self, score: str = "mean_R_act", n: int = 5) -> list[str]:
        """The ``n`` hypotheses with the highest ``score``: all axis kinds for ``mean_R_act``, write/mixed
        for a weight score (a read-side R_w is cross-space alignment, not "explains ΔW")."""
        table = self._hypotheses(read=score == "mean_R_act")
        return list(table.sort_values(score, ascending=False, kind="stable")["basis"].head(n))

    @property
    def top5_overlap(self) -> list[str]:
        """Hypotheses in both the top 5 by mean R_act and the top 5 (write/mixed) by mean R_w_combined, sorted."""
        return sorted(set(self.top("mean_R_act")) & set(self.top("mean_R_w_combined")))

    def conclusion(self) -> list[str]:
        """The sweep's verdict in three lines: the joint winner against the weight ceiling, its
        per-tensor R_w, and the activation-vs-weight top-5 overlap."""
        w = self._hypotheses(read=False).iloc[0]
        lines = [
            f"Best joint write/mixed basis: {w['basis']} (R_act {w['mean_R_act']:.2f}, R_w_combined "
            f"{w['mean_R_w_combined']:.2f} = {w['pct_w_combined_ceiling_of_means']:.1f}% of the weight ceiling's "
            f"mean R_w, joint {w['joint']:.2f})."
        ]
        per_tensor = [f"{name} {w[f'mean_R_w_{name}']:.2f} ({w[f'pct_w_{name}_ceiling_of_means']:.1f}% of the ceiling)"
                      for name in ("W_O", "W_out") if f"mean_R_w_{name}" in w.index]
        if per_tensor:
            lines.append(f"Per-tensor R_w of {w['basis']}: " + ", ".join(per_tensor) + ".")
        overlap = self.top5_overlap
        lines.append("Top-5 by R_act and top-5 (write/mixed) by R_w_combined share: "
                     + (", ".join(overlap) if overlap else "no basis") + ".")
        return lines


def score_table(
    bases: Sequence[Basis],
    *,
    label_eval: torch.Tensor,
    label_fit: torch.Tensor,
    delta: Mapping[str, torch.Tensor],
    clean: Basis | None = None,
    null: str = "exact",
    n_null: int = 120,
    seed: int = 0,
    gains: Mapping[str, torch.Tensor] | None = None,
    dw_rank: int = 8,
) -> pd.DataFrame:
    """Per-layer scores of every basis: one row per (basis, layer).

    ``label_eval``/``label_fit``: activation deltas ``[layer, n, d]`` at the bases' layers; ``delta``:
    the weight delta (its residual-write tensors W_O, W_out at those layers are scored, see
    :func:`interp.subspace.scores.write_targets`); ``clean``: the clean-residual PCA basis for
    residualised specificity. ``null="exact"`` uses the closed-form null moments; ``"monte_carlo"``
    draws ``n_null`` Haar bases per rank from ``torch.Generator().manual_seed(seed + rank)``.
    ``gains``: post-norm gains that put ΔW in residual coordinates
    (:func:`interp.subspace.weight_library.post_norm_gains`; None: ΔW is used as it is).

    ``cos_with_dW``: mean principal-angle cosine between the basis and the ΔW basis, the top-``dw_rank``
    directions of the balanced write delta (:func:`interp.subspace.scores.weight_ceiling`).

    Percent-of-ceiling columns compare with the ceiling *at the basis' own rank* at that layer: for
    weights the Ky Fan maximum Σ_{i≤r} λᵢ(T) (no rank-r basis can exceed 100%); for activations the
    top-r PCs of the fit-half label scored on the eval half (other bases can exceed 100% on eval;
    beyond the fit label's rank the ceiling keeps its energy and divides by r).
    """
    if null not in NULLS:
        raise ValueError(f"null: expected one of {NULLS}, got {null!r}")
    if not bases:
        raise ValueError("bases: is empty")
    layers = bases[0].layers
    for b in bases:
        if b.layers != layers:
            raise ValueError(f"bases: {b.name!r} covers layers {b.layers}, expected {layers} like {bases[0].name!r}")
    d = bases[0].d_model
    targets = {"act": Target.from_samples(label_eval, name="label_eval")}
    targets.update({f"w_{_SHORT[kind]}": t for kind, t in write_targets(delta, layers, gains=gains).items()})
    fit = Target.from_samples(label_fit, name="label_fit")

    # every basis' columns side by side: one batched product per target scores them all
    cols = torch.cat([b.vectors for b in bases], dim=-1)
    owner = torch.cat([torch.full((b.vectors.shape[-1],), i) for i, b in enumerate(bases)])
    segment = torch.nn.functional.one_hot(owner, len(bases)).double()  # [cols, basis]
    ranks = torch.stack([b.rank_tensor for b in bases], dim=1)  # [layer, basis]
    max_rank = int(ranks.max())
    idx = torch.arange(len(layers))[:, None]
    columns: dict[str, torch.Tensor] = {}
    for key, t in targets.items():
        r = (t.energy(cols) @ segment * d / ranks).float()
        if null == "exact":
            mean, std = torch.ones_like(r), null_std(t.frob2()[:, None], d, ranks)
        else:
            mean, std = torch.empty_like(r), torch.empty_like(r)
            for rank in ranks.unique().tolist():
                m, s_, _ = monte_carlo_null(t, rank, n_draws=n_null, seed=seed + rank)
                sel = ranks == rank
                mean[sel] = m[:, None].expand_as(r)[sel]
                std[sel] = s_[:, None].expand_as(r)[sel]
        ceiling = ceiling_energy(fit, t, max_rank) if key == "act" else ceiling_energy(t, None, max_rank)
        ceiling = ceiling[idx, ranks - 1] * d / ranks
        columns[f"R_{key}"], columns[f"z_{key}"] = r, z_score(r, mean, std)
        columns[f"pct_{key}_ceiling"] = (100 * r / ceiling).float()
    width = max(b.vectors.shape[-1] for b in bases)
    padded = torch.stack([torch.nn.functional.pad(b.vectors, (0, width - b.vectors.shape[-1])) for b in bases])
    dw = weight_ceiling(delta, layers, min(dw_rank, d), gains=gains)
    columns["cos_with_dW"] = principal_cosines(padded, ranks.T, dw).T
    if clean is not None:
        t_spec = residual_label_target(label_eval, clean.vectors)
        flat = einops.rearrange(padded, "basis layer d k -> layer d (basis k)")
        r_s, z_s, rank_s = specific_scores(flat, label_eval, clean.vectors, clean.rank_tensor, target=t_spec,
                                           group=width)
        columns["R_act_specific"], columns["z_act_specific"], columns["rank_specific"] = r_s, z_s, rank_s
    n_layers, n_bases = len(layers), len(bases)
    table = pd.DataFrame(
        {
            "layer": np.tile(np.array(layers), n_bases),
            "basis": np.repeat([b.name for b in bases], n_layers),
            "family": np.repeat([b.family for b in bases], n_layers),
            "axis_kind": np.repeat([b.axis_kind for b in bases], n_layers),
            "source": np.repeat([b.source for b in bases], n_layers),
            "rank": to_numpy(ranks.T.reshape(-1)),
            **{name: to_numpy(v.T.reshape(-1)) for name, v in columns.items()},
        }
    )
    return table


CEILING_OF = {"act": "act_ceiling", "w_W_O": "weight_ceiling", "w_W_out": "weight_ceiling",
              "w_combined": "weight_ceiling"}  # score key -> the basis that maximises it


def summarize(per_layer: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean of every score over layers per basis, with ``joint`` = √(mean R_act · mean R_w_combined)
    (geometric mean), ranked by ``joint``; returns (write/mixed/ceiling, read-side).

    Two percent-of-ceiling figures, not to be confused: ``mean_pct_<score>_ceiling`` is the mean over
    layers of the per-layer percentage of the ceiling *at the basis' own rank*;
    ``pct_<score>_ceiling_of_means`` is 100 · mean R / mean R of the ceiling basis (``act_ceiling`` or
    ``weight_ceiling``, at rank k), a ratio of layer means (NaN when the table has no such ceiling row).
    """
    keys = ["basis", "family", "axis_kind", "source"]
    value_cols = [c for c in per_layer.columns if c not in keys and c != "layer"]
    summary = per_layer.groupby(keys, sort=False)[value_cols].mean().reset_index()
    summary = summary.rename(columns={c: f"mean_{c}" for c in value_cols})
    for key, ceiling in CEILING_OF.items():
        if f"mean_R_{key}" not in summary:
            continue
        row = summary.loc[summary["basis"] == ceiling, f"mean_R_{key}"]
        denominator = float(row.iloc[0]) if len(row) else np.nan
        summary[f"pct_{key}_ceiling_of_means"] = 100 * summary[f"mean_R_{key}"] / denominator
    if "mean_R_w_combined" in summary:
        summary["joint"] = np.sqrt(summary["mean_R_act"] * summary["mean_R_w_combined"])
        summary["act_w_gap_log2"] = np.log2(summary["mean_R_act"] / summary["mean_R_w_combined"])
    else:
        summary["joint"] = summary["mean_R_act"]
    summary = summary.sort_values("joint", ascending=False, kind="stable").reset_index(drop=True)
    read = summary["axis_kind"] == "read"
    return summary[~read].reset_index(drop=True), summary[read].reset_index(drop=True)


@torch.no_grad()  # a measurement over weights and activations: no graph is built
def subspace_sweep(
    pair: ModelPair,
    *,
    k: int = 8,
    layers: int | Sequence[int] | None = None,
    claims: Sequence[str] | None = None,
    label: str = "steer",
    alpha: float = 1.0,
    fit_fraction: float = 0.5,
    null: str = "exact",
    n_null: int = 120,
    seed: int = 0,
    k_broad: int = 64,
    include: Sequence[str] | None = None,
    extra_bases: Sequence[Basis] = (),
    positive_system: str = SYCOPHANTIC_SYSTEM,
    negative_system: str = CRITICAL_SYSTEM,
    chat_template: bool = False,
    progress: bool | None = None,
) -> SweepResult:
    """Run the whole sweep on a :class:`interp.ModelPair` (or anything with ``.base``, ``.tuned``, ``.delta()``).

    Each candidate basis ``U`` (k directions per layer) is scored by how much of the steering label and
    of ΔW's residual writes it captures relative to a random k-subspace (R_act, R_w; ≈ 1 is chance),
    with z-scores against the null. Deterministic: the only randomness is the seeded ``random`` basis
    and, with ``null="monte_carlo"``, the seeded null draws.

    Args:
        pair: The pair (the delta is ``pair.delta()``).
        k: Directions per basis and layer.
        layers: Scored layers (default every layer where the delta changes a residual-write tensor, the
            adapter's range); layers outside that range are a ValueError (R_w is undefined there and the
            steering label is zero before the first tuned layer).
        claims: Probe claims (default the packaged ones).
        label: "steer" (δ = resid(W+αΔW) − resid(W−αΔW) on the base) or "pair" (tuned − base).
        alpha: Steering scale α.
        fit_fraction: Share of the probes the activation bases are fitted on (the rest evaluate).
        null: "exact" (the closed-form mean and variance of R over Haar-random bases) or "monte_carlo"
            (seeded draws).
        n_null: Draws of the Monte-Carlo null.
        seed: Seed of the random basis and the null draws.
        k_broad: Rank of the broad read subspaces that the ``write_not_*`` bases are projected away from.
        include: Names of library bases to build (default all); an unknown name is a ValueError listing
            the known ones (:func:`interp.subspace.library.library_names`).
        extra_bases: Your own :class:`~interp.subspace.Basis` objects, scored too.
        positive_system: System prompt of the positive probe side.
        negative_system: System prompt of the negative probe side.
        chat_template: False (default, the notebook's setting): the label prompts and the clean fit
            prompts are fed as raw text; True: formatted with the tokenizer's chat template. The persona
            prompts are chat-templated either way. Recorded in ``config["chat_template"]``.
        progress: One bar over the sweep's four stages (label, probe activations, bases, scores); False
            silences it.

    Returns:
        A :class:`SweepResult`: ``per_layer``, ``summary`` (ranked by ``joint``), ``read_side`` and
        ``definitions`` tables; ``winner``, ``top()`` and ``conclusion()`` read them. It displays itself
        in a notebook and saves with ``save`` (reload a long sweep with ``SweepResult.load``).
    """
    if not isinstance(chat_template, bool):
        raise TypeError(f"chat_template: expected a bool, got {type(chat_template).__name__}")
    if label not in ("steer", "pair"):
        raise ValueError(f"label: expected 'steer' or 'pair', got {label!r}")
    if null not in NULLS:
        raise ValueError(f"null: expected one of {NULLS}, got {null!r}")
    pair = ModelPair.check(pair, needs_tuned=label == "pair")
    base = pair.base
    delta = as_delta(pair)
    tuned_layers = write_layers(delta)
    if not tuned_layers:
        raise ValueError("pair: the delta changes no residual-write tensor (W_O / W_out), so R_w is undefined")
    if layers is None:
        layers = tuned_layers
    else:
        layers = as_layers(layers, base.cfg.n_layers, name="layers")
        outside = [layer for layer in layers if layer not in tuned_layers]
        if outside:
            raise ValueError(
                f"layers: {outside} are outside the adapter's range (it writes at layers {tuned_layers}); "
                "R_w is undefined there"
            )
    layers = list(layers)
    check_rank(k, base.cfg.d_model)
    check_include(include)
    prompts = probe_prompts(claims)
    fit, evaluation = split_fit_eval(prompts, fit_fraction)
    texts = chat_texts(base.tokenizer, prompts) if chat_template else list(prompts)
    with progress_bar(total=4, desc="subspace sweep: label", unit="stage", progress=progress) as bar:
        if label == "steer":
            full = steering_label(base, delta, texts, layers, alpha)
        else:
            full = pair_label(pair, texts, layers)
        label_fit, label_eval = full[:, : len(fit)], full[:, len(fit) :]
        bar.update(1)
        bar.set_description("subspace sweep: probe activations")
        wanted = None if include is None else set(include)
        w_names = default_weight_bases(base.cfg) if wanted is None else [n for n in WEIGHT_BASES if n in wanted]
        a_names = [n for n in ACTIVATION_BASES if wanted is None or n in wanted]
        # the extra captures the selected bases need ride along in the same three forward passes
        needs = {need for n in a_names for need in ACTIVATION_BASES[n].needs if need in CAPTURES}
        acts = probe_activations(base, fit, layers, positive_system=positive_system, negative_system=negative_system,
                                 chat_template=chat_template, needs=needs)
        bar.update(1)
        bar.set_description("subspace sweep: bases")
        library = []
        if w_names:
            library += weight_bases(base, layers, k, k_broad=k_broad, include=w_names)
        clean = activation_bases(acts, k, include=["layer_clean_resid_pca"])[0]
        if a_names:
            library += activation_bases(acts, k, model=base, include=a_names)
        library += compound_bases({b.name: b for b in library}, k)
        library.append(random_basis(layers, base.cfg.d_model, k, seed=RANDOM_BASIS_SEED + seed))
        library += [b.select(layers) for b in extra_bases]
        gains = post_norm_gains(base, layers)
        library += [activation_ceiling(label_fit, layers, k), weight_ceiling(delta, layers, k, gains=gains)]
        names = [b.name for b in library]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"extra_bases: names {dupes} clash with library bases")
        bar.update(1)
        bar.set_description("subspace sweep: scores")

        per_layer = score_table(
            library,
            label_eval=label_eval,
            label_fit=label_fit,
            delta=delta,
            clean=clean,
            null=null,
            n_null=n_null,
            seed=seed,
            gains=gains,
            dw_rank=k,
        )
        bar.update(1)
    summary, read_side = summarize(per_layer)
    config = {
        "k": k, "layers": tuple(layers), "label": label, "alpha": alpha, "fit_fraction": fit_fraction,
        "n_fit": len(fit), "n_eval": len(evaluation), "null": null, "n_null": n_null, "seed": seed,
        "k_broad": k_broad, "chat_template": chat_template,
    }
    return SweepResult(per_layer, summary, read_side, definitions_table(library), tuple(layers), config)
