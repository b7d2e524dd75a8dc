"""Figures of an evaluation, drawn with matplotlib's Agg canvas (no display, no global backend
switch) and written atomically. Each function takes plain arrays or the dict of `evaluate` and
returns the path of the PNG it wrote.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import colors, ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hpcsr.atomic import AtomicPath

PRECIP_CMAP = "viridis"


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    with AtomicPath(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path


def _label(name: str) -> str:
    return {
        "ensemble": "ensemble",
        "nearest": "nearest",
        "bicubic": "bicubic + linear t",
        "motion": "bicubic + motion t",
        "mean": "mean network",
        "truth": "truth",
    }.get(name, name)


def plot_panels(path, lr_frame, truth_frame, members, mean_frame, baseline_frames: dict, title: str) -> Path:
    """LR / truth / ensemble mean / baselines on the first row, up to 4 members on the second, one
    shared colour scale (square-root stretch, grey = missing). `lr_frame` is drawn over the HR extent."""
    members = list(members)[:4]
    top = [("LR input", lr_frame), ("truth", truth_frame), ("ensemble mean", mean_frame)]
    top += [(_label(k), v) for k, v in baseline_frames.items()]
    ncols = max(len(top), len(members), 1)
    stack = [np.asarray(v, dtype=np.float64) for _, v in top] + [np.asarray(m, dtype=np.float64) for m in members]
    finite = np.concatenate([v[np.isfinite(v)] for v in stack]) if stack else np.zeros(1)
    vmax = max(float(np.percentile(finite, 99.9)) if finite.size else 1.0, 1e-3)
    norm = colors.PowerNorm(gamma=0.5, vmin=0.0, vmax=vmax)
    cmap = matplotlib.colormaps[PRECIP_CMAP].with_extremes(bad="lightgrey")
    ny, nx = np.shape(truth_frame)
    side = 2.3
    fig = Figure(figsize=(side * ncols + 1.2, 2 * side * min(max(ny / nx, 0.3), 3.0) + 0.7), layout="constrained")
    axes = fig.subplots(2, ncols, squeeze=False)
    image = None
    for row, panels in enumerate((top, [(f"member {i}", m) for i, m in enumerate(members)])):
        for col in range(ncols):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(panels):
                ax.set_visible(False)
                continue
            name, field = panels[col]
            image = ax.imshow(
                np.ma.masked_invalid(field), cmap=cmap, norm=norm, extent=(0, nx, ny, 0), interpolation="nearest"
            )
            ax.set_title(name, fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.8, label="mm per HR step")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_spectra(path, spectra: dict, pixel_size_km: float | None = None) -> Path:
    """Radially averaged power spectra of the truth and every forecast against wavelength, log-log,
    large scales on the left."""
    wavelength = 1.0 / np.asarray(spectra["k_cycles_per_pixel"])
    unit = "pixels"
    if pixel_size_km:
        wavelength, unit = wavelength * pixel_size_km, "km"
    fig = Figure(figsize=(6, 4.2), layout="constrained")
    ax = fig.subplots()
    for name, power in spectra["power"].items():
        style = {"color": "black", "lw": 2.2} if name == "truth" else {"lw": 1.4}
        power = np.asarray(power, dtype=float)
        ax.loglog(wavelength, np.where(power > 0, power, np.nan), label=_label(name), **style)
    ax.invert_xaxis()
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_locator(ticker.LogLocator(subs=(2.0, 5.0)))  # 2, 5, 20, 50: a span of one decade
    ax.xaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))  # otherwise shows a single label
    ax.set_xlabel(f"wavelength ({unit})")
    ax.set_ylabel("power (mm² per HR step²)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"power spectra ({spectra['frames']} frames, window {spectra['window']})", fontsize=10)
    return _save(fig, path)


def plot_rank_histogram(path, counts, title: str = "rank histogram") -> Path:
    """Rank frequencies scaled so a calibrated ensemble is flat at 1."""
    counts = np.asarray(counts, dtype=np.float64)
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    total = counts.sum()
    scaled = counts / total * counts.size if total else counts
    ax.bar(np.arange(counts.size), scaled, color="tab:blue", width=0.85)
    ax.axhline(1.0, color="black", ls="--", lw=1, label="calibrated")
    ax.set_xlabel(f"rank of the truth among {counts.size - 1} members")
    ax.set_ylabel("relative frequency x (m+1)")
    ax.set_title(f"{title} ({int(total)} points)", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_qq(path, forecasts: dict) -> Path:
    """Forecast against truth quantiles at levels 0.9 .. 0.9999, one line per forecast."""
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    top = 0.0
    for name, res in forecasts.items():
        truth_q = np.asarray(res["qq"]["truth"], dtype=float)
        forecast_q = np.asarray(res["qq"]["forecast"], dtype=float)
        ax.plot(truth_q, forecast_q, marker="o", ms=3, label=_label(name))
        top = max(top, np.nanmax(truth_q), np.nanmax(forecast_q))
    ax.plot([0, top], [0, top], color="black", ls="--", lw=1, label="1:1")
    ax.set_xlabel("truth quantile (mm per HR step)")
    ax.set_ylabel("forecast quantile (mm per HR step)")
    ax.set_title("QQ, levels 0.9 to 0.9999", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_fss(path, forecasts: dict) -> Path:
    """FSS against neighbourhood size, one panel per threshold; dotted: the 'useful' level."""
    first = next(iter(forecasts.values()))
    thresholds = list(first["fss"])
    fig = Figure(figsize=(3.6 * len(thresholds), 3.4), layout="constrained")
    axes = fig.subplots(1, len(thresholds), squeeze=False)[0]
    for ax, q in zip(axes, thresholds):
        defined = False
        for name, res in forecasts.items():
            scales = [int(n) for n in res["fss"][q]]
            values = np.asarray([_num(res["fss"][q][str(n)]) for n in scales], dtype=float)
            ax.plot(scales, values, marker="o", label=_label(name))
            defined |= bool(np.isfinite(values).any())
        ax.axhline(_num(first["fss_useful"][q]), color="grey", ls=":", lw=1)
        if defined:
            ax.set_xscale("log")
        else:  # no pixel reaches the threshold in truth or forecasts: the FSS is undefined (a dry window)
            ax.text(
                0.5, 0.5, "undefined:\nno event at this threshold", ha="center", va="center", transform=ax.transAxes
            )
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("neighbourhood (HR pixels)")
        ax.set_title(f">= {q} mm per HR step", fontsize=10)
    axes[0].set_ylabel("FSS")
    axes[0].legend(fontsize=8)
    return _save(fig, path)


GRID_METRICS = (
    ("crps", "ensemble CRPS (mm)"),
    ("crps_skill_vs_bicubic", "1 - CRPS / MAE(bicubic)"),
    ("rmse_ratio_vs_bicubic", "RMSE(ens. mean) / RMSE(bicubic)"),
    ("spread_skill_ratio", "spread-skill ratio"),
    ("lsd_db", "log-spectral distance (dB)"),
    ("mass_cell_relative", "mass error, cell (relative)"),
)


def _num(value) -> float:
    return np.nan if value is None else float(value)


def grid_values(results: list[dict]) -> dict:
    """{metric: {(s, t): value}} of the ensemble over several pairs' `evaluate` results."""
    table = {key: {} for key, _ in GRID_METRICS}
    for res in results:
        pair = (res["pair"]["s"], res["pair"]["t"])
        ens, bic = res["forecasts"]["ensemble"], res["forecasts"].get("bicubic")
        table["crps"][pair] = _num(ens["crps"])
        table["spread_skill_ratio"][pair] = _num(ens.get("spread_skill_ratio"))
        table["lsd_db"][pair] = _num(ens.get("lsd_db"))
        table["mass_cell_relative"][pair] = _num(ens["mass"]["cell_relative"])
        if bic:
            table["crps_skill_vs_bicubic"][pair] = 1.0 - _num(ens["crps"]) / _num(bic["mae"]) if bic["mae"] else np.nan
            table["rmse_ratio_vs_bicubic"][pair] = _num(ens["rmse"]) / _num(bic["rmse"]) if bic["rmse"] else np.nan
    return table


