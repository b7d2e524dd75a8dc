"""How much small-scale structure does each radar product carry? One command:

    .venv/bin/python benchmarks/radar_spectra.py [--out benchmarks/results/radar_spectra.json]

The skill experiment's spectral criterion compares the members' power at wavelengths from 2 pixels
to the LR cell with the truth's. That is only a test of the model if the truth resolves those
scales. Radar products differ: some are interpolated or smoothed from a coarser native grid. This
script measures, for every network in ../shared/data, the radially averaged power spectrum of
precipitation (mm per step, Hann-tapered, hpcsr.evaluate.spectra) on the wettest side x side window
that has data at every kept step (steps whose window mean is below 0.01 mm are left out), and
normalises it by its power at the 8-pixel wavelength, so that products with different rain amounts
and step lengths compare by shape alone. The figure per product is its mean normalised power over
the wavelengths 2 .. 4 px; the baseline is the median of that figure over all products (ratio < 1:
the product has less small-scale power than a typical radar product at its own pixel size).

Pixel sizes differ (BoM 500 m, OPERA 2 km, others about 1 km); BoM is also measured after a 2 x 2
block mean (1 km), as the skill experiment's training data are at their native 500 m. Writes the
JSON (benchmarks/common.py contract), a markdown table and a log-log plot beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, figure, log, median, write_result  # noqa: E402

DATA = REPO.parent / "shared" / "data"
# name: (file, block mean factor, plausibility cap in mm per step or None, pixel size in km)
PRODUCTS = {
    "BoM Rainfields3 (500 m)": ("bom_c10_20201031.nc", 1, None, 0.5),
    "BoM Rainfields3, 2 x 2 mean (1 km)": ("bom_c10_20201031.nc", 2, None, 1.0),
    "KNMI": ("knmi_20100826.nc", 1, None, 1.0),
    "MeteoSwiss AQC 2015-05-15": ("mch_aqc_20150515.nc", 1, None, 1.0),
    "MeteoSwiss AQC 2016-07-11": ("mch_aqc_20160711.nc", 1, None, 1.0),
    "MeteoSwiss AQC 2017-01-31": ("mch_aqc_20170131.nc", 1, None, 1.0),
    "OPERA France (2 km)": ("opera_france_20180824.nc", 1, 200.0, 2.0),  # clutter up to ~2000 mm per step
    "MeteoNet south-east": ("meteonet_se_20160828.nc", 1, None, 1.0),
    "Comephore (sample)": ("comephore_sample_20111104.nc", 1, None, 1.0),
}
SMALL = (2.0, 4.0)  # wavelengths (px) of the figure
REFERENCE_PX = 8.0  # wavelength whose power normalises each spectrum
MIN_STEP_MEAN_MM = 0.01


def block_mean(p: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return p
    T, Y, X = p.shape
    return p[:, : Y // f * f, : X // f * f].reshape(T, Y // f, f, X // f, f).mean(axis=(2, 4))


def wettest_frames(p: np.ndarray, side: int, stride: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The steps of the side x side window (corners on a stride grid) with the most rain among those
    with data everywhere in the window at the most steps; steps with missing values or a window mean
    below MIN_STEP_MEAN_MM are dropped."""
    T, Y, X = p.shape
    best = None
    for r in range(0, Y - side + 1, stride):
        for c in range(0, X - side + 1, stride):
            w = p[:, r : r + side, c : c + side]
            full = np.isfinite(w).all(axis=(1, 2))
            score = (int(full.sum()), float(w[full].sum()) if full.any() else 0.0)
            if best is None or score > best[0]:
                best = (score, r, c)
    _, r, c = best
    w = p[:, r : r + side, c : c + side]
    w = w[np.isfinite(w).all(axis=(1, 2))]
    return w[w.mean(axis=(1, 2)) >= MIN_STEP_MEAN_MM], (r, c)


