"""Training-patch loading speed: random patch samples/s per process from the HDF5 shards through
`hpcsr.data.PatchDataset` at (s, t) = (10, 3), L = 5, patch 100, one thread.

Named baselines in the same run: the same patches (same blocks and corners, checked equal) read
per sample with xarray from CF netCDF copies of the HR store and the LR shard (opened once,
lazily, then `isel(...).values` per sample), normalised and turned into tensors the same way.
Two copies, two baselines:
- "xarray/netCDF zlib": zlib level 6 with shuffle, one chunk per frame, the layout of the CF
  files in ../shared/data (how gridded radar netCDF is distributed); the 10x target is checked
  against it;
- "xarray/netCDF uncompressed": xarray's default write (contiguous, no compression), the best case
  for a per-sample read, shown for scale (82 GB per year of Comephore in float32 on disk).

    python benchmarks/loader.py [--quick] [--repeats 5] [--samples 2000] [--profile] [--out benchmarks/results/loader.json]

The synthetic data (Comephore-format archives -> hr.h5 -> shard, and the netCDF copies) are made
once in --data (default .hpcsr/bench/loader) and reused. Targets: >= 2000 samples/s and >= 10x
the zlib baseline. Prints a table of medians over the repeats and writes JSON (benchmarks/common.py).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import figure, format_value, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAIR = (10, 3)
CONTEXT = 5
PATCH = 100
TARGET_RATE = 2000.0  # samples/s per process
TARGET_RATIO = 10.0  # x the xarray baseline on the zlib copy
NETCDF_LAYOUTS = {  # baseline name -> xarray encoding of precip in its netCDF copies
    "xarray/netCDF zlib": {"zlib": True, "complevel": 6, "shuffle": True},
    "xarray/netCDF uncompressed": {},
}


def prepare(data_dir: Path, size: int, days: int) -> dict:
    """Synthetic archives -> HR store -> (10, 3) shard -> netCDF copies; each step skipped when done."""
    from hpcsr.factors import FactorPair
    from preprocessing.ingest import IngestConfig, ingest
    from preprocessing.parallel import Comm
    from preprocessing.shards import ShardConfig, make_shards
    from preprocessing.synth import SynthConfig, synthesize

    raw, out = data_dir / "raw", data_dir / "out"
    synthesize(raw, SynthConfig(days=days, size=size, seed=11), progress=False)
    ingest(out, IngestConfig(comephore=(str(raw),)), Comm(), progress=False)
    make_shards(out, ShardConfig(pairs=(FactorPair(*PAIR),)), Comm(), progress=False)
    shard = out / "shards" / f"s{PAIR[0]}_t{PAIR[1]}.h5"
    copies = {}
    for k, (name, encoding) in enumerate(NETCDF_LAYOUTS.items()):
        hr_nc, lr_nc = data_dir / f"hr_{k}.nc", data_dir / f"lr_s10_t3_{k}.nc"
        if not (hr_nc.is_file() and lr_nc.is_file()) or hr_nc.stat().st_mtime < shard.stat().st_mtime:
            write_netcdf_copies(shard, hr_nc, lr_nc, encoding)
        copies[name] = (hr_nc, lr_nc)
    return {"shard": shard, "netcdf": copies}


def write_netcdf_copies(shard_path: Path, hr_nc: Path, lr_nc: Path, encoding: dict) -> None:
    """The HR store and the LR shard as CF netCDF precip(time, y, x) in float32 mm (NaN missing),
    written by xarray with `encoding` (one chunk per frame when compressed), as a user without the
    HDF5 layout would keep them."""
    from hpcsr import cf
    from hpcsr.atomic import AtomicPath
    from hpcsr.data.store import Shard

    with Shard(shard_path) as shard, shard.hr_store() as store:
        hr = store.read(0, store.shape[0])
        lr = shard.lr[()]
        s, (y0, y1, x0, x1) = shard.pair.s, shard.hr_window
        lr_y = store.y[y0:y1].reshape(-1, s).mean(1)  # LR cell centres: means of their HR centres
        lr_x = store.x[x0:x1].reshape(-1, s).mean(1)
        copies = (
            (hr_nc, hr, store.time_s, store.y, store.x, store.interval_minutes),
            (lr_nc, lr, shard.time_s, lr_y, lr_x, shard.interval_minutes),
        )
        for path, values, times, y, x, interval in copies:
            ds = cf.precip_dataset(
                values,
                times,
                y,
                x,
                {},
                {},
                {"crs_wkt": store.crs_wkt},
                interval,
                f"precipitation over {interval} min",
                cf.global_attrs(
                    f"netCDF copy of {Path(shard_path).name} for the loader benchmark",
                    str(shard_path),
                    "benchmarks/loader.py",
                ),
            )
            chunks = {"chunksizes": (1, *values.shape[1:])} if encoding else {}
            with AtomicPath(path) as tmp:
                ds.to_netcdf(tmp, encoding={**cf.ENCODING, "precip": {**encoding, **chunks}})


class XarrayPatches:
    """The baseline: one patch per call, read with xarray from the netCDF copies."""

    def __init__(self, hr_nc: Path, lr_nc: Path, dataset):
        import xarray as xr

        from hpcsr.data.store import Shard

        self.hr = xr.open_dataset(hr_nc)["precip"]
        self.lr = xr.open_dataset(lr_nc)["precip"]
        with Shard(dataset.shard_path) as shard:
            self.hr_start, self.window = shard.hr_start.copy(), shard.hr_window
        self.s, self.t = dataset.pair.s, dataset.pair.t
        self.context, self.patch, self.normaliser = dataset.spec.context, dataset.spec.patch, dataset.normaliser

    def get(self, i: int, y: int, x: int) -> dict:
        s, P, h = self.s, self.patch, int(self.hr_start[i])
        y0, x0 = self.window[0] + y, self.window[2] + x
        lr = self.lr.isel(
            time=slice(i - self.context + 1, i + 1), y=slice(y // s, (y + P) // s), x=slice(x // s, (x + P) // s)
        ).values
        hr = self.hr.isel(time=slice(h, h + self.t), y=slice(y0, y0 + P), x=slice(x0, x0 + P)).values
        return {
            "lr": torch.from_numpy(self.normaliser.forward(np.ascontiguousarray(lr, np.float32))),
            "hr": torch.from_numpy(self.normaliser.forward(np.ascontiguousarray(hr, np.float32))),
        }


def rate(fn, items) -> tuple[float, float]:
    """(items per wall-clock second, items per CPU second of this process): the second does not
    count time the process waited for a core, so it stays meaningful on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    for item in items:
        fn(item)
    return len(items) / (time.perf_counter() - wall), len(items) / (time.process_time() - cpu)


