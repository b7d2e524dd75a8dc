"""hpcsr-launch's local backend with real processes: the queue process, submitit's local executor,
the job runner and the probe stage (a real checkpointed workload). A transfer chain runs in order
with the child started from the parent's export; the preprocess stage writes the store and the shards
from the preprocess section, then real training stages follow; resubmitting a finished launch does nothing; a
longer run resumes where the shorter one stopped; a time-limit signal requeues; cancel stops all."""

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from hpcsr.data.store import HRStore, Shard
from hpcsr.launch import probe
from hpcsr.launch.records import find_launch, read_record

REPO = Path(__file__).resolve().parents[1]


def launch(tmp_path, env, *args, timeout=240):
    """Run the hpcsr-launch CLI in a child process from tmp_path; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "hpcsr.launch.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def env(launch_env):
    return launch_env | {"PYTHONPATH": str(REPO)}


def progress(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "probe" / "progress.jsonl").read_text().splitlines()]


def marker(run_dir: Path) -> dict:
    return json.loads((run_dir / "launch" / "probe.done.json").read_text())


def losses_match(rows, expected):
    assert [r["step"] for r in rows] == list(range(len(expected)))
    assert [r["loss"] for r in rows] == pytest.approx(expected, rel=1e-12, abs=0)


@pytest.mark.slow  # three local launches, each element a fresh Python process (~40 s on 2 shared cores)
def test_local_transfer_chain_resubmit_and_resume(tmp_path, env):
    common = [
        "launcher.stages=[probe]",
        "grid.pairs=[[10,1],[10,3]]",
        "+grid.parents={s10_t3:s10_t1}",
        "launcher.probe.step_s=0",
        "launcher.poll_s=0.5",
        "launcher.snapshot=true",
    ]
    out = launch(tmp_path, env, *common, "launcher.probe.steps=6", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "started launch 0001 locally" in out.stdout and "tail -f" in out.stdout
    parent, child = tmp_path / "runs" / "s10_t1", tmp_path / "runs" / "s10_t3"
    launch_dir = find_launch(tmp_path / "runs" / "launch")
    # dependency order: the child started after its parent finished; it ran the snapshot's code
    assert marker(child)["started"] >= marker(parent)["finished"]
    assert marker(child)["code"] == str(launch_dir / "code" / "hpcsr")
    # transfer: the child's curve starts from the parent's exported iterate
    seed = {parent: probe.seed_of(0, 10, 1), child: probe.seed_of(0, 10, 3)}.get
    x6 = json.loads((parent / "probe" / "export.json").read_text())["x"]
    losses_match(progress(parent), probe.curve(seed(parent), 6))
    losses_match(progress(child), probe.curve(seed(child), 6, x0=x6))

    # resubmitting the finished launch does nothing
    before = {p: (marker(p), (p / "probe" / "progress.jsonl").read_bytes()) for p in (parent, child)}
    out = launch(tmp_path, env, *common, "launcher.probe.steps=6", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert {p: (marker(p), (p / "probe" / "progress.jsonl").read_bytes()) for p in (parent, child)} == before
    logs = sorted((tmp_path / "runs" / "launch" / "0002").glob("L*.probe/*_0_log.out"))
    assert len(logs) == 2 and all("nothing to do" in log.read_text() for log in logs)

    # a longer run resumes each pair from its own checkpoint (resume beats init) and continues the curve
    out = launch(tmp_path, env, *common, "launcher.probe.steps=10", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    losses_match(progress(parent), probe.curve(seed(parent), 10))
    losses_match(progress(child), probe.curve(seed(child), 10, x0=x6))
    assert [r["attempt"] for r in progress(parent)] == [0] * 6 + [1] * 4


@pytest.mark.slow  # the time limit is 1 minute and the signal comes 30 s before it: ~40 s
def test_local_time_limit_signal_requeues_and_finishes(tmp_path, env):
    # the probe holds at step 5 of its first attempt until the time-limit signal: a requeue always
    # happens, whether the machine is fast or loaded (a signal during start-up requeues too)
    out = launch(
        tmp_path,
        env,
        "launcher.stages=[probe]",
        "grid.pairs=[[2,1]]",
        "cluster.time_min=1",
        "cluster.signal_delay_s=30",
        "launcher.probe.steps=12",
        "launcher.probe.step_s=0",
        "launcher.probe.hold_at=5",
        "launcher.poll_s=0.5",
        "--wait",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    run_dir = tmp_path / "runs" / "s2_t1"
    rows = progress(run_dir)
    losses_match(rows, probe.curve(probe.seed_of(0, 2, 1), 12))
    attempts = [r["attempt"] for r in rows]
    assert attempts == sorted(attempts) and attempts[4] == 0 and attempts[-1] >= 1, attempts
    log = next((tmp_path / "runs" / "launch" / "0001" / "L0.probe").glob("*_0_log.out")).read_text()
    assert "holding at step 5" in log and "SIGUSR2 at step 5" in log and "asking for a requeue" in log


@pytest.mark.slow  # a local queue and its element processes (~30 s)
def test_local_cancel_stops_queue_and_elements(tmp_path, env):
    out = launch(
        tmp_path,
        env,
        "launcher.stages=[probe]",
        "grid.pairs=[[5,1],[5,2],[5,3]]",
        "launcher.probe.steps=400",
        "launcher.probe.step_s=0.5",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    folder = tmp_path / "runs" / "launch"
    launch_dir = find_launch(folder)
    deadline = time.monotonic() + 180  # a hang detector only: the element starts whenever the machine allows
    while not any((tmp_path / "runs").glob("s5_t*/probe/progress.jsonl")):
        assert time.monotonic() < deadline, launch(tmp_path, env, "status", "--folder", str(folder)).stdout
        time.sleep(0.5)
    state = json.loads((launch_dir / "local_state.json").read_text())["elements"]
    job = next(int(e["job_id"]) for e in state.values() if e["state"] == "RUNNING")
    element = [job, *(p.pid for p in psutil.Process(job).children(recursive=True))]
    assert len(element) >= 2, "the element's controller and its rank process"
    queue = read_record(launch_dir)["local_queue_pid"]
    out = launch(tmp_path, env, "cancel", "--folder", str(folder))
    # cancel returns once the queue has stopped every process of the element and exited itself
    assert out.returncode == 0 and "stopped local queue" in out.stdout, out.stdout + out.stderr
    assert not [p for p in (queue, *element) if running(p)], "queue or element process alive after cancel"
    elements = json.loads((launch_dir / "local_state.json").read_text())["elements"].values()
    assert all(e["state"] == "CANCELLED" for e in elements)
    log = (launch_dir / "local_queue.log").read_text()
    assert f"stopped {len(element)} process(es)" in log and "STILL ALIVE" not in log
    status = launch(tmp_path, env, "status", "--folder", str(folder))
    assert "3 elements: 3 CANCELLED" in status.stdout, status.stdout
    assert not any((tmp_path / "runs").glob("s5_t*/launch/probe.done.json"))


def running(pid: int) -> bool:
    """True while pid is a live process (a zombie has ended)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow  # an `hpcsr-launch` process
