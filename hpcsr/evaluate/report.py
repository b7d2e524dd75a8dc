"""Writing an evaluation out: metrics JSON and CSV, figures, and a report in markdown and HTML.

Every file is written atomically (temporary name, flush, fsync, rename), so an interrupted run never
leaves a half-written metrics file that a later grid report would read. The report is built once
as a list of blocks (heading, paragraph, list, table, image) and rendered to both formats.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from pathlib import Path

import numpy as np

from hpcsr.atomic import write_text_atomic
from hpcsr.evaluate import baselines as bl
from hpcsr.evaluate import plots

SUMMARY_COLUMNS = (
    ("members", "members"),
    ("n_valid", "valid points"),
    ("rmse", "RMSE"),
    ("mae", "MAE"),
    ("crps", "CRPS"),
    ("spread_skill_ratio", "spread/skill"),
    ("lsd_db", "LSD (dB)"),
    ("mass.cell_relative", "mass err. cell"),
    ("mass.tile_relative", "mass err. tile"),
    ("flags", "flags"),
)
CREDIBILITY_TEXT = (
    "Wet fraction: #(x > w) / #points over the scored points (members pooled), w = {wet:.4g} mm per HR step "
    "({rule}); wet / truth: forecast over truth, 1 is right, above 1 drizzle. Spectral ratio: P_forecast(k) / "
    "P_truth(k) (members: their mean spectrum) at every wavelength 1/k from 2 HR px to the LR cell (s px); "
    "below 1 too smooth, above 1 too noisy. Seam ratio: mean |x[i+1] - x[i]| over neighbour pairs across "
    "LR-cell edges (pixels s*k - 1, s*k) / the same mean over pairs inside cells, rows and columns pooled; "
    "the truth's value is the natural reference, above it the LR grid shows. Tile seam ratio: the same "
    "across the sampler's tile edges / across the other LR-cell edges. Mass err. cell: |coarsen(x) - LR| "
    "summed over cells / LR mass."
)


def json_safe(value):
    """NaN and inf become None, numpy scalars become Python numbers, tuples become lists."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _get(record: dict, dotted: str):
    for key in dotted.split("."):
        record = record.get(key) if isinstance(record, dict) else None
    return record


def flat_rows(result: dict) -> list[dict]:
    """One row per forecast with every scalar score as a column (for CSV)."""
    rows = []
    for name, res in result["forecasts"].items():
        row = {"pair": result["pair"]["name"], "s": result["pair"]["s"], "t": result["pair"]["t"], "forecast": name}
        for key in (
            "members",
            "n_truth_valid",
            "n_valid",
            "n_forecast_missing",
            "rmse",
            "mae",
            "crps",
            "crps_standard",
            "spread",
            "spread_skill_ratio",
            "lsd_db",
            "wet_fraction",
            "wet_fraction_ratio",
            "seam_ratio",
            "tile_seam_ratio",
        ):
            row[key] = res.get(key)
        for key in ("min", "max"):
            row[f"spectral_ratio_{key}"] = (res.get("spectral_ratio") or {}).get(key)
        for key, value in res["mass"].items():
            row[f"mass_{key}"] = value
        for level, q in res["quantiles"].items():
            row[f"q{level}_truth"], row[f"q{level}_forecast"], row[f"q{level}_error"] = (
                q["truth"],
                q["forecast"],
                q["error"],
            )
        for family in ("fss", "fss_member_mean"):
            for threshold, by_scale in res.get(family, {}).items():
                for scale, value in by_scale.items():
                    row[f"{family}_ge{threshold}_n{scale}"] = value
        row["flags"] = ";".join(res["flags"])
        rows.append(json_safe(row))
    return rows


