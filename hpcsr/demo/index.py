"""The main job's index report: one page (report/index.html and index.md) that says what ran and
links each pair's evaluation report and the factor-grid report, with a table of the key scores
against the baselines, the demo's criteria per pair (met / not met) with the fields' credibility
scores beside them, the training curves (validation loss against step, transferred pair included)
and the time each launched element took (from the launch's done markers)."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from hpcsr.atomic import AtomicPath, write_json_atomic, write_text_atomic
from hpcsr.evaluate.criteria import check, ratio, shown
from hpcsr.evaluate.metrics import rank_ends

# (column, forecast, metric) of the score table; lower is better for each
SCORES = (
    ("CRPS ens", "ensemble", "crps"),
    ("RMSE ens mean", "ensemble", "rmse"),
    ("RMSE mean net", "mean", "rmse"),
    ("RMSE bicubic", "bicubic", "rmse"),
    ("MAE bicubic", "bicubic", "mae"),
)
SPREAD_SKILL = (0.7, 1.3)  # the demo's calibration criterion: spread/skill range


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def curves(run_dir: Path) -> dict:
    """{stage: {'train': [(step, loss)], 'val': [(step, val_loss)]}} from the stages' metrics.jsonl."""
    out = {}
    for stage in ("mean", "diffusion"):
        records = read_jsonl(run_dir / stage / "logs" / "metrics.jsonl")
        out[stage] = {
            "train": [
                (r["step"], r["loss"]) for r in records if r.get("kind") == "train" and r.get("loss") is not None
            ],
            "val": [
                (r["step"], r["val_loss"]) for r in records if r.get("kind") == "val" and r.get("val_loss") is not None
            ],
        }
    return out


def plot_curves(path: Path, pairs: list[dict]) -> Path:
    """Validation (solid) and training (dotted) loss against step, one panel per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, stage in zip(axes, ("mean", "diffusion")):
        for i, p in enumerate(pairs):
            colour = f"C{i}"
            label = p["name"] + (f" (from {p['parent']})" if p["parent"] else "")
            c = p["curves"][stage]
            if c["val"]:
                ax.plot(*zip(*c["val"]), "-o", ms=3, color=colour, label=f"{label} val")
            if c["train"]:
                ax.plot(*zip(*c["train"]), ":", color=colour, alpha=0.7)
        ax.set_title(f"{stage} stage: loss (normalised units)")
        ax.set_xlabel("optimiser step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with AtomicPath(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def demo_criteria(metrics: dict) -> dict:
    """The demo's criteria of one pair from its metrics.json: {name: {'value', 'target', 'met'}}, the
    value a ratio of two scores (below 1: better than bicubic) or the spread/skill ratio."""
    f = metrics.get("forecasts", {})
    ens, bic, mean = (f.get(name, {}) for name in ("ensemble", "bicubic", "mean"))
    return {
        "ensemble CRPS / bicubic MAE": check(ratio(ens.get("crps"), bic.get("mae")), high=1, strict=True),
        "ensemble-mean RMSE / bicubic RMSE": check(ratio(ens.get("rmse"), bic.get("rmse")), high=1),
        "mean-network RMSE / bicubic RMSE": check(ratio(mean.get("rmse"), bic.get("rmse")), high=1, strict=True),
        "spread/skill": check(ens.get("spread_skill_ratio"), low=SPREAD_SKILL[0], high=SPREAD_SKILL[1]),
    }


def credibility(metrics: dict) -> list[str]:
    """The ensemble's wet fraction ratio, spectral ratio range, seam ratio (truth's in brackets) and rank
    histogram ends (lowest / highest x flat), as text."""
    ens = metrics.get("forecasts", {}).get("ensemble", {})
    spectral = ens.get("spectral_ratio") or {}
    band = f"{_fmt(spectral.get('min'), 3)} .. {_fmt(spectral.get('max'), 3)}" if spectral else "-"
    truth_seam = metrics.get("truth", {}).get("seam_ratio")
    ranks = " / ".join(f"{v:.2f}" for v in rank_ends(ens["rank_histogram"])) if "rank_histogram" in ens else "-"
    return [
        _fmt(ens.get("wet_fraction_ratio"), 3),
        band,
        f"{_fmt(ens.get('seam_ratio'), 3)} ({_fmt(truth_seam, 3)})",
        ranks,
    ]


def criteria_table(pairs: list[dict]) -> tuple:
    """('table', header, rows): per pair each criterion's value and met / NOT met, then the credibility scores."""
    targets = demo_criteria({})  # names and targets (no values)
    header = (
        ["pair"]
        + [f"{name} ({c['target']})" for name, c in targets.items()]
        + [
            "all met",
            "wet fraction / truth",
            "spectral ratio (2 px .. LR cell)",
            "seam ratio (truth)",
            "rank ends (lowest / highest x flat)",
        ]
    )
    rows = []
    for p in pairs:
        metrics = p.get("metrics") or {}
        checks = demo_criteria(metrics)
        cells = [f"{shown(c['value'])} {'met' if c['met'] else 'NOT met'}" for c in checks.values()]
        rows.append(
            [p["name"], *cells, "yes" if all(c["met"] for c in checks.values()) else "NO", *credibility(metrics)]
        )
    return ("table", header, rows)