def plot_factor_grid(path, results: list[dict]) -> Path:
    """Heat maps of the ensemble's scores over the (s, t) grid of the pairs given."""
    table = grid_values(results)
    s_values = sorted({r["pair"]["s"] for r in results})
    t_values = sorted({r["pair"]["t"] for r in results})
    fig = Figure(figsize=(3.3 * 3, 2.9 * 2), layout="constrained")
    axes = fig.subplots(2, 3, squeeze=False).ravel()
    for ax, (key, title) in zip(axes, GRID_METRICS):
        grid = np.full((len(t_values), len(s_values)), np.nan)
        for (s, t), value in table[key].items():
            grid[t_values.index(t), s_values.index(s)] = value
        image = ax.imshow(np.ma.masked_invalid(grid), cmap="magma", origin="lower", aspect="auto")
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):
                shade = image.norm(value)
                ax.text(
                    j,
                    i,
                    f"{value:.3g}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if np.isfinite(shade) and shade > 0.5 else "white",
                )
        ax.set_xticks(range(len(s_values)), [str(v) for v in s_values])
        ax.set_yticks(range(len(t_values)), [str(v) for v in t_values])
        ax.set_xlabel("s")
        ax.set_ylabel("t")
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle("ensemble scores over factor pairs", fontsize=10)
    return _save(fig, path)
