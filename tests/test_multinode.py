"""Two real hosts on one machine: `slurm/start.sh --nodes 2` (network namespaces node1 and node2 on a
bridge, one slurmd each). A torch.distributed all_reduce between the hosts through hpcsr.dist (1 and
2 tasks per host), a rendezvous at an address no host has, MPI preprocessing on both hosts, a
DeepSpeed ZeRO-2 stage launched by hpcsr-launch across both hosts that resumes bitwise after a
requeue, after a host crash and through the universal checkpoint on one host, and stop.sh leaving
nothing behind after a crash.

The module starts the 2-node cluster itself and afterwards brings back the one-node cluster when
one ran before (scripts/test.sh starts it), so the other Slurm tests find what they expect.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hpcsr.dist import read_self_check
from hpcsr.launch.records import find_launch, read_record

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_preprocess_mpi import assert_same_h5, cli_command, run_cli  # noqa: E402

pytestmark = [pytest.mark.multinode, pytest.mark.slurm, pytest.mark.slow]  # 7-61 s each: a two-host cluster

HOSTS = ["node1", "node2"]
TRAIN = [
    "launcher=slurm",
    "cluster=local_2nodes",
    "launcher.poll_s=1",
    "launcher.snapshot=false",
    "grid.pairs=[[4,3]]",
    "launcher.stages=[mean]",
    "deepspeed=zero2",
    "model=tiny",
    "factor.context=2",
    "factor.patch=24",
    "data.batch_size=2",
    "train.lr=1e-3",
    "train.warmup_steps=2",
    "train.log_every=1",
    "train.progress=false",
    "train.steps=6",
    "train.checkpoint_every=2",
    "train.keep_checkpoints=4",
    "train.val_every=0",
    "data.val_patches=0",
]


def script(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def leftovers() -> dict[str, list[str]]:
    """Namespaces, links and daemons of a test cluster that exist now."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = [line.split(": ")[1].split("@")[0] for line in links.splitlines()]
    daemons = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            state = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if comm in ("slurmd", "slurmctld", "munged", "slurmstepd") and state.split()[1] != "Z":  # not a zombie
            daemons.append(f"{comm}:{pid}")
    return {
        "namespaces": [n for n in netns if n.startswith("hpcsr-node")],
        "links": [n for n in names if n.startswith("hpcsr-")],
        "daemons": daemons,
    }


@pytest.fixture(scope="module")
def two_nodes():
    """The 2-node cluster for this module; then the one-node cluster again if one ran before."""
    if os.geteuid() != 0:
        pytest.skip("the 2-node test cluster needs root (network namespaces, mounts, daemons as root)")
    missing = [t for t in ("ip", "unshare", "nsenter", "slurmctld", "slurmd", "munged") if not shutil.which(t)]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}: run scripts/setup.sh --system (iproute2, Slurm, MUNGE)")
    before = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, timeout=15)
    one_node_before = before.returncode == 0 and before.stdout.split() == ["localhost"]
    machine = {"hosts": Path("/etc/hosts").read_bytes(), "hostname": socket.gethostname()}
    started = time.monotonic()
    out = script("slurm/start.sh", "--nodes", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    machine["start_s"] = time.monotonic() - started
    # jobs of a crashed earlier run that slurmctld recovered (and requeued) would hold the hosts
    left = subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True, timeout=30).stdout.split()
    if left:
        subprocess.run(["scancel", *left], timeout=30)
    deadline = time.monotonic() + 60
    while subprocess.run(["squeue", "-h"], capture_output=True, text=True, timeout=30).stdout.strip():
        assert time.monotonic() < deadline, f"jobs {left} of an earlier run do not end"
        time.sleep(0.3)
    yield machine
    script("slurm/stop.sh")
    if one_node_before:
        out = script("slurm/start.sh")
        assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture(scope="module")
def slurm_up(two_nodes):
    """Overrides conftest's check: in this module the `slurm` fixture submits to the 2-node cluster."""


