"""Real MPI ranks with the venv's mpirun (MPICH from PyPI): hello world and the dist self-check."""

import subprocess
from pathlib import Path

import pytest

from hpcsr.dist import read_self_check

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.mpi


def mpirun(venv_bin, env, *args, timeout=120):
    cmd = [str(venv_bin / "mpirun"), "-n", "2", str(venv_bin / "python"), *args]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_mpi_hello(venv_bin, launch_env):
    # one write per line: the two ranks share mpirun's stdout, and print() may write in pieces
    code = (
        "import sys; from mpi4py import MPI; c = MPI.COMM_WORLD; "
        "sys.stdout.write(f'hello {c.Get_rank()} {c.Get_size()} {c.allreduce(c.Get_rank() + 1)}\\n')"
    )
    lines = sorted(
        line.split() for line in mpirun(venv_bin, launch_env, "-c", code).splitlines() if line.startswith("hello")
    )
    assert lines == [["hello", "0", "2", "3"], ["hello", "1", "2", "3"]]


def test_mpirun_two_ranks_all_reduce_through_dist(venv_bin, launch_env):
    out = mpirun(venv_bin, launch_env, "-m", "hpcsr.dist")
    records = read_self_check(out)
    assert [(r["rank"], r["world_size"], r["local_world_size"], r["source"]) for r in records] == [
        (0, 2, 2, "mpi"),
        (1, 2, 2, "mpi"),
    ]
    # rank 0 chose the address, its store listened on a port the OS picked, and MPI broadcast both
    assert {(r["master_addr"], r["master_port"]) for r in records} == {("127.0.0.1", records[0]["master_port"])}
    assert records[0]["master_port"] > 0
    assert [r["all_reduce_sum"] for r in records] == [3.0, 3.0]
