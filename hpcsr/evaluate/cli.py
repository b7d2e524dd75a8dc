"""Command line of the evaluation.

    python -m hpcsr.evaluate --truth hr.nc --ensemble ens.nc [--lr lr.nc] --out DIR [options]
    python -m hpcsr.evaluate --pairs A/metrics.json B/metrics.json --out DIR     # factor grid only

Writes DIR/metrics.json, DIR/metrics.csv, DIR/report.md, DIR/report.html and the figures. Without
--lr the LR is the perfect-model coarsening of the truth. With --pairs, the metrics of other pairs
(their metrics.json) are shown with this one over the (s, t) grid. Exit code 2 on bad input.

From the ensemble file's attributes (as `hpcsr sample` writes them): the HR step for the default wet
threshold (0.1 mm/h over the step), the sampling tiles for the tile seam ratio, and the mass scale
the ensemble claims, whose error metrics.json reports as 'mass_claim' (image-scale regions also set
the default --tile-cells).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from hpcsr import exits
from hpcsr.atomic import AtomicFolder
from hpcsr.evaluate.evaluation import DEFAULT_QUANTILES, DEFAULT_SCALES, DEFAULT_THRESHOLDS, evaluate, perfect_model_lr
from hpcsr.evaluate.inputs import MEAN_VARIABLE, load_inputs, sampling_tiles
from hpcsr.evaluate.mass_error import claimed_error, claimed_scale
from hpcsr.evaluate.report import json_safe, showcase_frames, write_report


def _numbers(kind):
    def parse(text: str):
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__} values")

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hpcsr.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--truth", type=Path, help="HR truth netCDF, precip(time, y, x) in mm per HR step")
    p.add_argument("--ensemble", type=Path, help="HR ensemble netCDF, precip with dims member, time, y, x (any order)")
    p.add_argument(
        "--lr", type=Path, help="LR input netCDF, precip(time, y, x), one step per block (default: coarsened truth)"
    )
    p.add_argument(
        "--mean", type=Path, help="mean-network prediction netCDF (default: precip_mean in the ensemble file, if any)"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--s", type=int, help="spatial factor (default: the ensemble's factor_pair attribute or the LR grid)"
    )
    p.add_argument("--t", type=int, help="temporal factor (default: as --s)")
    p.add_argument("--variable", default="precip", help="precipitation variable name in every file")
    p.add_argument("--mean-variable", default=MEAN_VARIABLE, help="variable name of the mean prediction")
    p.add_argument(
        "--baselines",
        type=lambda v: tuple(x for x in v.split(",") if x),
        default=("nearest", "bicubic"),
        help="comma-separated baselines among nearest,bicubic,mean ('' for none)",
    )
    p.add_argument(
        "--thresholds", type=_numbers(float), default=DEFAULT_THRESHOLDS, help="FSS thresholds, mm per HR step"
    )
    p.add_argument(
        "--scales", type=_numbers(int), default=DEFAULT_SCALES, help="FSS neighbourhood sizes, odd HR pixels"
    )
    p.add_argument("--quantiles", type=_numbers(float), default=DEFAULT_QUANTILES, help="quantile levels for errors")
    p.add_argument(
        "--tile-cells",
        type=int,
        help="tile side in LR cells for the tile mass error (default: the "
        "ensemble's mass regions when it records them and they divide the LR grid, else the whole frame)",
    )
    p.add_argument(
        "--wet-mm",
        type=float,
        help="wet threshold in mm per HR step (default: 0.1 mm/h over the HR step "
        "of the ensemble's interval_minutes or time axis, else over 10 min)",
    )
    p.add_argument("--time-chunk", type=int, help="HR steps read per chunk (default: about 8M ensemble values)")
    p.add_argument("--seed", type=int, default=0, help="seed of the rank-histogram tie breaking")
    p.add_argument("--window", choices=("hann", "none"), default="hann", help="taper before the power spectrum")
    p.add_argument(
        "--pairs", type=Path, nargs="*", default=[], help="metrics.json of other factor pairs for the grid figure"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="the traceback of every error")
    return p


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


def _summary(result: dict) -> str:
    lines = [f"{'forecast':<10} {'RMSE':>9} {'MAE':>9} {'CRPS':>9} {'SSR':>6} {'LSD dB':>7} {'mass cell':>9}"]
    for name, res in result["forecasts"].items():
        ssr = res.get("spread_skill_ratio", float("nan"))
        lines.append(
            f"{name:<10} {res['rmse']:>9.4f} {res['mae']:>9.4f} {res['crps']:>9.4f} {ssr:>6.3f} "
            f"{res.get('lsd_db', float('nan')):>7.2f} {res['mass']['cell_relative']:>9.2e}"
        )
    return "\n".join(lines)


def _write_whole(out, *report_args, **report_kwargs) -> dict:
    """write_report into a temporary sibling of `out`, swapped in whole (hpcsr.atomic.AtomicFolder):
    a failure leaves the previous report byte-identical, a success leaves no file of an older run."""
    with AtomicFolder(out, "report.md") as tmp:
        written = write_report(tmp, *report_args, **report_kwargs)
    return {k: Path(out) / Path(v).relative_to(tmp) for k, v in written.items()}


def run(args: argparse.Namespace) -> dict:
    grid = _load_pairs(args.pairs)
    if args.truth is None and args.ensemble is None:
        if not grid:
            raise ValueError("nothing to do: give --truth and --ensemble, or --pairs metrics.json files")
        return _write_whole(args.out, None, grid_results=grid)
    if args.truth is None or args.ensemble is None:
        raise ValueError("give both --truth and --ensemble")
    inputs = load_inputs(
        args.truth, args.ensemble, args.lr, args.mean, args.s, args.t, args.variable, args.mean_variable
    )
    baselines = tuple(args.baselines)
    lr = inputs.lr if inputs.lr is not None else perfect_model_lr(inputs.truth, inputs.s, inputs.t)
    claim = claimed_scale(inputs.attrs)
    tile_cells = args.tile_cells
    if tile_cells is None and claim and claim["tile_cells"] and all(n % claim["tile_cells"] == 0 for n in lr.shape[1:]):
        tile_cells = claim["tile_cells"]  # the regions the sampler's mass transform conserved
    result = evaluate(
        inputs.truth,
        inputs.ensemble,
        lr,
        inputs.s,
        inputs.t,
        baselines=baselines,
        mean=inputs.mean,
        thresholds=args.thresholds,
        scales=args.scales,
        quantile_levels=args.quantiles,
        tile_cells=tile_cells,
        time_chunk=args.time_chunk,
        seed=args.seed,
        spectrum_window=None if args.window == "none" else "hann",
        pixel_size_km=inputs.pixel_size_km,
        wet_mm=args.wet_mm,
        interval_minutes=inputs.interval_minutes,
        tiles=sampling_tiles(inputs.attrs),
        progress=not args.quiet,
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
    written = _write_whole(args.out, result, frames, grid or None, inputs.sources, label)
    print(_summary(result))
    print(f"wrote {', '.join(str(p) for p in written.values())}")
    return written


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except exits.USER_ERRORS as err:
        if args.debug:
            raise
        print(f"hpcsr evaluate: error: {err}", file=sys.stderr)
        return exits.BAD_INPUT
    return exits.OK
