"""Run every benchmark and collect one table: `python benchmarks/run_all.py [--quick] [--only NAME ...]`.

Each benchmark (preprocess, loader, train, sample, scaling) runs as its own subprocess
(`python benchmarks/<name>.py --out benchmarks/results/<name>.json [--quick]`, one thread per
process unless the benchmark sets its own) with its output streamed under a `[name]` prefix. Every
figure is a median over repeats with its baseline measured in the same run (the contract in
benchmarks/common.py). The harness writes benchmarks/results/all.json (every result, plus how
each run ended) and benchmarks/results/all.md (the table it prints). Exit code 0 when every
benchmark ran, 1 when one failed or was missing (the table says which and why); missed targets
are reported in the table, not in the exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from hpcsr.atomic import write_json_atomic, write_text_atomic

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import format_value, machine  # noqa: E402

BENCHMARKS = ("preprocess", "loader", "train", "sample", "scaling")  # in run order
RESULTS = HERE / "results"


def supports(script: Path, flag: str, env: dict) -> bool:
    """Whether the script's --help mentions `flag` (so --quick is passed only where it is understood)."""
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, env=env, timeout=300)
    return flag in out.stdout


def run_one(name: str, script: Path, quick: bool, results: Path, env: dict, timeout_s: float) -> dict:
    """Run one benchmark script; returns {name, status, seconds, result or error}."""
    entry = {"name": name, "script": str(script)}
    if not script.is_file():
        return {**entry, "status": "missing", "error": f"{script} does not exist yet"}
    out = results / f"{name}.json"
    if out.exists():
        out.unlink()  # never report an older run's numbers as this run's
    cmd = [sys.executable, str(script), "--out", str(out)]
    if quick:
        if supports(script, "--quick", env):
            cmd.append("--quick")
        else:
            entry["note"] = "no --quick option: ran at full size"
    print(f"\n=== benchmark {name}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    tail: list[str] = []

    def forward(stream):  # stream the benchmark's output as it comes, keep its last lines
        for line in stream:
            print(f"[{name}] {line}", end="", flush=True)
            tail.append(line.rstrip())
            del tail[:-20]

    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=HERE.parent,
        start_new_session=True,
    )
    reader = threading.Thread(target=forward, args=(proc.stdout,), daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the benchmark and any process it started (mpirun ranks)
        proc.wait()
        code = None
    reader.join(timeout=10)
    entry["seconds"] = round(time.perf_counter() - start, 1)
    if code != 0:
        why = f"timed out after {timeout_s:.0f} s" if code is None else f"exit code {code}"
        return {**entry, "status": "failed", "error": why, "output_tail": tail}
    if not out.is_file():
        return {**entry, "status": "failed", "error": f"exited 0 but wrote no {out}", "output_tail": tail}
    result = json.loads(out.read_text())
    if not isinstance(result.get("figures"), list):
        return {
            **entry,
            "status": "failed",
            "error": f"{out} has no 'figures' list (see benchmarks/common.py)",
            "result": result,
        }
    return {**entry, "status": "ok", "result": result}


def _target(fig: dict) -> str:
    target = fig.get("target") or {}
    parts = []
    if target.get("value") is not None:
        parts.append(f"{'>=' if fig.get('higher_is_better', True) else '<='} {format_value(target['value'])}")
    if target.get("ratio") is not None:
        parts.append(f">= {target['ratio']:.3g}x")
    return " and ".join(parts) or "-"


def table(entries: list[dict]) -> str:
    """Markdown table: one row per figure, one row per benchmark that did not run."""
    rows = [
        "| benchmark | figure | value | baseline | baseline value | ratio | repeats | target | met |",
        "|---|---|---:|---|---:|---:|---:|---|---|",
    ]
    for e in entries:
        if e["status"] != "ok":
            rows.append(f"| {e['name']} | {e['status']}: {e['error']} | | | | | | | |")
            continue
        for fig in e["result"]["figures"]:
            met = {True: "yes", False: "**no**", None: "-"}[fig.get("met")]
            base = fig.get("baseline") or {}
            rows.append(
                f"| {e['name']} | {fig['name']} | {format_value(fig['value'])} {fig.get('unit', '')} "
                f"| {base.get('name', '-')} | {format_value(base['value']) if 'value' in base else '-'} "
                f"| {fig['ratio']:.2f}x | {len(fig.get('repeats', []))} | {_target(fig)} | {met} |"
            )
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="each benchmark's smaller, faster variant")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    p.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON files and the table")
    p.add_argument("--timeout", type=float, default=3600, help="seconds one benchmark may take (default %(default)s)")
    a = p.parse_args(argv)
    names = a.only or BENCHMARKS
    a.results.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    start = time.perf_counter()
    entries = [run_one(name, HERE / f"{name}.py", a.quick, a.results, env, a.timeout) for name in names]
    md = table(entries)
    summary = {
        "quick": a.quick,
        "machine": machine(),
        "seconds": round(time.perf_counter() - start, 1),
        "benchmarks": entries,
    }
    write_json_atomic(a.results / "all.json", summary, indent=2, sort_keys=False)
    header = (
        f"# Benchmarks{' (--quick)' if a.quick else ''}\n\n"
        f"{summary['machine']['cpus']} CPUs ({summary['machine']['cpu']}), load average "
        f"{summary['machine']['load_average_1_5_15'][0]:.1f} at the end, torch {summary['machine']['torch']}; "
        f"values are medians of the repeats, ratio = improvement over the baseline measured in the same run "
        f"(> 1: better). Total {summary['seconds']:.0f} s.\n\n"
    )
    write_text_atomic(a.results / "all.md", header + md + "\n")
    print("\n" + header + md)
    print(f"\nwrote {a.results / 'all.json'} and {a.results / 'all.md'}")
    return 0 if all(e["status"] == "ok" for e in entries) else 1


if __name__ == "__main__":
    sys.exit(main())
