"""Submit a plan (Slurm or local), read back element states, wait, cancel.

Submission is all or reported: resources are checked against sinfo for every array before the
first sbatch; the launch record is rewritten after each array, and when sbatch refuses an array
the error names the arrays already submitted with their job ids and how to cancel or resume them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from submitit.core.utils import JobPaths

from hpcsr.atomic import write_json_atomic
from hpcsr.launch import local_queue, sbatch, slurm_backend, snapshot
from hpcsr.launch.plan import Plan
from hpcsr.launch.records import new_launch_dir, read_record

# states of an element that will not change any more
FINAL_STATES = slurm_backend.FINAL_STATES | local_queue.FINAL


class SubmitError(RuntimeError):
    """Submission stopped part-way; the message lists what was submitted and what to do."""


def python_command(plan: Plan) -> str | None:
    return plan.base.launcher.python


def check(plan: Plan) -> None:
    """Everything that can be checked before submitting: resources against sinfo (Slurm)."""
    cluster = plan.base.cluster
    if plan.kind == "slurm" and cluster.check_resources:
        nodes = sbatch.read_sinfo()
        for array in plan.arrays:
            sbatch.check_resources(array, nodes)


def _setup_lines(plan: Plan, code_dir: Path | None) -> list[str]:
    lines = [snapshot.setup_line(code_dir)] if code_dir is not None else []
    return lines + list(plan.base.cluster.setup)


def placeholder_ids(plan: Plan) -> dict[str, tuple[str, int]]:
    """Job ids a dry run prints in dependencies: <array key>."""
    return {a.key: (f"<{a.key}>", len(a.elements)) for a in plan.arrays}


def scripts(plan: Plan, launch_dir: Path, code_dir: Path | None, ids: dict) -> dict[str, tuple[dict, str]]:
    """{array key: (submitit parameters, batch script)} with dependencies on the given ids."""
    out = {}
    for array in plan.arrays:
        params = sbatch.parameters(
            array, plan.base.cluster, sbatch.dependency(array.deps, ids), _setup_lines(plan, code_dir)
        )
        out[array.key] = (params, sbatch.script(array, params, launch_dir / array.key, python_command(plan)))
    return out


def _array_record(array, job_ids: list[str], folder: Path, dependency: str | None) -> dict:
    return {
        "key": array.key,
        "stage": array.stage,
        "level": array.level,
        "dependency": dependency,
        "job_id": job_ids[0].split("_")[0] if job_ids else None,
        "elements": [
            {
                "pair": e.pair.name if e.pair else None,
                "parent": e.parent.name if e.parent else None,
                "run_dir": e.cfg.run_dir,
                "job_id": jid,
                "stdout": str(JobPaths(folder, job_id=jid, task_id=0).stdout) if jid else None,
                "stderr": str(JobPaths(folder, job_id=jid, task_id=0).stderr) if jid else None,
            }
            for e, jid in zip(array.elements, job_ids or [None] * len(array.elements))
        ],
    }


def submit(plan: Plan) -> Path:
    """Submit the whole plan; returns the launch folder (its launch.json is the record)."""
    check(plan)
    launcher = plan.base.launcher
    launch_dir = new_launch_dir(launcher.folder)
    code_dir = snapshot.take(launch_dir) if launcher.snapshot else snapshot.live_root()
    record = {
        "launch": launch_dir.name,
        "backend": plan.kind,
        "overrides": plan.overrides,
        "pairs": [p.name for p in plan.pairs],
        "code": str(code_dir) if code_dir else None,
        "snapshot": launcher.snapshot,
        "complete": False,
        "arrays": [],
    }
    write_json_atomic(launch_dir / "launch.json", record)
    if plan.kind == "slurm":
        _submit_slurm(plan, launch_dir, code_dir, record)
    else:
        _submit_local(plan, launch_dir, code_dir, record)
    record["complete"] = True
    write_json_atomic(launch_dir / "launch.json", record)
    return launch_dir


def _submit_slurm(plan: Plan, launch_dir: Path, code_dir: Path | None, record: dict) -> None:
    ids: dict[str, tuple[str, int]] = {}
    for array in plan.arrays:
        dep = sbatch.dependency(array.deps, ids)
        params = sbatch.parameters(array, plan.base.cluster, dep, _setup_lines(plan, code_dir))
        folder = launch_dir / array.key
        try:
            job_ids = slurm_backend.submit_array(array, params, folder, python_command(plan))
        except (RuntimeError, OSError, ValueError) as err:
            done = ", ".join(f"{a['key']} (job {a['job_id']})" for a in record["arrays"]) or "nothing"
            record["error"] = f"{array.key}: {err}"
            write_json_atomic(launch_dir / "launch.json", record)
            hint = (
                f"cancel them with `hpcsr-launch cancel --folder {launch_dir.parent} --launch {launch_dir.name}`, "
                "or fix the cause and submit again (finished elements are skipped, partial ones resume)"
                if record["arrays"]
                else "fix the cause and submit again"
            )
            raise SubmitError(f"{err}\nsubmitted before the failure: {done}; {hint}") from None
        ids[array.key] = (job_ids[0].split("_")[0], len(job_ids))
        record["arrays"].append(_array_record(array, job_ids, folder, dep))
        write_json_atomic(launch_dir / "launch.json", record)


def _submit_local(plan: Plan, launch_dir: Path, code_dir: Path | None, record: dict) -> None:
    cluster = plan.base.cluster
    arrays = []
    for array in plan.arrays:
        res = array.resources
        params = {
            "timeout_min": res.time_min,
            "tasks_per_node": res.tasks_per_node,
            "gpus_per_node": res.gpus_per_node,
            "signal_delay_s": cluster.signal_delay_s,
        }
        if cluster.setup:
            params["setup"] = list(cluster.setup)
        arrays.append(
            {
                "key": array.key,
                "folder": str(launch_dir / array.key),
                "specs": array.elements,
                "deps": [(d.kind, d.array, d.indices) for d in array.deps],
                "params": params,
                "parallelism": cluster.array_parallelism,
                "python": python_command(plan),
            }
        )
        record["arrays"].append(_array_record(array, [], launch_dir / array.key, None))
    local_queue.write_plan(launch_dir, arrays)
    env = dict(os.environ)
    if code_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code_dir), env.get("PYTHONPATH")]))
    with open(launch_dir / local_queue.LOG_FILE, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpcsr.launch.local_queue", str(launch_dir)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    record["local_queue_pid"] = proc.pid


# ---- states, wait, cancel -------------------------------------------------------------------------


def element_states(launch_dir: Path, record: dict | None = None) -> list[dict]:
    """One row per element: array, index, pair, job_id, state, reason, stdout."""
    record = record or read_record(launch_dir)
    rows = []
    for array in record["arrays"]:
        for i, e in enumerate(array["elements"]):
            rows.append(
                {
                    "array": array["key"],
                    "index": i,
                    "pair": e["pair"] or "all",
                    "parent": e["parent"],
                    "job_id": e["job_id"],
                    "state": "UNKNOWN",
                    "reason": "",
                    "stdout": e["stdout"],
                }
            )
    if record["backend"] == "slurm":
        current = slurm_backend.states([r["job_id"] for r in rows if r["job_id"]])
        for r in rows:
            r["state"], r["reason"] = current.get(r["job_id"], ("UNKNOWN", ""))
    else:
        path = launch_dir / local_queue.STATE_FILE
        state = json.loads(path.read_text())["elements"] if path.is_file() else {}
        for r in rows:
            entry = state.get(local_queue.element_key(r["array"], r["index"]), {})
            r.update(
                state=entry.get("state", "UNKNOWN"),
                reason=entry.get("reason", ""),
                job_id=entry.get("job_id"),
                stdout=entry.get("stdout"),
            )
        pid = record.get("local_queue_pid")
        if pid and not _alive(pid):  # the queue died: what it left unfinished will not run
            for r in rows:
                if r["state"] not in FINAL_STATES:
                    r["state"], r["reason"] = "FAILED", "local queue process ended"
    return rows


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (our own child after it exited) is not alive
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def is_final(row: dict) -> bool:
    return row["state"] in FINAL_STATES or row["reason"] == "DependencyNeverSatisfied"


def wait(launch_dir: Path, poll_s: float, release_requeued: bool, say=print) -> list[dict]:
    """Poll until every element is final, printing each change of state; returns the last rows."""
    seen: dict[tuple, str] = {}
    held_since: dict[str, float] = {}
    while True:
        rows = element_states(launch_dir)
        for r in rows:
            label = r["state"] + (f" ({r['reason']})" if r["reason"] else "")
            if seen.get((r["array"], r["index"])) != label:
                seen[(r["array"], r["index"])] = label
                say(f"[hpcsr-launch] {r['array']} {r['pair']} job {r['job_id'] or '-'}: {label}")
        if all(is_final(r) for r in rows):
            return rows
        if release_requeued and read_record(launch_dir)["backend"] == "slurm":
            held = {r["job_id"]: (r["state"], r["reason"]) for r in rows if r["job_id"]}
            for jid in slurm_backend.release_requeued(held, held_since, time.monotonic()):
                say(f"[hpcsr-launch] released requeued job {jid} (StartTime=now)")
        time.sleep(min(poll_s, 1.0) if held_since else poll_s)


def cancel(launch_dir: Path) -> str:
    """Cancel every element of a launch; returns a one-line summary."""
    record = read_record(launch_dir)
    if record["backend"] == "slurm":
        ids = [e["job_id"] for a in record["arrays"] for e in a["elements"] if e["job_id"]]
        error = slurm_backend.cancel(ids)
        if error:
            raise RuntimeError(f"scancel failed: {error}")
        return f"cancelled Slurm jobs {', '.join(sorted({i.split('_')[0] for i in ids})) or '(none)'}"
    pid = record.get("local_queue_pid")
    if not (pid and _alive(pid)):
        return "the local queue had already ended; nothing to cancel"
    os.kill(pid, 15)
    # the queue stops each element's processes (SIGINT, SIGKILL after a grace) before it exits
    started, limit = time.monotonic(), 6 * local_queue.STOP_GRACE_S
    while _alive(pid):
        if time.monotonic() - started > limit:
            raise RuntimeError(
                f"local queue {pid} still runs {limit:g} s after SIGTERM: see "
                f"{launch_dir / local_queue.LOG_FILE}; end it with `kill -9 {pid}`"
            )
        time.sleep(0.1)
    return (
        f"stopped local queue {pid} and its elements in {time.monotonic() - started:.1f} s "
        f"(log: {launch_dir / local_queue.LOG_FILE})"
    )
