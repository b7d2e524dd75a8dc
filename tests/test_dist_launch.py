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
