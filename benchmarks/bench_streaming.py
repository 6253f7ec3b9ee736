"""Streamed weight circuits on a pair shaped like gemma-2-27b, at 1, 2, 4 and 8 layers per model.

The benchmark writes a synthetic base/tuned pair with gemma-2-27b's layer shapes (d_model 4608, 32
query / 16 key-value heads of 128, d_mlp 36864, query_pre_attn_scalar 144, softcaps, bf16), one
safetensors shard per layer and a ``model.safetensors.index.json``; the 2- and 4-layer checkpoints
are index files over the first shards of the 8-layer one. The vocabulary is cut to 256 tokens (the
sweep never reads the embedding; a real 256k-token embedding would only add disk). The sweep is the
seed-000/001 weight-circuit sweep on 40 directions: QK + VO tables (``streamed_weight_circuits``) and
the MLP pass (``streamed_compare_mlp_pass``), both models.

Figures per size: wall time, peak extra resident memory (RSS sampled during the call minus RSS
before it), against (a) the time of reading every shard once sequentially (16 MB reads, page cache
dropped for the files with ``posix_fadvise(DONTNEED)`` before each measurement) plus the sweep's GEMM
arithmetic at the float32 GEMM rate measured here, and (b) the in-memory path (whole pair converted
and processed, then the same sweep), only where it fits in the machine's free memory.

Run: ``python -m benchmarks.run streaming`` (opt-in: ``make bench`` skips it; needs ~20 GB of disk
under ``$INTERP_BENCH_DIR`` or the system temp folder, deleted afterwards).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from benchmarks._harness import BenchRow, timed_peak

D_MODEL, N_HEADS, N_KV, D_HEAD, D_MLP, VOCAB = 4608, 32, 16, 128, 36864, 256
SIZES = (1, 2, 4, 8)
IN_MEMORY_SIZES = (1, 2)  # the in-memory path is run at these sizes only, and only where it fits
LAYER_F32_GB = 2.26  # one layer of one model in float32 (1.13 GB in bf16; a layer of the pair: 2.3 GB bf16)
N_DIRECTIONS = 40


def _config(n_layers: int) -> dict:
    import transformers

    cfg = transformers.Gemma2Config(
        vocab_size=VOCAB, hidden_size=D_MODEL, intermediate_size=D_MLP, num_hidden_layers=n_layers,
        num_attention_heads=N_HEADS, num_key_value_heads=N_KV, head_dim=D_HEAD, query_pre_attn_scalar=144,
        sliding_window=4096, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
    )
    out = cfg.to_dict()
    out["architectures"] = ["Gemma2ForCausalLM"]
    return out


def _layer_tensors(layer: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)

    p = f"model.layers.{layer}."
    out = {
        p + "self_attn.q_proj.weight": rand(N_HEADS * D_HEAD, D_MODEL),
        p + "self_attn.k_proj.weight": rand(N_KV * D_HEAD, D_MODEL),
        p + "self_attn.v_proj.weight": rand(N_KV * D_HEAD, D_MODEL),
        p + "self_attn.o_proj.weight": rand(D_MODEL, N_HEADS * D_HEAD),
        p + "mlp.gate_proj.weight": rand(D_MLP, D_MODEL),
        p + "mlp.up_proj.weight": rand(D_MLP, D_MODEL),
        p + "mlp.down_proj.weight": rand(D_MODEL, D_MLP),
    }
    for norm in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"):
        out[p + norm + ".weight"] = rand(D_MODEL)
    return out


def write_pair(root: Path, n_layers: int = max(SIZES)) -> dict[str, Path]:
    """Write base and tuned (different seeds) with ``n_layers`` layers; return their folders."""
    folders = {}
    for label, seed in (("base", 1), ("tuned", 2)):
        folder = root / f"{label}-{n_layers}"
        folder.mkdir(parents=True, exist_ok=True)
        g = torch.Generator().manual_seed(seed)
        weight_map = {}
        save_file({"model.embed_tokens.weight": (torch.randn(VOCAB, D_MODEL, generator=g) * 0.02).to(torch.bfloat16),
                   "model.norm.weight": torch.zeros(D_MODEL, dtype=torch.bfloat16)}, str(folder / "outer.safetensors"))
        weight_map.update({"model.embed_tokens.weight": "outer.safetensors", "model.norm.weight": "outer.safetensors"})
        for layer in range(n_layers):
            tensors = _layer_tensors(layer, g)
            name = f"layer-{layer:03d}.safetensors"
            save_file(tensors, str(folder / name))
            weight_map.update(dict.fromkeys(tensors, name))
            del tensors
        _write_index(folder, n_layers, weight_map)
        folders[label] = folder
    return folders


def _write_index(folder: Path, n_layers: int, weight_map: dict[str, str]) -> None:
    (folder / "config.json").write_text(json.dumps(_config(n_layers)))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def subset(full: Path, target: Path, n_layers: int) -> Path:
    """A checkpoint of the first ``n_layers`` layers of ``full``: an index over symlinked shards."""
    target.mkdir(parents=True, exist_ok=True)
    weight_map = json.loads((full / "model.safetensors.index.json").read_text())["weight_map"]
    kept = {k: v for k, v in weight_map.items() if not k.startswith("model.layers.") or int(k.split(".")[2]) < n_layers}
    for shard in set(kept.values()):
        link = target / shard
        if not link.exists():
            link.symlink_to(full / shard)
    _write_index(target, n_layers, kept)
    return target


def _shards(folder: Path) -> list[Path]:
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    return [(folder / s).resolve() for s in sorted(set(weight_map.values()))]


def drop_cache(folders: list[Path]) -> None:
    for folder in folders:
        for shard in _shards(folder):
            fd = os.open(shard, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def sequential_read_s(folders: list[Path]) -> tuple[float, int]:
    """Seconds to read every shard once (``cat``-style, 16 MB reads) and the bytes read."""
    drop_cache(folders)
    total = 0
    start = time.perf_counter()
    buf = bytearray(16 * 2**20)
    for folder in folders:
        for shard in _shards(folder):
            with open(shard, "rb", buffering=0) as handle:
                while n := handle.readinto(buf):
                    total += n
    return time.perf_counter() - start, total


def gemm_rate() -> float:
    """Float32 FLOP/s of a [40, 4608] @ [4608, 4854] product: the MLP pass's product shape with a block
    of 4854 neurons, which runs at least as fast as the 1365-neuron blocks the sweep uses (a stricter floor)."""
    a = torch.randn(N_DIRECTIONS, D_MODEL)
    b = torch.randn(D_MODEL, 4854)
    a @ b
    start, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    return reps * 2 * a.shape[0] * a.shape[1] * b.shape[1] / (time.perf_counter() - start)


def sweep_flops(n_layers: int) -> float:
    """GEMM FLOPs of the sweep for a pair (QK head-mean path, VO head-sum path, gated MLP)."""
    n, d, kv = N_DIRECTIONS, D_MODEL, N_KV * D_HEAD
    qk = 2 * n * d * kv * 2 + 2 * n * n * kv
    vo = 2 * n * d * kv + 2 * n * kv * d + 2 * n * n * d
    mlp = 3 * 2 * n * d * D_MLP
    return 2 * n_layers * (qk + vo + mlp)


def directions():
    from interp import DirectionSet

    g = torch.Generator().manual_seed(0)
    vectors = torch.randn(N_DIRECTIONS, D_MODEL, generator=g)
    names = [f"PC{i}" for i in range(1, 21)] + [f"Random{i}" for i in range(1, 21)]
    return DirectionSet(tuple(names), vectors)


def streamed_sweep(base: Path, tuned: Path) -> None:
    from interp.streaming import StreamedPair, streamed_compare_mlp_pass, streamed_weight_circuits

    pair = StreamedPair.open(base, tuned)
    probes = directions()
    streamed_weight_circuits(pair, probes, progress=False)
    streamed_compare_mlp_pass(pair, probes, progress=False).table()


def in_memory_sweep(base: Path, tuned: Path) -> None:
    from transformer_lens import HookedTransformerConfig

    from interp.circuits import compare_mlp_pass, weight_circuits
    from interp.loading import RawModel
    from interp.streaming import open_checkpoint
    from interp.streaming.convert import tl_config_dict

    models = []
    for folder in (base, tuned):
        import transformers
        from transformer_lens.loading_from_pretrained import get_pretrained_state_dict

        cfg_dict = tl_config_dict(open_checkpoint(folder))
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16)
        state = get_pretrained_state_dict(str(folder), HookedTransformerConfig.from_dict(cfg_dict), hf_model=hf)
        del hf
        models.append(RawModel("m", cfg_dict, state, None).build(processed=True))
        del state
    probes = directions()
    weight_circuits(tuple(models), probes)
    compare_mlp_pass(tuple(models), probes).table()


def _available_gb() -> float:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) / 2**20
    return 0.0


def run() -> list[BenchRow]:
    torch.set_grad_enabled(False)
    # $INTERP_BENCH_STREAMING_DATA: a folder already holding base-8/ and tuned-8/ from an earlier run
    # (kept afterwards); otherwise the pair is written to a temporary folder and deleted at the end.
    reuse = os.environ.get("INTERP_BENCH_STREAMING_DATA")
    root = Path(reuse) if reuse else Path(tempfile.mkdtemp(prefix="interp-stream-", dir=os.environ.get("INTERP_BENCH_DIR")))
    rows = []
    try:
        started = time.perf_counter()
        if reuse:
            full = {label: root / f"{label}-{max(SIZES)}" for label in ("base", "tuned")}
        else:
            full = write_pair(root)
            print(f"   wrote the synthetic pair in {time.perf_counter() - started:.0f} s", flush=True)
        rate = gemm_rate()
        warm = [subset(full[label], root / f"{label}-warm", 1) for label in ("base", "tuned")]
        streamed_sweep(*warm)  # imports and first-call costs, not timed
        for n_layers in SIZES:
            base = subset(full["base"], root / f"base-sub{n_layers}", n_layers)
            tuned = subset(full["tuned"], root / f"tuned-sub{n_layers}", n_layers)
            read_s, read_bytes = sequential_read_s([base, tuned])
            drop_cache([base, tuned])
            seconds, peak_mb = timed_peak(lambda b=base, t=tuned: streamed_sweep(b, t))
            floor = read_s + sweep_flops(n_layers) / rate
            ref_s, ref_mb, ref_note = float("nan"), float("nan"), "in-memory path not run: "
            need_gb = 2 * n_layers * LAYER_F32_GB * 1.6 + 2
            if n_layers in IN_MEMORY_SIZES and _available_gb() > need_gb:
                drop_cache([base, tuned])
                ref_s, ref_mb = timed_peak(lambda b=base, t=tuned: in_memory_sweep(b, t))
                ref_note = ""
            else:
                ref_note += f"run at {IN_MEMORY_SIZES} layers only" if n_layers not in IN_MEMORY_SIZES else f"needs ~{need_gb:.0f} GB, {_available_gb():.0f} GB available"
            rows.append(BenchRow(
                figure=f"streamed sweep, gemma-2-27b shapes, {n_layers} layers per model (40 directions, QK+VO+MLP)",
                interp_s=seconds, reference_s=floor, interp_peak_mb=peak_mb, reference_peak_mb=ref_mb,
                reference="read once + GEMMs at the measured rate",
                notes=(f"shards {read_bytes / 2**30:.1f} GiB read in {read_s:.1f} s; GEMM {rate / 1e9:.0f} GFLOP/s; "
                       f"time / floor = {seconds / floor:.2f} (goal ≤ 2); peak goal < 3072 MB, flat in layers; "
                       f"in-memory path: {ref_s:.1f} s, {ref_mb:.0f} MB peak. {ref_note}"),
            ))
            print(f"   {rows[-1].figure}: {seconds:.1f} s, peak {peak_mb:.0f} MB; floor {floor:.1f} s; "
                  f"in-memory {ref_s:.1f} s / {ref_mb:.0f} MB", flush=True)
    finally:
        if not reuse:
            shutil.rmtree(root, ignore_errors=True)
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
