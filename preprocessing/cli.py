"""`hpcsr-preprocess`: raw precipitation -> HR store -> per-factor LR shards, on one process or on
MPI ranks (`mpirun -n 4 hpcsr-preprocess ...`), resumable (a rerun skips finished work).

    hpcsr-preprocess synth  --out data/raw --days 3 --size 200
    hpcsr-preprocess ingest --out data/default --comephore /data/comephore/H_COMEPHORE_2019*.tar
    hpcsr-preprocess ingest --out data/knmi --netcdf ../shared/data/knmi_20100826.nc --cadence 60
    hpcsr-preprocess shards --out data/default --grid paper
    hpcsr-preprocess shards --out data/default --pairs 10x3,2x1 --split-bounds 2019-10-01,2019-11-15
    hpcsr-preprocess all    --out data/default --days 3 --size 200 --grid paper   (synthetic data)
    hpcsr-preprocess all    --out data/default --comephore /data/comephore --grid paper

The flags become the `preprocess` config section (preprocessing.config.PreprocessConfig, whose
defaults they are; flag --a-b is key a_b, --days and the other synthetic flags are synthetic.days
...); `all` then calls preprocessing.run.run_preprocess, as the launcher's preprocess stage does.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from dataclasses import fields
from pathlib import Path

from hpcsr import exits
from hpcsr.factors import PAPER_PAIRS, FactorPair
from preprocessing.config import PreprocessConfig, SyntheticConfig
from preprocessing.ingest import ingest
from preprocessing.layout import COMPRESSIONS
from preprocessing.parallel import Comm, StepFailed
from preprocessing.run import run_preprocess
from preprocessing.shards import make_shards
from preprocessing.synth import synthesize

log = logging.getLogger("hpcsr-preprocess")
D = PreprocessConfig()  # the flags' defaults are the preprocess config section's


def parse_pairs(pairs: str | None, grid: str | None) -> tuple[FactorPair, ...]:
    """Pairs from '--pairs 10x3,2x1' or '--grid paper' / '--grid configs/grid/<name>.yaml'."""
    if pairs and grid:
        raise ValueError("give --pairs or --grid, not both")
    if pairs:
        return tuple(FactorPair.parse(p) for p in pairs.split(",") if p.strip())
    if grid in (None, "paper"):
        return PAPER_PAIRS
    path = Path(grid)
    if not path.is_file():
        raise ValueError(f"--grid {grid!r} is neither 'paper' nor a grid YAML file (e.g. configs/grid/product.yaml)")
    from omegaconf import OmegaConf

    spec = OmegaConf.to_container(OmegaConf.load(path))
    kind = spec.get("kind")
    if kind == "pairs":
        return tuple(FactorPair.parse(p) for p in spec["pairs"])
    if kind == "product":
        return tuple(FactorPair(s, t) for s in spec["s"] for t in spec["t"])
    raise ValueError(f"{path}: kind={kind!r}, expected 'pairs' or 'product'")


def _layout_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chunk", type=int, default=D.chunk, help="spatial chunk side in pixels (default %(default)s)")
    p.add_argument("--compression", default=D.compression, help=f"{COMPRESSIONS} (default %(default)s)")


def _synth_args(p: argparse.ArgumentParser) -> None:
    d = D.synthetic
    p.add_argument("--days", type=int, default=d.days, help="days of hourly data (default %(default)s)")
    p.add_argument(
        "--size", type=int, default=d.size, help="grid side in 1 km pixels, up to 1536 (default %(default)s)"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (default %(default)s)")
    p.add_argument("--start", default=d.start, help="first day, UTC (default %(default)s)")
    p.add_argument(
        "--coverage", type=float, default=d.coverage, help="fraction of the grid with data (default %(default)s)"
    )
    p.add_argument(
        "--missing-hours", type=int, default=d.missing_hours, help="hours left out, as gaps (default %(default)s)"
    )


def _ingest_args(p: argparse.ArgumentParser, required: bool) -> None:
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument(
        "--comephore", nargs="+", metavar="PATH", help="H_COMEPHORE_YYYYMM.tar archives or folders of .gtif/.tar"
    )
    src.add_argument("--netcdf", nargs="+", metavar="FILE", help="CF netCDF files with precip(time, y, x)")
    p.add_argument(
        "--cadence",
        type=int,
        default=D.cadence,
        help="HR step in minutes; finer netCDF steps are summed (default %(default)s)",
    )
    p.add_argument(
        "--source-interval",
        type=int,
        default=None,
        help="netCDF accumulation minutes if the files lack interval_minutes",
    )
    p.add_argument(
        "--aggregate-pixels",
        type=int,
        default=D.aggregate_pixels,
        metavar="K",
        help="netCDF: store the mean of each K x K block of source pixels (e.g. 2: 500 m -> 1 km) (default %(default)s)",
    )
    p.add_argument(
        "--dequantise",
        type=float,
        default=D.dequantise,
        metavar="Q",
        help="netCDF: the source rounds its amounts to multiples of Q mm per source step (BoM Rainfields3: "
        "0.05); smooth each step inside its rounding bins, dry pixels kept dry (0: off; default %(default)s)",
    )
    p.add_argument(
        "--cap",
        type=float,
        default=D.cap,
        help="plausibility cap in mm/h; higher rates are masked (default %(default)s)",
    )
    p.add_argument(
        "--on-bad-input",
        choices=("skip", "fail"),
        default=D.on_bad_input,
        help="unreadable frame: skip it as a gap, or stop (default %(default)s)",
    )
    p.add_argument(
        "--encoding",
        default=None,
        help="HR storage: 'uint16/<units per mm>' or 'float32' (default: uint16/10 for Comephore, float32 for netCDF)",
    )
    p.add_argument(
        "--unit-frames", type=int, default=D.unit_frames, help="frames per unit of work (default %(default)s)"
    )


def _shard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", default=None, help="factor pairs, e.g. 10x3,2x1 (default: the paper's four)")
    p.add_argument("--grid", default=None, help="'paper' or a grid YAML (kind: pairs|product)")
    p.add_argument(
        "--min-valid",
        type=float,
        default=D.min_valid,
        help="minimum valid fraction of a block for its LR value (default %(default)s)",
    )
    p.add_argument(
        "--phase-minutes",
        type=int,
        default=D.phase_minutes,
        help="time blocks start at 00 UTC + this (default %(default)s)",
    )
    p.add_argument(
        "--split-fractions",
        default=",".join(map(str, D.split_fractions)),
        help="train,val,test shares of the time span (default %(default)s)",
    )
    p.add_argument("--split-bounds", default=None, help="END_OF_TRAIN,END_OF_VAL as ISO times (instead of fractions)")
    p.add_argument(
        "--wet-threshold",
        type=float,
        default=D.wet_threshold,
        help="mm per step below which a value is dry (default %(default)s)",
    )
    p.add_argument(
        "--window-frames",
        type=int,
        default=D.window_frames,
        help="HR steps read at once per rank (default %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    common.add_argument("--debug", action="store_true", help="debug logging and full tracebacks")
    parser = argparse.ArgumentParser(
        prog="hpcsr-preprocess", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", parents=[common], help="write synthetic Comephore-format monthly archives")
    p.add_argument("--out", required=True, help="folder for the H_COMEPHORE_YYYYMM.tar archives")
    _synth_args(p)

    p = sub.add_parser("ingest", parents=[common], help="read raw data into the HR store <out>/hr.h5")
    p.add_argument("--out", required=True, help="output folder (hr.h5, manifest.json, parts/)")
    _ingest_args(p, required=True)
    _layout_args(p)

    p = sub.add_parser("shards", parents=[common], help="build <out>/shards/s{s}_t{t}.h5 from the HR store")
    p.add_argument("--out", required=True, help="output folder holding hr.h5")
    p.add_argument("--store", default=None, help="HR store path (default <out>/hr.h5)")
    _shard_args(p)
    _layout_args(p)

    p = sub.add_parser(
        "all", parents=[common], help="ingest then shards; synthetic data (written to <out>/raw) when no input is given"
    )
    p.add_argument("--out", required=True, help="output folder")
    _ingest_args(p, required=False)
    _synth_args(p)
    _shard_args(p)
    _layout_args(p)
    return parser


def _split_fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise ValueError(f"--split-fractions {text!r}: {exc}") from None


def _config(a) -> PreprocessConfig:
    """The preprocess config section from the flags: a subcommand's flags set their keys (flag --a-b
    is key a_b), the others keep the section's defaults."""
    flags = vars(a)
    plain = {f.name for f in fields(PreprocessConfig)} - {"source", "inputs", "synthetic"}
    values = {key: flags[key] for key in plain & set(flags)}
    if flags.get("comephore") or flags.get("netcdf"):
        values["source"] = "comephore" if flags.get("comephore") else "netcdf"
        values["inputs"] = tuple(flags.get("comephore") or flags["netcdf"])
    if "days" in flags:
        # --out is the output folder; the archives go to its raw/ (synthetic.out's default)
        values["synthetic"] = SyntheticConfig(
            **{f.name: flags[f.name] for f in fields(SyntheticConfig) if f.name in flags and f.name != "out"}
        )
    if "split_fractions" in flags:
        values["split_fractions"] = _split_fractions(flags["split_fractions"])
    if flags.get("split_bounds"):
        values["split_bounds"] = tuple(flags["split_bounds"].split(","))
    return PreprocessConfig(**values)


