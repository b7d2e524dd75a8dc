"""Training throughput and per-rank memory of the DeepSpeed engine against plain PyTorch DDP.

For each stage (mean; diffusion = denoiser on the frozen mean), each rank count (1, 2) and each
engine (plain PyTorch DistributedDataParallel with torch AdamW + clipping + the same schedule,
the baseline; DeepSpeed ZeRO 1, 2, 3 as hpcsr.train builds it), one launch of `ranks` fresh
processes (found by hpcsr.dist, gloo on CPU) trains the same model at (s, t) = (10, 3), L = 5,
patch 100 on fixed synthetic batches (no data loading: both engines see identical tensors, so
the figure is the engine's cost alone), one warm-up step then `--steps` timed steps; each
configuration is launched `--repeats` times, the engine order alternating between rounds (ABBA),
so that a machine load drifting during the run favours no engine.

Figures (medians over the timed steps of all rounds; step time = slowest rank):
  - samples/s of each ZeRO stage, baseline DDP with the same ranks and stage.
    Target: DeepSpeed costs at most 10 % over DDP (ratio >= 1/1.1).
  - per-rank memory of ZeRO 3, baseline ZeRO 1 (same ranks and stage), lower is better: the bytes
    of every tensor alive on the rank between backward and the optimiser step of an extra untimed
    step after the timed ones (the gradient peak, optimizer states allocated; max over ranks) - weights, gradients, optimizer states, DeepSpeed's flat
    buffers and the fixed input batch - counted storage by storage (CPU) or
    torch.cuda.memory_allocated (GPU). The RSS growth is recorded too, but on CPU it is dominated
    by activation memory the allocator keeps. Target: at most 0.6x ZeRO 1 (ratio >= 1/0.6).
    Per trainable fp32 parameter DeepSpeed holds at that point 4 (whole weights) + (4 gradient +
    4 fp32 master + 8 Adam) / N bytes under ZeRO 1 and (4 weights + 4 gradient + 4 bucket + 4 fp32
    master + 8 Adam) / N under ZeRO 3; per frozen parameter 4 against 4 / N (less the small
    parameters ZeRO 3 keeps whole). So the ratio depends on the rank count N: about 1.0 at N = 2
    for trained weights, 0.6 at N = 6, 0.5 at N = 8; this machine can only run N <= 2.

    python benchmarks/train.py [--quick] [--out benchmarks/results/train.json] [--device auto]
        [--ranks 1,2] [--engines ddp,zero1,zero2,zero3] [--stages mean,diffusion] [--steps 3] [--repeats 2]
        [--batch 2] [--precision fp32|bf16] [--size tiny|default|large] [--checkpoint DIR]

Without ddp in --engines (memory only) the samples/s figures are left out.
--checkpoint DIR: after the memory step, each DeepSpeed launch also saves and loads back a
checkpoint in DIR (seconds, MB; benchmarks/scaling.py uses it).

--quick: tiny model, mean stage, engines ddp, zero1, zero3, one round (a few minutes on CPU).
On a GPU (--device cuda) ranks beyond the visible GPUs are skipped (reported).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from common import figure, format_value, write_result  # noqa: E402

ENGINES = ("ddp", "zero1", "zero2", "zero3")
STAGES = ("mean", "diffusion")
OVERHEAD_TARGET = 1 / 1.1  # DeepSpeed samples/s >= DDP's / 1.1
MEMORY_TARGET = 1 / 0.6  # ZeRO-3 memory <= 0.6 x ZeRO-1


# ---------------------------------------------------------------------------- one launch (worker)


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def live_tensor_mb(device) -> float:
    """Bytes of every tensor storage reachable from Python in this process (each storage once, with
    each tensor's .grad), in MiB: the weights, gradients, optimizer states and engine buffers this
    rank holds (plus the fixed input batch), whatever allocator caching does to the RSS. Buffers
    held only in C++ (DDP's reducer buckets) are not seen. On CUDA: memory_allocated."""
    import gc

    import torch

    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    gc.collect()
    storages = {}
    for obj in gc.get_objects():
        if not isinstance(obj, torch.Tensor):
            continue
        for t in (obj, obj.grad):
            if t is not None and t.device.type == "cpu":
                storage = t.untyped_storage()
                storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
    return sum(storages.values()) / 2**20


def checkpoint_times(engine, folder: Path, dist) -> dict:
    """Seconds to save (every rank, then a barrier) and to load back this rank's DeepSpeed checkpoint
    (engine.save_checkpoint / load_checkpoint, as hpcsr.train.checkpoint calls them), and its bytes."""
    dist.barrier()
    start = time.perf_counter()
    engine.save_checkpoint(str(folder), tag="bench", save_latest=False)
    dist.barrier()
    saved = time.perf_counter() - start
    start = time.perf_counter()
    engine.load_checkpoint(str(folder), tag="bench")
    dist.barrier()
    loaded = time.perf_counter() - start
    size = sum(p.stat().st_size for p in (folder / "bench").rglob("*") if p.is_file())
    return {"save_s": saved, "load_s": loaded, "mb": size / 1e6}


def worker(a) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from hpcsr.config import compose
    from hpcsr.dist import init_distributed, shutdown
    from hpcsr.models import build_model
    from hpcsr.train.objective import StageObjective

    info = init_distributed(timeout_s=600)
    device = torch.device(f"cuda:{info.local_rank}" if a.device == "cuda" else "cpu")
    zero = a.engine[4:] if a.engine.startswith("zero") else "1"
    cfg = compose(
        [
            "factor=s10_t3",
            f"model={a.size}",
            f"deepspeed=zero{zero}",
            f"data.batch_size={a.batch}",
            f"deepspeed.precision={a.precision}",
            f"train.stage={a.stage}",
            "train.warmup_steps=1",
            f"train.steps={a.steps + 2}",
        ]
    )
    r = cfg.factor.recipe()
    gen = torch.Generator().manual_seed(100 + info.rank)
    side = r.patch // r.pair.s
    lr = torch.randn(a.batch, r.context, side, side, generator=gen).to(device)
    hr = torch.randn(a.batch, r.pair.t, r.patch, r.patch, generator=gen).to(device)
    base_rss = rss_mb()
    base_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.manual_seed(0)
    model = build_model(cfg.model, r)
    objective = StageObjective(model, a.stage, autocast_bf16=a.precision == "bf16")
    params = sum(p.numel() for p in objective.parameters() if p.requires_grad)

    if a.engine == "ddp":
        import functools

        from hpcsr.train.engine import warmup_cosine

        objective.to(device)
        net = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
        trainable = [p for p in objective.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=cfg.train.lr, foreach=False)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, functools.partial(warmup_cosine, warmup=1, total=a.steps + 2, floor=0.0)
        )

        def step(k, measure=False):
            loss, _ = net(lr, hr, torch.Generator(device=device).manual_seed(k))
            loss.backward()
            held = live_tensor_mb(device) if measure else None
            torch.nn.utils.clip_grad_norm_(trainable, cfg.deepspeed.gradient_clipping)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            return held
    else:
        from hpcsr.train.engine import build_engine

        engine = build_engine(objective, cfg)

        def step(k, measure=False):
            loss, _ = engine(lr, hr, torch.Generator(device=device).manual_seed(k))
            engine.backward(loss)
            held = live_tensor_mb(device) if measure else None
            engine.step()
            return held

    step(0)  # warm-up: allocations, DeepSpeed's lazy buffers, torch AdamW's lazy states
    times = []
    for k in range(1, a.steps + 1):
        dist.barrier()
        start = time.perf_counter()
        step(k)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        times.append(elapsed.item())
    after_backward = step(a.steps + 1, measure=True)  # untimed: measured between backward and optimiser step
    mem = torch.tensor(
        [
            after_backward,
            live_tensor_mb(device),
            rss_mb() - base_rss,
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_peak,
        ],
        dtype=torch.float64,
    )
    dist.all_reduce(mem, op=dist.ReduceOp.MAX)
    ckpt = checkpoint_times(engine, Path(a.checkpoint), dist) if a.checkpoint and a.engine != "ddp" else None
    if info.rank == 0:
        print(
            "RESULT "
            + json.dumps(
                {
                    "step_s": times,
                    "tensor_mb": mem[0].item(),
                    "tensor_after_step_mb": mem[1].item(),
                    "rss_growth_mb": mem[2].item(),
                    "peak_growth_mb": mem[3].item(),
                    "trainable": params,
                    "world": info.world_size,
                    "checkpoint": ckpt,
                }
            ),
            flush=True,
        )
    shutdown(0)


# ---------------------------------------------------------------------------- the harness


def launch(ranks: int, args: list[str], timeout: float) -> dict:
    """Start `ranks` workers wired by env variables; returns rank 0's RESULT record."""
    from hpcsr.dist import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.setdefault("OMP_NUM_THREADS", "1")
    procs = []
    for r in range(ranks):
        env_r = {
            **env,
            "RANK": str(r),
            "WORLD_SIZE": str(ranks),
            "LOCAL_RANK": str(r),
            "LOCAL_WORLD_SIZE": str(ranks),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "PYTHONPATH": str(REPO),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--worker", *args],
                cwd=REPO,
                env=env_r,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise RuntimeError(f"workers {args} did not finish within {timeout} s")
    if any(p.returncode for p in procs):
        raise RuntimeError(f"workers {args} failed (exit {[p.returncode for p in procs]}):\n{outputs[0][-3000:]}")
    line = next(ln for ln in outputs[0].splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE / "results" / "train.json", help="result JSON")
    p.add_argument("--quick", action="store_true", help="tiny model, mean stage, DDP / ZeRO 1 / ZeRO 3")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda when visible")
    p.add_argument("--ranks", default="1,2", help="comma-separated rank counts")
    p.add_argument("--engines", default=None, help=f"comma-separated, from {','.join(ENGINES)}")
    p.add_argument("--stages", default=None, help="comma-separated, from mean,diffusion")
    p.add_argument("--steps", type=int, default=3, help="timed steps per launch (after one warm-up step)")
    p.add_argument("--repeats", type=int, default=2, help="launches per configuration, engine order alternating")
    p.add_argument("--batch", type=int, default=2, help="patches per rank and step")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--timeout", type=float, default=1800, help="seconds one launch may take")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--engine", default="ddp", help=argparse.SUPPRESS)
    p.add_argument("--stage", default="mean", help=argparse.SUPPRESS)
    p.add_argument(
        "--size", choices=("tiny", "default", "large"), help="model size (default: tiny with --quick, else default)"
    )
    p.add_argument("--checkpoint", help="also time a DeepSpeed checkpoint save and load in this folder (not for ddp)")
    a = p.parse_args(argv)
    if a.device == "auto":
        import torch

        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.worker:
        worker(a)
        return 0

    size = a.size or ("tiny" if a.quick else "default")
    engines = (a.engines or ("ddp,zero1,zero3" if a.quick else ",".join(ENGINES))).split(",")
    if a.quick:
        a.repeats = 1
    stages = (a.stages or ("mean" if a.quick else ",".join(STAGES))).split(",")
    ranks = [int(r) for r in a.ranks.split(",")]
    bad = [e for e in engines if e not in ENGINES] + [s for s in stages if s not in STAGES]
    if bad or not engines:
        p.error(f"unknown engine/stage {bad}: engines from {ENGINES}, stages from {STAGES}")
    gpus = 0
    if a.device == "cuda":
        import torch

        gpus = torch.cuda.device_count()
    results, skipped = {}, []
    for stage in stages:
        for n in ranks:
            if a.device == "cuda" and n > gpus:
                skipped.append(f"{n} ranks: {gpus} GPU(s) visible")
                continue
            for round_ in range(a.repeats):
                # alternate the order (ABBA...) so a drifting machine load favours no engine
                for engine in engines if round_ % 2 == 0 else engines[::-1]:
                    t0 = time.perf_counter()
                    args = [
                        "--engine",
                        engine,
                        "--stage",
                        stage,
                        "--size",
                        size,
                        "--steps",
                        str(a.steps),
                        "--batch",
                        str(a.batch),
                        "--precision",
                        a.precision,
                        "--device",
                        a.device,
                    ]
                    if a.checkpoint:
                        args += ["--checkpoint", str(Path(a.checkpoint) / f"{size}_{stage}_{n}_{engine}")]
                    rec = launch(n, args, a.timeout)
                    rec["samples_per_s"] = [n * a.batch / s for s in rec["step_s"]]
                    print(
                        f"{stage:9s} ranks {n} {engine:5s} round {round_}: "
                        f"{statistics.median(rec['samples_per_s']):8.3f} samples/s, "
                        f"step {statistics.median(rec['step_s']):7.3f} s, tensors {rec['tensor_mb']:7.1f} MiB/rank, "
                        f"RSS +{rec['rss_growth_mb']:.1f} (peak +{rec['peak_growth_mb']:.1f}), "
                        f"launch {time.perf_counter() - t0:.0f} s",
                        flush=True,
                    )
                    merged = results.setdefault((stage, n, engine), {"rounds": [], "samples_per_s": [], "step_s": []})
                    merged["rounds"].append(rec)
                    merged["samples_per_s"] += rec["samples_per_s"]
                    merged["step_s"] += rec["step_s"]
                    merged["tensor_mb"] = statistics.median(r["tensor_mb"] for r in merged["rounds"])
                    merged["trainable"] = rec["trainable"]

    figures, rows = [], []
    for (stage, n, engine), rec in results.items():
        ddp = results.get((stage, n, "ddp"))  # without it (memory only): no samples/s figure
        z1 = results.get((stage, n, "zero1"))
        rows.append(
            (
                stage,
                n,
                engine,
                statistics.median(rec["samples_per_s"]),
                statistics.median(rec["samples_per_s"]) / statistics.median(ddp["samples_per_s"])
                if ddp
                else float("nan"),
                rec["tensor_mb"],
                rec["tensor_mb"] / z1["tensor_mb"] if z1 else float("nan"),
            )
        )
        if engine == "ddp":
            continue
        if ddp:
            figures.append(
                figure(
                    f"{stage} stage, {n} rank(s), DeepSpeed ZeRO-{engine[4:]} samples/s",
                    "samples/s",
                    rec["samples_per_s"],
                    f"plain PyTorch DDP, {n} rank(s)",
                    ddp["samples_per_s"],
                    higher_is_better=True,
                    target_ratio=OVERHEAD_TARGET,
                )
            )
        if engine == "zero3" and z1:
            figures.append(
                figure(
                    f"{stage} stage, {n} rank(s), ZeRO-3 live tensor memory per rank",
                    "MiB",
                    [r["tensor_mb"] for r in rec["rounds"]],
                    f"ZeRO-1, {n} rank(s)",
                    [r["tensor_mb"] for r in z1["rounds"]],
                    higher_is_better=False,
                    target_ratio=MEMORY_TARGET,
                )
            )
    print("\n| stage | ranks | engine | samples/s | vs DDP | tensor MiB/rank | vs ZeRO-1 |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for stage, n, engine, sps, vs_ddp, mem, vs_z1 in rows:
        print(f"| {stage} | {n} | {engine} | {format_value(sps)} | {vs_ddp:.3f} | {mem:.1f} | {vs_z1:.2f} |")
    if skipped:
        print("skipped: " + "; ".join(skipped))
    meta = {
        "size": size,
        "pair": "s10_t3",
        "context": 5,
        "patch": 100,
        "batch_per_rank": a.batch,
        "timed_steps": a.steps,
        "rounds": a.repeats,
        "precision": a.precision,
        "device": a.device,
        "skipped": skipped,
        "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "trainable_parameters": {
            s: next(r["trainable"] for (st, _, _), r in results.items() if st == s)
            for s in stages
            if any(k[0] == s for k in results)
        },
        "runs": [
            {"stage": s, "ranks": n, "engine": e, "round": i, **r}
            for (s, n, e), merged in results.items()
            for i, r in enumerate(merged["rounds"])
        ],
    }
    write_result(a.out, "train", figures, a.quick, meta)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
