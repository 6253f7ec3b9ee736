"""interp: what did tuning change in how a model routes and writes information?

A mechanistic-interpretability toolkit on TransformerLens' ``HookedTransformer``: weight circuits
(QK affinity, VO decomposition, MLP passes of directions), activation analyses (Q/K/V structure,
attention metrics, head types) and weight-diff subspace scoring, for a base model and its tuned
sibling, on real models that load offline.

>>> from interp import ModelPair, load_model
>>> pair = ModelPair.default()        # SmolLM2-135M-Instruct and its committed LoRA sibling

Subpackages: :mod:`interp.circuits`, :mod:`interp.activations`, :mod:`interp.subspace`,
:mod:`interp.plots`, :mod:`interp.report`.
"""

from interp.directions import DirectionSet
from interp.loading import cache_dir, known_models, load_model, load_raw
from interp.pair import ModelPair
from interp.personas import PersonaDirections, persona_directions, role_vectors, trait_vectors

__all__ = [
    "DirectionSet",
    "ModelPair",
    "PersonaDirections",
    "cache_dir",
    "known_models",
    "load_model",
    "load_raw",
    "persona_directions",
    "role_vectors",
    "trait_vectors",
]
