"""The Slurm backend: one submitit `map_array` per array of the plan, states from squeue/sacct,
cancel with scancel, and the release of requeued elements that Slurm holds for ~2 minutes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import submitit

from hpcsr.launch.sbatch import job_command
from hpcsr.launch.stages import run_element

# states after which an element will not run again
FINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
    "REVOKED",
}


class _Executor(submitit.SlurmExecutor):
    """submitit's Slurm executor with hpcsr's job runner (python -m hpcsr.launch.job) on every rank."""

    @property
    def _submitit_command_str(self) -> str:
        return job_command(self.python, self.folder)


def submit_array(array, params: dict, folder: Path, python) -> list[str]:
    """Submit one array (map_array: one element per spec); returns the element job ids in order.
    Raises RuntimeError with sbatch's message when Slurm refuses it."""
    executor = _Executor(folder=folder, python=python)
    executor.update_parameters(**params)
    try:
        jobs = executor.map_array(run_element, array.elements)
    except submitit.core.utils.FailedJobError as err:
        raise RuntimeError(f"sbatch refused array {array.key}: {str(err).strip()}") from None
    return [job.job_id for job in jobs]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """{job id: (state, reason)} for element ids ('12_3' or '12'); live jobs from squeue, finished
    ones from sacct; ids neither knows are UNKNOWN."""
    out: dict[str, tuple[str, str]] = {}
    if not job_ids:
        return out
    mains = sorted({j.split("_")[0] for j in job_ids})
    q = _run(["squeue", "-h", "-r", "--states=all", "-o", "%i|%T|%r", "-j", ",".join(mains)])
    if q.returncode == 0:
        for line in q.stdout.splitlines():
            jid, state, reason = (line.split("|") + ["", ""])[:3]
            out[jid] = (state, reason if reason not in ("None", "(null)") else "")
    missing = [j for j in job_ids if j not in out]
    if missing:
        cmd = ["sacct", "-n", "-P", "-X", "-o", "JobID,State"]
        for main in sorted({j.split("_")[0] for j in missing}):
            cmd += ["-j", main]
        a = _run(cmd)
        if a.returncode == 0:
            for line in a.stdout.splitlines():
                jid, state = (line.split("|") + [""])[:2]
                if jid in missing:
                    out[jid] = (state.split()[0] if state else "UNKNOWN", "")
    return {j: out.get(j, ("UNKNOWN", "")) for j in job_ids}


def release_requeued(
    current: dict[str, tuple[str, str]], held_since: dict[str, float], now: float, settle_s: float = 3.0
) -> list[str]:
    """Start requeued elements now instead of after Slurm's ~2 min hold (pending, reason BeginTime).
    An element is released only `settle_s` after it was first seen held: slurmd refuses a job
    started within the second its previous run was killed ("Job credential revoked") and fails it.
    `held_since` (job id -> first time seen held) is updated in place; returns the released ids."""
    released = []
    for jid, (state, reason) in current.items():
        if not (state == "PENDING" and reason == "BeginTime"):
            held_since.pop(jid, None)
            continue
        first = held_since.setdefault(jid, now)
        if now - first >= settle_s and _run(["scontrol", "update", f"JobId={jid}", "StartTime=now"]).returncode == 0:
            released.append(jid)
            held_since.pop(jid, None)
    return released


def cancel(job_ids: list[str]) -> str:
    """scancel the arrays of these elements; returns scancel's error text ('' on success)."""
    mains = sorted({j.split("_")[0] for j in job_ids})
    if not mains:
        return ""
    out = _run(["scancel", *mains])
    return "" if out.returncode == 0 else out.stderr.strip()
