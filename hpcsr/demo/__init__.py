"""`hpcsr demo [--out DIR] [--quick] [--backend auto|local|slurm]`: the main job, end to end.

    1. synthesise Comephore-format data (monthly tar archives of hourly GeoTIFFs) in DIR/raw;
    2. launch the factor grid configs/grid/demo.yaml through hpcsr-launch (the one-node Slurm when
       `sinfo` answers, else the local executor): preprocess (HR store + the pairs' LR shards), then
       per pair the mean and diffusion stages and the ensemble of the test split; s5_t3 is a
       transfer child whose stages start from s4_t2's exports (train.init_from);
    3. evaluate every pair's ensemble against the truth and the baselines (hpcsr.evaluate: metrics,
       plots, report) and the factor grid;
    4. write DIR/report/index.html (and .md) linking everything, and print where it is.

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
import shlex
import subprocess
import sys
import time
from pathlib import Path

from hpcsr.demo.settings import FULL, QUICK, STAGES, overrides

STEPS = 4


def slurm_answers() -> bool:
    """True when `sinfo` shows a node that can run jobs (the one-node cluster of slurm/start.sh, or a site's)."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    states = {s.strip().rstrip("*~#") for s in out.stdout.split()}
    return out.returncode == 0 and bool(states & {"idle", "mixed", "allocated", "completing"})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpcsr demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="output folder, reused by a rerun (default runs/demo, with --quick runs/demo-quick)")
    p.add_argument("--quick", action="store_true", help="reduced sizes and steps (about 3 minutes; what the test runs)")
    p.add_argument("--backend", choices=("auto", "local", "slurm"), default="auto",
                   help="auto: Slurm when sinfo answers, else local processes (default %(default)s)")
    return p


def claim(out: Path, settings: dict) -> None:
    """Record the settings in out/demo.json, or refuse a folder made with other settings (its runs
    would be resumed with the wrong sizes)."""
    record = out / "demo.json"
    if record.is_file():
        before = json.loads(record.read_text())
        if before != settings:
            changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
            raise ValueError(f"{out} holds a demo made with other settings ({', '.join(changed)} differ): "
                             f"use another --out, or delete {out} to start again")
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = record.with_name(f".demo.json.tmp{os.getpid()}")
    tmp.write_text(json.dumps(settings, indent=2))
    os.replace(tmp, record)


def all_finished(plan) -> bool:
    """Every element of the plan has a done marker for its present configuration."""
    from hpcsr.launch.stages import done_marker, identity

    for array in plan.arrays:
        for spec in array.elements:
            marker = done_marker(spec)
            if not marker.is_file() or json.loads(marker.read_text()).get("identity") != identity(spec):
                return False
    return True


def launch(plan, started: float) -> tuple[bool, Path | None]:
    """Submit the plan and follow it to the end (or reuse a finished one); (success, launch folder)."""
    from hpcsr.demo.progress import follow
    from hpcsr.launch import submit
    from hpcsr.launch.records import find_launch

    if all_finished(plan):
        print("every launched element finished before with this configuration: reusing its results", flush=True)
        try:
            return True, find_launch(plan.base.launcher.folder)
        except (FileNotFoundError, ValueError):
            return True, None
    launch_dir = submit.submit(plan)
    print(f"submitted launch {launch_dir} ({plan.kind}); follow it elsewhere with: hpcsr-launch status "
          f"--folder {launch_dir.parent} --wait", flush=True)
    rows = follow(launch_dir, plan.base.launcher.poll_s)
    failed = [r for r in rows if r["state"] != "COMPLETED"]
    for r in failed:
        print(f"element {r['array']} {r['pair']} ended {r['state']} {r['reason']}; log {r.get('stdout')}", file=sys.stderr)
    return not failed, launch_dir


def element_times(plan) -> list[dict]:
    """Seconds each element took, from the done markers (launch order)."""
    from hpcsr.launch.stages import done_marker

    out = []
    for array in plan.arrays:
        for spec in array.elements:
            marker = done_marker(spec)
            done = json.loads(marker.read_text()) if marker.is_file() else {}
            seconds = done["finished"] - done["started"] if "finished" in done and "started" in done else None
            out.append({"array": array.key, "pair": spec.pair.name if spec.pair else "all", "seconds": seconds,
                        "job": done.get("job", "-"), "result": done.get("result", {})})
    return out


