"""Preprocessing speed: full-size 1536 x 1536 hourly Comephore frames (monthly tar archives of
GeoTIFFs written by the synthetic generator) through read, HR store and the shards of the paper's
four factor pairs, on 1 and 2 MPI ranks.

Named baseline in the same run: a straightforward xarray pipeline on one process: extract the
archives (timed apart, not counted), open every GeoTIFF (tifffile) as a DataArray, concat along
time, mask 65535 and scale to mm, `to_netcdf` the HR, and for each pair `.coarsen(time=t, y=s, x=s,
boundary="trim").mean()` then `to_netcdf`. Its files are scratch output of the timed baseline
(written as that straightforward pipeline writes them, without CF metadata, so its cost stays the
baseline's); every file hpcsr itself writes is CF-1.11 (hpcsr/cf.py).

    python benchmarks/preprocess.py [--quick] [--days 1] [--repeats 3] [--ranks 1,2] [--out benchmarks/results/preprocess.json]

Each measured run is a fresh process (`mpirun -n R` for ours) timed from a barrier after the imports
to the end of the last write; the runs of one repeat are interleaved. Targets: ours >= 3x the
baseline's frames/s per core, and 2 ranks >= 1.6x one rank. Prints a table of medians and writes
JSON (benchmarks/common.py). The machine may be shared: the load average is recorded with the result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("BLOSC_NTHREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import figure, format_value, median, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAIRS = ((1, 3), (10, 1), (10, 3), (25, 6))
TARGET_PER_CORE = 3.0
TARGET_TWO_RANKS = 1.6


def run_ours(raw: Path, out: Path) -> dict:
    """One rank's share of the whole pipeline (ingest + shards); rank 0 returns the timings."""
    from hpcsr.factors import FactorPair
    from preprocessing.ingest import IngestConfig, ingest
    from preprocessing.parallel import Comm
    from preprocessing.shards import ShardConfig, make_shards

    comm = Comm()
    comm.barrier()
    t0 = time.perf_counter()
    ingest(out, IngestConfig(comephore=(str(raw),)), comm, progress=False)
    t1 = time.perf_counter()
    stages: dict = {}
    make_shards(out, ShardConfig(pairs=tuple(FactorPair(*p) for p in PAIRS)), comm, progress=False, timings=stages)
    comm.barrier()
    t2 = time.perf_counter()
    result = {"seconds": t2 - t0, "ingest_s": t1 - t0, "shards_s": t2 - t1, "shard_stages_s": stages}
    return result if comm.rank == 0 else {}


def run_baseline(raw: Path, out: Path) -> dict:
    """The straightforward xarray pipeline on one process."""
    import tarfile

    import numpy as np
    import tifffile
    import xarray as xr

    t0 = time.perf_counter()
    folder = out / "extracted"
    folder.mkdir(parents=True)
    for archive in sorted(raw.glob("H_COMEPHORE_*.tar")):
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
    t1 = time.perf_counter()
    arrays = []
    for path in sorted(folder.rglob("*_RR.gtif")):
        stamp = np.datetime64(f"{path.name[:4]}-{path.name[4:6]}-{path.name[6:8]}T{path.name[8:10]}:00")
        arrays.append(xr.DataArray(tifffile.imread(path)[None], dims=("time", "y", "x"), coords={"time": [stamp]}))
    hr = xr.concat(arrays, dim="time")
    hr = hr.where(hr != 65535) / 10
    hr.to_dataset(name="precip").to_netcdf(out / "hr.nc")
    for s, t in PAIRS:
        lr = hr.coarsen(time=t, y=s, x=s, boundary="trim").mean()
        lr.to_dataset(name="precip").to_netcdf(out / f"lr_s{s}_t{t}.nc")
    t2 = time.perf_counter()
    return {"seconds": t2 - t1, "extract_s": t1 - t0}


def _worker(args) -> int:
    result = (run_ours if args.worker == "ours" else run_baseline)(Path(args.raw), Path(args.work_out))
    if result:
        print("RESULT " + json.dumps(result), flush=True)
    return 0