def run(a, comm: Comm) -> None:
    progress = not a.quiet
    out = Path(a.out)
    cfg = _config(a)
    if a.command == "synth":
        synth = cfg.synthetic.synth_config()
        comm.run_step("synthesising", lambda: synthesize(out, synth, progress) if comm.rank == 0 else None)
    elif a.command == "ingest":
        ingest(out, cfg.ingest_config(cfg.inputs), comm, progress)
    elif a.command == "shards":
        make_shards(out, cfg.shard_config(parse_pairs(a.pairs, a.grid)), comm, progress, store_path=a.store)
    else:
        run_preprocess(cfg, out, parse_pairs(a.pairs, a.grid), comm, progress)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    comm = Comm()
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format=f"[hpcsr-preprocess r{comm.rank}] %(levelname)s %(message)s",
    )
    try:
        run(args, comm)
    except Exception as exc:
        if args.debug:
            raise
        user = isinstance(exc, exits.USER_ERRORS)  # StepFailed: another rank's error, its message says it
        if not user and not isinstance(exc, StepFailed):
            traceback.print_exception(exc)
        if not (isinstance(exc, StepFailed) and comm.rank != 0):
            print(f"hpcsr-preprocess: error: {exc}", file=sys.stderr)
        return exits.BAD_INPUT if user else exits.FAILED
    if comm.rank == 0:
        log.info("done: %s", Path(args.out).resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