def blocks(summary: dict) -> list:
    """The page as (kind, ...) blocks, rendered to markdown and HTML below."""
    pairs = summary["pairs"]
    chains = ", ".join(f"{t['parent']} -> {t['pair']}" for t in summary["transfers"]) or "none"
    out = [
        ("h", 1, "hpcsr main job"),
        (
            "p",
            f"Synthetic Comephore-format data ({summary['data']}) -> HR store and LR shards -> "
            f"{summary['backend']} launches of {len(pairs)} factor pairs (stages {' -> '.join(summary['stages'])}; "
            f"scale transfer {chains}) -> ensembles of {summary['members']} members -> evaluation against the "
            f"truth and the baselines. Total {summary['seconds']:.0f} s on this machine ({summary['mode']}).",
        ),
    ]
    head = (
        ["pair", "origin", "L", "beta_end", "steps (mean/diff.)", "val loss (mean/diff.)"]
        + [c for c, _, _ in SCORES]
        + ["spread/skill", "mass err. tile", "report"]
    )
    rows = []
    for p in pairs:
        m = p.get("metrics") or {}
        f = m.get("forecasts", {})
        scores = [_fmt(f.get(name, {}).get(key)) for _, name, key in SCORES]
        ens = f.get("ensemble", {})
        val = "/".join(
            _fmt(p["curves"][s]["val"][-1][1] if p["curves"][s]["val"] else None, 3) for s in ("mean", "diffusion")
        )
        rows.append(
            [
                p["name"],
                f"transfer from {p['parent']}" if p["parent"] else "scratch",
                p["context"],
                _fmt(p["beta_end"], 3),
                f"{p['steps'].get('mean', '-')}/{p['steps'].get('diffusion', '-')}",
                val,
                *scores,
                _fmt(ens.get("spread_skill_ratio"), 3),
                _fmt(ens.get("mass", {}).get("tile_relative"), 2),
                ("link", p["report"], "report"),
            ]
        )
    out += [
        ("h", 2, "Scores on the test split (lower is better; mm per HR step)"),
        ("table", head, rows),
        ("h", 2, "Demo criteria per pair"),
        criteria_table(pairs),
        (
            "p",
            "Criteria: ratios below 1 beat bicubic (+ linear in time). For information: the members' wet "
            "fraction over the truth's, their power over the truth's at wavelengths from 2 HR px to the LR "
            "cell (min .. max), and the seam ratio (mean |neighbour difference| across LR-cell edges over "
            "inside cells; the truth's in brackets), and the rank histogram's ends as multiples of a flat "
            "histogram's share (the lowest far above 1: the truth below every member too often, members too wet; "
            "the highest: too dry).",
        ),
        (
            "p",
            "Each pair's report has the full metrics (fair CRPS, spread-skill, rank histogram, spectra and LSD, "
            "quantile errors, FSS, mass errors) with the LR / truth / members / mean panels. The mass error is "
            "at the scale the sampler's mass transform conserves (its regions).",
        ),
        ("link", summary["grid_report"], "Report over the factor grid (metrics against s and t)"),
        ("h", 2, "Training curves"),
        ("img", summary["curves"], "validation (solid) and training (dotted) loss"),
    ]
    if summary["transfers"]:
        rows = []
        for t in summary["transfers"]:
            for stage, s in t["summaries"].items():
                rows.append(
                    [
                        t["pair"],
                        t["parent"],
                        _fmt(t["distance"], 3),
                        stage,
                        *(s[a]["tensors"] for a in ("copied", "adapted", "re-initialised", "dropped")),
                        f"{100 * s['reinit_fraction']:.2f} %",
                        ("link", os.path.relpath(t["reports"][stage], summary["report_dir"]), "report JSON"),
                    ]
                )
        out += [
            ("h", 2, "Scale transfer (hpcsr.transfer, strategy 'transfer')"),
            (
                "p",
                "The parent is the nearest trained pair by d = |ln s - ln s'| + |ln t - ln t'|; each training "
                "stage of the child starts from a seed export of the parent's stage (train.init_from).",
            ),
            (
                "table",
                [
                    "pair",
                    "parent",
                    "distance",
                    "stage",
                    "copied",
                    "adapted",
                    "re-initialised",
                    "dropped",
                    "re-init share",
                    "tensors",
                ],
                rows,
            ),
        ]
    times = [[e["array"], e["pair"], _fmt(e["seconds"], 3), e["job"]] for e in summary["elements"]]
    out += [
        ("h", 2, "Launched elements"),
        ("table", ["array", "pair", "seconds", "job"], times),
        ("p", f"Launch records and logs: {summary['launch_folder']}. The same launches by hand:"),
        ("ul", summary["commands"]),
    ]
    return out