def check_same(dataset, baseline, items) -> None:
    """The baseline reads exactly the candidate's patches (else the comparison means nothing)."""
    for item in items:
        got = dataset[item]
        i, y, x = (int(v) for v in got["where"])
        want = baseline.get(i, y, x)
        for key in ("lr", "hr"):
            if not torch.equal(torch.nan_to_num(got[key], nan=-999.0), torch.nan_to_num(want[key], nan=-999.0)):
                raise AssertionError(f"item {item}: {key} differs between PatchDataset and the xarray baseline")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller data, fewer samples and repeats")
    p.add_argument("--repeats", type=int, help="timed repeats (default 5, quick 3)")
    p.add_argument(
        "--samples",
        type=int,
        help="samples per repeat of PatchDataset (default 2000, quick 500); the baseline reads a tenth as many",
    )
    p.add_argument("--data", type=Path, default=REPO / ".hpcsr" / "bench" / "loader", help="data folder (reused)")
    p.add_argument("--profile", action="store_true", help="print where PatchDataset spends its time (cProfile)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "loader.json")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    repeats = a.repeats or (3 if a.quick else 5)
    samples = a.samples or (500 if a.quick else 2000)
    size, days = (200, 3) if a.quick else (400, 6)

    from hpcsr.data.normalise import Normaliser
    from hpcsr.data.patches import PatchDataset, PatchSpec
    from hpcsr.data.store import Shard

    print(f"[loader] data in {a.data} ({size} x {size} px, {days} days; made once)", flush=True)
    paths = prepare(a.data / ("quick" if a.quick else "full"), size, days)
    with Shard(paths["shard"]) as shard:
        normaliser = Normaliser.from_stats(shard.stats, "log1p")
    dataset = PatchDataset(paths["shard"], PatchSpec(CONTEXT, PATCH), "train", normaliser, seed=0)
    baselines = {name: XarrayPatches(hr_nc, lr_nc, dataset) for name, (hr_nc, lr_nc) in paths["netcdf"].items()}
    for baseline in baselines.values():
        check_same(dataset, baseline, range(20))
    base_samples = max(samples // 10, 20)
    cand, base = [], {name: [] for name in baselines}
    for r in range(repeats):
        items = list(range((r + 1) * 100_000, (r + 1) * 100_000 + samples))  # fresh random patches each repeat
        cand.append(rate(dataset.__getitem__, items))
        where = [dataset.locate(item) for item in items[:base_samples]]
        for name, baseline in baselines.items():
            base[name].append(rate(lambda w: baseline.get(*w), where))
        print(
            f"[loader] repeat {r + 1}/{repeats}: PatchDataset {cand[-1][0]:,.0f} samples/s ({cand[-1][1]:,.0f} per CPU-s); "
            + "; ".join(f"{name} {b[-1][0]:,.0f} ({b[-1][1]:,.0f})" for name, b in base.items()),
            flush=True,
        )
    extra = dict(samples_per_repeat=samples, baseline_samples_per_repeat=base_samples)
    figs = []
    for k, (name, b) in enumerate(base.items()):
        target = dict(target_value=TARGET_RATE, target_ratio=TARGET_RATIO) if k == 0 else {}
        for col, unit, what in (
            (0, "samples/s", "samples/s per process"),
            (1, "samples/CPU-s", "samples per CPU-second"),
        ):
            figs.append(
                figure(
                    f"random patch {what} (s10_t3, L={CONTEXT}, P={PATCH}) vs {name}",
                    unit,
                    [c[col] for c in cand],
                    f"{name} per-sample read",
                    [v[col] for v in b],
                    **target,
                    **extra,
                )
            )
    print(f"\n{'reader':<34}{'samples/s':>12}{'samples/CPU-s':>15}  (medians; load average {os.getloadavg()[0]:.1f})")
    print(f"{'PatchDataset (HDF5 shards)':<34}{format_value(figs[0]['value']):>12}{format_value(figs[1]['value']):>15}")
    for k, name in enumerate(base):
        print(
            f"{name:<34}{format_value(figs[2 * k]['baseline']['value']):>12}"
            f"{format_value(figs[2 * k + 1]['baseline']['value']):>15}"
        )
    for fig in figs:
        verdict = (
            ""
            if fig["met"] is None
            else (f"; targets >= {TARGET_RATE:,.0f} and >= {TARGET_RATIO:.0f}x: " + ("met" if fig["met"] else "MISSED"))
        )
        print(f"{fig['unit']} vs {fig['baseline']['name']}: ratio {fig['ratio']:.1f}x{verdict}")
    if a.profile or not figs[0]["met"]:
        print("\nwhere PatchDataset spends its time (cProfile, 500 samples):")
        prof = cProfile.Profile()
        prof.runcall(lambda: [dataset[i] for i in range(900_000, 900_500)])
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(15)
        print(text.getvalue())
    meta = {
        "pair": f"s{PAIR[0]}_t{PAIR[1]}",
        "context": CONTEXT,
        "patch": PATCH,
        "threads": 1,
        "grid": size,
        "days": days,
        "shard": str(paths["shard"]),
        "repeats": repeats,
    }
    print(f"wrote {write_result(a.out, 'loader', figs, a.quick, meta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