def score(plan, out: Path, elements: list[dict], quiet: bool) -> list[dict]:
    """Evaluate each pair's ensemble; returns one record per pair for the index."""
    from hpcsr.demo.index import curves
    from hpcsr.demo.scoring import evaluate_pair

    hr_store = Path(plan.base.data_dir) / "hr.h5"
    report = out / "report"
    records = []
    for array in plan.arrays:
        if array.stage != "sample":
            continue
        for spec in array.elements:
            pair = spec.pair
            ensemble = Path(spec.cfg.run_dir) / "sample" / "ensemble.nc"
            print(f"evaluating {pair.name}: {ensemble}", flush=True)
            metrics = evaluate_pair(ensemble, hr_store, report / pair.name, progress=not quiet)
            recipe = spec.cfg.factor.recipe()
            steps = {e["array"].split(".")[1]: e["result"].get("step") for e in elements
                     if e["pair"] == pair.name and e["array"].split(".")[1] in ("mean", "diffusion")}
            records.append({"name": pair.name, "parent": spec.parent.name if spec.parent else None,
                            "context": recipe.context, "beta_end": recipe.beta_end, "steps": steps,
                            "curves": curves(Path(spec.cfg.run_dir)), "metrics": metrics,
                            "report": f"{pair.name}/report.html", "run_dir": spec.cfg.run_dir})
    return records


def print_scores(records: list[dict]) -> None:
    head = f"{'pair':<7}{'origin':<18}{'CRPS ens':>10}{'RMSE ens':>10}{'RMSE mean':>10}{'RMSE bicub':>11}{'mass tile':>11}"
    print(head)
    for r in records:
        f = r["metrics"]["forecasts"]
        origin = f"from {r['parent']}" if r["parent"] else "scratch"
        print(f"{r['name']:<7}{origin:<18}{f['ensemble']['crps']:>10.4f}{f['ensemble']['rmse']:>10.4f}"
              f"{f.get('mean', {}).get('rmse', float('nan')):>10.4f}{f['bicubic']['rmse']:>11.4f}"
              f"{f['ensemble']['mass']['tile_relative']:>11.1e}")


def run(args) -> int:
    from hpcsr.demo.index import plot_curves, write_index
    from hpcsr.demo.progress import banner
    from hpcsr.demo.scoring import grid_report
    from hpcsr.launch import plan as planning
    from hpcsr.launch.report import plan_table
    from preprocessing.synth import SynthConfig, synthesize

    started = time.monotonic()
    size = QUICK if args.quick else FULL
    out = Path(args.out or ("runs/demo-quick" if args.quick else "runs/demo")).resolve()
    synth = SynthConfig(days=size.days, size=size.size, seed=0, coverage=0.95)  # small grids: keep most of it covered
    claim(out, {"mode": "quick" if args.quick else "full", "size": dataclasses.asdict(size),
                "synth": dataclasses.asdict(synth)})
    backend = args.backend if args.backend != "auto" else ("slurm" if slurm_answers() else "local")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per element; the launcher runs two at once
    print(f"hpcsr demo{' --quick' if args.quick else ''}: output {out}, backend {backend}", flush=True)

    banner(1, STEPS, "synthesise Comephore-format archives (tar of hourly GeoTIFFs)", started)
    archives = synthesize(out / "raw", synth, progress=True)
    for path in archives:
        print(f"  {path} ({path.stat().st_size / 1e6:.1f} MB)")

    banner(2, STEPS, f"launch: {' -> '.join(STAGES)} over the factor grid, with a transfer chain", started)
    launch_args = overrides(size, out, backend)
    plan = planning.build(launch_args)
    print(plan_table(plan))
    command = "hpcsr-launch " + " ".join(shlex.quote(a) for a in launch_args) + " --wait"
    print(f"equivalent command:\n  {command}", flush=True)
    ok, launch_dir = launch(plan, started)
    if not ok:
        print(f"hpcsr demo: the launch failed (see above); fix the cause and rerun: finished elements are reused",
              file=sys.stderr)
        return 1

    banner(3, STEPS, "evaluate each pair's ensemble against the truth and the baselines", started)
    elements = element_times(plan)
    records = score(plan, out, elements, quiet=False)
    report = out / "report"
    grid = grid_report([report / r["name"] / "metrics.json" for r in records], report / "grid")

    banner(4, STEPS, "index report", started)
    curves_png = plot_curves(report / "training_curves.png", records)
    summary = {"backend": backend, "mode": "--quick" if args.quick else "full", "stages": list(STAGES),
               "data": f"{size.days} days, {size.size} x {size.size} km, hourly", "members": size.members,
               "seconds": time.monotonic() - started, "command": command, "launch_dir": str(launch_dir),
               "grid_report": str(grid.relative_to(report)), "curves": curves_png.name, "elements": elements,
               "pairs": records}
    index = write_index(report, summary)
    print_scores(records)
    print(f"\nhpcsr demo finished in {time.monotonic() - started:.0f} s.\nReport: {index}\n"
          f"        (also {index.with_suffix('.md')}; each pair's report is linked from it)", flush=True)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from hpcsr.config import ConfigError

    try:
        return run(args)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"hpcsr demo: error: {err}", file=sys.stderr)
        return 2
