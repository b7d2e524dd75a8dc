"""The result contract shared by every benchmark script and `benchmarks/run_all.py`.

A benchmark script accepts `--out PATH` (JSON written there atomically) and `--quick` (a smaller,
faster run with the same figures), measures each figure and its named baseline in the same run
(medians of several repeats) and writes

    {"benchmark": "loader", "quick": false, "meta": {...},
     "figures": [{"name": ..., "unit": ..., "value": median, "repeats": [...],
                  "higher_is_better": true,
                  "baseline": {"name": ..., "value": median, "repeats": [...]},
                  "ratio": improvement factor over the baseline (> 1: better),
                  "target": {"value": ..., "ratio": ...} or null, "met": true/false/null}]}

`figure(...)` builds one entry (ratio and target check included); `write_result(...)` adds the
machine description and writes the file.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

from hpcsr.atomic import write_json_atomic


def median(values) -> float:
    values = [float(v) for v in values]
    if not values:
        raise ValueError("median of no repeats: run at least one repeat")
    return statistics.median(values)


def figure(
    name: str,
    unit: str,
    repeats,
    baseline_name: str,
    baseline_repeats,
    higher_is_better: bool = True,
    target_value: float | None = None,
    target_ratio: float | None = None,
    **extra,
) -> dict:
    """One figure: medians of the repeats, the ratio to the baseline (oriented so that > 1 means
    better than the baseline) and whether the target (absolute value and/or ratio) is met."""
    value, base = median(repeats), median(baseline_repeats)
    if higher_is_better:
        ratio = value / base if base > 0 else float("inf")
    else:
        ratio = base / value if value > 0 else float("inf")
    met = None
    if target_value is not None or target_ratio is not None:
        met = True
        if target_value is not None:
            met = met and (value >= target_value if higher_is_better else value <= target_value)
        if target_ratio is not None:
            met = met and ratio >= target_ratio
    target = None if met is None else {"value": target_value, "ratio": target_ratio}
    return {
        "name": name,
        "unit": unit,
        "value": value,
        "repeats": [float(v) for v in repeats],
        "higher_is_better": higher_is_better,
        "baseline": {"name": baseline_name, "value": base, "repeats": [float(v) for v in baseline_repeats]},
        "ratio": ratio,
        "target": target,
        "met": met,
        **extra,
    }


def machine() -> dict:
    """What the numbers were measured on (load average included: the machine may be shared)."""
    import torch

    info = {
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_1_5_15": list(os.getloadavg()),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_result(path, benchmark: str, figures: list[dict], quick: bool, meta: dict | None = None) -> Path:
    """Write the benchmark's JSON atomically (hpcsr.atomic) and return its path."""
    data = {"benchmark": benchmark, "quick": bool(quick), "meta": {**machine(), **(meta or {})}, "figures": figures}
    return write_json_atomic(path, data, indent=2, sort_keys=False)


def format_value(value: float) -> str:
    """A number as a table shows it: 3 significant digits, thousands separated."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


# ---------------------------------------------------------------- experiments that launch hpcsr commands

REPO = Path(__file__).resolve().parents[1]
START = time.monotonic()
RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def untrained_export(path, cfg, pair, patch: int | None = None) -> Path:
    """An export of a randomly initialised SRModel (`cfg` size, factor pair `pair`; `patch`: the
    training patch it records, default the recipe's), normalised as log1p with mean 0 and std 1: for
    timing and memory, which do not depend on the weights."""
    import dataclasses

    import torch

    from hpcsr.data.normalise import Normaliser
    from hpcsr.export import recipe_to_dict, write_export
    from hpcsr.factors import recipe
    from hpcsr.models import build_model

    torch.manual_seed(0)
    rec = recipe(pair.s, pair.t)
    rec = rec if patch is None else dataclasses.replace(rec, patch=patch)
    metadata = {
        "stage": "joint",
        "pair": {"s": pair.s, "t": pair.t, "name": pair.name},
        "recipe": recipe_to_dict(rec),
        "model": dataclasses.asdict(cfg),
        "future_context": 0,
        "normalisation": Normaliser("log1p", 0.0, 1.0).to_dict(),
        "config_hash": "benchmark-untrained",
    }
    return write_export(path, build_model(cfg, rec).state_dict(), metadata)


def log(msg: str) -> None:
    """A progress line stamped with the seconds since the script started."""
    print(f"[{time.monotonic() - START:7.1f} s] {msg}", flush=True)


def child_env(threads: int) -> dict:
    """Environment of a child hpcsr command: `threads` BLAS/OpenMP threads, one process (no rank
    variables of an enclosing launch), unbuffered output, this checkout first on the path."""
    env = {
        k: v for k, v in os.environ.items() if k not in RANK_VARIABLES and not k.startswith(("SLURM_", "PMI_", "OMPI_"))
    }
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        PYTHONUNBUFFERED="1",
        HPCSR_DIST_SOURCE="single",
        PYTHONPATH=str(REPO),
    )
    return env


def run_logged(cmd: list, logfile: Path, threads: int) -> None:
    """Run `cmd` in the repository with its output in `logfile`; on failure stop with the log's tail."""
    import subprocess

    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "w") as out:
        code = subprocess.run(cmd, cwd=REPO, env=child_env(threads), stdout=out, stderr=subprocess.STDOUT).returncode
    if code:
        raise SystemExit(
            f"command failed (exit {code}): {' '.join(map(str, cmd))}\n--- {logfile}:\n" + logfile.read_text()[-3000:]
        )