def test_status_without_a_launch_says_what_to_do(tmp_path, env):
    out = launch(tmp_path, env, "status", "--folder", str(tmp_path / "nowhere"))
    assert out.returncode == 2 and "no launch recorded" in out.stderr and "hpcsr-launch submit" in out.stderr


@pytest.mark.slow  # real preprocessing and two real DeepSpeed stages, each a fresh process (~1-2 min)
def test_local_real_chain_preprocess_mean_diffusion(tmp_path, env):
    out = launch(
        tmp_path,
        env,
        "launcher.stages=[preprocess,mean,diffusion]",
        "grid.pairs=[[2,1]]",
        "preprocess.synthetic.days=2",
        "preprocess.synthetic.size=48",
        "model=tiny",
        "factor.patch=16",
        "train.steps=2",
        "train.warmup_steps=1",
        "train.val_every=0",
        "train.progress=false",
        "data.batch_size=2",
        "data.val_patches=0",
        "launcher.poll_s=1",
        "--wait",
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    run_dir = tmp_path / "runs" / "s2_t1"
    for stage in ("mean", "diffusion"):
        done = json.loads((run_dir / "launch" / f"{stage}.done.json").read_text())
        assert done["result"]["step"] == 2 and Path(done["result"]["export"]).is_file()
        assert done["result"]["export"] == str(run_dir / stage / "export" / "model.pt")
    data = tmp_path / "data" / "default"
    pre = json.loads((data / "launch" / "preprocess.done.json").read_text())
    assert pre["result"]["pairs"] == ["s2_t1"]
    # the preprocess section's synthetic source: archives in <data_dir>/raw, then the store and the shard
    assert pre["result"]["archives"] == [str(data / "raw" / "H_COMEPHORE_202001.tar")]
    assert pre["result"]["store"] == str(data / "hr.h5") and HRStore(data / "hr.h5").shape == (48, 48, 48)
    assert pre["result"]["shards"] == [str(data / "shards" / "s2_t1.h5")]
    assert set(Shard(data / "shards" / "s2_t1.h5").splits) == {"train", "val", "test"}
    mean_done = json.loads((run_dir / "launch" / "mean.done.json").read_text())
    diffusion_done = json.loads((run_dir / "launch" / "diffusion.done.json").read_text())
    assert pre["finished"] <= mean_done["started"] and mean_done["finished"] <= diffusion_done["started"]
