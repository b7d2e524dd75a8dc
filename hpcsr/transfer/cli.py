"""`hpcsr transfer seed|plan ...`: seed a new factor pair's run from a trained one, or plan transfer chains.

    hpcsr transfer seed runs/s2_t1 --to 4x2 --out seeds/s4_t2.pt
    hpcsr transfer seed runs/s2_t1/joint/checkpoints/step_500 --to 4x2 --strategy freeze --freeze-steps 200 --out seeds/s4_t2.pt
    hpcsr train factor.s=4 factor.t=2 train.init_from=seeds/s4_t2.pt ...
    hpcsr transfer plan --grid product grid.s=[2,4,10] grid.t=[1,3] --trained 2x1
    hpcsr transfer plan --pairs 2x1,4x2,10x3 --format hydra     (-> grid.parents={...} for hpcsr-launch)

Exit codes (hpcsr.exits): 0 done, 2 bad input (message names the value and the fix), 6 transfer
refused (the report, saved next to --out, lists every tensor).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from hpcsr.artifacts import export_path
from hpcsr.atomic import check_target, write_json_atomic
from hpcsr.config import compose
from hpcsr.exits import BAD_INPUT as EXIT_BAD_INPUT
from hpcsr.exits import REFUSED as EXIT_REFUSED
from hpcsr.factors import FactorPair, expand_grid
from hpcsr.train.freeze import DEFAULT_PREFIXES, FreezeSpec
from hpcsr.transfer.plan import hydra_override, plan_chain
from hpcsr.transfer.seed import DEFAULT_MAX_REINIT, make_seed
from hpcsr.transfer.sources import load_source
from hpcsr.transfer.strategies import STRATEGIES, TransferRefused


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpcsr transfer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("seed", help="make a seed export for a target pair from a source run's export or checkpoint")
    p.add_argument("source", help="export (model.pt), export/ or stage folder, run folder, or checkpoints/step_<N>")
    p.add_argument("--to", required=True, help="target factor pair, e.g. 4x2 or s4_t2 (s in 1..25, t in 1..6)")
    p.add_argument("--out", required=True, help="seed export to write (e.g. seeds/s4_t2.pt); report beside it")
    p.add_argument("--strategy", choices=STRATEGIES, default="transfer", help="default %(default)s")
    p.add_argument(
        "--stage",
        choices=("mean", "diffusion", "joint"),
        default=None,
        help="stage to take from a run folder (default: the most trained one with weights)",
    )
    p.add_argument(
        "--weights",
        choices=("ema", "raw"),
        default="ema",
        help="the denoiser's EMA average where kept (as exported) or the raw optimised weights",
    )
    p.add_argument(
        "--max-reinit",
        type=float,
        default=DEFAULT_MAX_REINIT,
        help="largest share of the target's parameters a transfer may re-initialise (default %(default)s)",
    )
    p.add_argument("--force", action="store_true", help="accept a transfer over --max-reinit")
    p.add_argument(
        "--freeze-steps", type=int, default=None, help="strategy freeze: optimiser steps the prefixes stay fixed"
    )
    p.add_argument(
        "--freeze-prefix",
        action="append",
        default=None,
        help=f"strategy freeze: parameter-name prefix kept fixed (repeatable; default {' '.join(DEFAULT_PREFIXES)})",
    )
    p.add_argument(
        "--init-seed", type=int, default=0, help="seed of the target's fresh initialisation (default %(default)s)"
    )
    p.add_argument("--quiet", action="store_true", help="print the totals only, not every tensor")
    p.epilog = (
        "key=value arguments anywhere are config overrides for the target: factor.context=..., "
        "factor.beta_end=..., model=..., data.future_context=... (the model defaults to the source's)"
    )

    p = sub.add_parser("plan", help="training order and transfer parent of each pair of a grid")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--grid",
        default=None,
        help="a configs/grid option (paper, list, product); overrides such as grid.s=[2,4] go after it",
    )
    src.add_argument("--pairs", default=None, help="pairs, e.g. 2x1,4x2,10x3")
    p.add_argument("--trained", default="", help="pairs trained already (candidates, not retrained), e.g. 2x1,10x3")
    p.add_argument(
        "--run-root",
        default=None,
        help="also count as trained every pair with <run-root>/s{s}_t{t}/<stage>/export/model.pt",
    )
    p.add_argument(
        "--stage", default="mean", help="stage whose export marks a pair trained (with --run-root; default %(default)s)"
    )
    p.add_argument(
        "--weight-t", type=float, default=1.0, help="w in d = |ln s - ln s'| + w |ln t - ln t'| (default %(default)s)"
    )
    p.add_argument(
        "--max-distance", type=float, default=math.inf, help="farther pairs train from scratch (default: no limit)"
    )
    p.add_argument(
        "--max-depth", type=int, default=None, help="largest transfer level (0: all parents trained already)"
    )
    p.add_argument(
        "--format",
        choices=("table", "json", "hydra"),
        default="table",
        help="table, json, or the grid.parents override for hpcsr-launch (default %(default)s)",
    )
    p.add_argument("--json", default=None, help="also write the plan as JSON to this file")
    p.epilog = "key=value arguments anywhere are config overrides (with --grid), e.g. grid.s=[2,4] grid.t=[1,3]"
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    args.overrides = [a for a in rest if "=" in a and not a.startswith("-")]
    unknown = [a for a in rest if a not in args.overrides]
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)} (config overrides are written key=value)")
    try:
        return seed_command(args) if args.command == "seed" else plan_command(args)
    except ValueError as err:  # SourceError, ConfigError, ExportError and bad values are ValueErrors
        if isinstance(err, TransferRefused):
            print(err.report.format(tensors=False), file=sys.stderr)
            print(f"hpcsr transfer: refused: {err}", file=sys.stderr)
            return EXIT_REFUSED
        print(f"hpcsr transfer {args.command}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _target(args, source_model: dict | None):
    """Target pair, recipe, model config (None: the source's) and future context from --to and the
    overrides; `model.key=value` overrides apply on top of the source's model config, `model=NAME`
    starts from configs/model/NAME.yaml instead."""
    try:
        pair = FactorPair.parse(args.to)
    except ValueError as err:
        raise ValueError(f"--to {args.to!r}: {err}") from None
    keys = []
    for o in args.overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key in ("factor", "factor.s", "factor.t"):
            raise ValueError(f"override {o!r}: the target pair is set by --to, not by factor overrides")
        keys.append(key)
    base = []
    if "model" not in keys and source_model and any(k.startswith("model.") for k in keys):
        base = [f"model.{k}={json.dumps(v)}" for k, v in source_model.items() if f"model.{k}" not in keys]
    cfg = compose([f"factor.s={pair.s}", f"factor.t={pair.t}", *base, *args.overrides])
    model = cfg.model if any(k == "model" or k.startswith("model.") for k in keys) else None
    future = cfg.data.future_frames(pair.t) if "data.future_context" in keys else None
    return pair, cfg.factor.recipe(), model, future


def seed_command(args) -> int:
    check_target(args.out)  # before any model is read
    source = load_source(args.source, args.stage, args.weights)
    pair, recipe, model, future = _target(args, source.model)
    freeze = None
    if args.strategy == "freeze":
        if args.freeze_steps is None:
            raise ValueError("--strategy freeze needs --freeze-steps N (optimiser steps the encoders stay fixed)")
        freeze = FreezeSpec(tuple(args.freeze_prefix or DEFAULT_PREFIXES), args.freeze_steps)
    elif args.freeze_steps is not None or args.freeze_prefix:
        raise ValueError(f"--freeze-steps / --freeze-prefix only go with --strategy freeze (got {args.strategy})")
    result = make_seed(
        source,
        pair,
        args.out,
        args.strategy,
        model=model,
        recipe=recipe,
        future_context=future,
        max_reinit=args.max_reinit,
        force=args.force,
        freeze=freeze,
        init_seed=args.init_seed,
        stage=args.stage,
        weights=args.weights,
    )
    print(result.report.format(tensors=not args.quiet))
    print(
        f"seed: {result.path}\nreport: {result.report_path}\n"
        f"use: hpcsr train factor.s={pair.s} factor.t={pair.t} train.init_from={result.path} ..."
    )
    return 0


def _grid_pairs(args):
    if args.pairs:
        return [FactorPair.parse(p) for p in args.pairs.split(",") if p.strip()]
    overrides = ([f"grid={args.grid}"] if args.grid else []) + list(args.overrides)
    return expand_grid(compose(overrides).grid)


def plan_command(args) -> int:
    if args.pairs and args.overrides:
        raise ValueError(f"overrides {args.overrides} go with --grid, not with --pairs")
    pairs = _grid_pairs(args)
    trained = [FactorPair.parse(p) for p in args.trained.split(",") if p.strip()]
    if args.run_root:
        root = Path(args.run_root)
        trained += [p for p in pairs if export_path(root / p.name / args.stage).is_file() and p not in trained]
    entries = plan_chain(pairs, trained, args.weight_t, args.max_distance, args.max_depth)
    doc = {
        "distance": f"|ln s - ln s'| + {args.weight_t:g} |ln t - ln t'|",
        "trained": [p.name for p in trained],
        "order": [e.to_dict() for e in entries],
        "parents": {e.pair.name: e.parent.name for e in entries if e.parent},
    }
    if args.json:
        write_json_atomic(args.json, doc, default=str)
    if args.format == "json":
        print(json.dumps(doc, indent=1))
    elif args.format == "hydra":
        print(hydra_override(doc["parents"]))
    else:
        print(f"training order (distance {doc['distance']}; trained already: {', '.join(doc['trained']) or 'none'})")
        print(f"  {'#':>3}  {'pair':<8} {'parent':<10} {'distance':>8}  level")
        for i, e in enumerate(entries, 1):
            parent = (e.parent.name + (" *" if e.parent_trained else "")) if e.parent else "scratch"
            dist = f"{e.distance:.3f}" if e.distance is not None else "-"
            print(f"  {i:>3}  {e.pair.name:<8} {parent:<10} {dist:>8}  {e.level}")
        if any(e.parent_trained for e in entries):
            print("  * trained before this launch")
        print(f"for hpcsr-launch: {hydra_override(doc['parents'])}")
    return 0
