"""`hpcsr-preprocess`: raw precipitation -> HR store -> per-factor LR shards, on one process or on
MPI ranks (`mpirun -n 4 hpcsr-preprocess ...`), resumable (a rerun skips finished work).

    hpcsr-preprocess synth  --out data/raw --days 3 --size 200
    hpcsr-preprocess ingest --out data/default --comephore /data/comephore/H_COMEPHORE_2019*.tar
    hpcsr-preprocess ingest --out data/knmi --netcdf ../shared/data/knmi_20100826.nc --cadence 60
    hpcsr-preprocess shards --out data/default --grid paper
    hpcsr-preprocess shards --out data/default --pairs 10x3,2x1 --split-bounds 2019-10-01,2019-11-15
    hpcsr-preprocess all    --out data/default --days 3 --size 200 --grid paper   (synthetic data)
    hpcsr-preprocess all    --out data/default --comephore /data/comephore --grid paper
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from hpcsr import exits
from hpcsr.factors import PAPER_PAIRS, FactorPair
from preprocessing.ingest import IngestConfig, ingest
from preprocessing.layout import COMPRESSIONS, StoreLayout
from preprocessing.parallel import Comm, StepFailed
from preprocessing.quality import DEFAULT_CAP_MM_PER_HOUR
from preprocessing.shards import ShardConfig, make_shards
from preprocessing.splits import SplitSpec
from preprocessing.synth import SynthConfig, synthesize

log = logging.getLogger("hpcsr-preprocess")


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
    p.add_argument(
        "--chunk", type=int, default=StoreLayout.chunk, help="spatial chunk side in pixels (default %(default)s)"
    )
    p.add_argument("--compression", default=StoreLayout.compression, help=f"{COMPRESSIONS} (default %(default)s)")


def _synth_args(p: argparse.ArgumentParser, prefix: str = "") -> None:
    d = SynthConfig()
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
        default=60,
        help="HR step in minutes; finer netCDF steps are summed (default %(default)s)",
    )
    p.add_argument(
        "--source-interval",
        type=int,
        default=None,
        help="netCDF accumulation minutes if the files lack interval_minutes",
    )
    p.add_argument(
        "--cap",
        type=float,
        default=DEFAULT_CAP_MM_PER_HOUR,
        help="plausibility cap in mm/h; higher rates are masked (default %(default)s)",
    )
    p.add_argument(
        "--on-bad-input",
        choices=("skip", "fail"),
        default="skip",
        help="unreadable frame: skip it as a gap, or stop (default %(default)s)",
    )
    p.add_argument(
        "--encoding",
        default=None,
        help="HR storage: 'uint16/<units per mm>' or 'float32' (default: uint16/10 for Comephore, float32 for netCDF)",
    )
    p.add_argument("--unit-frames", type=int, default=24, help="frames per unit of work (default %(default)s)")


def _shard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", default=None, help="factor pairs, e.g. 10x3,2x1 (default: the paper's four)")
    p.add_argument("--grid", default=None, help="'paper' or a grid YAML (kind: pairs|product)")
    p.add_argument(
        "--min-valid",
        type=float,
        default=1.0,
        help="minimum valid fraction of a block for its LR value (default %(default)s)",
    )
    p.add_argument(
        "--phase-minutes", type=int, default=0, help="time blocks start at 00 UTC + this (default %(default)s)"
    )
    p.add_argument(
        "--split-fractions", default="0.8,0.1,0.1", help="train,val,test shares of the time span (default %(default)s)"
    )
    p.add_argument("--split-bounds", default=None, help="END_OF_TRAIN,END_OF_VAL as ISO times (instead of fractions)")
    p.add_argument(
        "--wet-threshold", type=float, default=0.1, help="mm per step below which a value is dry (default %(default)s)"
    )
    p.add_argument("--window-frames", type=int, default=12, help="HR steps read at once per rank (default %(default)s)")


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


def _synth_config(a) -> SynthConfig:
    return SynthConfig(
        start=a.start, days=a.days, size=a.size, seed=a.seed, coverage=a.coverage, missing_hours=a.missing_hours
    )


def _ingest_config(a, comephore=None) -> IngestConfig:
    return IngestConfig(
        comephore=tuple(comephore or a.comephore or ()),
        netcdf=tuple(a.netcdf or ()),
        cadence_minutes=a.cadence,
        source_interval=a.source_interval,
        cap_mm_per_hour=a.cap,
        on_bad_input=a.on_bad_input,
        encoding=a.encoding,
        layout=StoreLayout(a.chunk, a.compression),
        unit_frames=a.unit_frames,
    )


def _shard_config(a) -> ShardConfig:
    if a.split_bounds:
        splits = SplitSpec(bounds=tuple(a.split_bounds.split(",")))
    else:
        try:
            splits = SplitSpec(fractions=tuple(float(v) for v in a.split_fractions.split(",")))
        except ValueError as exc:
            raise ValueError(f"--split-fractions {a.split_fractions!r}: {exc}") from None
    return ShardConfig(
        pairs=parse_pairs(a.pairs, a.grid),
        min_valid=a.min_valid,
        phase_minutes=a.phase_minutes,
        splits=splits,
        wet_threshold=a.wet_threshold,
        layout=StoreLayout(a.chunk, a.compression),
        window_frames=a.window_frames,
    )


def run(a, comm: Comm) -> None:
    progress = not a.quiet
    out = Path(a.out)
    if a.command == "synth":
        cfg = _synth_config(a)
        comm.run_step("synthesising", lambda: synthesize(out, cfg, progress) if comm.rank == 0 else None)
        return
    if a.command == "ingest":
        ingest(out, _ingest_config(a), comm, progress)
        return
    if a.command == "shards":
        make_shards(out, _shard_config(a), comm, progress, store_path=a.store)
        return
    shard_cfg = _shard_config(a)  # validate everything before the long steps
    comephore = None
    if not a.comephore and not a.netcdf:
        cfg = _synth_config(a)
        raw = out / "raw"
        comm.run_step("synthesising", lambda: synthesize(raw, cfg, progress) if comm.rank == 0 else None)
        comephore = [str(raw)]
    ingest(out, _ingest_config(a, comephore), comm, progress)
    make_shards(out, shard_cfg, comm, progress)


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
