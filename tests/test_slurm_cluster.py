"""The one-node Slurm of slurm/start.sh: node sizing, idempotent start, multi-task and array jobs,
and job states read back through the sacct bridge by submitit's own parser.

Runs only while the cluster is up (scripts/test.sh starts it); skipped with the reason otherwise.
With 2 CPUs, a 2-task job holds the whole node while it runs.
"""

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcsr.dist import read_self_check

REPO = Path(__file__).resolve().parents[1]
STATE_DIR = Path(os.environ.get("HPCSR_SLURM_DIR", "/tmp/hpcsr-slurm"))

pytestmark = pytest.mark.slurm


def daemon_pids() -> dict[str, str]:
    return {d: (STATE_DIR / "run" / f"{d}.pid").read_text().strip() for d in ("munged", "slurmctld", "slurmd")}


def submitit_state(job_id: str) -> str:
    """The state submitit sees: its watcher runs its exact sacct query and parses the answer."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    watcher = SlurmInfoWatcher(delay_s=0)
    watcher.register_job(job_id)
    return watcher.get_state(job_id, mode="force")


def test_node_is_sized_from_this_machine(slurm):
    out = slurm.run("sinfo", "--noheader", "--Node", "--format=%N %c %m %T %P")
    name, cpus, mem_mb, state, partition = out.stdout.split()
    assert (name, partition) == ("localhost", "debug*")
    assert int(cpus) == len(os.sched_getaffinity(0))
    meminfo_mb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) // 1024
    assert int(mem_mb) == meminfo_mb
    assert state in ("idle", "mixed", "allocated")


def test_second_start_is_a_fast_no_op(slurm):
    before = daemon_pids()
    out = subprocess.run(["bash", "slurm/start.sh"], cwd=REPO, capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert "already running" in out.stdout
    assert daemon_pids() == before


@pytest.mark.slow  # 10-30 s: two ranks import torch and DeepSpeed on 2 shared cores
@pytest.mark.dist
@pytest.mark.mpi
def test_second_cluster_in_another_folder_is_refused(slurm, tmp_path):
    from hpcsr.dist import free_port

    env = os.environ | {
        "HPCSR_SLURM_DIR": str(tmp_path / "s"),
        "HPCSR_SLURMCTLD_PORT": str(free_port()),
        "HPCSR_SLURMD_PORT": str(free_port()),
    }
    out = subprocess.run(["bash", "slurm/start.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert f"another hpcsr cluster runs from {STATE_DIR}" in out.stderr
    assert not (tmp_path / "s").exists()
    assert slurm.run("sinfo", "--noheader", "--format=%N").stdout.strip() == "localhost"


def test_two_task_job_all_reduce_via_srun_and_batch_step_and_mpirun(slurm, launch_env, venv_bin, tmp_path):
    out_file = tmp_path / "job.out"
    env = launch_env | {
        "PYTHONPATH": str(REPO),
        "HPCSR_PYTHON": sys.executable,
        "HPCSR_MPIRUN": str(venv_bin / "mpirun"),
    }
    job = slurm.sbatch(f"--chdir={REPO}", f"--output={out_file}", str(REPO / "slurm" / "dist_check.sbatch"), env=env)
    states = slurm.wait(job, timeout=240)
    text = out_file.read_text()
    assert states == {job: "COMPLETED"}, text

    srun_part, rest = text.split("== batch step")
    batch_part, mpi_part = rest.split("== mpirun")
    ranks = read_self_check(srun_part)
    assert [(r["rank"], r["world_size"], r["local_rank"], r["source"]) for r in ranks] == [
        (0, 2, 0, "slurm"),
        (1, 2, 1, "slurm"),
    ]
    assert [r["all_reduce_sum"] for r in ranks] == [3.0, 3.0]
    assert len({r["pid"] for r in ranks}) == 2
    # the job script itself (no srun) is one process, even though the job has 2 tasks
    assert [(r["rank"], r["world_size"]) for r in read_self_check(batch_part)] == [(0, 1)]
    # mpirun inside the job: the MPI ranks, not the Slurm step, describe the processes
    assert [(r["rank"], r["world_size"], r["source"]) for r in read_self_check(mpi_part)] == [
        (0, 2, "mpi"),
        (1, 2, "mpi"),
    ]


def test_array_of_four_completes(slurm, tmp_path):
    job = slurm.sbatch(
        "--array=0-3",
        f"--output={tmp_path}/%A_%a.out",
        "--wrap",
        "echo task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_TASK_COUNT",
    )
    states = slurm.wait(job, timeout=120)
    assert states == {f"{job}_{i}": "COMPLETED" for i in range(4)}
    for i in range(4):
        assert (tmp_path / f"{job}_{i}.out").read_text().strip() == f"task {i} of 4"
    out = slurm.run("sacct", "-o", "JobID,State,NodeList", "--parsable2", "-j", job)
    assert out.stdout.splitlines() == ["JobID|State|NodeList"] + [f"{job}_{i}|COMPLETED|localhost" for i in range(4)]
    assert all(submitit_state(f"{job}_{i}") == "COMPLETED" for i in range(4))


@pytest.mark.slow  # over 5 s (fresh-clone run s29: 6.5-21 s)
def test_states_through_the_sacct_bridge(slurm, tmp_path):
    held = slurm.sbatch("--hold", "--output=/dev/null", "--wrap", "true")
    failing = slurm.sbatch(f"--output={tmp_path}/f.out", "--wrap", "exit 3")
    sleeper = slurm.sbatch("--output=/dev/null", "--wrap", "sleep 300")
    requeued = slurm.sbatch(
        f"--output={tmp_path}/r.out", "--open-mode=append", "--wrap", "echo run ${SLURM_RESTART_COUNT:-0}; sleep 3"
    )

    assert submitit_state(held) == "PENDING"
    assert slurm.wait(failing, timeout=60) == {failing: "FAILED"}
    assert submitit_state(failing) == "FAILED"

    slurm.wait(sleeper, timeout=60, until=lambda s: s.get(sleeper) == "RUNNING")
    assert submitit_state(sleeper) == "RUNNING"
    assert slurm.run("scancel", sleeper).returncode == 0
    slurm.wait(sleeper, timeout=60)
    assert submitit_state(sleeper) == "CANCELLED"

    slurm.wait(requeued, timeout=60, until=lambda s: s.get(requeued) == "RUNNING")
    assert slurm.run("scontrol", "requeue", requeued).returncode == 0
    requeued_at = time.monotonic()
    slurm.wait(requeued, timeout=60, until=lambda s: s.get(requeued) == "PENDING")
    assert submitit_state(requeued) == "PENDING"  # held until its begin time (~2 min): release it,
    # but in a later second than the requeue, or slurmd rejects the launch ("credential revoked")
    time.sleep(max(0.0, 1.1 - (time.monotonic() - requeued_at)))
    assert slurm.run("scontrol", "update", f"JobId={requeued}", "StartTime=now").returncode == 0
    assert slurm.wait(requeued, timeout=90) == {requeued: "COMPLETED"}
    assert submitit_state(requeued) == "COMPLETED"
    runs = [line for line in (tmp_path / "r.out").read_text().splitlines() if line.startswith("run ")]
    assert runs == ["run 0", "run 1"]  # the second run knows it was requeued once
    slurm.run("scancel", held)


def test_sacct_bridge_refuses_what_it_cannot_answer(slurm):
    out = slurm.run("sacct", "-o", "JobID,MaxRSS")
    assert out.returncode == 1 and "MaxRSS" in out.stderr and "slurmdbd" not in out.stdout
    out = slurm.run("sacct", "--starttime", "now-1hour")
    assert out.returncode == 1 and "--starttime" in out.stderr


def test_submitit_array_results_and_states(slurm, tmp_path, caplog):
    import submitit

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(timeout_min=5, slurm_partition="debug", cpus_per_task=1)
    started = time.monotonic()
    jobs = executor.map_array(math.factorial, [1, 2, 3, 4])
    slurm.submitted.append(jobs[0].job_id.split("_")[0])
    with caplog.at_level("WARNING", logger="submitit"):
        results = [job.result() for job in jobs]
        assert results == [1, 2, 6, 24], f"after {time.monotonic() - started:.0f} s"
        # a result file can appear while its task is still ending: ask (forced) until all are done
        deadline = time.monotonic() + 60
        while (states := [job.get_info(mode="force").get("State") for job in jobs]) != ["COMPLETED"] * 4:
            assert time.monotonic() < deadline, f"submitit reads {states}"
            time.sleep(0.5)
    assert not [r for r in caplog.records if "sacct" in r.getMessage()], "submitit could not read states"
