"""Training-step time of the SRModel on this machine: forward + backward + AdamW of the joint loss
(mean MSE + v-prediction MSE, as the author trains) at pair (10, 3), L = 5, P = 100, batch 2,
in fp32 and under bf16 autocast, for the tiny and the author's (default) size.

Named baseline in the same run: the default size without windowed spatial attention
(windows [1,1,1,1,1]), which isolates the cost of the author's 3 x 3 windows.

    python benchmarks/model_step.py [--threads 2] [--repeats 5] [--out benchmarks/results/model_step.json]

Prints a table of medians over the repeats (after one warm-up step) and writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hpcsr.factors import recipe  # noqa: E402
from hpcsr.models import ModelConfig, build_model  # noqa: E402

BASELINE = "default-no-window"


def configs() -> dict[str, ModelConfig]:
    default = ModelConfig()
    return {
        "tiny": ModelConfig.tiny(),
        "default": default,
        BASELINE: dataclasses.replace(default, windows=(1,) * default.levels),
    }


def step_times(cfg: ModelConfig, precision: str, repeats: int, batch: int, patch: int) -> list[float]:
    torch.manual_seed(0)
    r = recipe(10, 3)
    model = build_model(cfg, r)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    lr = torch.randn(batch, r.context, patch // 10, patch // 10)
    hr = torch.randn(batch, 3, patch, patch)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        with autocast:
            mean = model.predict_mean(lr)
            loss = model.mean_loss(lr, hr) + model.diffusion_loss(lr, hr, mean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        elapsed = time.perf_counter() - start
        if i:  # the first step is warm-up (allocator, oneDNN primitive creation)
            times.append(elapsed)
        print(f"  {precision} step {i}{' (warm-up)' if i == 0 else ''}: {elapsed:.3f} s", flush=True)
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps after one warm-up step")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--patch", type=int, default=100)
    parser.add_argument("--only", nargs="*", default=None, help="subset of: " + ", ".join(configs()))
    parser.add_argument("--out", default="benchmarks/results/model_step.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name, cfg in configs().items():
        if args.only and name not in args.only:
            continue
        params = sum(p.numel() for p in build_model(cfg, recipe(10, 3)).parameters())
        for precision in ("fp32", "bf16"):
            print(f"{name} {precision}:", flush=True)
            times = step_times(cfg, precision, args.repeats, args.batch, args.patch)
            rows.append({"config": name, "precision": precision, "params": params, "median_s": statistics.median(times), "times_s": times})
    base = {r["precision"]: r["median_s"] for r in rows if r["config"] == BASELINE}
    print(f"\npair (10,3), L=5, P={args.patch}, batch {args.batch}, {args.threads} threads; joint loss fwd+bwd+AdamW")
    print(f"{'config':<20}{'precision':>10}{'params':>12}{'median s':>10}{'vs ' + BASELINE:>24}")
    for r in rows:
        ratio = f"{r['median_s'] / base[r['precision']]:.2f}x" if r["precision"] in base else "-"
        print(f"{r['config']:<20}{r['precision']:>10}{r['params']:>12,}{r['median_s']:>10.3f}{ratio:>24}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": args.threads, "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "batch": args.batch, "patch": args.patch, "pair": "s10_t3", "context": 5, "baseline": BASELINE}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
