"""What the mean network's denser tiling costs: `sample.overlap` of three quarters of the tile (a tile
every quarter tile, 169 tiles on a 128 px crop with 32 px tiles at s = 4) against the default half tile
(`hpcsr.sampling.tiles.mean_overlap`, 49 tiles), the baseline, in the same run.

Input: a 128 x 128 px crop of real radar (KNMI, 1 km, 5-min steps, from ../shared/data), coarsened
with the export's (s, t) as `hpcsr sample --hr` does; the skill experiment's tiny model (three levels
8-16-32, windows 3-1-1) at (4, 1) with random weights (the cost does not depend on them).
Figures (seconds, lower is better, medians of --repeats):
- the mean network over every target of the crop (`EnsembleSampler.mean_field`), alone;
- the whole `hpcsr sample` pipeline (mean, --members members of DPM-Solver++ 10 steps, mass
  transform, netCDF writer).

    python benchmarks/mean_tiling.py [--quick] [--members 4] [--repeats 3] [--out benchmarks/results/mean_tiling.json]

--quick: 6 targets, 1 member, 1 repeat. Measured in s52 with the skill experiment's trained networks
(docs/SKILL_LOG.md): the denser tiling lowers the (4, 1) mean's RMSE by 0.3 % on KNMI.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import figure, format_value, log, untrained_export, write_result  # noqa: E402

RADAR = HERE.parent.parent / "shared" / "data" / "knmi_20100826.nc"
ROWS, COLS = slice(320, 448), slice(224, 352)  # the skill experiment's evaluation crop
DENSE = 24  # HR px: a tile every 8 px with 32 px tiles at s = 4


def write_crop(path: Path, steps: int) -> Path:
    import xarray as xr

    with xr.open_dataset(RADAR) as ds:
        ds[["precip"]].isel(time=slice(40, 40 + steps), y=ROWS, x=COLS).load().to_netcdf(path)
    return path


def time_mean(export: Path, crop: Path, overlap: int | None) -> tuple[float, int]:
    """Seconds of the mean network over every target of the crop, and the tile count per frame."""
    from hpcsr.export import load_export
    from hpcsr.sampling.ensemble import EnsembleSampler, SampleConfig, target_times
    from hpcsr.sampling.inputs import open_hr

    exp = load_export(export)
    seq = open_hr(str(crop), exp.pair)
    times = target_times(seq)
    sampler = EnsembleSampler(exp, seq, SampleConfig(members=1, overlap=overlap))
    lr, _ = sampler.context_frames(times)
    lr_z = sampler.normaliser.forward(torch.from_numpy(lr))
    started = time.perf_counter()
    with torch.no_grad():
        for n in range(len(times)):
            sampler.mean_field(lr_z[n])
    return time.perf_counter() - started, len(sampler.layout)


def time_pipeline(export: Path, crop: Path, out: Path, members: int, overlap: int | None) -> float:
    from hpcsr.sampling import SampleStageConfig, run_sample

    cfg = SampleStageConfig(
        export=str(export),
        hr=str(crop),
        out=str(out),
        members=members,
        overlap=overlap,
        allow_other_grid=True,
        progress=False,
    )
    started = time.perf_counter()
    run_sample(cfg)
    return time.perf_counter() - started


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path("/tmp/hpcsr_bench_mean_tiling"))
    p.add_argument("--out", type=Path, default=HERE / "results" / "mean_tiling.json")
    a = p.parse_args(argv)
    if not RADAR.is_file():
        p.error(f"{RADAR} not found: the benchmark reads real radar from ../shared/data")
    members, repeats, steps = (1, 1, 6) if a.quick else (a.members, a.repeats, 20)
    from hpcsr.factors import FactorPair
    from hpcsr.models import ModelConfig

    a.work.mkdir(parents=True, exist_ok=True)
    pair = FactorPair(4, 1)
    export = untrained_export(a.work / "model.pt", ModelConfig.tiny(), pair, patch=32)  # the experiment's patch
    crop = write_crop(a.work / "knmi_crop.nc", steps)
    runs = {"half tile (default)": None, "three quarters": DENSE}
    mean, whole, tiles = {k: [] for k in runs}, {k: [] for k in runs}, {}
    for r in range(repeats):
        for name, overlap in runs.items():  # alternated, so drifts of the machine hit both alike
            seconds, tiles[name] = time_mean(export, crop, overlap)
            mean[name].append(seconds)
            whole[name].append(time_pipeline(export, crop, a.work / "ensemble.nc", members, overlap))
            log(f"repeat {r + 1}/{repeats}, {name}: mean {mean[name][-1]:.1f} s, sampling {whole[name][-1]:.1f} s")
    base, dense = runs
    extra = {"tiles_per_frame": tiles[dense], "baseline_tiles_per_frame": tiles[base]}
    figures = [
        figure(f"mean network over {steps} targets, {dense}", "s", mean[dense], base, mean[base], False, **extra),
        figure(f"hpcsr sample, {members} members, {dense}", "s", whole[dense], base, whole[base], False, **extra),
    ]
    print(f"\n| figure | value (s) | baseline: {base} (s) | baseline / value |\n|---|---|---|---|")
    for f in figures:
        print(
            f"| {f['name']} | {format_value(f['value'])} | {format_value(f['baseline']['value'])} | {f['ratio']:.2f} |"
        )
    meta = {"pair": pair.name, "model": "tiny", "crop_px": 128, "targets": steps, "members": members}
    log(f"wrote {write_result(a.out, 'mean_tiling', figures, a.quick, meta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