def write_metrics(out_dir, result: dict) -> tuple[Path, Path]:
    """metrics.json (the whole result) and metrics.csv (one row per forecast) in `out_dir`."""
    out_dir = Path(out_dir)
    json_path = write_text_atomic(out_dir / "metrics.json", json.dumps(json_safe(result), indent=1, allow_nan=False))
    rows = flat_rows(result)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return json_path, write_text_atomic(out_dir / "metrics.csv", buffer.getvalue())


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, list):
        return ", ".join(value) or "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def showcase_frames(truth, ensemble, lr, mean, s: int, t: int, step: int, baseline_names) -> dict:
    """The fields of one HR step for the panel figure, read from (possibly lazy) arrays."""
    lr = np.asarray(lr, dtype=np.float32)
    members = np.asarray(ensemble[:, step], dtype=np.float32)
    frames = {}
    for name in baseline_names:
        if name in bl.FROM_LR:
            frames[name] = bl.from_lr(name, lr, s, t, step, step + 1)[0]
        elif name == "mean" and mean is not None:
            frames[name] = np.asarray(mean[step], dtype=np.float32)
    return {
        "lr": lr[step // t],
        "truth": np.asarray(truth[step], dtype=np.float32),
        "members": members,
        "ensemble_mean": members.mean(axis=0),
        "baselines": frames,
    }


def make_figures(
    out_dir, result: dict, frames: dict | None, grid_results: list[dict] | None = None, step_label: str = ""
) -> dict:
    """Draw every figure the result supports; returns {name: file name relative to out_dir}."""
    out_dir = Path(out_dir)
    figures = {}
    name = result["pair"]["name"]
    if frames is not None:
        title = f"{name}, HR step {result['showcase_step']} {step_label}".strip()
        plots.plot_panels(
            out_dir / "panels.png",
            frames["lr"],
            frames["truth"],
            frames["members"],
            frames["ensemble_mean"],
            frames["baselines"],
            title,
        )
        figures["panels"] = "panels.png"
    if result.get("spectra"):
        plots.plot_spectra(out_dir / "spectra.png", result["spectra"], result["settings"].get("pixel_size_km"))
        figures["spectra"] = "spectra.png"
    ensemble = result["forecasts"]["ensemble"]
    if "rank_histogram" in ensemble:
        plots.plot_rank_histogram(out_dir / "rank_histogram.png", ensemble["rank_histogram"], f"rank histogram {name}")
        figures["rank_histogram"] = "rank_histogram.png"
    plots.plot_qq(out_dir / "qq.png", result["forecasts"])
    figures["qq"] = "qq.png"
    plots.plot_fss(out_dir / "fss.png", result["forecasts"])
    figures["fss"] = "fss.png"
    if grid_results:
        plots.plot_factor_grid(out_dir / "factor_grid.png", grid_results)
        figures["factor_grid"] = "factor_grid.png"
    return figures


def credibility_blocks(result: dict) -> list:
    """The credibility table (wet fraction, spectral, seam and tile seam ratios, cell mass error) with
    the truth as reference, why any score is undefined, and the mass error at the claimed scale."""
    settings, fc, s = result["settings"], result["forecasts"], result["pair"]["s"]
    tiles = "tile_seam_ratio" in result["truth"]
    header = (
        ["field", "wet fraction", "wet / truth", f"spectral ratio min (2..{s} px)", "spectral ratio max", "seam ratio"]
        + (["tile seam ratio"] if tiles else [])
        + ["mass err. cell"]
    )

    def row(name, res, wet_ratio, spectral, mass):
        return (
            [
                name,
                _fmt(res["wet_fraction"]),
                _fmt(wet_ratio),
                _fmt(spectral.get("min")),
                _fmt(spectral.get("max")),
                _fmt(res["seam_ratio"]),
            ]
            + ([_fmt(res["tile_seam_ratio"])] if tiles else [])
            + [_fmt(mass)]
        )

    rows = [row("truth", result["truth"], 1.0, {}, None)]
    rows += [
        row(name, res, res["wet_fraction_ratio"], res.get("spectral_ratio") or {}, res["mass"]["cell_relative"])
        for name, res in fc.items()
    ]
    notes = [f"{key} undefined: {why}" for key, why in result.get("undefined", {}).items()]
    claim = result.get("mass_claim")
    if claim:
        notes.append(
            f"mass claimed by the ensemble: {claim['scale']}; relative error there "
            f"{_fmt(claim['relative_error'])}{'; ' + claim['note'] if claim['note'] else ''}"
        )
    text = CREDIBILITY_TEXT.format(wet=settings["wet_mm_per_step"], rule=settings["wet_rule"])
    return [("h", 2, "Credibility of the fields"), ("p", text), ("table", header, rows)] + (
        [("ul", notes)] if notes else []
    )


def report_blocks(
    result: dict | None, figures: dict, grid_results: list[dict] | None = None, inputs: dict | None = None
) -> list:
    """The report as blocks: ('h', level, text), ('p', text), ('ul', items), ('table', header, rows), ('img', file, caption)."""
    blocks = []
    if result is not None:
        pair, fc = result["pair"], result["forecasts"]
        blocks.append(("h", 1, f"Evaluation of factor pair {pair['name']} (s={pair['s']}, t={pair['t']})"))
        counts = result["counts"]
        facts = [
            f"{result['members']} members; HR {result['shape']['time']} steps x {result['shape']['y']} x {result['shape']['x']}",
            f"LR: {result['lr_source']}; {counts['lr_missing']} of {counts['lr_values']} LR values missing",
            f"truth: {counts['truth_missing']} of {counts['truth_values']} values missing (masked everywhere)",
            f"baseline timing: {result['settings']['baseline_timing']}",
        ]
        facts += [f"{k}: {v}" for k, v in (inputs or {}).items()]
        blocks.append(("ul", facts))
        if result["warnings"]:
            blocks.append(("h", 2, "Warnings"))
            blocks.append(("ul", list(result["warnings"])))
        blocks.append(("h", 2, "Scores"))
        blocks.append(
            (
                "p",
                "Every forecast is scored on the same points: where the truth and all forecasts are valid. "
                "RMSE, MAE: of the ensemble mean (a baseline is its own mean). CRPS: fair (unbiased) "
                "ensemble estimator; for a single forecast it equals the MAE. Spread/skill: "
                "sqrt((m+1)/m mean member variance) / RMSE, 1 when calibrated. LSD: log-spectral "
                "distance to the truth's spectrum. Mass error: |coarsen(forecast) - LR| summed over "
                "cells (or tiles) divided by the LR mass.",
            )
        )
        header = ["forecast"] + [label for _, label in SUMMARY_COLUMNS]
        rows = [[name] + [_fmt(_get(res, key)) for key, _ in SUMMARY_COLUMNS] for name, res in fc.items()]
        blocks.append(("table", header, rows))
        blocks += credibility_blocks(result)
        blocks.append(("h", 2, "Quantile errors (forecast - truth, mm per HR step)"))
        levels = list(next(iter(fc.values()))["quantiles"])
        header = ["forecast"] + [f"q{lv} truth" for lv in levels[:1]] + [f"q{lv} error" for lv in levels]
        rows = [
            [name]
            + [_fmt(res["quantiles"][levels[0]]["truth"])]
            + [_fmt(res["quantiles"][lv]["error"]) for lv in levels]
            for name, res in fc.items()
        ]
        blocks.append(("table", header, rows))
        blocks.append(("h", 2, "Fractions skill score"))
        first = next(iter(fc.values()))
        columns = [(q, n) for q in first["fss"] for n in first["fss"][q]]
        header = ["forecast"] + [f">={q} n={n}" for q, n in columns]
        rows = [[name] + [_fmt(res["fss"][q][n]) for q, n in columns] for name, res in fc.items()]
        rows.append(["useful above"] + [_fmt(first["fss_useful"][q]) for q, _ in columns])
        blocks.append(("table", header, rows))
        captions = {
            "panels": "LR input, truth, ensemble mean and baselines (top); members (bottom); grey = missing",
            "spectra": "radially averaged power spectra",
            "rank_histogram": "rank histogram of the truth",
            "qq": "QQ plot of the upper tail",
            "fss": "FSS against neighbourhood size",
        }
        blocks.append(("h", 2, "Figures"))
        blocks += [("img", figures[k], c) for k, c in captions.items() if k in figures]
    if grid_results:
        blocks.append(("h", 2 if result is not None else 1, "Scores over factor pairs"))
        header = ["pair", "members", "CRPS", "MAE bicubic", "RMSE ens. mean", "RMSE bicubic", "spread/skill", "flags"]
        rows = []
        for res in sorted(grid_results, key=lambda r: (r["pair"]["s"], r["pair"]["t"])):
            ens, bic = res["forecasts"]["ensemble"], res["forecasts"].get("bicubic", {})
            rows.append(
                [
                    res["pair"]["name"],
                    _fmt(ens["members"]),
                    _fmt(ens["crps"]),
                    _fmt(bic.get("mae")),
                    _fmt(ens["rmse"]),
                    _fmt(bic.get("rmse")),
                    _fmt(ens.get("spread_skill_ratio")),
                    _fmt(ens["flags"]),
                ]
            )
        blocks.append(("table", header, rows))
        if "factor_grid" in figures:
            blocks.append(("img", figures["factor_grid"], "ensemble scores over the (s, t) grid"))
    return blocks


def render_markdown(blocks: list) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"{'#' * block[1]} {block[2]}\n")
        elif kind == "p":
            out.append(block[1] + "\n")
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in block[1]) + "\n")
        elif kind == "table":
            header, rows = block[1], block[2]
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            out.append("\n".join(lines) + "\n")
        elif kind == "img":
            out.append(f"![{block[2]}]({block[1]})\n")
    return "\n".join(out)