def measure(kind: str, ranks: int, raw: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = [sys.executable, __file__, "--worker", kind, "--raw", str(raw), "--work-out", str(out)]
    if kind == "ours":
        cmd = [str(Path(sys.executable).parent / "mpirun"), "-n", str(ranks), *cmd]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_", "HYDI_"))}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")
    line = next(x for x in r.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    shutil.rmtree(out, ignore_errors=True)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one day of 1536 x 1536 frames, 2 repeats")
    p.add_argument("--days", type=int, help="days of hourly frames (default 2, quick 1)")
    p.add_argument("--repeats", type=int, help="timed repeats (default 3, quick 2)")
    p.add_argument("--ranks", default="1,2", help="MPI rank counts for our pipeline (default %(default)s)")
    p.add_argument(
        "--data", type=Path, default=REPO / ".hpcsr" / "bench" / "preprocess", help="work folder (archives reused)"
    )
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "preprocess.json")
    p.add_argument("--worker", choices=("ours", "baseline"), help=argparse.SUPPRESS)
    p.add_argument("--raw", help=argparse.SUPPRESS)
    p.add_argument("--work-out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return _worker(a)
    days = a.days or (1 if a.quick else 2)
    repeats = a.repeats or (2 if a.quick else 3)
    ranks = [int(r) for r in a.ranks.split(",")]
    sys.path.insert(0, str(REPO))
    from preprocessing.synth import SynthConfig, synthesize

    raw = a.data / f"raw_{days}d"
    print(f"preparing {24 * days} frames of 1536 x 1536 in {raw} ...", flush=True)
    archives = synthesize(raw, SynthConfig(days=days, size=1536, seed=0, start="2020-03-31"), progress=False)
    frames = 24 * days
    input_mb = sum(x.stat().st_size for x in archives) / 1e6
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {"baseline": [], **{f"ours_{r}": [] for r in ranks}}
    for rep in range(repeats):
        order = ["baseline", *[f"ours_{r}" for r in ranks]]
        if rep % 2:
            order.reverse()
        for name in order:
            kind, n = ("baseline", 1) if name == "baseline" else ("ours", int(name.split("_")[1]))
            res = measure(kind, n, raw, a.data / "out")
            runs[name].append(res)
            print(
                f"  repeat {rep + 1}/{repeats} {name:9s} {res['seconds']:7.2f} s  {frames / res['seconds']:6.2f} frames/s",
                flush=True,
            )
    load_after = os.getloadavg()

    def rate(name):  # frames/s of each repeat
        return [frames / r["seconds"] for r in runs[name]]

    base = rate("baseline")
    figures = [
        figure(
            "frames/s per core, 1 rank",
            "frames/s",
            rate(f"ours_{ranks[0]}"),
            "xarray pipeline, 1 process",
            base,
            target_ratio=TARGET_PER_CORE,
        )
    ]
    if len(ranks) > 1:
        r2 = ranks[-1]
        figures.append(
            figure(
                f"frames/s on {r2} ranks vs 1 rank",
                "frames/s",
                rate(f"ours_{r2}"),
                "ours, 1 rank",
                rate(f"ours_{ranks[0]}"),
                target_ratio=TARGET_TWO_RANKS if r2 == 2 else None,
            )
        )
    rows = [("xarray pipeline (baseline)", 1, median(base))] + [
        ("hpcsr-preprocess", r, median(rate(f"ours_{r}"))) for r in ranks
    ]
    print(f"\n{frames} frames of 1536 x 1536, input {input_mb:.0f} MB, pairs {PAIRS}, medians of {repeats} repeats")
    print(f"{'pipeline':28s} {'ranks':>5s} {'frames/s':>9s} {'per rank':>9s} {'MB/s':>7s} {'x baseline/core':>16s}")
    for name, n, fps in rows:
        print(
            f"{name:28s} {n:5d} {format_value(fps):>9s} {format_value(fps / n):>9s} {format_value(fps * input_mb / frames):>7s}"
            f" {format_value(fps / n / median(base)):>16s}"
        )
    one = runs[f"ours_{ranks[0]}"]
    total = median([r["seconds"] for r in one])
    stages = {
        "ingest": median([r["ingest_s"] for r in one]),
        **{k: median([r["shard_stages_s"][k] for r in one]) for k in one[0]["shard_stages_s"]},
    }
    print(
        "ours on 1 rank, seconds by stage (medians): "
        + ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
        + f"; hpcsr.coarsen is {stages['coarsen'] / total:.0%} of the run"
    )
    print(
        f"baseline extraction of the archives (not counted): {median([r['extract_s'] for r in runs['baseline']]):.2f} s"
    )
    for fig in figures:
        print(
            f"{fig['name']}: {fig['ratio']:.3f}x {fig['baseline']['name']} (target {fig['target']['ratio'] if fig['target'] else '-'}x: "
            f"{'met' if fig['met'] else 'NOT met' if fig['met'] is False else '-'})"
        )
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} CPUs (shared machine: noisy)"
    )
    meta = {
        "frames": frames,
        "shape": [1536, 1536],
        "input_mb": input_mb,
        "pairs": PAIRS,
        "repeats": repeats,
        "runs": runs,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "stages_1_rank_s": stages,
    }
    print(f"wrote {write_result(a.out, 'preprocess', figures, a.quick, meta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
