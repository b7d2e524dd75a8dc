"""Does scale transfer pay? One command, real radar data, CPU, minutes:

    .venv/bin/python benchmarks/transfer_experiment.py            # defaults: ~8 min per seed on 2 busy cores

1. Data: the Australian BoM Rainfields3 day of ../shared/data/bom_c10_20201031.nc (512 x 512 px of
   500 m, 144 steps of 10 min, a thunderstorm day) through `hpcsr-preprocess ingest --cadence 10`
   and `shards --pairs 2x1,4x2`. The native 10-min step is the HR step: aggregated to hourly the
   day has 24 frames, fewer than one (2, 1) context window (L = 10) plus a validation split.
   Split by time: train 00-07 UTC, validation 07-11 UTC (rain on both sides), test after.
2. Source: pair (2, 1) trained from scratch for --source-steps steps.
3. Baseline: pair (4, 2) trained from scratch for --steps steps (in parallel with 2).
4. Transfer: `hpcsr transfer seed <source run> --to 4x2 --strategy transfer`, then (4, 2) trained
   from that seed (`train.init_from`) for the same --steps steps, same settings and seed.
5. Both validation-loss curves (the trainer's own fixed validation patches), the scratch run's
   final validation loss, and the first step at which the transferred run reaches it.
   Target: ratio = steps to reach / steps <= 0.5. Table printed, JSON (and a PNG plot) written.

Each run's recipe is the pair's own (L, beta, f from hpcsr.factors.recipe); the model is
configs/model/tiny.yaml, the patch side --patch. Runs live in --work under names that carry
their settings, so a rerun reuses finished runs (the trainer finds them complete).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import figure, log, write_result  # noqa: E402
from common import run_logged as run  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "bom_c10_20201031.nc"
SOURCE, TARGET = "2x1", "4x2"
SPLIT = "2020-10-31T07:00,2020-10-31T11:00"
CADENCE_MIN = 10
QUICK = {"source_steps": 40, "steps": 30, "val_every": 5}  # --quick: seconds of training, not a verdict


def preprocess(work: Path) -> Path:
    data = work / "data"
    py = [sys.executable, "-m", "preprocessing.cli"]
    run(
        py + ["ingest", "--out", str(data), "--netcdf", str(DATA), "--cadence", str(CADENCE_MIN), "--quiet"],
        work / "logs" / "ingest.log",
        2,
    )
    run(
        py + ["shards", "--out", str(data), "--pairs", f"{SOURCE},{TARGET}", "--split-bounds", SPLIT, "--quiet"],
        work / "logs" / "shards.log",
        2,
    )
    return data


def train_cmd(pair: str, run_dir: Path, data: Path, steps: int, a, seed: int, init_from=None) -> list:
    s, t = pair.split("x")
    cmd = [
        sys.executable,
        "-m",
        "hpcsr.train.cli",
        "model=tiny",
        f"factor.s={s}",
        f"factor.t={t}",
        f"factor.patch={a.patch}",
        f"data_dir={data}",
        f"run_dir={run_dir}",
        f"seed={seed}",
        f"train.stage={a.stage}",
        f"train.steps={steps}",
        f"train.lr={a.lr}",
        f"train.warmup_steps={a.warmup}",
        f"train.val_every={a.val_every}",
        f"train.log_every={a.val_every}",
        f"train.checkpoint_every={steps}",
        f"data.batch_size={a.batch}",
        f"data.val_patches={a.val_patches}",
        "train.progress=false",
    ]
    return cmd + ([f"train.init_from={init_from}"] if init_from else [])


def val_curve(run_dir: Path, stage: str) -> list:
    rows = [json.loads(line) for line in (run_dir / stage / "logs" / "metrics.jsonl").read_text().splitlines() if line]
    curve = {}
    for r in rows:
        if r.get("kind") == "val":
            curve[int(r["step"])] = float(r["val_loss"])  # a resumed run may repeat a step: keep the last
    return sorted(curve.items())


def steps_to_reach(curve: list, level: float):
    return next((step for step, v in curve if v <= level), None)


def one_seed(a, data: Path, work: Path, seed: int) -> dict:
    tag = hashlib.sha256(
        json.dumps(
            [vars(a)[k] for k in ("stage", "patch", "batch", "lr", "warmup", "val_every", "val_patches")]
        ).encode()
    ).hexdigest()[:8]
    runs = work / "runs" / f"{tag}_seed{seed}"
    src, scratch, transfer = (
        runs / f"source_s2_t1_{a.source_steps}",
        runs / f"scratch_s4_t2_{a.steps}",
        runs / f"{a.strategy}_s4_t2_{a.steps}_from{a.source_steps}",
    )
    logs = runs / "logs"
    log(
        f"seed {seed}: source {SOURCE} ({a.source_steps} steps) and scratch {TARGET} ({a.steps} steps) in parallel; "
        f"logs in {logs}"
    )
    timing = {}

    def timed(name, cmd):
        t = time.monotonic()
        run(cmd, logs / f"{name}.log", 1)
        timing[name] = time.monotonic() - t
        log(f"seed {seed}: {name} done in {timing[name]:.0f} s")

    with ThreadPoolExecutor(2) as pool:
        jobs = [
            pool.submit(timed, "source", train_cmd(SOURCE, src, data, a.source_steps, a, seed)),
            pool.submit(timed, "scratch", train_cmd(TARGET, scratch, data, a.steps, a, seed)),
        ]
        for j in jobs:
            j.result()
    seed_file = runs / "seeds" / f"s4_t2_{a.strategy}.pt"
    cmd = [
        sys.executable,
        "-m",
        "hpcsr.cli",
        "transfer",
        "seed",
        str(src),
        "--to",
        TARGET,
        "--out",
        str(seed_file),
        "--strategy",
        a.strategy,
        "--stage",
        a.stage,
        "--quiet",
    ]
    if a.strategy == "freeze":
        cmd += ["--freeze-steps", str(a.freeze_steps)]
    run(cmd, logs / "seed.log", 1)
    report = json.loads(seed_file.with_name(seed_file.stem + ".report.json").read_text())
    counts = ", ".join(f"{v['tensors']} {k}" for k, v in report["summary"].items() if isinstance(v, dict))
    log(f"seed {seed}: seed export {seed_file} ({counts})")
    timed("transfer", train_cmd(TARGET, transfer, data, a.steps, a, seed, init_from=seed_file))

    curves = {
        name: val_curve(path, a.stage) for name, path in (("source", src), ("scratch", scratch), ("transfer", transfer))
    }
    final = curves["scratch"][-1][1]
    reach = steps_to_reach(curves["transfer"], final)
    own = steps_to_reach(curves["scratch"], final)  # the baseline's own steps to its final level (<= all steps)
    return {
        "seed": seed,
        "curves": {k: [[s, v] for s, v in c] for k, c in curves.items()},
        "scratch_final_val": final,
        "transfer_final_val": curves["transfer"][-1][1],
        "transfer_steps_to_reach": reach,
        "ratio": reach / a.steps if reach is not None else None,
        "scratch_ratio": own / a.steps,
        "seconds": timing,
        "transfer_report": report["summary"],
        "runs": {"source": str(src), "scratch": str(scratch), "transfer": str(transfer)},
    }


def table(result: dict) -> str:
    sc, tr = dict(map(tuple, result["curves"]["scratch"])), dict(map(tuple, result["curves"]["transfer"]))
    lines = [f"  {'step':>5}  {'scratch':>10}  {'transfer':>10}"]
    for step in sorted(set(sc) | set(tr)):
        lines.append(f"  {step:>5}  {sc.get(step, float('nan')):>10.5f}  {tr.get(step, float('nan')):>10.5f}")
    return "\n".join(lines)


def plot(results: list, path: Path, a) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        for name, style in (("scratch", "-"), ("transfer", "--")):
            steps, vals = zip(*r["curves"][name])
            ax.plot(steps, vals, style, label=f"{TARGET} {name} (seed {r['seed']})")
        ax.axhline(r["scratch_final_val"], color="grey", lw=0.5)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(f"validation loss ({a.stage} stage)")
    ax.set_yscale("log")
    ax.set_title(f"(4,2) from scratch vs transferred from (2,1) [{a.strategy}]")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/hpcsr_transfer_experiment", help="data, runs and logs (default %(default)s)")
    p.add_argument(
        "--out", default=str(REPO / "benchmarks" / "results" / "transfer_experiment.json"), help="result JSON"
    )
    p.add_argument("--source-steps", type=int, default=200, help="steps of the (2,1) source run (default %(default)s)")
    p.add_argument("--steps", type=int, default=150, help="steps of each (4,2) run (default %(default)s)")
    p.add_argument(
        "--stage",
        choices=("mean", "joint"),
        default="joint",
        help="training stage: joint = both networks, as the author trains (default %(default)s)",
    )
    p.add_argument("--strategy", choices=("transfer", "warm_start", "freeze"), default="transfer")
    p.add_argument("--freeze-steps", type=int, default=30, help="with --strategy freeze (default %(default)s)")
    p.add_argument("--patch", type=int, default=16, help="HR patch side, a multiple of 4 (default %(default)s)")
    p.add_argument("--batch", type=int, default=4, help="patches per step (default %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of every run (default %(default)s)")
    p.add_argument("--warmup", type=int, default=10, help="warm-up steps of every run (default %(default)s)")
    p.add_argument("--val-every", type=int, default=10, help="steps between validation losses (default %(default)s)")
    p.add_argument("--val-patches", type=int, default=32, help="fixed validation patches (default %(default)s)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; each repeats all runs (default %(default)s)")
    p.add_argument("--quick", action="store_true", help=f"a short check of the pipeline: {QUICK} (same figures)")
    a = p.parse_args(argv)
    if a.quick:
        for key, value in QUICK.items():
            setattr(a, key, value)
    if not DATA.is_file():
        print(f"skipped: {DATA} is absent (the shared real-data folder ../shared/data is needed)", file=sys.stderr)
        return 2
    if a.patch % 4:
        p.error(f"--patch {a.patch} must be a multiple of 4 (s = 2 and 4)")
    work = Path(a.work)
    log(f"preprocessing {DATA.name} at {CADENCE_MIN}-min steps into {work / 'data'}")
    data = preprocess(work)
    results = [one_seed(a, data, work, int(s)) for s in a.seeds.split(",")]
    for r in results:
        print(
            f"\nseed {r['seed']}: validation loss of {TARGET} ({a.stage} stage), scratch vs {a.strategy} from {SOURCE}"
        )
        print(table(r))
        reach = r["transfer_steps_to_reach"]
        print(
            f"  scratch final ({a.steps} steps): {r['scratch_final_val']:.5f}; transfer reaches it at step "
            f"{reach if reach is not None else 'never'} -> ratio {r['ratio'] if r['ratio'] is not None else 'n/a'}"
            f" (target <= 0.5); transfer final {r['transfer_final_val']:.5f}"
        )
    never = float("inf")  # a run that never reaches the level
    figures = [
        figure(
            f"steps for {TARGET} to reach the scratch run's final validation loss, as a share of {a.steps} steps",
            "fraction",
            [r["ratio"] if r["ratio"] is not None else never for r in results],
            f"{TARGET} from scratch",
            [r["scratch_ratio"] for r in results],
            higher_is_better=False,
            target_value=0.5,
            strategy=a.strategy,
            stage=a.stage,
        ),
        figure(
            f"final validation loss of {TARGET} after {a.steps} steps",
            "loss",
            [r["transfer_final_val"] for r in results],
            f"{TARGET} from scratch",
            [r["scratch_final_val"] for r in results],
            higher_is_better=False,
            strategy=a.strategy,
            stage=a.stage,
        ),
    ]
    for f in figures:
        print(
            f"{f['name']}: {f['value']:.4g} vs baseline {f['baseline']['value']:.4g} (median of {len(results)} seed(s))"
            + (f"; target <= {f['target']['value']}: {'met' if f['met'] else 'NOT met'}" if f["target"] else "")
        )
    meta = {
        "experiment": f"scale transfer {SOURCE} -> {TARGET} vs {TARGET} from scratch",
        "data": str(DATA),
        "cadence_minutes": CADENCE_MIN,
        "split_bounds": SPLIT,
        "settings": vars(a),
        "results": results,
    }
    out = write_result(a.out, "transfer_experiment", figures, a.quick, meta)
    plot(results, out.with_suffix(".png"), a)
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
