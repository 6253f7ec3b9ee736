"""interp: what did tuning change in how a model routes and writes information?

A mechanistic-interpretability toolkit on TransformerLens' ``HookedTransformer``: weight circuits
(QK affinity, VO decomposition, MLP passes of directions), activation analyses (Q/K/V structure,
attention metrics, head types) and weight-diff subspace scoring, for a base model and its tuned
sibling, on real models that load offline.
"""

from interp.loading import cache_dir, known_models, load_model, load_raw

__all__ = ["cache_dir", "known_models", "load_model", "load_raw"]

try:  # filled in as the modules land
    from interp.pair import ModelPair  # noqa: F401

    __all__.append("ModelPair")
except ImportError:  # pragma: no cover
    pass
try:
    from interp.directions import DirectionSet  # noqa: F401

    __all__.append("DirectionSet")
except ImportError:  # pragma: no cover
    pass
