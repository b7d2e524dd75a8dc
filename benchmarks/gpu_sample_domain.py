"""Full-domain sampling on one device: ensemble members/s of `hpcsr sample`'s pipeline (tiled
denoiser over the whole domain, mass transform, netCDF writer) at (10, 3) on a 1536 x 1536 px
synthetic Comephore shard, default model with random weights (the cost does not depend on them),
DPM-Solver++(2M) 10 steps, and the peak device memory (torch.cuda.max_memory_allocated) and RSS.

Baseline in the same run: a 1-member ensemble of the same target (its members/s carry the whole
per-target setup: mean network and context encoding of every tile), so the ratio shows how well the
members amortise it.

    python benchmarks/gpu_sample_domain.py [--device auto] [--side 1536] [--members 10] [--quick] [--out ...]

--quick (the dry mode of scripts/gpu_check.sh): 120 px, tiny model, 2 members, 2 steps.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import figure, untrained_export, write_result  # noqa: E402
from scaling_parts.preprocess import START  # noqa: E402
from scaling_parts.sampling import PAIR, shard  # noqa: E402


def members_per_s(export: Path, lr: Path, out: Path, members: int, steps: int, device: str) -> float:
    from hpcsr.sampling import SampleStageConfig, run_sample

    last = np.datetime64(START) + np.timedelta64(1, "D")
    window = (str(last - np.timedelta64(PAIR.t - 1, "h")), str(last))
    cfg = SampleStageConfig(
        members=members,
        steps=steps,
        export=str(export),
        lr=str(lr),
        out=str(out),
        time_range=window,
        device=device,
        progress=False,
    )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    run_sample(cfg)
    seconds = time.perf_counter() - start
    out.unlink()
    return members / seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (cuda when visible), cuda or cpu")
    p.add_argument("--side", type=int, help="domain side in HR px (default 1536, quick 120)")
    p.add_argument("--members", type=int, help="ensemble members (default 10, quick 2)")
    p.add_argument("--steps", type=int, help="DPM-Solver++(2M) steps (default 10, quick 2)")
    p.add_argument("--quick", action="store_true", help="small domain, tiny model (CPU dry run)")
    p.add_argument("--work", type=Path, default=HERE.parent / ".hpcsr" / "bench" / "gpu_sample_domain")
    p.add_argument("--out", type=Path, default=HERE / "results" / "gpu_sample_domain.json")
    a = p.parse_args(argv)
    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    side = a.side or (120 if a.quick else 1536)
    members, steps = a.members or (2 if a.quick else 10), a.steps or (2 if a.quick else 10)
    model = "tiny" if a.quick else "default"
    from hpcsr.models import ModelConfig

    export = untrained_export(a.work / f"untrained_{model}" / "model.pt", ModelConfig.named(model), PAIR)
    lr = shard(a.work, side)
    out = a.work / "ensemble.nc"
    members_per_s(export, lr, out, 1, steps, device)  # warm-up (allocator, kernels), not timed
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    many = members_per_s(export, lr, out, members, steps, device)
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    one = members_per_s(export, lr, out, 1, steps, device)
    fig = figure(
        f"full-domain members/s ({side} x {side} px, {model} model, DPM-Solver++(2M)-{steps}, {members} members)",
        "members/s",
        [many],
        "1-member ensemble (setup not amortised)",
        [one],
        peak_device_memory_mb=peak_gpu,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    print(
        f"[gpu_sample_domain] {device}: {many:.3g} members/s ({one:.3g} for 1 member), peak device memory "
        f"{'n/a' if peak_gpu is None else f'{peak_gpu:.0f} MiB'}, peak RSS {fig['peak_rss_mb']:.0f} MB",
        flush=True,
    )
    meta = {"device": device, "side": side, "pair": PAIR.name, "model": model, "members": members, "steps": steps}
    meta["weights"] = "random initialisation (the cost does not depend on the weights)"
    print(f"wrote {write_result(a.out, 'gpu_sample_domain', [fig], a.quick, meta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
