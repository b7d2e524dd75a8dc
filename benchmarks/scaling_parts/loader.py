"""Loader vs GPU appetite: training patches at (10, 3), L = 5, patch 100 from a full-domain shard
through `hpcsr.data.PatchDataset`, read in this process (one worker's rate, wall and CPU) and through
a torch DataLoader with 1 and 2 worker processes (batches of 8), against the samples/s that one
H200 would consume at the stated MFU for each training stage (FLOPs from hpcsr.models.size_table;
forward + backward = 3 x forward).
"""

from __future__ import annotations

import time
from pathlib import Path

PEAK_TFLOPS = 989.0  # H200 dense bf16 (benchmarks/gpu_throughput.py's table)
MFU = 0.35
CONTEXT, PATCH = 5, 100


def gpu_appetite(model: str) -> dict:
    """Training samples/s one H200 consumes at MFU, per stage: mean (mean network trained) and
    diffusion (frozen mean network forward + denoiser trained: context encoding and one step)."""
    from hpcsr.models import ModelConfig
    from hpcsr.models.size_table import pair_sizes

    sizes = pair_sizes(ModelConfig.named(model), 10, 3)
    gflop = {
        "mean": 3 * sizes["gflop_mean"],
        "diffusion": sizes["gflop_mean"] + 3 * (sizes["gflop_context"] + sizes["gflop_step"]),
    }
    rate = PEAK_TFLOPS * 1e3 * MFU
    return {stage: {"gflop_per_sample": g, "samples_per_s": rate / g} for stage, g in gflop.items()}


def dataset(shard: Path):
    from hpcsr.data.normalise import Normaliser
    from hpcsr.data.patches import PatchDataset, PatchSpec
    from hpcsr.data.store import Shard

    with Shard(shard) as s:
        normaliser = Normaliser.from_stats(s.stats, "log1p")
    return PatchDataset(shard, PatchSpec(CONTEXT, PATCH), "train", normaliser, seed=0)


def in_process(ds, samples: int) -> dict:
    """One process reading `samples` random patches: samples per wall second and per CPU second."""
    ds[0]  # opens the files
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(1, samples + 1):
        ds[i]
    return {
        "samples_per_s": samples / (time.perf_counter() - wall),
        "samples_per_cpu_s": samples / (time.process_time() - cpu),
    }


def with_workers(ds, workers: int, samples: int, batch: int = 8) -> float:
    """Samples/s through a DataLoader with `workers` processes (after their first batch)."""
    import torch

    loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, sampler=range(samples + batch))
    it = iter(loader)
    next(it)  # workers started and files opened
    start = time.perf_counter()
    n = sum(len(next(iter(b.values()))) for b in it)
    return n / (time.perf_counter() - start)


def measure(shard: Path, samples: int, model: str) -> dict:
    import torch

    from scaling_parts.report import say

    torch.set_num_threads(1)
    ds = dataset(shard)
    one = in_process(ds, samples)
    workers = {str(w): with_workers(ds, w, samples) for w in (1, 2)}
    appetite = gpu_appetite(model)
    needed = {stage: a["samples_per_s"] / one["samples_per_s"] for stage, a in appetite.items()}
    say(
        f"loader: {one['samples_per_s']:.0f} samples/s in one process ({one['samples_per_cpu_s']:.0f} per CPU-s), "
        f"DataLoader 1 worker {workers['1']:.0f}, 2 workers {workers['2']:.0f}; one H200 at {MFU:.0%} MFU eats "
        + ", ".join(f"{k} {a['samples_per_s']:.0f}/s" for k, a in appetite.items())
    )
    return {
        "shard": str(shard),
        "samples": samples,
        "one_process": one,
        "dataloader_samples_per_s": workers,
        "model": model,
        "gpu": {"name": "H200", "peak_bf16_tflops": PEAK_TFLOPS, "mfu": MFU},
        "appetite": appetite,
        "workers_per_gpu": needed,
    }
