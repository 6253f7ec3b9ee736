"""Pairs larger than memory: analyses streamed layer by layer from safetensors checkpoints.

A :class:`StreamedPair` opens two checkpoints (folders or cached hub ids) without reading their
weights; each streamed analysis converts layer ``l`` of both models (TransformerLens' converter and
interp's processing, as :func:`interp.load_model` does), runs the in-memory kernel on it, and drops it
before layer ``l + 1``. Peak memory is set by one layer of each model, not by the models.

>>> from interp.streaming import StreamedPair, streamed_weight_circuits
>>> pair = StreamedPair.open("gemma-2-27b", "gemma-2-27b-it")
>>> table = streamed_weight_circuits(pair, probes)      # == weight_circuits(ModelPair(...), probes)
>>> print(pair.stats)
"""

from interp.streaming.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from interp.streaming.circuits import streamed_compare_mlp_pass, streamed_mlp_pass, streamed_weight_circuits
from interp.streaming.deltas import (
    changed_layers,
    streamed_delta,
    streamed_delta_diagnostics,
    streamed_delta_norms,
)
from interp.streaming.forward import (
    streamed_persona_directions,
    streamed_prompt_activations,
    streamed_role_vectors,
    streamed_run_with_cache,
)
from interp.streaming.memory import MemoryCheck, should_stream
from interp.streaming.model import StreamedModel, StreamedPair, StreamStats, open_streamed
from interp.streaming.subspace import (
    LOCAL_WEIGHT_BASES,
    streamed_unembed_gram,
    streamed_weight_bases,
    streamed_weight_targets,
)

# What the library's own functions call when handed a streamed pair or model (see StreamedPair.run).
StreamedPair.analyses.update(
    weight_circuits=streamed_weight_circuits, compare_mlp_pass=streamed_compare_mlp_pass,
    delta_diagnostics=streamed_delta_diagnostics, delta_norms=streamed_delta_norms, changed_layers=changed_layers,
)
StreamedModel.analyses.update(prompt_activations=streamed_prompt_activations, weight_bases=streamed_weight_bases)

__all__ = [
    "LOCAL_WEIGHT_BASES",
    "Checkpoint",
    "CheckpointError",
    "MemoryCheck",
    "StreamStats",
    "StreamedModel",
    "StreamedPair",
    "changed_layers",
    "open_checkpoint",
    "open_streamed",
    "should_stream",
    "streamed_compare_mlp_pass",
    "streamed_delta",
    "streamed_delta_diagnostics",
    "streamed_delta_norms",
    "streamed_mlp_pass",
    "streamed_persona_directions",
    "streamed_prompt_activations",
    "streamed_role_vectors",
    "streamed_run_with_cache",
    "streamed_unembed_gram",
    "streamed_weight_bases",
    "streamed_weight_circuits",
    "streamed_weight_targets",
]
