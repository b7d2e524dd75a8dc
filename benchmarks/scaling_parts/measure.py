"""Wall time, CPU time and peak memory of a command and every process it starts.

`run_measured` starts the command in its own session, reaps it with `os.wait4` (whose rusage
covers the command and all its descendants that were waited for: mpirun -> proxy -> ranks) and
polls the process tree's resident memory every 0.1 s from /proc (psutil). It reports

    wall_s                 seconds from start to exit
    cpu_s                  user + system CPU seconds of the whole tree (from rusage): on a shared
                           machine, the part of the cost that does not depend on the load
    peak_rss_mb            the largest peak RSS of any single process of the tree (ru_maxrss):
                           the per-rank peak
    peak_tree_rss_mb       the largest sum of RSS over the tree seen by the poller (all ranks)
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import psutil

POLL_S = 0.1


def _tree_rss(root: psutil.Process) -> int:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.Error:  # ended between the listing and the read
            pass
    return total


def run_measured(cmd: list, logfile: Path, env: dict | None = None, cwd=None, timeout_s: float = 3600) -> dict:
    """Run `cmd` (output to `logfile`) and measure it; raise with the log's tail on failure."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
        root = psutil.Process(proc.pid)
        peak_tree, done = 0, threading.Event()

        def poll():
            nonlocal peak_tree
            while not done.is_set():
                try:
                    peak_tree = max(peak_tree, _tree_rss(root))
                except psutil.Error:
                    return
                if time.perf_counter() - start > timeout_s:
                    os.killpg(proc.pid, 9)
                done.wait(POLL_S)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        done.set()
        poller.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed (exit {proc.returncode}):\n{logfile.read_text()[-3000:]}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "peak_tree_rss_mb": peak_tree / 2**20,
        "load_average_1": os.getloadavg()[0],
    }


def du_mb(path: Path, pattern: str = "**/*") -> float:
    """Size in MB of the files under `path` matching `pattern`."""
    return sum(p.stat().st_size for p in Path(path).glob(pattern) if p.is_file()) / 1e6
