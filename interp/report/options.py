"""What the report computes: one frozen :class:`ReportOptions` with every knob and its default.

The defaults are modest so that ``interp report`` on the embedded default pair finishes in a few
minutes on a laptop CPU; :meth:`ReportOptions.quick` is the smallest setting that still exercises
every section (used by the tests).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from interp.directions import DirectionSet

__all__ = ["DEFAULT_SWEEP_BASES", "DEFAULT_VARIANTS", "SECTION_NAMES", "ReportOptions"]

#: The report's sections, in order.
SECTION_NAMES = ("weights", "circuits", "activations", "subspace")

_QUESTION = "What is 15 plus 27?"
#: Prompt variants for the attention metrics: name -> (system prompt or None, user message).
DEFAULT_VARIANTS: dict[str, tuple[str | None, str]] = {
    "plain": (None, _QUESTION),
    "step by step": (None, f"Let's think step by step.\n\n{_QUESTION}"),
    "expert": ("You are an expert mathematician.", _QUESTION),
    "opinion": (None, f"I'm quite sure the answer is 40. {_QUESTION}"),
}
DEFAULT_KEYWORDS = ("15", "27", "plus", "40")

#: Candidate bases the default report sweeps (a cheap, representative subset of the basis library:
#: write/read weight bases, activation PCA and contrasts, compounds are added by the sweep itself).
DEFAULT_SWEEP_BASES = (
    "write", "attn_write", "mlp_write", "global_write", "write_not_downstream_read", "attn_ov_write",
    "mlp_up_read", "lm_head_read", "layer_clean_resid_pca", "persona_contrast", "attn_min_taskdiff",
    "chars_clusters", "churn",
)


@dataclass(frozen=True)
class ReportOptions:
    """Settings of every analysis in the report (see ``docs/report.md`` for what each one feeds).

    ``layers``: restrict every per-layer analysis to these layers (None = all). ``sections``: which
    sections to run. ``directions``: probe directions used instead of the persona PCs computed at
    report time. ``cache_dir``: where persona directions are cached (None = no caching).
    """

    layers: tuple[int, ...] | None = None
    sections: tuple[str, ...] = SECTION_NAMES
    # weight circuits and the MLP pass
    directions: DirectionSet | None = None
    persona_layer: int | None = None
    n_components: int = 5
    roles: tuple[str, ...] | None = None
    n_questions: int = 2
    traits: bool = True
    n_random: int = 20
    random_seed: int = 42
    n_plot_directions: int = 3
    n_projections: int = 8
    # attention metrics and head types
    variants: Mapping[str, tuple[str | None, str]] = field(default_factory=lambda: dict(DEFAULT_VARIANTS))
    keywords: tuple[str, ...] = DEFAULT_KEYWORDS
    head_type_length: int = 40
    head_type_sequences: int = 8
    head_type_seed: int = 0
    n_top_heads: int = 10
    # subspace sweep
    sweep_k: int = 8
    sweep_layers: tuple[int, ...] | None = None
    sweep_layer_limit: int | None = None
    sweep_bases: tuple[str, ...] | None = DEFAULT_SWEEP_BASES
    sweep_claims: int | None = None
    # run
    cache_dir: Path | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [s for s in self.sections if s not in SECTION_NAMES]
        if unknown or not self.sections:
            raise ValueError(f"sections: expected a non-empty subset of {SECTION_NAMES}, got {list(self.sections)}")
        for name in ("n_components", "n_questions", "n_random", "n_plot_directions", "n_projections",
                     "head_type_sequences", "n_top_heads", "sweep_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if self.n_random < 2:
            raise ValueError(f"n_random: the random baseline needs at least 2 directions, got {self.n_random}")
        if self.head_type_length < 2:
            raise ValueError(f"head_type_length: expected at least 2 tokens, got {self.head_type_length}")
        if self.directions is not None and not isinstance(self.directions, DirectionSet):
            raise TypeError(f"directions: expected a DirectionSet, got {type(self.directions).__name__}")
        if not isinstance(self.variants, Mapping) or not self.variants:
            raise ValueError("variants: expected a non-empty mapping of name -> (system prompt or None, user message)")
        for name, value in self.variants.items():
            if not (isinstance(value, Sequence) and len(value) == 2 and isinstance(value[1], str)):
                raise ValueError(f"variants: entry {name!r} must be (system prompt or None, user message)")
        if self.sweep_layer_limit is not None and (
            not isinstance(self.sweep_layer_limit, int) or isinstance(self.sweep_layer_limit, bool)
            or self.sweep_layer_limit < 1
        ):
            raise ValueError(f"sweep_layer_limit: expected a positive int or None, got {self.sweep_layer_limit!r}")
        if self.sweep_claims is not None and self.sweep_claims < 4:
            raise ValueError(f"sweep_claims: the fit/eval split needs at least 4 claims, got {self.sweep_claims}")
        object.__setattr__(self, "sections", tuple(self.sections))
        for name in ("layers", "sweep_layers", "sweep_bases", "roles"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))

    def replace(self, **changes: object) -> ReportOptions:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def quick(cls, **changes: object) -> ReportOptions:
        """The smallest settings that still run every section (a few roles, one question, short head-type
        probes, a one-layer sweep over a handful of bases): for tests and smoke runs, not for conclusions."""
        settings: dict[str, object] = dict(
            roles=("pirate", "poet", "teacher", "scientist", "comedian", "detective"),
            n_components=3, n_questions=1, n_random=8, n_plot_directions=2, n_projections=4,
            variants={k: DEFAULT_VARIANTS[k] for k in ("plain", "opinion")},
            head_type_length=12, head_type_sequences=2, n_top_heads=5,
            sweep_k=4, sweep_layers=None, sweep_layer_limit=1, sweep_claims=8,
            sweep_bases=("write", "attn_write", "mlp_write", "layer_clean_resid_pca", "persona_contrast"),
        )
        settings.update(changes)
        return cls(**settings)  # type: ignore[arg-type]

    def describe(self) -> dict[str, object]:
        """The settings as plain values (for the report's configuration table)."""
        out: dict[str, object] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, DirectionSet):
                value = f"{len(value)} directions ({value.source or 'from file'})"
            elif isinstance(value, Mapping):
                value = ", ".join(value)
            elif isinstance(value, tuple):
                value = ", ".join(map(str, value))
            out[f.name] = "all" if value is None and f.name in ("layers", "sweep_layers", "sweep_bases", "roles") else value
        return out