@pytest.fixture
def env(launch_env):
    return launch_env | {"PYTHONPATH": str(REPO)}


def test_two_idle_hosts_and_the_machine_untouched(two_nodes, slurm, capsys):
    out = slurm.run("sinfo", "--noheader", "--Node", "--format=%N %T %c")
    rows = [line.split() for line in out.stdout.splitlines()]
    assert [r[0] for r in rows] == HOSTS and all(r[1] == "idle" for r in rows), out.stdout
    assert Path("/etc/hosts").read_bytes() == two_nodes["hosts"] and socket.gethostname() == two_nodes["hostname"]
    with capsys.disabled():
        print(f"\n[multinode] 2-node cluster up in {two_nodes['start_s']:.1f} s (start.sh --nodes 2, wall clock)")


def run_dist_job(slurm, env, tmp_path, tasks_per_node: int) -> tuple[list[dict], list[list[str]]]:
    """A 2-host job: every task prints its host and network namespace, then the hpcsr.dist self-check."""
    job_script = tmp_path / "job.sh"
    job_script.write_text(
        "#!/bin/bash\n"
        "srun bash -c 'echo NET $SLURM_PROCID $(hostname) $(readlink /proc/self/ns/net) $(getent hosts $(hostname))'\n"
        f"srun {sys.executable} -m hpcsr.dist --timeout 120\n"
    )
    out_file = tmp_path / "job.out"
    job = slurm.sbatch(
        "--nodes=2",
        f"--ntasks-per-node={tasks_per_node}",
        f"--chdir={REPO}",
        f"--output={out_file}",
        str(job_script),
        env=env,
    )
    states = slurm.wait(job, timeout=240)
    text = out_file.read_text()
    assert states == {job: "COMPLETED"}, text
    net = sorted(line.split()[1:] for line in text.splitlines() if line.startswith("NET "))
    return read_self_check(text), net


def test_all_reduce_between_two_hosts_one_task_each(two_nodes, slurm, env, tmp_path):
    ranks, net = run_dist_job(slurm, env, tmp_path, 1)
    assert [(r["rank"], r["world_size"], r["host"], r["local_rank"], r["local_world_size"]) for r in ranks] == [
        (0, 2, "node1", 0, 1),
        (1, 2, "node2", 0, 1),
    ]
    assert {(r["master_addr"], r["source"], r["backend"], r["all_reduce_sum"]) for r in ranks} == {
        ("node1", "slurm", "gloo", 3.0)
    }
    # each task in its host's own network namespace, its name resolving to its own bridge address
    assert [n[1] for n in net] == HOSTS and net[0][2] != net[1][2], net
    assert [n[3:5] for n in net] == [["10.213.70.11", "node1"], ["10.213.70.12", "node2"]], net


def test_all_reduce_between_two_hosts_two_tasks_each(two_nodes, slurm, env, tmp_path):
    ranks, net = run_dist_job(slurm, env, tmp_path, 2)
    assert [(r["rank"], r["host"], r["local_rank"], r["local_world_size"]) for r in ranks] == [
        (0, "node1", 0, 2),
        (1, "node1", 1, 2),
        (2, "node2", 0, 2),
        (3, "node2", 1, 2),
    ]
    assert {(r["world_size"], r["master_addr"], r["all_reduce_sum"]) for r in ranks} == {(4, "node1", 10.0)}
    assert len({(n[1], n[2]) for n in net}) == 2  # two tasks share each host's namespace


