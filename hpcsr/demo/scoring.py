"""Scoring of the main job: each pair's ensemble (written by the launch's sample stage) against the
HR truth it super-resolves (hpcsr.evaluate.truth: metrics, baselines, plots, report), and the report
over the factor grid, both through hpcsr.evaluate.run.run_evaluation.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from hpcsr.evaluate.config import EvaluateConfig
from hpcsr.evaluate.run import run_evaluation
from hpcsr.evaluate.truth import evaluate_against_store, newer

# the demo's scores: every baseline, FSS neighbourhoods its small domain holds
SETTINGS = EvaluateConfig(baselines=("nearest", "bicubic", "mean"), scales=(1, 5, 15))


def evaluate_pair(ensemble: Path, hr_store: Path, out_dir: Path, progress: bool = True) -> dict:
    """metrics.json of one pair (reused when newer than its ensemble), with report.html and figures;
    the truth goes beside the pair's report folder (<out_dir>/../truth/<pair>.nc)."""
    metrics = out_dir / "metrics.json"
    if metrics.is_file() and newer(out_dir / "report.html", ensemble):  # the report is written last
        return json.loads(metrics.read_text())
    truth = out_dir.parent / "truth" / f"{out_dir.name}.nc"
    evaluate_against_store(dataclasses.replace(SETTINGS, progress=progress), ensemble, hr_store, out_dir, truth)
    return json.loads(metrics.read_text())


def grid_report(metric_files: list[Path], out_dir: Path) -> Path:
    """The report over the factor grid (metrics against (s, t)) from the pairs' metrics.json."""
    run_evaluation(EvaluateConfig(pairs=tuple(map(str, metric_files)), out=str(out_dir)))
    return out_dir / "report.html"
