"""Preprocessing cost vs the period: `hpcsr-preprocess all` (ingest + the shards of the paper's four
factor pairs) on synthetic Comephore months of full-size 1536 x 1536 hourly frames, one fresh
`mpirun -n R` launch per run, measured with wall time, CPU time of all ranks and peak RSS per rank
(scaling_parts.measure). The period grows (1 day, 1 week, 1 month); 2 ranks vs 1 is timed at one
period, the runs interleaved. The projection to years and many ranks is in `projection`.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from scaling_parts.measure import du_mb, run_measured

REPO = Path(__file__).resolve().parents[2]
PAIRS = "1x3,10x1,10x3,25x6"  # the paper's four factor pairs
START = "2020-03-01"


def synthetic(data: Path, days: int, size: int) -> Path:
    """Folder of the synthetic archives of `days` days (made once, reused by a rerun)."""
    from preprocessing.synth import SynthConfig, synthesize

    raw = data / f"raw_{size}px_{days}d"
    synthesize(raw, SynthConfig(days=days, size=size, seed=0, start=START), progress=False)
    return raw


def env() -> dict:
    """One thread per rank, this checkout first, no variables of an enclosing MPI launch."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_", "HYDI_"))}
    out.update(OMP_NUM_THREADS="1", BLOSC_NTHREADS="1", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return out


def run(raw: Path, out: Path, ranks: int, logs: Path) -> dict:
    """One measured launch on a fresh output folder; returns the measurement and the output sizes."""
    shutil.rmtree(out, ignore_errors=True)
    bindir = Path(sys.executable).parent
    cmd = [bindir / "mpirun", "-n", ranks, bindir / "hpcsr-preprocess", "all", "--quiet"]
    cmd += ["--out", out, "--comephore", raw, "--pairs", PAIRS]
    result = run_measured(cmd, logs / f"{raw.name}_{ranks}ranks.log", env=env(), cwd=REPO)
    result["hr_store_mb"] = du_mb(out, "hr.h5")
    result["shards_mb"] = du_mb(out, "shards/*.h5")
    shutil.rmtree(out, ignore_errors=True)
    return result


def measure(data: Path, days_list: list[int], size: int, compare_days: int, repeats: int, logs) -> dict:
    """Runs on 1 rank for every period, then `repeats` interleaved 1- and 2-rank runs at `compare_days`."""
    from scaling_parts.report import say

    periods = []
    for days in days_list:
        raw = synthetic(data, days, size)
        res = run(raw, data / "out", 1, logs)
        res.update(days=days, frames=24 * days, input_mb=du_mb(raw, "*.tar"))
        periods.append(res)
        say(
            f"preprocess {days:3d} d ({24 * days} frames): {res['wall_s']:.1f} s wall, {res['cpu_s']:.1f} s CPU, "
            f"peak RSS {res['peak_rss_mb']:.0f} MB, load {res['load_average_1']:.1f}"
        )
    raw = synthetic(data, compare_days, size)
    ranks = {1: [], 2: []}
    for rep in range(repeats):
        for n in (1, 2) if rep % 2 == 0 else (2, 1):
            ranks[n].append(run(raw, data / "out", n, logs))
            r = ranks[n][-1]
            say(
                f"preprocess {compare_days} d on {n} rank(s), repeat {rep + 1}: {r['wall_s']:.1f} s wall, "
                f"{r['cpu_s']:.1f} s CPU, peak RSS/rank {r['peak_rss_mb']:.0f} MB, all ranks "
                f"{r['peak_tree_rss_mb']:.0f} MB, load {r['load_average_1']:.1f}"
            )
    return {
        "size": size,
        "pairs": PAIRS,
        "periods": periods,
        "ranks": {"days": compare_days, "frames": 24 * compare_days, "runs": {str(n): v for n, v in ranks.items()}},
    }
