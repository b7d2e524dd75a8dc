"""`hpcsr sample`: super-resolve an LR sequence into an HR ensemble netCDF.

    hpcsr sample --export RUN/diffusion/export/model.pt --lr lr.nc --out ens.nc [options]
    hpcsr sample --export RUN/diffusion --lr shards/s10_t3.h5 --time-range 2011-11-04T00 2011-11-05T23 --out ens.nc
    hpcsr sample --export RUN/diffusion --hr hr.nc --coarsen --members 10 --out ens.nc    # perfect-model test

Each flag --a-b is the key a_b of the `sample` config section (hpcsr.sampling.config, whose
defaults these are); the flags become that config and hpcsr.sampling.run.run_sample does the work.
Several processes (torchrun --nproc-per-node N -m hpcsr.cli sample ..., srun, mpirun) split the
work; rank 0 writes. Exit code 2 on bad input (the message says what to change). See
hpcsr.sampling for the method and hpcsr.sampling.writer for the netCDF layout.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from hpcsr import exits
from hpcsr.diffusion import SAMPLERS
from hpcsr.dist import discover, shutdown
from hpcsr.mass import MODES
from hpcsr.sampling.config import SampleStageConfig
from hpcsr.sampling.ensemble import CONTEXT_POLICIES, MASS_SCALES
from hpcsr.sampling.run import run_sample
from hpcsr.sampling.tiles import WINDOWS
from hpcsr.symmetry import SYMMETRIES


def build_parser() -> argparse.ArgumentParser:
    D = SampleStageConfig()  # the defaults are the config section's
    p = argparse.ArgumentParser(
        prog="hpcsr sample", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--export", required=True, help="trained export: model.pt, its export/ folder or the stage folder")
    p.add_argument(
        "--lr", help="LR input: netCDF precip(time, y, x) (mm per HR step, time = end of each block) or a shard .h5"
    )
    p.add_argument("--hr", help="HR input (netCDF precip(time, y, x) or hr.h5), coarsened on the fly; needs --coarsen")
    p.add_argument("--coarsen", action="store_true", help="coarsen --hr with the export's (s, t) (perfect-model test)")
    p.add_argument("--out", required=True, help="output netCDF (written atomically)")
    p.add_argument("--pair", help="factor pair the export must have, e.g. 10,3 or s10_t3 (error if it differs)")
    p.add_argument("--members", type=int, default=D.members, help="ensemble members (default %(default)s)")
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default=D.sampler,
        help="dpmpp2m_ddim (default: DPM-Solver++(2M) while noise > signal, then DDIM) / dpmpp2m / ddim (fast, --steps steps) or ddpm (all schedule steps)",
    )
    p.add_argument(
        "--steps", type=int, default=D.steps, help="sampler steps of the fast samplers (default %(default)s)"
    )
    p.add_argument(
        "--eta",
        type=float,
        default=D.eta,
        help="DDIM noise, sampler ddim only: 0 deterministic .. 1 ancestral (default %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=D.seed,
        help="base seed; each (member, time) gets its own stream (default %(default)s)",
    )
    p.add_argument(
        "--mass",
        choices=MASS_SCALES,
        default=None,
        help="mass-conservation scale: cell (each LR cell, exact), frame (whole domain), image (the author's patch "
        "scale, see --mass-region), none (default: the export's recipe, cell unless trained otherwise)",
    )
    p.add_argument(
        "--mass-mode",
        choices=MODES,
        default=None,
        help="mass-transform mode of the members (default: smooth at cell scale, a factor field without seams; "
        "else multiplicative)",
    )
    p.add_argument(
        "--mean-mass-mode",
        choices=MODES,
        default=None,
        help="mass-transform mode of the mean (default: filled beside smooth members, fewer cell edges; "
        "else the members' mode)",
    )
    p.add_argument(
        "--mass-region",
        type=int,
        help="image scale: match masses exactly in regions of this side in LR cells "
        "(default: each sampling tile, blended, then the exact domain total; no seams)",
    )
    p.add_argument("--tile", type=int, help="HR tile side, a multiple of s (default: the recipe's patch)")
    p.add_argument(
        "--overlap",
        type=int,
        help="HR overlap of the mean network's neighbouring tiles, a multiple of s (default: half the tile)",
    )
    p.add_argument(
        "--residual-overlap",
        type=int,
        help="the same for the denoiser's tiles (default: ~1/4 tile, at least 2 LR cells, at most half the tile)",
    )
    p.add_argument(
        "--spread-gain",
        type=float,
        help="factor on every member's residual (default: the gain the export fitted on its validation patches "
        "when it was measured with this sampler, steps and eta; else 1)",
    )
    p.add_argument(
        "--mean-symmetries",
        type=int,
        choices=(1, SYMMETRIES),
        default=D.mean_symmetries,
        help="8: the mean network's estimate averaged over the 8 symmetries of the square (lower error at t = 1, "
        "more visible cell edges; 8 x its cost); 1: the network as it is (default %(default)s)",
    )
    p.add_argument("--window", choices=WINDOWS, default=D.window, help="tile blending window (default %(default)s)")
    p.add_argument("--batch", type=int, default=D.batch, help="tiles per network forward (default %(default)s)")
    p.add_argument(
        "--time-range",
        nargs=2,
        metavar=("START", "END"),
        help="only blocks whose HR steps end within START..END (ISO times, inclusive)",
    )
    p.add_argument(
        "--context",
        choices=CONTEXT_POLICIES,
        default=D.context,
        help="missing context: mask (the networks ignore it) or strict (output NaN under it)",
    )
    p.add_argument(
        "--allow-other-grid",
        action="store_true",
        help="sample an input whose HR step or pixel differs from the export's training data (refused otherwise)",
    )
    p.add_argument("--hr-step-minutes", type=int, help="HR step if the input lacks interval_minutes")
    p.add_argument(
        "--phase-minutes",
        type=int,
        default=D.phase_minutes,
        help="--coarsen: blocks start this many minutes after 00 UTC",
    )
    p.add_argument("--time-chunk", type=int, help="target blocks gathered and written at once (default: automatic)")
    p.add_argument(
        "--condition-cache-mb",
        type=float,
        default=D.condition_cache_mb,
        help="MB of denoiser conditions kept per target; tiles beyond are re-encoded at each step (default %(default)s)",
    )
    p.add_argument(
        "--device", default=D.device, help="auto (cuda:LOCAL_RANK when a GPU is visible, else cpu), cpu or cuda:N"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="the traceback of every error")
    return p


def to_config(args: argparse.Namespace) -> SampleStageConfig:
    """The parsed flags as the `sample` config section (each flag --a-b is the key a_b)."""
    if args.hr is not None and not args.coarsen:
        raise ValueError("--hr is only used coarsened (perfect-model test): add --coarsen, or give LR data with --lr")
    if args.coarsen and args.hr is None:
        raise ValueError("--coarsen needs --hr (the HR file to coarsen)")
    flags = {k: v for k, v in vars(args).items() if k not in ("coarsen", "quiet", "debug", "time_range")}
    time_range = tuple(args.time_range) if args.time_range else None
    return SampleStageConfig(**flags, time_range=time_range, progress=not args.quiet)


def run(argv) -> dict:
    """`hpcsr sample` without the exit-code handling: the written file's summary (rank 0; {} elsewhere)."""
    cfg = to_config(build_parser().parse_args(argv))
    command = "hpcsr sample " + " ".join(shlex.quote(a) for a in argv)
    return run_sample(cfg, command=command).summary()


def main(argv=None) -> int:
    """CLI entry (`hpcsr sample ...`); under several processes each rank ends through hpcsr.dist.shutdown."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    code = 0
    try:
        run(argv)
    except exits.USER_ERRORS as err:
        if exits.debug_requested(argv):
            raise
        print(f"hpcsr sample: error: {err}", file=sys.stderr)
        code = exits.BAD_INPUT
    if discover().world_size > 1:
        shutdown(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
