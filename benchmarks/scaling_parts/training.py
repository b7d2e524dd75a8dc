"""Training memory per rank and checkpoint cost vs ZeRO stage and model size, 2 ranks: one
`benchmarks/train.py` run per model size (real DeepSpeed, gloo on CPU, the mean stage, plain DDP as
the reference), each launch also saving and loading a DeepSpeed checkpoint (`--checkpoint`).
Per-rank memory is train.py's: the live tensors between backward and the optimiser step (weights,
gradients, optimizer states, DeepSpeed's buffers) and the growth of the peak RSS (with activations).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from scaling_parts.measure import run_measured
from scaling_parts.preprocess import env

HERE = Path(__file__).resolve().parents[1]

# fp32 bytes per trained parameter held between backward and step on each of N ranks (DeepSpeed's
# partitioning; the bucket is capped at the rank's share): whole weights and gradients under ZeRO-1,
# whole weights under ZeRO-2, nothing whole under ZeRO-3; fp32 master copy + Adam's two moments / N.
BYTES_PER_PARAM = {
    "ddp": lambda n: 16.0,
    "zero1": lambda n: 8 + 12 / n,
    "zero2": lambda n: 4 + 16 / n,
    "zero3": lambda n: 24 / n,  # + the reduce bucket (the rank share)
}


def launch(data: Path, size: str, ranks: int, engines: str, batch: int, logs: Path) -> dict:
    """One train.py run (every engine of `engines` on `ranks` ranks); returns its runs by engine."""
    folder = data / "checkpoints"
    shutil.rmtree(folder, ignore_errors=True)
    result = data / f"train_{size}_{ranks}ranks.json"
    cmd = [sys.executable, HERE / "train.py", "--ranks", ranks, "--stages", "mean", "--engines", engines]
    cmd += ["--steps", "1", "--repeats", "1", "--batch", batch, "--size", size, "--device", "cpu"]
    cmd += ["--checkpoint", folder, "--out", result]
    res = run_measured(cmd, logs / f"train_{size}_{ranks}ranks.log", env=env())
    shutil.rmtree(folder, ignore_errors=True)
    runs = json.loads(result.read_text())["meta"]["runs"]
    engines_out = {
        r["engine"]: {
            "tensor_mb": r["tensor_mb"],
            "peak_growth_mb": r["peak_growth_mb"],
            "step_s": r["step_s"][0],
            "checkpoint": r.get("checkpoint"),
            "model_mb": BYTES_PER_PARAM[r["engine"]](ranks) * r["trainable"] / 2**20,
        }
        for r in runs
    }
    return {
        "launches_wall_s": res["wall_s"],
        "launches_cpu_s": res["cpu_s"],
        "trainable": runs[0]["trainable"],
        "engines": engines_out,
    }


def measure(data: Path, sizes: list[str], engines: str, batch: int, logs: Path, more_ranks: dict | None = None) -> dict:
    """2 ranks for every size; `more_ranks` {"size", "ranks", "engines"}: one more run with more
    ranks than cores (memory is what it measures, not speed) to see where ZeRO-3 pays off."""
    from scaling_parts.report import say

    out = {}
    for size in sizes:
        out[size] = launch(data, size, 2, engines, batch, logs)
        say(
            f"training {size} ({out[size]['trainable']:,} trained parameters), per-rank live tensors MiB: "
            + ", ".join(f"{e} {v['tensor_mb']:.0f}" for e, v in out[size]["engines"].items())
        )
    part = {"ranks": 2, "stage": "mean", "batch_per_rank": batch, "precision": "fp32", "sizes": out}
    if more_ranks:
        run = launch(data, more_ranks["size"], more_ranks["ranks"], more_ranks["engines"], batch, logs)
        part["more_ranks"] = {"size": more_ranks["size"], "ranks": more_ranks["ranks"], **run}
        say(
            f"training {more_ranks['size']} on {more_ranks['ranks']} ranks, per-rank live tensors MiB: "
            + ", ".join(f"{e} {v['tensor_mb']:.0f}" for e, v in run["engines"].items())
        )
    return part


def zero3_vs_zero1(ranks=(2, 4, 8, 32, 256)) -> dict:
    """Per-rank state of ZeRO-3 over ZeRO-1 by rank count, from the bytes-per-parameter model (the
    2-rank value is measured as well): where ZeRO-3 pays off once states outweigh activations."""
    ratio = {str(n): BYTES_PER_PARAM["zero3"](n) / BYTES_PER_PARAM["zero1"](n) for n in ranks}
    return {
        "ratio_by_ranks": ratio,
        "assumptions": [
            "fp32 training with AdamW: per trained parameter, ZeRO-1 holds whole weights and gradients "
            "(8 B) + fp32 master and Adam moments / N (12 B / N); ZeRO-3 holds weights, gradients, reduce "
            "bucket, master and moments / N (24 B / N)",
            "activations excluded (they are the same under every stage); parameters ZeRO-3 keeps whole "
            "(below stage3_param_persistence_threshold) ignored",
        ],
    }
