"""The communicator of a preprocessing run: MPI ranks under `mpirun`/`srun --mpi` (mpi4py), one
process otherwise. Whether an MPI launcher started us is decided by `hpcsr.dist.mpi_launched`, so
mpi4py is never imported (and MPI never initialised) in a plain run.

`run_step` makes a failure on one rank a failure on all: every rank reports success or its error at
the end of a step, so no rank waits forever at a barrier for a partner that died.
"""

from __future__ import annotations

import os
import traceback

from hpcsr.dist import mpi_launched


class StepFailed(RuntimeError):
    """A step failed on at least one rank; the message carries each failing rank's error."""


class Comm:
    """rank, size, barrier, bcast, allgather; a single process when MPI is not in use."""

    def __init__(self):
        self._mpi = None
        if mpi_launched(os.environ):
            from mpi4py import MPI

            self._mpi = MPI.COMM_WORLD
        self.rank = self._mpi.Get_rank() if self._mpi else 0
        self.size = self._mpi.Get_size() if self._mpi else 1

    def bcast(self, obj, root: int = 0):
        return self._mpi.bcast(obj, root=root) if self._mpi else obj

    def allgather(self, obj) -> list:
        return self._mpi.allgather(obj) if self._mpi else [obj]

    def barrier(self) -> None:
        if self._mpi:
            self._mpi.Barrier()

    def run_step(self, name: str, fn, *args, **kwargs):
        """Run fn on this rank; return the list of every rank's result, or raise StepFailed on every
        rank if any rank raised (the original exception is re-raised on the rank where it happened)."""
        result, error, exc = None, None, None
        try:
            result = fn(*args, **kwargs)
        except Exception as e:  # reported to all ranks, then re-raised below
            exc = e
            error = f"rank {self.rank}: {type(e).__name__}: {e}"
            if self.size > 1:
                error += "\n" + traceback.format_exc(limit=4)
        reports = self.allgather((result, error))
        if exc is not None:
            raise exc
        errors = [err for _, err in reports if err]
        if errors:
            raise StepFailed(f"{name} failed on {len(errors)} rank(s):\n" + "\n".join(errors))
        return [res for res, _ in reports]
