"""`run_evaluation`: the evaluate stage's entry point, truth + ensemble (+ LR, mean) -> metrics,
figures and report in one folder, or the report over a factor grid from other pairs' metrics.json
(`hpcsr evaluate` and the launcher's evaluate stage call it with an EvaluateConfig).

From the ensemble file's attributes (as `hpcsr sample` writes them): the HR step for the default wet
threshold (0.1 mm/h over the step), the sampling tiles for the tile seam ratio, and the mass scale
the ensemble claims, whose error metrics.json reports as 'mass_claim' (image-scale regions also set
the default tile_cells).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hpcsr.atomic import AtomicFolder
from hpcsr.evaluate.config import EvaluateConfig
from hpcsr.evaluate.evaluation import evaluate, perfect_model_lr
from hpcsr.evaluate.inputs import load_inputs, sampling_tiles
from hpcsr.evaluate.mass_error import claimed_error, claimed_scale
from hpcsr.evaluate.report import json_safe, showcase_frames, write_report


@dataclass(frozen=True)
class EvaluationResult:
    """What run_evaluation wrote, and the pair's scores."""

    written: dict  # {kind: Path} of the files in cfg.out (json, csv, markdown, html, figures)
    metrics: dict | None  # the pair's scores (what metrics.json holds); None for a grid-only report


def _load_pairs(paths) -> list[dict]:
    results = []
    for path in paths:
        try:
            results.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read metrics file {path}: {err}") from err
        if "pair" not in results[-1] or "forecasts" not in results[-1]:
            raise ValueError(f"{path} is not a metrics.json written by hpcsr.evaluate (no 'pair'/'forecasts')")
    return results


def _write_whole(out, *report_args, **report_kwargs) -> dict:
    """write_report into a temporary sibling of `out`, swapped in whole (hpcsr.atomic.AtomicFolder):
    a failure leaves the previous report byte-identical, a success leaves no file of an older run."""
    with AtomicFolder(out, "report.md") as tmp:
        written = write_report(tmp, *report_args, **report_kwargs)
    return {k: Path(out) / Path(v).relative_to(tmp) for k, v in written.items()}


def run_evaluation(cfg: EvaluateConfig) -> EvaluationResult:
    """Score cfg.ensemble against cfg.truth and write the report to cfg.out (see the module docstring)."""
    if cfg.out is None:
        raise ValueError("evaluate: give the output folder (--out)")
    grid = _load_pairs(cfg.pairs)
    if cfg.truth is None and cfg.ensemble is None:
        if not grid:
            raise ValueError("nothing to do: give --truth and --ensemble, or --pairs metrics.json files")
        return EvaluationResult(_write_whole(cfg.out, None, grid_results=grid), None)
    if cfg.truth is None or cfg.ensemble is None:
        raise ValueError("give both --truth and --ensemble")
    inputs = load_inputs(cfg.truth, cfg.ensemble, cfg.lr, cfg.mean, cfg.s, cfg.t, cfg.variable, cfg.mean_variable)
    lr = inputs.lr if inputs.lr is not None else perfect_model_lr(inputs.truth, inputs.s, inputs.t)
    claim = claimed_scale(inputs.attrs)
    tile_cells = cfg.tile_cells
    if tile_cells is None and claim and claim["tile_cells"] and all(n % claim["tile_cells"] == 0 for n in lr.shape[1:]):
        tile_cells = claim["tile_cells"]  # the regions the sampler's mass transform conserved
    result = evaluate(
        inputs.truth,
        inputs.ensemble,
        lr,
        inputs.s,
        inputs.t,
        baselines=tuple(cfg.baselines),
        mean=inputs.mean,
        thresholds=cfg.thresholds,
        scales=cfg.scales,
        quantile_levels=cfg.quantiles,
        tile_cells=tile_cells,
        time_chunk=cfg.time_chunk,
        seed=cfg.seed,
        spectrum_window=None if cfg.window == "none" else "hann",
        pixel_size_km=inputs.pixel_size_km,
        wet_mm=cfg.wet_mm,
        interval_minutes=inputs.interval_minutes,
        tiles=sampling_tiles(inputs.attrs),
        progress=cfg.progress,
    )
    result["sources"] = inputs.sources
    result["mass_claim"] = claimed_error(claim, tile_cells, result["forecasts"]["ensemble"]["mass"])
    if inputs.lr is None:
        result["lr_source"] = "perfect model: coarsen(truth, s, t)"
    step = result["showcase_step"]
    frames = showcase_frames(
        inputs.truth,
        inputs.ensemble,
        lr,
        inputs.mean,
        inputs.s,
        inputs.t,
        step,
        [b for b in result["forecasts"] if b != "ensemble"],
    )
    label = str(inputs.truth["time"].values[step])[:16] if "time" in inputs.truth.coords else ""
    if grid:
        grid = [g for g in grid if g["pair"]["name"] != result["pair"]["name"]] + [json_safe(result)]
    written = _write_whole(cfg.out, result, frames, grid or None, inputs.sources, label)
    return EvaluationResult(written, result)
