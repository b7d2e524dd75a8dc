"""Where do the members carry more small-scale structure than the truth? One command:

    .venv/bin/python benchmarks/grain_by_intensity.py --ensemble ENS.nc --truth TRUTH.nc [--out OUT.json]

Criterion 4 of the skill experiment (members' power within 1.5 x the truth's from 2 px to the LR
cell) averages over the whole field; this splits it by rain intensity. Per pixel, the small-scale
energy is the squared difference between the field and its 3 x 3 mean (edges reflected), a
high-pass that keeps wavelengths of about 2-4 px. Pixels are binned by the local intensity of the
ensemble's mean field (`precip_mean`, the mean network's delivered field, averaged over 9 x 9 px so
that the bin follows the rain area, not the pixel): near-dry, light and heavy rain. For each bin
the figure is the members' mean energy (all members pooled) against the baseline, the truth's on
the same pixels; ratio > 1 means the members are grainier than the truth there. Both files are
`hpcsr sample` / CF netCDF outputs on the same grid and times (the skill experiment's crop and
ensemble: runs under its --work folder).

Writes the JSON (benchmarks/common.py contract, one figure per bin) and prints the table; the
wet shares (> 0.1 mm/h equivalent) of truth and members per bin are extra fields.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import xarray as xr
from scipy.ndimage import uniform_filter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import figure, write_result  # noqa: E402

BINS_MM_PER_HOUR = (0.0, 0.06, 0.3, 0.6, 1.2, 3.0, 6.0, np.inf)  # local intensity bin edges
WET_MM_PER_HOUR = 0.1  # wet share threshold
LEVEL_WINDOW = 9  # px of the box mean that sets each pixel's intensity


def small_scale_energy(field: np.ndarray) -> np.ndarray:
    """(..., Y, X) -> (field - its 3 x 3 box mean)^2, the last two axes filtered (edges reflected)."""
    size = (1,) * (field.ndim - 2) + (3, 3)
    return (field - uniform_filter(field, size=size, mode="reflect")) ** 2


def grain_table(members: np.ndarray, mean: np.ndarray, truth: np.ndarray, hours_per_step: float) -> list[dict]:
    """Per intensity bin: pixel share, truth and member small-scale energy, wet shares.
    members (T, M, Y, X), mean and truth (T, Y, X), all mm per step; NaN pixels left out."""
    level = uniform_filter(np.nan_to_num(mean), size=(1, LEVEL_WINDOW, LEVEL_WINDOW)) / hours_per_step
    e_truth, e_members = small_scale_energy(truth), small_scale_energy(members).mean(axis=1)
    valid = np.isfinite(e_truth) & np.isfinite(e_members)
    wet = WET_MM_PER_HOUR * hours_per_step
    rows = []
    for lo, hi in zip(BINS_MM_PER_HOUR[:-1], BINS_MM_PER_HOUR[1:]):
        where = valid & (level >= lo) & (level < hi)
        if not where.any():
            continue
        rows.append(
            {
                "bin_mm_per_hour": [lo, hi if np.isfinite(hi) else None],
                "pixel_share": float(where.sum() / valid.sum()),
                "truth": float(e_truth[where].mean()),
                "members": float(e_members[where].mean()),
                "truth_wet_share": float((truth[where] > wet).mean()),
                "members_wet_share": float((members.transpose(1, 0, 2, 3)[:, where] > wet).mean()),
            }
        )
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ensemble", required=True, help="hpcsr sample output (precip, precip_mean)")
    p.add_argument("--truth", required=True, help="the HR truth on the same grid and times (precip)")
    p.add_argument("--out", default=None, help="result JSON (default: none, the table only)")
    a = p.parse_args(argv)
    with xr.open_dataset(a.ensemble) as ens, xr.open_dataset(a.truth) as tru:
        missing = np.setdiff1d(ens.time.values, tru.time.values)
        if missing.size or tru.precip.shape[-2:] != ens.precip.shape[-2:]:
            p.error(
                f"--truth {a.truth} does not cover the ensemble: {missing.size} of its times absent, grid "
                f"{tru.precip.shape[-2:]} against {ens.precip.shape[-2:]}"
            )
        truth = tru.precip.sel(time=ens.time).values.astype(np.float64)
        members = ens.precip.transpose("time", "member", "y", "x").values.astype(np.float64)
        mean = ens.precip_mean.values.astype(np.float64)
        minutes = float(ens.attrs.get("interval_minutes", tru.attrs.get("interval_minutes", 60)))
    rows = grain_table(members, mean, truth, minutes / 60.0)
    print(
        "| local intensity (mm/h) | pixels | truth energy | members energy | members / truth | wet share truth / members |"
    )
    print("|---|---|---|---|---|---|")
    figures = []
    for r in rows:
        lo, hi = r["bin_mm_per_hour"]
        span = f"{lo:g}-{hi:g}" if hi is not None else f"> {lo:g}"
        print(
            f"| {span} | {r['pixel_share']:.3f} | {r['truth']:.3g} | {r['members']:.3g} | "
            f"{r['members'] / r['truth']:.2f} | {r['truth_wet_share']:.2f} / {r['members_wet_share']:.2f} |"
        )
        figures.append(
            figure(
                f"members' small-scale energy at {span} mm/h",
                "mm^2 per step^2",
                [r["members"]],
                "the truth's on the same pixels",
                [r["truth"]],
                higher_is_better=False,
                **{k: r[k] for k in ("bin_mm_per_hour", "pixel_share", "truth_wet_share", "members_wet_share")},
            )
        )
    if a.out:
        meta = {"ensemble": str(Path(a.ensemble).resolve()), "truth": str(Path(a.truth).resolve())}
        print(f"wrote {write_result(a.out, 'grain_by_intensity', figures, False, meta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