def test_a_master_address_no_host_answers_ends_both_ranks_naming_it(two_nodes, slurm, env, tmp_path):
    """Both hosts' ranks are told to meet at 10.213.70.99, on the test hosts' network but no host:
    each ends after the rendezvous limit with exit code 2 and a line naming its host and the
    master's address and port (HPCSR_DIST_SOURCE=env: the explicit variables a site may set)."""
    job_script = tmp_path / "job.sh"
    job_script.write_text(
        "#!/bin/bash\n"
        "export HPCSR_DIST_SOURCE=env WORLD_SIZE=2 LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 MASTER_ADDR=10.213.70.99\n"
        "export MASTER_PORT=29555 HPCSR_RENDEZVOUS_TIMEOUT_S=10\n"
        f"srun bash -c 'RANK=$SLURM_PROCID exec {sys.executable} -m hpcsr.dist'\n"
    )
    out_file = tmp_path / "job.out"
    job = slurm.sbatch(
        "--nodes=2", "--ntasks-per-node=1", f"--chdir={REPO}", f"--output={out_file}", str(job_script), env=env
    )
    states = slurm.wait(job, timeout=240)
    text = out_file.read_text()
    assert states == {job: "FAILED"}, text  # srun passes the ranks' exit code 2 on
    errors = sorted(line for line in text.splitlines() if line.startswith("hpcsr.dist: rank"))
    assert len(errors) == 2, text
    for rank, (line, host) in enumerate(zip(errors, HOSTS)):
        assert line.startswith(f"hpcsr.dist: rank {rank} of 2 on host {host}: "), line
        assert "no rendezvous with the master at 10.213.70.99:29555 within 10 s" in line, line


@pytest.mark.mpi
def test_mpi_preprocessing_on_two_hosts_writes_what_one_process_writes(two_nodes, slurm, env, venv_bin, tmp_path):
    """mpirun inside a 2-host job (MPICH's Hydra sees Slurm and starts one proxy per host through
    srun; no ssh): hpcsr.dist finds the MPI ranks on node1 and node2, and hpcsr-preprocess on 2
    ranks, one per host, writes the HR store and shards one process writes, byte for byte."""
    from preprocessing.synth import SynthConfig, synthesize

    mpirun = venv_bin / "mpirun"
    if not mpirun.exists():
        pytest.skip(f"{mpirun} not found: install the 'mpich' extra (pip install .[mpich])")
    raw = tmp_path / "raw"
    synthesize(raw, SynthConfig(days=2, size=60, seed=11, missing_hours=3), progress=False)
    run_cli([], tmp_path / "one", raw, env)
    job_script = tmp_path / "job.sh"
    job_script.write_text(
        "#!/bin/bash\n"
        f"{mpirun} -n 2 -ppn 1 {sys.executable} -m hpcsr.dist --discover-only\n"
        f"{mpirun} -n 2 -ppn 1 {' '.join(cli_command(raw, tmp_path / 'two'))}\n"
    )
    out_file = tmp_path / "job.out"
    job = slurm.sbatch(
        "--nodes=2", "--ntasks-per-node=1", f"--chdir={REPO}", f"--output={out_file}", str(job_script), env=env
    )
    states = slurm.wait(job, timeout=240)
    text = out_file.read_text()
    assert states == {job: "COMPLETED"}, text
    ranks = read_self_check(text)
    # Hydra's proxies are srun tasks, one per host: Slurm's task ids and the MPI ranks agree (source slurm)
    assert [(r["rank"], r["world_size"], r["host"], r["local_world_size"], r["source"]) for r in ranks] == [
        (0, 2, "node1", 1, "slurm"),
        (1, 2, "node2", 1, "slurm"),
    ]
    assert {r["master_addr"] for r in ranks} == {"node1"}
    assert "[hpcsr-preprocess r1]" in text and "2 ranks" in text
    files = ["hr.h5"] + [f"shards/{p.name}" for p in sorted((tmp_path / "one" / "shards").glob("*.h5"))]
    assert len(files) == 5
    for rel in files:
        assert_same_h5(tmp_path / "one" / rel, tmp_path / "two" / rel)


