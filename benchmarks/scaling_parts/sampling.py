"""Sampling cost vs the domain: `hpcsr sample` (the CLI, writer included) at factor pair (10, 3) on
square domains of synthetic Comephore LR (a shard from `hpcsr-preprocess all`), one target block,
fixed members and DDIM steps, a randomly initialised export (the cost does not depend on the
weights), one thread, one process per domain: wall time, CPU time and peak RSS. The FLOPs of each
run are counted from hpcsr.models.size_table (per tile: mean network + context encoding once per
target, one denoiser step per member and sampler step), so the effective FLOP/s of this CPU and the
projection to a year of ensembles and to a GPU follow from the measurement.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from hpcsr.factors import FactorPair
from scaling_parts.measure import run_measured
from scaling_parts.preprocess import START, env

PAIR = FactorPair(10, 3)


def shard(data: Path, side: int) -> Path:
    """The (10, 3) shard of one synthetic day on a `side` x `side` grid (made once)."""
    out = data / f"sample_{side}px"
    path = out / "shards" / f"{PAIR.name}.h5"
    if not path.is_file():
        bindir = Path(sys.executable).parent
        cmd = [bindir / "hpcsr-preprocess", "all", "--quiet", "--out", out, "--days", "1", "--size", side]
        run_measured(
            cmd + ["--start", START, "--pairs", f"{PAIR.s}x{PAIR.t}"], data / "logs" / f"{out.name}.log", env()
        )
    return path


def flops_per_tile(model_cfg) -> dict:
    """GFLOP of one tile at (10, 3): mean + context (once per target) and one denoiser step."""
    from hpcsr.models.size_table import pair_sizes

    sizes = pair_sizes(model_cfg, PAIR.s, PAIR.t)
    mean, context = sizes["gflop_mean"], sizes["gflop_context"]
    return {"mean": mean, "context": context, "setup": mean + context, "step": sizes["gflop_step"]}


def tiles(side: int) -> int:
    """Tiles of the default layout (recipe patch, default overlap) on a side x side HR domain."""
    from hpcsr.factors import recipe
    from hpcsr.sampling.tiles import TileLayout, default_overlap

    patch = recipe(PAIR.s, PAIR.t).patch
    lr = side // PAIR.s
    return len(TileLayout(PAIR.s, lr, lr, patch, default_overlap(patch, PAIR.s), "cosine"))


def measure(data: Path, sides: list[int], model: str, members: int, steps: int, logs: Path) -> dict:
    """One measured `hpcsr sample` per domain side; the last target block of the day (full context)."""
    from common import untrained_export

    from hpcsr.models import ModelConfig
    from scaling_parts.report import say

    cfg = ModelConfig.named(model)
    export = untrained_export(data / f"untrained_{model}" / "model.pt", cfg, PAIR)
    per_tile = flops_per_tile(cfg)
    last = np.datetime64(START) + np.timedelta64(1, "D")
    first_step = last - np.timedelta64(PAIR.t - 1, "h")
    runs = []
    for side in sides:
        out = data / f"ensemble_{side}px.nc"
        cmd = [
            Path(sys.executable).parent / "hpcsr",
            "sample",
            "--quiet",
            "--export",
            export,
            "--lr",
            shard(data, side),
        ]
        cmd += ["--out", out, "--members", members, "--sampler", "ddim", "--steps", steps]
        cmd += ["--time-range", str(first_step), str(last)]
        res = run_measured(cmd, logs / f"sample_{side}px.log", env=env())
        out.unlink()
        n = tiles(side)
        res.update(side=side, tiles=n, gflop=n * (per_tile["setup"] + members * steps * per_tile["step"]))
        res["gflops_per_cpu_s"] = res["gflop"] / res["cpu_s"]
        runs.append(res)
        say(
            f"sample {side} x {side} ({n} tiles, {members} members x {steps} steps): {res['wall_s']:.1f} s wall, "
            f"{res['cpu_s']:.1f} s CPU, peak RSS {res['peak_rss_mb']:.0f} MB, {res['gflops_per_cpu_s']:.1f} GFLOP/CPU-s, "
            f"load {res['load_average_1']:.1f}"
        )
    return {
        "pair": PAIR.name,
        "model": model,
        "members": members,
        "sampler": f"ddim-{steps}",
        "weights": "random initialisation (the cost does not depend on the weights)",
        "gflop_per_tile": per_tile,
        "runs": runs,
    }
