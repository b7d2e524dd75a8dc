"""Projections from the measurements, each with the assumptions it rests on (written into the JSON).

Preprocessing: per-frame cost from the longest 1-rank run; ranks scale as Amdahl's law with the
serial share fitted to the measured 2-rank speed-up (rank 0 assembles the HR store and merges the
shards alone); output bytes per frame from the same run. Sampling: FLOPs of one year of (10, 3)
target blocks, full domain, 10 members, DPM-Solver++(2M) 10 steps (the CLI's default), the tiles
beyond the condition cache re-encoded at every step; on this CPU at the GFLOP per CPU-second
measured at the largest domain, on one H200 at MFU x 989 TFLOP/s.
"""

from __future__ import annotations

import math

HOURS = {"1 year": 8766, "20 years": 20 * 8766}
RANKS = (1, 32, 256)
H200_TFLOPS, MFU = 989.0, 0.35


def preprocessing(part: dict) -> dict:
    by_frames = sorted(part["periods"], key=lambda r: r["frames"])
    longest, before = by_frames[-1], by_frames[-2]
    cpu_marginal = (longest["cpu_s"] - before["cpu_s"]) / (longest["frames"] - before["frames"])
    startup = max(longest["cpu_s"] - cpu_marginal * longest["frames"], 0.0)  # imports, planning, per launch
    runs = part["ranks"]["runs"]
    one = min(r["wall_s"] for r in runs["1"])
    two = min(r["wall_s"] for r in runs["2"])
    serial = min(max(2 * two / one - 1, 0.0), 1.0)  # T2 / T1 = f + (1 - f) / 2
    wall_per_frame = longest["wall_s"] / longest["frames"]
    cpu_per_frame = longest["cpu_s"] / longest["frames"]  # a dedicated core: the ideal case
    out_mb_per_frame = (longest["hr_store_mb"] + longest["shards_mb"]) / longest["frames"]
    rows = []
    for period, frames in HOURS.items():
        for n in RANKS:
            wall = frames * wall_per_frame * (serial + (1 - serial) / n)
            rows.append(
                {
                    "period": period,
                    "frames": frames,
                    "ranks": n,
                    "hours": wall / 3600,
                    "ideal_hours": (startup + frames * cpu_marginal / n) / 3600,
                    "cpu_hours": frames * cpu_per_frame / 3600,
                    "output_gb": frames * out_mb_per_frame / 1e3,
                }
            )
    return {
        "rows": rows,
        "serial_share": serial,
        "wall_s_per_frame_1_rank": wall_per_frame,
        "cpu_s_per_frame": cpu_per_frame,
        "cpu_s_per_extra_frame": cpu_marginal,
        "startup_cpu_s": startup,
        "output_mb_per_frame": out_mb_per_frame,
        "assumptions": [
            f"per-frame cost of the {longest['days']}-day 1-rank run on this shared 2-core VM "
            f"(load {longest['load_average_1']:.1f}); a dedicated core is faster (compare CPU time)",
            f"hours: Amdahl's law with serial share {serial:.2f} fitted to the 2-rank vs 1-rank wall times (best of "
            "the repeats; pessimistic: a short run's fixed start-up counts as serial, and on a loaded machine the "
            "second rank may find no free core); "
            f"ideal hours: start-up ({startup:.1f} CPU-s) + CPU time per extra frame ({cpu_marginal:.3f} s, between the "
            "two longest periods) / ranks: a dedicated core per rank and no serial part; rank 0's assembly of "
            "hr.h5 and merges of the shards (chunk copies of the output) are serial and "
            "bound it from below at high rank counts (not measured here)",
            "the file system keeps up (no I/O limit is modelled); one unit of work per day, so 256 ranks "
            "have >= 1 day each for a year",
            "output size of synthetic frames (85-90 % dry, like Comephore); real radar compresses "
            "differently (noise in the light rain)",
        ],
    }


def _condition_mb_per_tile(model: str) -> float:
    """MB of one tile's denoiser condition at (10, 3) (what the condition cache holds)."""
    import torch

    from hpcsr.factors import recipe
    from hpcsr.models import ModelConfig, build_model
    from hpcsr.sampling.ensemble import _nbytes

    r = recipe(10, 3)
    m = build_model(ModelConfig.named(model), r).eval()
    lr = torch.rand(1, r.context, r.patch // 10, r.patch // 10)
    with torch.no_grad():
        mean = m.predict_mean(lr)
        cond = m.denoiser.encode(*m._prepare(lr, None), None, mean, m.target)
    return _nbytes(cond) / 2**20


def sampling(part: dict, members: int = 10, steps: int = 10, cache_mb: float = 1024) -> dict:
    largest = max(part["runs"], key=lambda r: r["side"])
    per_tile = part["gflop_per_tile"]
    tiles = largest["tiles"]
    cond_mb = _condition_mb_per_tile(part["model"])
    cached = min(tiles, int(cache_mb // cond_mb))
    per_target = tiles * (per_tile["setup"] + members * steps * per_tile["step"])
    per_target += (tiles - cached) * members * steps * per_tile["context"]
    targets = math.ceil(HOURS["1 year"] / 3)
    total = targets * per_target
    cpu_core_s = total / largest["gflops_per_cpu_s"]
    gpu_s = total / (H200_TFLOPS * 1e3 * MFU)
    return {
        "targets": targets,
        "tflop_per_target": per_target / 1e3,
        "tflop_per_year": total / 1e3,
        "cpu_core_days": cpu_core_s / 86400,
        "this_machine_days": cpu_core_s / 86400 / 2,
        "h200_hours": gpu_s / 3600,
        "condition_mb_per_tile": cond_mb,
        "tiles_cached": cached,
        "tiles": tiles,
        "assumptions": [
            f"one year of (10, 3) target blocks ({targets}), domain {largest['side']} x {largest['side']} HR px "
            f"({tiles} tiles), {members} members, DPM-Solver++(2M) {steps} steps, model {part['model']}",
            f"CPU: {largest['gflops_per_cpu_s']:.1f} GFLOP per CPU-second, measured at that domain (shared VM, 1 thread); "
            "this machine = 2 such cores",
            f"H200: {MFU:.0%} of {H200_TFLOPS:g} TFLOP/s dense bf16 (not measured: no GPU was lent)",
            f"FLOPs from hpcsr.models.size_table's counter (convolutions, linear, attention); the "
            f"{tiles - cached} tiles beyond the {cache_mb:g} MB condition cache ({cond_mb:.1f} MB per tile) "
            "re-encode their context at every step",
        ],
    }
