"""Does interpolating in time along the rain's motion beat linear interpolation? One command:

    .venv/bin/python benchmarks/motion_baseline.py [--data ../shared/data] [--out OUT.json]

For each radar file (netCDF precip(time, y, x), mm per step; steps finer than --minutes are summed
to it) the wettest --crop px square (on a 32 px grid) over the wettest --steps consecutive steps is
coarsened by each factor pair (perfect-model LR) and rebuilt two ways: the evaluation's baseline
(bicubic in space, linear in time: `hpcsr.evaluate.baselines.bicubic_linear`) and bicubic in space,
interpolated in time along the motion between the two LR frames around each step
(`hpcsr.motion`). Both are scored by RMSE against the truth, as they are and after the default mass
transform (identity, mode 'smooth', per LR cell: what every member gets). The figure
is the motion version's RMSE against the linear one's with the same mass step (lower is better);
the ratios without the mass step are extra fields. Missing pixels are read as 0 (a probe of the
interpolation, not of gaps).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, figure, format_value, write_result  # noqa: E402

from hpcsr.coarsen import coarsen  # noqa: E402
from hpcsr.evaluate.baselines import from_lr  # noqa: E402
from hpcsr.factors import MassFunction  # noqa: E402
from hpcsr.mass import conserve  # noqa: E402


def wettest_block(precip: np.ndarray, crop: int, steps: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The crop x crop square (corners on a 32 px grid) with the most rain, then its `steps`
    consecutive steps with the most rain: (block, (first step, row, col))."""
    total = precip.sum(axis=0)
    Y, X = total.shape
    crop = min(crop, Y, X)
    corners = [(y, x) for y in range(0, Y - crop + 1, 32) for x in range(0, X - crop + 1, 32)]
    y, x = max(corners, key=lambda c: total[c[0] : c[0] + crop, c[1] : c[1] + crop].sum())
    block = precip[:, y : y + crop, x : x + crop]
    n = min(steps, len(block))
    first = int(np.argmax(np.convolve(block.sum(axis=(1, 2)), np.ones(n), "valid")))
    return block[first : first + n], (first, y, x)


def scores(hr: np.ndarray, s: int, t: int) -> dict:
    """RMSE of the linear and the motion interpolation of hr's LR, without and with the cell mass step."""
    T, Y, X = (hr.shape[0] // t) * t, (hr.shape[1] // s) * s, (hr.shape[2] // s) * s
    hr = hr[:T, :Y, :X]
    lr = coarsen(hr, s, t)
    out = {}
    for name in ("bicubic", "motion"):
        field = from_lr(name, lr, s, t)
        massed = conserve(torch.from_numpy(field), torch.from_numpy(lr), s, t, MassFunction(), "cell", "smooth")
        out[name] = float(np.sqrt(np.mean((field - hr) ** 2)))
        out[f"{name}_cell_mass"] = float(np.sqrt(np.mean((massed.numpy() - hr) ** 2)))
    return out


def load(path: Path, minutes: int) -> tuple[np.ndarray, int]:
    """precip (time, y, x) in mm per step, summed to `minutes` when the file's step divides it."""
    with xr.open_dataset(path) as ds:
        step = int(round(float(ds.time.diff("time").median()) / 6e10))
        precip = np.nan_to_num(ds.precip.values.astype(np.float32))
    if step < minutes and minutes % step == 0:
        k = minutes // step
        T = len(precip) // k * k
        precip, step = precip[:T].reshape(T // k, k, *precip.shape[1:]).sum(axis=1), minutes
    return precip, step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="folder of radar netCDF files")
    p.add_argument("--files", nargs="*", default=None, help="file names in --data (default: every *.nc)")
    p.add_argument("--pairs", default="4x2,8x2,5x3,4x3", help="factor pairs SxT, comma-separated")
    p.add_argument("--minutes", type=int, default=10, help="HR step: finer steps are summed to it")
    p.add_argument("--crop", type=int, default=256, help="side of the square scored (px)")
    p.add_argument("--steps", type=int, default=24, help="consecutive HR steps scored")
    p.add_argument("--out", default=None, help="result JSON (default: none, the table only)")
    a = p.parse_args(argv)
    pairs = [tuple(int(v) for v in pair.split("x")) for pair in a.pairs.split(",")]
    files = [Path(a.data) / f for f in a.files] if a.files else sorted(Path(a.data).glob("*.nc"))
    print("| radar | step (min) | pair | linear RMSE | motion RMSE | motion / linear | same, with cell mass |")
    print("|---|---|---|---|---|---|---|")
    figures = []
    for path in files:
        precip, step = load(path, a.minutes)
        hr, where = wettest_block(precip, a.crop, a.steps)
        for s, t in pairs:
            r = scores(hr, s, t)
            print(
                f"| {path.stem} | {step} | s{s}_t{t} | {format_value(r['bicubic'])} | {format_value(r['motion'])} | "
                f"{r['motion'] / r['bicubic']:.3f} | {r['motion_cell_mass'] / r['bicubic_cell_mass']:.3f} |"
            )
            figures.append(
                figure(
                    f"{path.stem} s{s}_t{t}: RMSE of bicubic + motion in time, cell mass",
                    "mm per step",
                    [r["motion_cell_mass"]],
                    "bicubic + linear in time, cell mass",
                    [r["bicubic_cell_mass"]],
                    higher_is_better=False,
                    step_minutes=step,
                    first_step_row_col=list(where),
                    rmse=r,
                )
            )
    if a.out:
        meta = {"data": str(Path(a.data).resolve()), "crop": a.crop, "steps": a.steps, "minutes": a.minutes}
        print(f"wrote {write_result(a.out, 'motion_baseline', figures, False, meta)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