def render_html(blocks: list, title: str) -> str:
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        "<html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto} table{border-collapse:collapse;"
        "font-size:13px} td,th{border:1px solid #bbb;padding:3px 6px;text-align:right} img{max-width:100%}</style>",
        "</head><body>",
    ]
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"<h{block[1]}>{esc(block[2])}</h{block[1]}>")
        elif kind == "p":
            out.append(f"<p>{esc(block[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{esc(h)}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block[2])
            out.append(f"<table><tr>{head}</tr>{body}</table>")
        elif kind == "img":
            out.append(
                f"<figure><img src='{esc(block[1])}' alt='{esc(block[2])}'><figcaption>{esc(block[2])}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out)


def write_report(
    out_dir,
    result: dict | None,
    frames: dict | None = None,
    grid_results: list[dict] | None = None,
    inputs: dict | None = None,
    step_label: str = "",
) -> dict:
    """Write metrics (when `result` is given), figures and report.md / report.html into `out_dir`.

    `grid_results`: `evaluate` results (or their metrics.json contents) of several pairs for the
    factor-grid figure and table. Returns {kind: path} of everything written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    if result is not None:
        written["json"], written["csv"] = write_metrics(out_dir, result)
        figures = make_figures(out_dir, json_safe(result), frames, grid_results, step_label)
    else:
        figures = {"factor_grid": plots.plot_factor_grid(out_dir / "factor_grid.png", grid_results).name}
    blocks = report_blocks(json_safe(result) if result is not None else None, figures, grid_results, inputs)
    title = f"hpcsr evaluation {result['pair']['name']}" if result is not None else "hpcsr evaluation over factor pairs"
    written["markdown"] = write_text_atomic(out_dir / "report.md", render_markdown(blocks))
    written["html"] = write_text_atomic(out_dir / "report.html", render_html(blocks, title))
    written.update({k: out_dir / v for k, v in figures.items()})
    return written
