"""`hpcsr train key=value ...`: compose the configs with Hydra overrides and train one stage.

Runs the same under plain python (one process), torchrun, srun and mpirun (ranks found by
hpcsr.dist). Every rank ends through hpcsr.dist.shutdown with the run's exit code (hpcsr.exits): 0 complete,
3 checkpointed after a stop signal (requeue me), 4 too many non-finite losses, 5 final checkpoint
not saved, 2 bad configuration or input (a missing shard, an incompatible checkpoint: one line,
no traceback), 1 any other error (with its traceback). `--debug` (or HPCSR_DEBUG=1) shows the
traceback of every error.
"""

from __future__ import annotations

import sys
import traceback

from hpcsr import exits
from hpcsr.config import ConfigError, compose
from hpcsr.dist import shutdown
from hpcsr.train import run

USAGE = """usage: hpcsr train [key=value ...]   (Hydra overrides of configs/, e.g.
  hpcsr train factor=s10_t3 train.stage=mean train.steps=2000 deepspeed=zero2
  torchrun --nproc_per_node 2 -m hpcsr train factor=s10_t3 train.stage=diffusion)
  --debug: the traceback of every error"""


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    debug = exits.debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    try:
        cfg = compose(argv)
    except ConfigError as err:
        print(f"hpcsr train: {err}", file=sys.stderr)
        shutdown(exits.BAD_INPUT)
    try:
        result = run(cfg)
    except Exception as err:  # every rank ends now; the others fail at their next collective
        user = isinstance(err, exits.USER_ERRORS)
        if debug or not user:
            traceback.print_exc()
        print(f"hpcsr train: {err}" if user else f"hpcsr train: {type(err).__name__}: {err}", file=sys.stderr)
        shutdown(exits.BAD_INPUT if user else exits.FAILED)
    print(f"hpcsr train: {result.status}: {result.message}", file=sys.stderr if result.exit_code else sys.stdout)
    shutdown(result.exit_code)


if __name__ == "__main__":
    main()
