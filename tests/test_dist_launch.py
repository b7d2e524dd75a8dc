"""Real processes through torchrun and a single process: rank discovery, DeepSpeed start, all_reduce."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpcsr.dist import read_self_check

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.dist


def run(cmd, env, timeout=120):
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.mark.slow  # two torchrun processes
def test_torchrun_two_processes_all_reduce(venv_bin, launch_env):
    out = run([venv_bin / "torchrun", "--nproc_per_node", "2", "-m", "hpcsr.dist"], launch_env)
    records = read_self_check(out)
    assert [r["rank"] for r in records] == [0, 1]
    assert {r["source"] for r in records} == {"env"} and {r["backend"] for r in records} == {"gloo"}
    assert [r["all_reduce_sum"] for r in records] == [3.0, 3.0]  # (0+1) + (1+1)
    assert len({r["master_port"] for r in records}) == 1 and len({r["pid"] for r in records}) == 2


def test_single_process_init_is_idempotent_and_sets_the_cpu_environment(launch_env, tmp_path):
    script = tmp_path / "check.py"
    script.write_text(
        "import json, os\n"
        "from hpcsr.dist import init_distributed, shutdown\n"
        "first = init_distributed(timeout_s=60)\n"
        "second = init_distributed()\n"
        "import torch.distributed as tdist\n"
        "keys = ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_SIZE', 'MASTER_ADDR', 'MASTER_PORT',\n"
        "        'DS_ACCELERATOR', 'TORCH_EXTENSIONS_DIR']\n"
        "print('RESULT', json.dumps({'same': first is second, 'world': tdist.get_world_size(),\n"
        "      'source': first.source, 'env': {k: os.environ.get(k) for k in keys}}))\n"
        "shutdown(0)\n"
    )
    launch_env.pop("DS_ACCELERATOR", None)
    out = run([sys.executable, script], launch_env | {"PYTHONPATH": str(REPO)})
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert result["same"] and result["world"] == 1 and result["source"] == "single"
    env = result["env"]
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["LOCAL_SIZE"]) == ("0", "1", "0", "1")
    assert env["MASTER_ADDR"] == "127.0.0.1" and 0 < int(env["MASTER_PORT"]) < 65536
    assert env["DS_ACCELERATOR"] == "cpu"  # this machine has no CUDA
    assert env["TORCH_EXTENSIONS_DIR"]


def test_bad_override_stops_with_the_variable_named(launch_env):
    out = subprocess.run(
        [sys.executable, "-m", "hpcsr.dist", "--discover-only"],
        cwd=REPO,
        env=launch_env | {"HPCSR_DIST_SOURCE": "srun"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "HPCSR_DIST_SOURCE='srun'" in out.stderr and "env, slurm, mpi, single" in out.stderr


@pytest.mark.slow  # over 5 s (fresh-clone run s29: 6.5-21 s)
def test_rendezvous_failures_end_with_host_and_port_named(launch_env):
    """A port already in use at the master, a master nobody serves, a rank whose partner never
    starts: each rank ends with exit code 2 and one line naming the master's address and port,
    after the rendezvous limit (HPCSR_RENDEZVOUS_TIMEOUT_S), never a hang."""
    import socket

    from hpcsr.dist import free_port

    holder = socket.socket()
    holder.bind(("0.0.0.0", 0))
    holder.listen()
    taken, unserved, lonely = holder.getsockname()[1], free_port(), free_port()
    base = launch_env | {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    cases = {  # rank, port, what torch reports
        "port taken": ("0", taken, "EADDRINUSE"),
        "no master": ("1", unserved, "timed out"),
        "partner never starts": ("0", lonely, "1/2 clients joined"),
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "hpcsr.dist"],
            cwd=REPO,
            env=base | {"RANK": rank, "MASTER_PORT": str(port), "HPCSR_RENDEZVOUS_TIMEOUT_S": "5"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (rank, port, _) in cases.items()
    }
    try:
        results = {name: p.communicate(timeout=180) for name, p in procs.items()}
    finally:
        holder.close()
        for p in procs.values():
            p.kill()
    for name, (rank, port, cause) in cases.items():
        err = results[name][1].strip().splitlines()[-1]
        assert procs[name].returncode == 2, (name, results[name])
        assert err.startswith(f"hpcsr.dist: rank {rank} of 2 on host {socket.gethostname()}: "), (name, err)
        assert f"no rendezvous with the master at 127.0.0.1:{port} within 5 s" in err and cause in err, (name, err)
    out = subprocess.run(
        [sys.executable, "-m", "hpcsr.dist"],
        cwd=REPO,
        env=launch_env | {"HPCSR_RENDEZVOUS_TIMEOUT_S": "soon"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "HPCSR_RENDEZVOUS_TIMEOUT_S='soon': give a positive number" in out.stderr
