"""Command line of the evaluation: its flags translated into the `evaluate` config section
(hpcsr.evaluate.config.EvaluateConfig, whose defaults it shows) for hpcsr.evaluate.run.run_evaluation.

    python -m hpcsr.evaluate --truth hr.nc --ensemble ens.nc [--lr lr.nc] --out DIR [options]
    python -m hpcsr.evaluate --pairs A/metrics.json B/metrics.json --out DIR     # factor grid only

Writes DIR/metrics.json, DIR/metrics.csv, DIR/report.md, DIR/report.html and the figures. Without
--lr the LR is the perfect-model coarsening of the truth. With --pairs, the metrics of other pairs
(their metrics.json) are shown with this one over the (s, t) grid. Exit code 2 on bad input.
What the ensemble file's attributes set (wet threshold, tiles, mass claim): see hpcsr.evaluate.run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hpcsr import exits
from hpcsr.evaluate.config import INPUT_KEYS, WINDOWS, EvaluateConfig
from hpcsr.evaluate.run import run_evaluation


def _numbers(kind):
    def parse(text: str):
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__} values")

    return parse


def build_parser() -> argparse.ArgumentParser:
    D = EvaluateConfig()  # the defaults are the config section's
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
    p.add_argument("--variable", default=D.variable, help="precipitation variable name in every file")
    p.add_argument("--mean-variable", default=D.mean_variable, help="variable name of the mean prediction")
    p.add_argument(
        "--baselines",
        type=lambda v: tuple(x for x in v.split(",") if x),
        default=D.baselines,
        help="comma-separated baselines among nearest,bicubic,motion,mean ('' for none)",
    )
    p.add_argument("--thresholds", type=_numbers(float), default=D.thresholds, help="FSS thresholds, mm per HR step")
    p.add_argument("--scales", type=_numbers(int), default=D.scales, help="FSS neighbourhood sizes, odd HR pixels")
    p.add_argument("--quantiles", type=_numbers(float), default=D.quantiles, help="quantile levels for errors")
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
    p.add_argument("--seed", type=int, default=D.seed, help="seed of the rank-histogram tie breaking")
    p.add_argument("--window", choices=WINDOWS, default=D.window, help="taper before the power spectrum")
    p.add_argument(
        "--pairs", type=Path, nargs="*", default=[], help="metrics.json of other factor pairs for the grid figure"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="the traceback of every error")
    return p


def _summary(result: dict) -> str:
    lines = [f"{'forecast':<10} {'RMSE':>9} {'MAE':>9} {'CRPS':>9} {'SSR':>6} {'LSD dB':>7} {'mass cell':>9}"]
    for name, res in result["forecasts"].items():
        ssr = res.get("spread_skill_ratio", float("nan"))
        lines.append(
            f"{name:<10} {res['rmse']:>9.4f} {res['mae']:>9.4f} {res['crps']:>9.4f} {ssr:>6.3f} "
            f"{res.get('lsd_db', float('nan')):>7.2f} {res['mass']['cell_relative']:>9.2e}"
        )
    return "\n".join(lines)


def to_config(args: argparse.Namespace) -> EvaluateConfig:
    """The parsed flags as the `evaluate` config section (each flag --a-b is the key a_b)."""
    values = {k: v for k, v in vars(args).items() if k not in ("quiet", "debug")}
    values.update({k: str(v) for k, v in values.items() if k in INPUT_KEYS and k != "pairs" and v is not None})
    values["pairs"] = tuple(map(str, args.pairs))
    return EvaluateConfig(**values, progress=not args.quiet)


def run(args: argparse.Namespace) -> dict:
    """`hpcsr evaluate` without the exit-code handling: prints the scores, returns the files written."""
    result = run_evaluation(to_config(args))
    if result.metrics is not None:
        print(_summary(result.metrics))
        print(f"wrote {', '.join(str(p) for p in result.written.values())}")
    return result.written


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
