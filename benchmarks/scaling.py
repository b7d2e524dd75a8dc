"""How the cost grows: preprocessing vs the period, sampling vs the domain, training memory and
checkpoints vs ZeRO stage and model size, the loader vs a GPU's appetite; with projections.

    python benchmarks/scaling.py [--quick] [--only preprocess sampling training loader] [--out ...]

Parts (each in benchmarks/scaling_parts/, each docstring says what it measures):
  preprocess  hpcsr-preprocess all on 1536 x 1536 synthetic Comephore, 1 day / 1 week / 1 month,
              1 rank; 2 ranks vs 1 at one week (interleaved repeats); wall, CPU, peak RSS per rank
  sampling    hpcsr sample at (10, 3) on 128, 512 and 1536 px square domains, default model with
              random weights, 1 member, DDIM-1 (fixed): wall, CPU, peak RSS, GFLOP per CPU-second
  training    benchmarks/train.py on 2 ranks (real DeepSpeed, gloo): per-rank memory of ZeRO 1/2/3
              (DDP for reference) at the default and large sizes, checkpoint save/load time and size;
              ZeRO-1 vs ZeRO-3 at the large size on 4 ranks (more ranks than cores: memory only)
  loader      PatchDataset samples/s in one process and with 1 and 2 DataLoader workers vs the
              samples/s one H200 consumes at 35 % MFU; workers needed per GPU
--quick: small grids, the tiny model, the ZeRO-1/3 pair (a couple of minutes, for the test suite).

Every run is a fresh process measured by scaling_parts.measure (wall, CPU of the whole process
tree, peak RSS); the machine may be shared: the 1-minute load average is recorded with each run
and CPU time beside wall time. `--only` reruns some parts and keeps the others from the existing
JSON; `--merge A.json B.json` takes the parts of earlier results (parts run apart, at different
times: each part's runs record their own load average). Writes the JSON (benchmarks/common.py contract, measurements and projections under meta),
a Markdown summary beside it and the log-log plots (`<out stem>.png`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import write_result  # noqa: E402
from scaling_parts import figures, loader, preprocess, projection, report, sampling, training  # noqa: E402

PARTS = ("preprocess", "sampling", "training", "loader")
FULL = {
    "preprocess": {"days": [1, 7, 30], "size": 1536, "compare_days": 7, "repeats": 3},
    "sampling": {"sides": [128, 512, 1536], "model": "default", "members": 1, "steps": 1},
    "training": {
        "sizes": ["default", "large"],
        "engines": "ddp,zero1,zero2,zero3",
        "batch": 1,
        "more_ranks": {"size": "large", "ranks": 4, "engines": "zero1,zero3"},
    },
    "loader": {"side": 1536, "samples": 400, "model": "default"},
}
QUICK = {
    "preprocess": {"days": [1, 2, 4], "size": 128, "compare_days": 1, "repeats": 1},
    "sampling": {"sides": [60, 120], "model": "tiny", "members": 1, "steps": 1},
    "training": {"sizes": ["tiny"], "engines": "ddp,zero1,zero3", "batch": 1},
    "loader": {"side": 200, "samples": 40, "model": "tiny"},
}


def run_part(name: str, s: dict, data: Path, logs: Path) -> dict:
    if name == "preprocess":
        return preprocess.measure(data, s["days"], s["size"], s["compare_days"], s["repeats"], logs)
    if name == "sampling":
        return sampling.measure(data, s["sides"], s["model"], s["members"], s["steps"], logs)
    if name == "training":
        return training.measure(data, s["sizes"], s["engines"], s["batch"], logs, s.get("more_ranks"))
    return loader.measure(sampling.shard(data, s["side"]), s["samples"], s["model"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, for CI (a couple of minutes)")
    p.add_argument(
        "--only", nargs="*", choices=PARTS, help="run these parts (none: only merge), keep the others from --out"
    )
    p.add_argument("--out", type=Path, default=HERE / "results" / "scaling.json", help="result JSON")
    p.add_argument("--merge", nargs="+", type=Path, default=[], help="also take the parts of these result JSONs")
    p.add_argument("--data", type=Path, default=HERE.parent / ".hpcsr" / "bench" / "scaling", help="work folder")
    a = p.parse_args(argv)
    settings = QUICK if a.quick else FULL
    data = a.data / ("quick" if a.quick else "full")
    logs = data / "logs"
    run = PARTS if a.only is None and not a.merge else (a.only or [])
    parts = {}
    for path in [*([a.out] if run != PARTS and a.out.is_file() else []), *a.merge]:
        old = json.loads(path.read_text())
        if old.get("quick") == a.quick:
            parts.update(old["meta"]["parts"])
    for name in run:
        report.say(f"== {name}: {settings[name]}")
        parts[name] = {"settings": settings[name], **run_part(name, settings[name], data, logs)}
    projections = {}
    if "preprocess" in parts:
        projections["preprocess"] = projection.preprocessing(parts["preprocess"])
    if "sampling" in parts:
        projections["sampling"] = projection.sampling(parts["sampling"])
    if "training" in parts:
        projections["training"] = training.zero3_vs_zero1()
    figs = figures.build(parts)
    meta = {"parts": parts, "projections": projections, "shared_machine": True}
    path = write_result(a.out, "scaling", figs, a.quick, meta)
    md = report.markdown(json.loads(path.read_text()))
    path.with_suffix(".md").write_text(md)
    report.plots(parts, path.with_suffix(".png"))
    print(md)
    report.say(f"wrote {path}, {path.with_suffix('.md')} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