def launch(tmp_path, env, *args, timeout=420):
    return subprocess.run(
        [sys.executable, "-m", "hpcsr.launch.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stage_dir(run_root: Path) -> Path:
    return run_root / "s4_t3" / "mean"


def events(run_root: Path, kind: str) -> list[dict]:
    path = stage_dir(run_root) / "logs" / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return [r for r in rows if r["kind"] == kind]


def weights(run_root: Path) -> dict:
    return torch.load(stage_dir(run_root) / "export" / "model.pt", map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def reference_2nodes(two_nodes, train_dataset, launch_env_base, tmp_path_factory):
    """hpcsr-launch: the mean stage with ZeRO-2 on both hosts, 6 steps in one attempt."""
    root = tmp_path_factory.mktemp("ref2")
    out = launch(
        root,
        launch_env_base | {"PYTHONPATH": str(REPO)},
        *TRAIN,
        f"run_root={root / 'runs'}",
        f"data_dir={train_dataset}",
        "--wait",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return root / "runs"


def test_zero2_stage_on_two_hosts(reference_2nodes):
    start = events(reference_2nodes, "event")[0]
    assert (start["event"], start["world_size"], start["resumed_from"]) == ("start", 2, None)
    marker = json.loads((stage_dir(reference_2nodes) / "checkpoints" / "step_6" / "COMPLETE.json").read_text())
    assert marker["world_size"] == 2 and marker["samples_seen"] == 6 * 2 * 2
    # ZeRO-2: each rank wrote its own optimizer shard, rank 0 on node1 and rank 1 on node2
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= set(
        marker["files"]
    )
    logs = sorted((reference_2nodes / "launch" / "0001" / "L0.mean").glob("*_log.out"))
    hosts = [next(line for line in log.read_text().splitlines() if "JobEnvironment" in line) for log in logs]
    assert ["hostname=node1" in hosts[0], "hostname=node2" in hosts[1]] == [True, True], hosts
    assert sorted(r["step"] for r in events(reference_2nodes, "train")) == list(range(1, 7))


def test_requeued_on_two_hosts_resumes_bitwise(reference_2nodes, train_dataset, env, tmp_path, slurm):
    """SIGUSR2 to every rank while the step-2 checkpoint is written (slowed by fault injection):
    the ranks save a checkpoint and rank 0 requeues the job (`scontrol requeue`, from
    hpcsr.launch.stages), --wait releases it, and the second attempt resumes on both hosts. It ends
    with the reference's weights, bit for bit, and the same loss at every step, each step once."""
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpcsr.launch.cli", *TRAIN, f"run_root={runs}", f"data_dir={train_dataset}", "--wait"],
        cwd=tmp_path,
        env=env | {"HPCSR_FAULT_SAVE_DELAY_S": "2:3"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (stage_dir(runs) / "checkpoints" / "step_2").is_dir():
            assert proc.poll() is None and time.monotonic() < deadline, "no step-2 checkpoint began"
            time.sleep(0.2)
        job = read_record(find_launch(runs / "launch"))["arrays"][0]["job_id"]
        slurm.submitted.append(job)
        assert slurm.run("scancel", "--signal=USR2", job).returncode == 0
        output, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "released requeued job" in output
    starts = [e for e in events(runs, "event") if e["event"] == "start"]
    assert [(s["world_size"], s["resumed_from"] is None) for s in starts] == [(2, True), (2, False)], starts
    resumed_at = starts[1]["step"]
    assert 2 <= resumed_at < 6 and starts[1]["resumed_from"].endswith(f"step_{resumed_at}")
    a, b = weights(runs), weights(reference_2nodes)
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    losses = {r["step"]: r["loss"] for r in events(runs, "train")}
    assert losses == {r["step"]: r["loss"] for r in events(reference_2nodes, "train")}
    assert len(events(runs, "train")) == 6  # no step trained twice


def test_two_host_checkpoint_resumes_on_one_host_through_universal(reference_2nodes, train_dataset, env, tmp_path):
    runs = tmp_path / "runs"
    (stage_dir(runs) / "checkpoints").mkdir(parents=True)
    step4 = stage_dir(reference_2nodes) / "checkpoints" / "step_4"
    shutil.copytree(step4, stage_dir(runs) / "checkpoints" / "step_4")
    out = launch(tmp_path, env, *TRAIN, "cluster=local", f"run_root={runs}", f"data_dir={train_dataset}", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    start = next(e for e in events(runs, "event") if e["event"] == "start")
    assert (start["world_size"], start["step"], start["universal"]) == (1, 4, True), start
    marker = json.loads((stage_dir(runs) / "checkpoints" / "step_6" / "COMPLETE.json").read_text())
    assert marker["world_size"] == 1 and marker["samples_seen"] == 4 * 2 * 2 + 2 * 2  # the stream continues
    assert (stage_dir(runs) / "checkpoints" / "universal" / "step_4" / "COMPLETE.json").exists()


def complete_steps(runs: Path) -> list[int]:
    folder = stage_dir(runs) / "checkpoints"
    return sorted(int(p.parent.name.split("_")[1]) for p in folder.glob("step_*/COMPLETE.json"))


def test_a_crashed_host_is_requeued_by_slurm_and_the_run_resumes(
    reference_2nodes, train_dataset, env, tmp_path, slurm, capsys
):
    """node2 crashes while the step-4 checkpoint is being written (slowed by fault injection):
    SIGKILL to its slurmd and to every process of the job there. Slurm notices the silent node
    (SlurmdTimeout), sets it DOWN and requeues the job itself (NODE_FAIL; the launcher submits
    with --requeue); once node2 is back (start.sh restarts its slurmd), hpcsr-launch --wait
    releases the job and it resumes from the last complete checkpoint. The half-written step 4 is
    never taken for complete, and the final weights are the uninterrupted run's, bit for bit."""
    runs = tmp_path / "runs"
    ckpt = stage_dir(runs) / "checkpoints"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpcsr.launch.cli", *TRAIN, f"run_root={runs}", f"data_dir={train_dataset}", "--wait"],
        cwd=tmp_path,
        env=env | {"HPCSR_FAULT_SAVE_DELAY_S": "4:3"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    timeline = []

    def note(what: str) -> None:
        timeline.append((time.monotonic(), what))

    def wait_until(predicate, what: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert proc.poll() is None, f"launcher ended before {what}:\n{proc.communicate()[0]}"
            assert time.monotonic() < deadline, f"no {what} within {timeout} s; timeline {timeline}; node2 {seen}"
            time.sleep(0.2)
        note(what)

    seen = []  # node2's states as sinfo answered (or its error), in order, for a failure message

    def node2_state() -> str:
        out = slurm.run("sinfo", "-h", "-n", "node2", "-o", "%T")
        answer = out.stdout.strip() or out.stderr.strip()
        if not seen or seen[-1] != answer:
            seen.append(answer)
        return answer

    def requeued() -> bool:
        show = slurm.run("scontrol", "show", "job", job).stdout
        return "JobState=PENDING" in show and "Restarts=1" in show

    def starts() -> list[dict]:
        return [e for e in events(runs, "event") if e["event"] == "start"]

    try:
        wait_until(lambda: complete_steps(runs) == [2] and (ckpt / "step_4").is_dir(), "step-4 save under way")
        job = read_record(find_launch(runs / "launch"))["arrays"][0]["job_id"]
        slurm.submitted.append(job)
        pid_file = Path(os.environ.get("HPCSR_SLURM_DIR", "/tmp/hpcsr-slurm")) / "run" / "slurmd-node2.pid"
        victims = {pid_file.read_text().strip()} | set(
            subprocess.run(["ip", "netns", "pids", "hpcsr-node2"], capture_output=True, text=True).stdout.split()
        )
        for pid in victims:
            os.kill(int(pid), 9)
        note(f"SIGKILL to node2's slurmd and the job's processes there ({len(victims)} processes)")
        complete_at_kill = complete_steps(runs)
        wait_until(lambda: node2_state().startswith("down"), "Slurm sets node2 DOWN (not responding)")
        wait_until(requeued, "Slurm requeued the job (PENDING, Restarts=1)")
        assert complete_steps(runs) == complete_at_kill == [2]  # the half-written step 4 is not complete
        out = script("slurm/start.sh", "--nodes", "2")
        assert out.returncode == 0 and "starting it again in hpcsr-node2" in out.stdout, out.stdout + out.stderr
        note("node2 back (start.sh restarted its slurmd)")
        wait_until(lambda: len(starts()) == 2, "second attempt resumed training")
        at, what = timeline.pop()
        timeline.append((at, f"{what} at step {starts()[1]['step']}"))
        output, _ = proc.communicate(timeout=300)
        note("launcher reports the job COMPLETED")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    # rank 0 on node1 learnt of the crash at once, over TCP from node2's address, in the checkpoint's
    # barrier, and failed; gloo words it by how the killed socket ended (a FIN: "Connection closed by
    # peer [addr]"; a RST while reading: "Read error [addr]:port: Connection reset by peer")
    rank0 = next((runs / "launch" / "0001" / "L0.mean").glob("*_0_log.err")).read_text()
    node2_gone = r"Connection closed by peer \[10\.213\.70\.12\]|\[10\.213\.70\.12\]:\d+: Connection reset by peer"
    assert re.search(node2_gone, rank0), rank0[-3000:]
    resumed = starts()[1]
    assert resumed["world_size"] == 2 and resumed["resumed_from"].endswith("step_2"), resumed
    a, b = weights(runs), weights(reference_2nodes)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []  # no step trained twice into the weights
    losses = {r["step"]: r["loss"] for r in events(runs, "train")}
    assert losses == {r["step"]: r["loss"] for r in events(reference_2nodes, "train")}
    zero = timeline[1][0]
    with capsys.disabled():
        print("\n[multinode] node failure timeline (s after the kill):")
        for at, what in timeline:
            print(f"  {at - zero:+7.1f}  {what}")


def test_stop_leaves_nothing_behind_even_after_a_crash(two_nodes, slurm, tmp_path):
    """A job runs on both hosts; every daemon is killed with SIGKILL (a crash), leaving the job's
    processes in the namespaces. stop.sh ends them by PID and removes namespaces, links and bridge;
    a second stop.sh finds nothing to do; the machine's /etc/hosts is what it was."""
    job = slurm.sbatch("--nodes=2", "--ntasks-per-node=1", "--output=/dev/null", "--wrap", "srun sleep 300")
    slurm.wait(job, timeout=60, until=lambda s: s.get(job) == "RUNNING")
    netns_pids = {}
    deadline = time.monotonic() + 60
    while len(netns_pids) < 2 or not all(netns_pids.values()):  # the sleeps started on both hosts
        assert time.monotonic() < deadline, netns_pids
        for ns in ("hpcsr-node1", "hpcsr-node2"):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            netns_pids[ns] = [p for p in pids if Path(f"/proc/{p}/comm").read_text().strip() == "sleep"]
        time.sleep(0.2)
    run_dir = Path(os.environ.get("HPCSR_SLURM_DIR", "/tmp/hpcsr-slurm")) / "run"
    for name in ("slurmd-node1", "slurmd-node2", "slurmctld", "munged"):
        os.kill(int((run_dir / f"{name}.pid").read_text()), 9)
    try:
        out = script("slurm/stop.sh")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "ending processes left in hpcsr-node1" in out.stdout
        assert leftovers() == {"namespaces": [], "links": [], "daemons": []}
        for pids in netns_pids.values():
            assert not [p for p in pids if Path(f"/proc/{p}").exists()], pids
        again = script("slurm/stop.sh")
        assert again.returncode == 0 and "removed" not in again.stdout, again.stdout
        assert Path("/etc/hosts").read_bytes() == two_nodes["hosts"]
    finally:  # a cluster again for the teardown of this test and of the module; the crashed job goes
        out = script("slurm/start.sh", "--nodes", "2")
        assert out.returncode == 0, out.stdout + out.stderr
        slurm.run("scancel", job)