def measure(path: Path, factor: int, cap: float | None, side: int) -> dict:
    import xarray as xr

    from hpcsr.evaluate.spectra import radial_power_spectrum

    with xr.open_dataset(path) as ds:
        p = ds["precip"].values.astype(np.float64)
    if cap is not None:
        p = np.where(p > cap, np.nan, p)
    p = block_mean(p, factor)
    side = min(side, *p.shape[1:]) // 4 * 4
    frames, corner = wettest_frames(p, side, max(side // 8, 4))
    if len(frames) == 0:
        raise SystemExit(f"{path.name}: no step has a {side} x {side} window with data everywhere and rain")
    k, power = radial_power_spectrum(frames)
    power = power.mean(axis=0)
    wavelength = 1.0 / k
    normalised = power / power[np.argmin(np.abs(wavelength - REFERENCE_PX))]
    small = (wavelength >= SMALL[0] - 1e-9) & (wavelength <= SMALL[1] + 1e-9)
    return {
        "file": path.name,
        "block_mean": factor,
        "window": side,
        "corner_row_col": list(corner),
        "steps": len(frames),
        "wet_fraction": float((frames > 0.1).mean()),
        "small_scale_power": float(normalised[small].mean()),
        "wavelength_px": wavelength.tolist(),
        "normalised_power": normalised.tolist(),
    }


def plot(path: Path, rows: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in rows.items():
        style = "--" if "MeteoSwiss" in name else "-"
        ax.loglog(r["wavelength_px"], r["normalised_power"], style, label=name)
    ax.axvspan(*SMALL, color="0.9")
    ax.invert_xaxis()
    ax.set_xlabel("wavelength (pixels)")
    ax.set_ylabel(f"power / power at {REFERENCE_PX:g} px")
    ax.set_title("Radar products' spectra, normalised (shaded: the figure's band)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--out",
        default=str(REPO / "benchmarks" / "results" / "radar_spectra.json"),
        help="result JSON; the .md table and .png plot go beside it (default %(default)s)",
    )
    p.add_argument("--side", type=int, default=96, help="window side in pixels (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="accepted for the benchmark contract; the run is the same")
    a = p.parse_args(argv)
    available = {n: v for n, v in PRODUCTS.items() if (DATA / v[0]).is_file()}
    if not available:
        print(
            f"skipped: none of the radar files is in {DATA} (the shared real-data folder ../shared/data)",
            file=sys.stderr,
        )
        return 2
    rows = {}
    for name, (file, factor, cap, km) in available.items():
        rows[name] = {**measure(DATA / file, factor, cap, a.side), "pixel_km": km}
        log(f"{name}: {rows[name]['steps']} steps, small-scale power {rows[name]['small_scale_power']:.4f}")
    typical = median([r["small_scale_power"] for r in rows.values()])
    figures = [
        figure(
            f"{name}: mean power at {SMALL[0]:g}-{SMALL[1]:g} px / power at {REFERENCE_PX:g} px",
            "1",
            [r["small_scale_power"]],
            "median over the products",
            [typical],
            product=name,
        )
        for name, r in rows.items()
    ]
    out = Path(a.out)
    table = (
        "| product | pixel | window | steps | wet fraction | power 2-4 px / 8 px | vs median |\n"
        "|---|---|---|---|---|---|---|\n"
        + "".join(
            f"| {n} | {r['pixel_km']:g} km | {r['window']} | {r['steps']} | {r['wet_fraction']:.2f} | "
            f"{r['small_scale_power']:.4f} | {r['small_scale_power'] / typical:.2f} |\n"
            for n, r in rows.items()
        )
    )
    print("\n" + table)
    write_result(
        out,
        "radar_spectra",
        figures,
        a.quick,
        {"products": rows, "median_small_scale_power": typical, "band_px": list(SMALL), "reference_px": REFERENCE_PX},
    )
    from hpcsr.atomic import write_text_atomic

    write_text_atomic(out.with_suffix(".md"), "# Small-scale power of the radar products\n\n" + table)
    plot(out.with_suffix(".png"), rows)
    log(f"wrote {out}, {out.with_suffix('.md')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
