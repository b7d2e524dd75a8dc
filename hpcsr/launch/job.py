"""`python -m hpcsr.launch.job FOLDER`: what every rank of a launched element runs.

It is submitit's own job runner (load the pickled element, run it, pickle its result next to the
logs) with three additions: it notes SIGUSR2/SIGTERM from its first moment (a signal during the
imports asks for a requeue instead of killing the process; hpcsr.launch.stages.note_signals);
under the local backend it exports the rank variables hpcsr.dist reads (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_SIZE, MASTER_ADDR, MASTER_PORT) from submitit's local ones; and it ends the
process with os._exit after flushing, so threads left by torch.distributed (gloo) cannot abort an
element that has finished its work (DESIGN.md section 7). Exit codes: 0 done, 1 failed,
144 requeue requested (submitit's local requeue code; under Slurm the job was requeued already).
"""

from __future__ import annotations

import os
import sys
import traceback


def export_local_ranks(environ=os.environ) -> None:
    """Map submitit's local task variables to the generic ones (a no-op outside the local backend)."""
    if environ.get("SUBMITIT_EXECUTOR") != "local" or "SUBMITIT_LOCAL_GLOBALID" not in environ:
        return
    ntasks = environ["SUBMITIT_LOCAL_NTASKS"]
    job_id = environ.get("SUBMITIT_LOCAL_JOB_ID", "0")
    environ.setdefault("RANK", environ["SUBMITIT_LOCAL_GLOBALID"])
    environ.setdefault("WORLD_SIZE", ntasks)
    environ.setdefault("LOCAL_RANK", environ["SUBMITIT_LOCAL_LOCALID"])
    environ.setdefault("LOCAL_SIZE", ntasks)
    environ.setdefault("LOCAL_WORLD_SIZE", ntasks)
    environ.setdefault("MASTER_ADDR", "127.0.0.1")
    # one port per job (the controller's pid), away from the ephemeral range
    environ.setdefault("MASTER_PORT", str(20000 + int(job_id) % 10000 if job_id.isdigit() else 29500))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m hpcsr.launch.job SUBMITIT_FOLDER (started by hpcsr-launch)", file=sys.stderr)
        return 2
    # lazy on purpose: the signal handlers go in before the slow imports (torch, unpickling)
    from hpcsr.launch.stages import note_signals

    note_signals()  # before the slow imports of unpickling: a signal now asks for a requeue
    export_local_ranks()
    from submitit.core.submission import process_job

    code = 0
    try:
        process_job(argv[0])
    except SystemExit as stop:  # a requeue request (see hpcsr.launch.element)
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # submitit pickled the traceback as the result; show it in the log too
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
