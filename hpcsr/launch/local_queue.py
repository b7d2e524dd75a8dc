"""The local backend: a small queue process that runs a plan's elements on this machine with the
same element function and job runner as Slurm (submitit's LocalExecutor: one process per rank, a
SIGUSR2 before the time limit, restart on exit code 144), keeping the plan's dependencies
(aftercorr / afterok) and at most cluster.array_parallelism elements running at once in all.

`hpcsr-launch` starts it detached (`python -m hpcsr.launch.local_queue LAUNCH_DIR`) and returns;
it writes each element's state to LAUNCH_DIR/local_state.json (atomically) for `status` and
`--wait`, and stops every element on SIGTERM (`hpcsr-launch cancel`): each element's whole process
tree (submitit's controller and its rank processes) gets SIGINT, then SIGKILL after STOP_GRACE_S, and
the queue exits only once all of them are gone, saying how each ended.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import time
from pathlib import Path

import psutil
import submitit

from hpcsr.atomic import write_json_atomic
from hpcsr.launch.sbatch import job_command
from hpcsr.launch.stages import run_element

PLAN_FILE = "local_plan.pkl"  # the arrays to run, written by hpcsr-launch
STATE_FILE = "local_state.json"  # {"pid": queue pid, "elements": {"L0.mean[0]": {...}}}
LOG_FILE = "local_queue.log"
FINAL = {"COMPLETED", "FAILED", "CANCELLED"}
STOP_GRACE_S = 10.0  # seconds an element's processes get to end on SIGINT before SIGKILL


class _Executor(submitit.LocalExecutor):
    @property
    def _submitit_command_str(self) -> str:
        return job_command(self.python, self.folder)


def element_key(array_key: str, index: int) -> str:
    return f"{array_key}[{index}]"


def write_plan(launch_dir: Path, arrays: list[dict]) -> None:
    """arrays: [{key, folder, deps: [(kind, key, indices)], specs, params, parallelism, python}]"""
    with open(launch_dir / PLAN_FILE, "wb") as f:
        pickle.dump(arrays, f)
    state = {
        "pid": None,
        "elements": {
            element_key(a["key"], i): {"state": "PENDING", "job_id": None, "stdout": None, "stderr": None}
            for a in arrays
            for i in range(len(a["specs"]))
        },
    }
    write_json_atomic(launch_dir / STATE_FILE, state)


class Queue:
    def __init__(self, launch_dir: Path):
        self.dir = launch_dir
        with open(launch_dir / PLAN_FILE, "rb") as f:
            self.arrays = pickle.load(f)
        self.state = {"pid": os.getpid(), "elements": {}}
        for a in self.arrays:
            for i in range(len(a["specs"])):
                self.state["elements"][element_key(a["key"], i)] = {
                    "state": "PENDING",
                    "job_id": None,
                    "stdout": None,
                    "stderr": None,
                }
        self.jobs: dict[str, submitit.local.local.LocalJob] = {}
        self.stopping = False

    def _state(self, key: str) -> str:
        return self.state["elements"][key]["state"]

    def _ready(self, array: dict, index: int) -> str:
        """'yes', 'wait' or 'never' (a dependency failed or was cancelled)."""
        needed = []
        for kind, dep_key, indices in array["deps"]:
            size = len(next(a for a in self.arrays if a["key"] == dep_key)["specs"])
            if kind == "aftercorr" and size > 1:
                needed.append(element_key(dep_key, index))
            else:
                needed += [element_key(dep_key, i) for i in (indices if indices is not None else range(size))]
        states = [self._state(k) for k in needed]
        if any(s in ("FAILED", "CANCELLED") for s in states):
            return "never"
        return "yes" if all(s == "COMPLETED" for s in states) else "wait"

    def _start(self, array: dict, index: int) -> None:
        executor = _Executor(folder=array["folder"], python=array["python"])
        executor.update_parameters(**array["params"])
        job = executor.submit(run_element, array["specs"][index])
        key = element_key(array["key"], index)
        self.jobs[key] = job
        self.state["elements"][key] = {
            "state": "RUNNING",
            "job_id": job.job_id,
            "stdout": str(job.paths.stdout),
            "stderr": str(job.paths.stderr),
        }
        print(f"[local-queue] started {key} ({array['specs'][index].name}) as job {job.job_id}", flush=True)

    def _finish(self, key: str, job) -> None:
        outcome = None
        if job.paths.result_pickle.exists():
            outcome = pickle.loads(job.paths.result_pickle.read_bytes())[0]
        self.state["elements"][key]["state"] = "COMPLETED" if outcome == "success" else "FAILED"
        del self.jobs[key]
        print(f"[local-queue] {key}: {self._state(key)}", flush=True)

    def step(self) -> bool:
        """One pass: collect finished jobs, start ready ones; False when nothing is left to do."""
        for key, job in list(self.jobs.items()):
            if job.done():
                self._finish(key, job)
        limit = self.arrays[0]["parallelism"] if self.arrays else 1
        for array in self.arrays:
            for index in range(len(array["specs"])):
                key = element_key(array["key"], index)
                if self._state(key) != "PENDING" or self.stopping:
                    continue
                ready = self._ready(array, index)
                if ready == "never":
                    self.state["elements"][key]["state"] = "CANCELLED"
                    self.state["elements"][key]["reason"] = "DependencyNeverSatisfied"
                elif ready == "yes" and len(self.jobs) < limit:
                    self._start(array, index)
        write_json_atomic(self.dir / STATE_FILE, self.state)
        return bool(self.jobs) or any(e["state"] == "PENDING" for e in self.state["elements"].values())

    def stop(self, signum=None, frame=None) -> None:
        """Cancel: stop running elements (every process of each), mark the pending ones cancelled."""
        self.stopping = True
        for key, job in self.jobs.items():
            print(f"[local-queue] {key}: {stop_process_tree(int(job.job_id))}", flush=True)
            self.state["elements"][key]["state"] = "CANCELLED"
        for entry in self.state["elements"].values():
            if entry["state"] == "PENDING":
                entry["state"] = "CANCELLED"
        self.jobs.clear()
        write_json_atomic(self.dir / STATE_FILE, self.state)
        print("[local-queue] cancelled", flush=True)
        sys.exit(0)


def stop_process_tree(pid: int, grace_s: float = STOP_GRACE_S) -> str:
    """End a process and all its descendants: SIGINT to each (submitit's controller forwards it to its
    ranks), SIGKILL to those still alive after grace_s, then wait for all; returns what happened."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return f"process {pid} had already ended"
    for proc in procs:
        _send(proc, signal.SIGINT)
    alive = _wait_gone(procs, grace_s)
    for proc in alive:
        _send(proc, signal.SIGKILL)
    stuck = _wait_gone(alive, grace_s)
    summary = f"stopped {len(procs)} process(es) {[p.pid for p in procs]}"
    if alive:
        summary += f", {len(alive)} of them by SIGKILL after {grace_s:g} s"
    if stuck:
        summary += f"; STILL ALIVE after SIGKILL: {[p.pid for p in stuck]}"
    return summary


def _send(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        pass


def _still_running(procs: list[psutil.Process]) -> list[psutil.Process]:
    """The processes not yet ended; an ended child of ours is reaped, anyone's zombie counts as ended."""
    running = []
    for proc in procs:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                running.append(proc)
            elif proc.ppid() == os.getpid():
                proc.wait(timeout=0)
        except (psutil.NoSuchProcess, psutil.TimeoutExpired):
            pass
    return running


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait up to timeout_s for the processes to end; returns those still running."""
    deadline = time.monotonic() + timeout_s
    while (running := _still_running(procs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return running


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m hpcsr.launch.local_queue LAUNCH_DIR (started by hpcsr-launch)", file=sys.stderr)
        return 2
    queue = Queue(Path(argv[0]))
    signal.signal(signal.SIGTERM, queue.stop)
    print(f"[local-queue] pid {os.getpid()}: {sum(len(a['specs']) for a in queue.arrays)} elements", flush=True)
    while queue.step():
        time.sleep(0.5)
    print("[local-queue] all elements ended", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
