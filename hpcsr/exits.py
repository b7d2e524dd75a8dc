"""The exit codes of every hpcsr command, in one table (README "Exit codes").

A user error (a bad value, a missing or mismatched file, an input refused before any work) prints
one line naming the file or value and the fix, and exits BAD_INPUT; an unexpected error prints its
traceback and exits FAILED. `--debug` (or HPCSR_DEBUG=1) shows the traceback of every error.

    0    OK            done
    1    FAILED        unexpected error (a bug or the system: traceback shown)
    2    BAD_INPUT     the user can fix it: bad configuration or argument, missing, damaged or
                       mismatched input (hpcsr train, sample, transfer, evaluate, hpcsr-preprocess,
                       hpcsr-launch, hpcsr demo)
    3    REQUEUE       hpcsr train: checkpointed after a stop signal; run it again to resume
    4    DIVERGED      hpcsr train: too many non-finite losses in a row; the last checkpoint is intact
    5    SAVE_FAILED   hpcsr train: the final checkpoint could not be written
    6    REFUSED       hpcsr transfer seed: the transfer is refused (its report lists every tensor)
    144  JOB_REQUEUE   a launched job asks its launcher to run it again (submitit's local requeue code;
                       under Slurm the job has been requeued with scontrol already)

The Slurm batch template (hpcsr.launch.sbatch) reads REQUEUE and JOB_REQUEUE from here.
"""

from __future__ import annotations

import os

OK = 0
FAILED = 1
BAD_INPUT = 2
REQUEUE = 3
DIVERGED = 4
SAVE_FAILED = 5
REFUSED = 6
JOB_REQUEUE = 144

# exception types a user can fix: one line and BAD_INPUT, no traceback (ConfigError, ExportError,
# CheckpointIncompatible, SourceError, GeoTiffError ... are ValueErrors)
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)


def debug_requested(argv: list[str]) -> bool:
    """True when `--debug` is among the arguments or HPCSR_DEBUG=1."""
    return "--debug" in argv or os.environ.get("HPCSR_DEBUG") == "1"