def render_markdown(page: list) -> str:
    lines = []
    for b in page:
        if b[0] == "h":
            lines.append(f"{'#' * b[1]} {b[2]}\n")
        elif b[0] == "p":
            lines.append(b[1] + "\n")
        elif b[0] == "link":
            lines.append(f"[{b[2]}]({b[1]})\n")
        elif b[0] == "ul":
            lines += [f"- `{item}`" for item in b[1]] + [""]
        elif b[0] == "img":
            lines.append(f"![{b[2]}]({b[1]})\n")
        elif b[0] == "table":
            cell = lambda c: f"[{c[2]}]({c[1]})" if isinstance(c, tuple) else str(c)  # noqa: E731
            lines += ["| " + " | ".join(b[1]) + " |", "|" + "---|" * len(b[1])]
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in b[2]]
            lines.append("")
    return "\n".join(lines)


def render_html(page: list) -> str:
    esc = html.escape
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>hpcsr main job</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto} table{border-collapse:collapse;"
        "font-size:13px} td,th{border:1px solid #bbb;padding:3px 6px;text-align:right} img{max-width:100%}</style>",
        "</head><body>",
    ]
    for b in page:
        if b[0] == "h":
            out.append(f"<h{b[1]}>{esc(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            out.append(f"<p>{esc(b[1])}</p>")
        elif b[0] == "link":
            out.append(f"<p><a href='{esc(b[1])}'>{esc(b[2])}</a></p>")
        elif b[0] == "ul":
            out.append("<ul>" + "".join(f"<li><code>{esc(item)}</code></li>" for item in b[1]) + "</ul>")
        elif b[0] == "img":
            out.append(
                f"<figure><img src='{esc(b[1])}' alt='{esc(b[2])}'><figcaption>{esc(b[2])}</figcaption></figure>"
            )
        elif b[0] == "table":
            cell = lambda c: f"<a href='{esc(c[1])}'>{esc(c[2])}</a>" if isinstance(c, tuple) else esc(str(c))  # noqa: E731
            head = "".join(f"<th>{esc(h)}</th>" for h in b[1])
            body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in b[2])
            out.append(f"<table><tr>{head}</tr>{body}</table>")
    out.append("</body></html>")
    return "\n".join(out)


def write_index(report_dir: Path, summary: dict) -> Path:
    """report_dir/index.html, index.md and summary.json; returns the HTML path."""
    report_dir.mkdir(parents=True, exist_ok=True)
    page = blocks(summary)
    write_json_atomic(report_dir / "summary.json", summary, indent=2, sort_keys=False, default=str)
    write_text_atomic(report_dir / "index.md", render_markdown(page))
    return write_text_atomic(report_dir / "index.html", render_html(page))
