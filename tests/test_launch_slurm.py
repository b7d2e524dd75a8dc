"""hpcsr-launch on the real one-node Slurm of slurm/start.sh (skipped with the reason when sinfo
fails): a 2 x 2 factor grid as job arrays after a real preprocess job, in dependency order, with the
submitted scripts equal to the dry run's; a run longer than its 1-minute limit that finishes across
requeues with a continuous loss curve; bad partitions and impossible resources refused with their
names; a failed submission reported with what was submitted; status and cancel.

Every test uses its own launch folder (a fresh cluster restarts job ids). Elements use 1 task and
1 CPU: with 2 CPUs a bigger job would hold the node.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcsr.launch import plan as planning
from hpcsr.launch import probe, submit
from hpcsr.launch.records import find_launch, read_record

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slurm


def launch(tmp_path, env, *args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "hpcsr.launch.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def env(launch_env, slurm_up):
    return launch_env | {"PYTHONPATH": str(REPO)}


def slurm_args(tmp_path, *more):
    return [
        "launcher=slurm",
        "launcher.poll_s=1",
        "launcher.snapshot=false",
        f"run_root={tmp_path / 'runs'}",
        f"data_dir={tmp_path / 'data'}",
        "cluster.time_min=5",
        *more,
    ]


def marker(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow  # over 5 s (fresh-clone run s29: 6.5-21 s)
def test_2x2_grid_after_preprocess_in_order_with_dry_run_scripts(tmp_path, env):
    args = slurm_args(
        tmp_path,
        "grid=product",
        "grid.s=[2,5]",
        "grid.t=[1,2]",
        "launcher.stages=[preprocess,probe]",
        "preprocess.synthetic.days=1",
        "preprocess.synthetic.size=40",
        "launcher.probe.steps=3",
        "launcher.probe.step_s=0",
    )
    out = launch(tmp_path, env, *args, "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "submitted launch 0001 to Slurm: 2 arrays, 5 elements" in out.stdout
    assert "squeue -j" in out.stdout and "tail -f" in out.stdout
    launch_dir = find_launch(tmp_path / "runs" / "launch")
    record = read_record(launch_dir)
    pre, arr = record["arrays"]
    assert [e["pair"] for e in arr["elements"]] == ["s2_t1", "s2_t2", "s5_t1", "s5_t2"]
    assert [e["job_id"] for e in arr["elements"]] == [f"{arr['job_id']}_{i}" for i in range(4)]
    assert arr["dependency"] == f"afterok:{pre['job_id']}"
    rows = submit.element_states(launch_dir)
    assert [r["state"] for r in rows] == ["COMPLETED"] * 5
    pre_done = marker(tmp_path / "data" / "launch" / "preprocess.done.json")
    for e in arr["elements"]:  # a result for every element, each after the preprocess job
        pair = e["pair"]
        assert (tmp_path / "data" / "shards" / f"{pair}.h5").is_file()
        done = marker(Path(e["run_dir"]) / "launch" / "probe.done.json")
        assert done["job"] == e["job_id"] and done["result"]["steps"] == 3
        assert done["started"] >= pre_done["finished"]
    # what was submitted is what the dry run prints for these job ids
    plan = planning.build(args)
    ids = {a["key"]: (a["job_id"], len(a["elements"])) for a in record["arrays"]}
    rendered = submit.scripts(plan, launch_dir, Path(record["code"]), ids)
    for a in record["arrays"]:
        assert (launch_dir / a["key"] / f"{a['job_id']}_submission.sh").read_text() == rendered[a["key"]][1]
    status = launch(tmp_path, env, "status", "--folder", str(tmp_path / "runs" / "launch"))
    assert "5 elements: 5 COMPLETED" in status.stdout, status.stdout + status.stderr


@pytest.mark.slow  # about 100 s: a 1-minute limit, three or more attempts
def test_requeue_across_time_limits_gives_a_continuous_curve(tmp_path, env, capsys):
    # SIGUSR2 comes once <= 55 s are left, at slurmctld's next time-limit check (every 30 s): an
    # attempt runs 5-35 s, so 65 one-second steps need at least 3 attempts (2 requeues).
    steps = 65
    out = launch(
        tmp_path,
        env,
        *slurm_args(
            tmp_path,
            "grid.pairs=[[2,1]]",
            "launcher.stages=[probe]",
            "cluster.time_min=1",
            "cluster.signal_delay_s=55",
            "launcher.max_requeues=30",
            f"launcher.probe.steps={steps}",
            "launcher.probe.step_s=1",
        ),
        "--wait",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [
        json.loads(line) for line in (tmp_path / "runs" / "s2_t1" / "probe" / "progress.jsonl").read_text().splitlines()
    ]
    expected = probe.curve(probe.seed_of(0, 2, 1), steps)
    assert [r["step"] for r in rows] == list(range(steps))  # every step once: no gap, no repeat
    assert [r["loss"] for r in rows] == pytest.approx(expected, rel=1e-12, abs=0)  # the uninterrupted curve
    attempts = [r["attempt"] for r in rows]
    assert attempts == sorted(attempts) and attempts[-1] >= 2, f"expected >= 2 requeues, attempts {attempts}"
    assert out.stdout.count("released requeued job") >= 2
    log = next((tmp_path / "runs" / "launch" / "0001" / "L0.probe").glob("*_0_log.out")).read_text()
    assert log.count("SIGUSR2") >= 2 and "requeued job" in log
    boundaries = [
        (rows[i - 1]["step"], rows[i - 1]["loss"], rows[i]["loss"])
        for i in range(1, steps)
        if rows[i]["attempt"] != rows[i - 1]["attempt"]
    ]
    with capsys.disabled():
        print(
            f"\n[requeue test] {steps} steps in {attempts[-1] + 1} attempts; at each requeue (last step, loss "
            f"before, loss after): {[(s, round(a, 6), round(b, 6)) for s, a, b in boundaries]}; "
            f"loss {rows[0]['loss']:.6f} -> {rows[-1]['loss']:.6f}"
        )


@pytest.mark.slow  # over 5 s (fresh-clone run s29: 6.5-21 s)
def test_malicious_partition_reaches_sbatch_as_a_value(tmp_path, env):
    pwned = tmp_path / "pwned"
    bad = f"debug'; touch {pwned}; echo '"
    out = launch(
        tmp_path,
        env,
        *slurm_args(
            tmp_path,
            "grid.pairs=[[2,1]]",
            "launcher.stages=[probe]",
            f'cluster.partition="{bad}"',
            "cluster.check_resources=false",
        ),
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "sbatch refused array L0.probe" in out.stderr and "invalid partition" in out.stderr.lower()
    assert "submitted before the failure: nothing" in out.stderr
    assert not pwned.exists()
    record = read_record(find_launch(tmp_path / "runs" / "launch"))
    assert record["arrays"] == [] and "L0.probe" in record["error"]
    # with the resource check (default) it stops before sbatch, naming the value and the choices
    out = launch(
        tmp_path,
        env,
        *slurm_args(
            tmp_path,
            "grid.pairs=[[2,1]]",
            "launcher.stages=[probe]",
            f'cluster.partition="{bad}"',
            "launcher.folder=" + str(tmp_path / "l2"),
        ),
    )
    assert out.returncode == 2 and "is not a partition of this cluster: choose one of debug" in out.stderr
    assert not (tmp_path / "l2").exists() and not pwned.exists()


@pytest.mark.slow  # over 5 s (fresh-clone run s29: 6.5-21 s)
def test_impossible_resources_are_refused_before_submitting(tmp_path, env):
    out = launch(
        tmp_path,
        env,
        *slurm_args(tmp_path, "grid.pairs=[[2,1]]", "launcher.stages=[probe]", "cluster.tasks_per_node=64"),
    )
    assert out.returncode == 2
    assert "asks for 64 ranks x 1 CPUs = 64 CPUs" in out.stderr and "lower cluster.tasks_per_node" in out.stderr
    out = launch(
        tmp_path, env, *slurm_args(tmp_path, "grid.pairs=[[2,1]]", "launcher.stages=[probe]", "cluster.gpus_per_node=1")
    )
    assert out.returncode == 2 and "1 GPUs per node, but no node of the default partition 'debug'" in out.stderr
    assert not (tmp_path / "runs" / "launch").exists()


@pytest.mark.slow  # over 5 s (fresh-clone run s29: 6.5-21 s)
def test_half_submission_is_reported_and_cancel_stops_a_running_element(tmp_path, env, slurm):
    folder = tmp_path / "runs" / "launch"
    out = launch(
        tmp_path,
        env,
        *slurm_args(
            tmp_path,
            "grid.pairs=[[2,1]]",
            "launcher.stages=[preprocess,probe]",
            "preprocess.synthetic.days=1",
            "preprocess.synthetic.size=40",
            "+cluster.stages.probe.partition=nowhere",
            "cluster.check_resources=false",
        ),
    )
    assert out.returncode == 1
    record = read_record(find_launch(folder))
    (pre,) = record["arrays"]
    slurm.submitted.append(pre["job_id"])
    assert f"submitted before the failure: preprocess (job {pre['job_id']})" in out.stderr
    assert "hpcsr-launch cancel" in out.stderr and "L0.probe" in record["error"]
    assert launch(tmp_path, env, "cancel", "--folder", str(folder)).returncode == 0

    # a long element: status shows it running, cancel ends it and it does not requeue itself
    out = launch(
        tmp_path,
        env,
        *slurm_args(
            tmp_path,
            "grid.pairs=[[5,1]]",
            "launcher.stages=[probe]",
            "launcher.probe.steps=300",
            "launcher.probe.step_s=1",
        ),
    )
    assert out.returncode == 0, out.stderr
    launch_dir = find_launch(folder)
    job = read_record(launch_dir)["arrays"][0]["job_id"]
    slurm.submitted.append(job)
    slurm.wait(job, timeout=60, until=lambda s: s.get(job) == "RUNNING")
    progress = tmp_path / "runs" / "s5_t1" / "probe" / "progress.jsonl"
    deadline = time.monotonic() + 60
    while not (progress.is_file() and progress.read_text()):  # the probe is stepping
        assert time.monotonic() < deadline
        time.sleep(0.5)
    status = launch(tmp_path, env, "status", "--folder", str(folder))
    assert "RUNNING" in status.stdout and job in status.stdout
    out = launch(tmp_path, env, "cancel", "--folder", str(folder))
    assert out.returncode == 0 and f"cancelled Slurm jobs {job}" in out.stdout
    assert slurm.wait(job, timeout=60) == {job: "CANCELLED"}
    time.sleep(3)
    assert slurm.states(job) == {job: "CANCELLED"}  # not requeued by its SIGTERM handler
    log = (launch_dir / "L0.probe" / f"{job}_0_log.out").read_text()
    assert "SIGTERM" in log and "not requeued" in (launch_dir / "L0.probe" / f"{job}_0_log.err").read_text()
