"""`hpcsr demo [--out DIR] [--quick] [--backend auto|local|slurm]`: the main job, end to end.

    1. launch 1 (hpcsr-launch, on the one-node Slurm when `sinfo` answers, else the local
       executor): the preprocess stage on synthetic data (preprocess.source=synthetic) for
       configs/grid/demo.yaml: Comephore-format archives (monthly tar of hourly GeoTIFFs) in
       DIR/data/raw, the HR store and every pair's LR shard;
    2. launch 2: mean stage, diffusion stage and test-split ensemble of the pairs trained from
       scratch (s2_t1, s4_t2), two elements at a time;
    3. transfer (hpcsr.transfer): the plan picks each further pair's parent among the trained
       pairs (nearest by its documented distance), and a seed export per stage is made with the
       shape-aware 'transfer' strategy and its per-tensor report;
    4. launch 3: the same stages for the transferred pair (s5_t3), initialised from the seeds;
    5. evaluate every pair's ensemble against the truth and the baselines (hpcsr.evaluate: metrics,
       plots, report) and the factor grid;
    6. write DIR/report/index.html (and .md) linking everything, and print where it is.

Rerunning reuses what is finished: the archives, every launched element whose done marker holds
the same configuration (the launch is skipped when all are), and the evaluations newer than their
ensembles. --quick is a reduced version (a test runs it). Exit codes: 0 done, 1 a stage failed
(its log tail is printed), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

from hpcsr.artifacts import ensemble_path, export_path
from hpcsr.atomic import write_json_atomic
from hpcsr.config import ConfigError
from hpcsr.demo.index import curves, plot_curves, write_index
from hpcsr.demo.progress import banner, follow
from hpcsr.demo.scoring import evaluate_pair, grid_report
from hpcsr.demo.settings import (
    FULL,
    QUICK,
    SCRATCH,
    TRANSFER,
    preprocess_launch,
    preprocess_settings,
    training_launch,
)
from hpcsr.factors import FactorPair, recipe
from hpcsr.launch import plan as planning
from hpcsr.launch import submit
from hpcsr.launch.records import read_record
from hpcsr.launch.report import plan_table
from hpcsr.launch.stages import done_marker, identity
from hpcsr.transfer import make_seed, plan_chain
from hpcsr.transfer.seed import report_path_for

STEPS = 6


def slurm_answers() -> bool:
    """True when `sinfo` shows a node that can run jobs (the one-node cluster of slurm/start.sh, or a site's)."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    states = {s.strip().rstrip("*~#") for s in out.stdout.split()}
    return out.returncode == 0 and bool(states & {"idle", "mixed", "allocated", "completing"})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hpcsr demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", help="output folder, reused by a rerun (default runs/demo, with --quick runs/demo-quick)")
    p.add_argument("--quick", action="store_true", help="reduced sizes and steps (about 3 minutes; what the test runs)")
    p.add_argument(
        "--backend",
        choices=("auto", "local", "slurm"),
        default="auto",
        help="auto: Slurm when sinfo answers, else local processes (default %(default)s)",
    )
    return p


def claim(out: Path, settings: dict) -> None:
    """Record the settings in out/demo.json, or refuse a folder made with other settings (its runs
    would be resumed with the wrong sizes)."""
    record = out / "demo.json"
    if record.is_file():
        before = json.loads(record.read_text())
        if before != settings:
            changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
            raise ValueError(
                f"{out} holds a demo made with other settings ({', '.join(changed)} differ): "
                f"use another --out, or delete {out} to start again"
            )
        return
    write_json_atomic(record, settings, indent=2, sort_keys=False)


def all_finished(plan) -> bool:
    """Every element of the plan has a done marker for its present configuration."""
    for array in plan.arrays:
        for spec in array.elements:
            marker = done_marker(spec)
            if not marker.is_file() or json.loads(marker.read_text()).get("identity") != identity(spec):
                return False
    return True


def reap_local_queue(launch_dir: Path) -> None:
    """Wait for the local backend's queue process (our child) once its elements have ended, so it
    leaves no zombie and its CPU time counts in this process's children (the summary reports it)."""
    pid = read_record(launch_dir).get("local_queue_pid")
    deadline = time.monotonic() + 30
    while pid and time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:  # not our child (a resumed launch) or reaped already
            return
        time.sleep(0.2)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the local launches' elements)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def command_line(args: list[str]) -> str:
    return "hpcsr-launch " + " ".join(shlex.quote(a) for a in args) + " --wait"


def launch(args: list[str], title: str):
    """Plan and submit one launch and follow it to the end (or reuse a finished one); returns the
    plan. Raises RuntimeError naming the failed elements. Ctrl-C cancels the launch (a rerun
    resumes from the checkpoints) instead of leaving its elements running unwatched."""
    plan = planning.build(args)
    print(plan_table(plan))
    print(f"equivalent command:\n  {command_line(args)}", flush=True)
    if all_finished(plan):
        print(f"{title}: every element finished before with this configuration; reusing its results", flush=True)
        return plan
    launch_dir = submit.submit(plan)
    print(
        f"submitted {title} as {launch_dir} ({plan.kind}); from another shell: hpcsr-launch status "
        f"--folder {launch_dir.parent} --launch {launch_dir.name}",
        flush=True,
    )
    try:
        rows = follow(launch_dir, plan.base.launcher.poll_s)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {submit.cancel(launch_dir)}; rerun the same command to resume", file=sys.stderr)
        raise SystemExit(130) from None
    reap_local_queue(launch_dir)
    failed = [r for r in rows if r["state"] != "COMPLETED"]
    if failed:
        names = ", ".join(f"{r['array']} {r['pair']} ({r['state']})" for r in failed)
        raise RuntimeError(
            f"{title} failed: {names}; logs under {launch_dir}. Fix the cause and rerun "
            "`hpcsr demo` with the same --out: finished elements are reused"
        )
    return plan


def element_times(plan) -> list[dict]:
    """Seconds each element took, from the done markers (launch order)."""
    out = []
    for array in plan.arrays:
        for spec in array.elements:
            marker = done_marker(spec)
            done = json.loads(marker.read_text()) if marker.is_file() else {}
            seconds = done["finished"] - done["started"] if "finished" in done and "started" in done else None
            out.append(
                {
                    "array": array.key,
                    "pair": spec.pair.name if spec.pair else "all",
                    "seconds": seconds,
                    "job": done.get("job", "-"),
                    "result": done.get("result", {}),
                }
            )
    return out


def seed_transfers(size, run_root: Path, seeds_dir: Path) -> list[dict]:
    """hpcsr.transfer: each TRANSFER pair's parent from the plan over the trained SCRATCH pairs, and a
    seed export per training stage from the parent's export of that stage (remade when the
    parent's export is newer); returns one record per transferred pair for the index."""
    out = []
    for entry in plan_chain([FactorPair(*p) for p in TRANSFER], trained=[FactorPair(*p) for p in SCRATCH]):
        if entry.parent is None:
            raise RuntimeError(f"the transfer plan found no parent for {entry.pair.name} among {SCRATCH}")
        print(
            f"transfer plan: {entry.pair.name} <- {entry.parent.name} (distance {entry.distance:.3f}: "
            "|ln s - ln s'| + |ln t - ln t'|, nearest trained pair)",
            flush=True,
        )
        target = dataclasses.replace(recipe(entry.pair.s, entry.pair.t), patch=size.patch)
        record = {
            "pair": entry.pair.name,
            "parent": entry.parent.name,
            "distance": entry.distance,
            "seeds": {},
            "reports": {},
            "summaries": {},
        }
        for stage in ("mean", "diffusion"):
            source = run_root / entry.parent.name / stage
            seed = seeds_dir / f"{entry.pair.name}_{stage}.pt"
            report = report_path_for(seed)
            parent_export = export_path(source)
            if seed.is_file() and report.is_file() and seed.stat().st_mtime >= parent_export.stat().st_mtime:
                print(f"  {stage}: seed {seed} is newer than {parent_export}; reusing it")
            else:
                result = make_seed(source, entry.pair.name, seed, strategy="transfer", recipe=target, stage=stage)
                print(result.report.format(tensors=False), flush=True)
            record["seeds"][stage], record["reports"][stage] = str(seed), str(report)
            record["summaries"][stage] = json.loads(report.read_text())["summary"]
        out.append(record)
    return out


def score(plans, out: Path, elements: list[dict], quiet: bool) -> list[dict]:
    """Evaluate each pair's ensemble; returns one record per pair for the index."""
    report = out / "report"
    records = []
    for plan in plans:
        hr_store = Path(plan.base.data_dir) / "hr.h5"
        for array in plan.arrays:
            if array.stage != "sample":
                continue
            for spec in array.elements:
                pair = spec.pair
                ensemble = ensemble_path(spec.cfg.run_dir)
                print(f"evaluating {pair.name}: {ensemble}", flush=True)
                metrics = evaluate_pair(ensemble, hr_store, report / pair.name, progress=not quiet)
                pair_recipe = spec.cfg.factor.recipe()
                steps = {
                    e["array"].split(".")[1]: e["result"].get("step")
                    for e in elements
                    if e["pair"] == pair.name and e["array"].split(".")[1] in ("mean", "diffusion")
                }
                records.append(
                    {
                        "name": pair.name,
                        "parent": None,
                        "context": pair_recipe.context,
                        "beta_end": pair_recipe.beta_end,
                        "steps": steps,
                        "curves": curves(Path(spec.cfg.run_dir)),
                        "metrics": metrics,
                        "report": f"{pair.name}/report.html",
                        "run_dir": spec.cfg.run_dir,
                    }
                )
    return records


def print_scores(records: list[dict]) -> None:
    head = (
        f"{'pair':<7}{'origin':<18}{'CRPS ens':>10}{'RMSE ens':>10}{'RMSE mean':>10}{'RMSE bicub':>11}{'mass tile':>11}"
    )
    print(head)
    for r in records:
        f = r["metrics"]["forecasts"]
        origin = f"from {r['parent']}" if r["parent"] else "scratch"
        print(
            f"{r['name']:<7}{origin:<18}{f['ensemble']['crps']:>10.4f}{f['ensemble']['rmse']:>10.4f}"
            f"{f.get('mean', {}).get('rmse', float('nan')):>10.4f}{f['bicubic']['rmse']:>11.4f}"
            f"{f['ensemble']['mass']['tile_relative']:>11.1e}"
        )


def run(args) -> int:
    started = time.monotonic()
    size = QUICK if args.quick else FULL
    out = Path(args.out or ("runs/demo-quick" if args.quick else "runs/demo")).resolve()
    claim(
        out,
        {
            "mode": "quick" if args.quick else "full",
            "size": dataclasses.asdict(size),
            "preprocess": preprocess_settings(size),
        },
    )
    backend = args.backend if args.backend != "auto" else ("slurm" if slurm_answers() else "local")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per element; the launcher runs two at once
    print(f"hpcsr demo{' --quick' if args.quick else ''}: output {out}, backend {backend}", flush=True)

    banner(1, STEPS, "launch 1: preprocess (synthetic Comephore-format archives, HR store, LR shards)", started)
    commands = [preprocess_launch(size, out, backend)]
    prep_plan = launch(commands[0], "launch 1 (preprocess)")
    (prep,) = element_times(prep_plan)
    for path in map(Path, prep["result"].get("archives", [])):
        print(f"  {path} ({path.stat().st_size / 1e6:.1f} MB)")
    grid = sorted((p.s, p.t) for p in prep_plan.pairs)
    if grid != sorted(SCRATCH + TRANSFER):
        raise ValueError(
            f"configs/grid/demo.yaml lists {grid}, the demo trains {sorted(SCRATCH + TRANSFER)}: "
            "make them agree (hpcsr/demo/settings.py)"
        )

    banner(
        2,
        STEPS,
        f"launch 2: mean -> diffusion -> sample of {', '.join(f's{s}_t{t}' for s, t in SCRATCH)} (from scratch)",
        started,
    )
    commands.append(training_launch(size, out, backend, SCRATCH))
    scratch_plan = launch(commands[-1], "launch 2 (from scratch)")

    banner(3, STEPS, "transfer to a further pair (hpcsr.transfer: plan and seed exports)", started)
    transfers = seed_transfers(size, Path(scratch_plan.base.run_root), out / "seeds")

    banner(
        4,
        STEPS,
        f"launch 3: mean -> diffusion -> sample of {', '.join(t['pair'] for t in transfers)} (from the seeds)",
        started,
    )
    transfer_plans = []
    for t in transfers:
        pair = next(p for p in TRANSFER if f"s{p[0]}_t{p[1]}" == t["pair"])
        commands.append(training_launch(size, out, backend, [pair], t["seeds"]))
        transfer_plans.append(launch(commands[-1], f"launch 3 ({t['pair']})"))

    banner(5, STEPS, "evaluate each pair's ensemble against the truth and the baselines", started)
    plans = [prep_plan, scratch_plan, *transfer_plans]
    elements = [e for plan in plans for e in element_times(plan)]
    records = score([scratch_plan, *transfer_plans], out, elements, quiet=False)
    for r in records:
        r["parent"] = next((t["parent"] for t in transfers if t["pair"] == r["name"]), None)
    report = out / "report"
    grid_html = grid_report([report / r["name"] / "metrics.json" for r in records], report / "grid")

    banner(6, STEPS, "index report", started)
    summary = {
        "backend": backend,
        "mode": "--quick" if args.quick else "full",
        "stages": ["preprocess", "mean", "diffusion", "sample"],
        "data": f"{size.days} days, {size.size} x {size.size} km, hourly",
        "members": size.members,
        "seconds": time.monotonic() - started,
        "out": str(out),
        "report_dir": str(report),
        "commands": [command_line(c) for c in commands],
        "launch_folder": str(out / "launch"),
        "grid_report": str(grid_html.relative_to(report)),
        "elements": elements,
        "pairs": records,
        "transfers": transfers,
        "curves": plot_curves(report / "training_curves.png", records).name,
    }
    index = write_index(report, summary)
    print_scores(records)
    wall = time.monotonic() - started
    cores = f" ({cpu_seconds():.0f} CPU-s on this machine)" if backend == "local" else ""
    print(
        f"\nhpcsr demo finished in {wall:.0f} s{cores}, load average {os.getloadavg()[0]:.1f}.\nReport: {index}\n"
        f"        (also {index.with_suffix('.md')}; each pair's report is linked from it)",
        flush=True,
    )
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"hpcsr demo: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # a launch failed; its log tails are printed above
        print(f"hpcsr demo: {err}", file=sys.stderr)
        return 1
