"""Shared pytest fixtures (each area adds its own in a marked section)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ infra: processes, MPI, Slurm

# Variables that would make a child process believe it is part of some other distributed run.
_LAUNCH_VAR_PREFIXES = ("SLURM_", "PMI_", "PMIX_", "OMPI_", "MV2_", "HYDI_", "MPI_LOCAL")
_LAUNCH_VARS = {
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GROUP_RANK",
    "ROLE_RANK",
    "TORCHELASTIC_RUN_ID",
    "HPCSR_DIST_SOURCE",
}


@pytest.fixture(scope="session")
def launch_env_base() -> dict[str, str]:
    """os.environ for child processes: no launcher variables, one thread per process (do not modify;
    module and session fixtures take it, tests take launch_env)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k == "SLURM_CONF" or (k not in _LAUNCH_VARS and not k.startswith(_LAUNCH_VAR_PREFIXES))
    }
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def launch_env(launch_env_base) -> dict[str, str]:
    """A copy of launch_env_base for one test."""
    return dict(launch_env_base)


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    """The folder of the running interpreter (the venv's bin/, holding torchrun and mpirun)."""
    return Path(sys.executable).parent


class SlurmCluster:
    """Helpers for the one-node cluster of slurm/start.sh (submit, wait with a timeout, read states)."""

    TERMINAL = {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "PREEMPTED",
    }

    def __init__(self) -> None:
        self.submitted: list[str] = []

    @staticmethod
    def run(*cmd: str, timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)

    def sbatch(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Submit with sbatch --parsable; returns the job id (cancelled again at teardown)."""
        out = self.run("sbatch", "--parsable", *args, env=env)
        assert out.returncode == 0, f"sbatch {' '.join(args)} failed: {out.stderr}"
        job_id = out.stdout.strip().split(";")[0]
        self.submitted.append(job_id)
        return job_id

    def states(self, job_id: str) -> dict[str, str]:
        """{display id (e.g. '12' or '12_3'): state} of a job or all tasks of an array, from slurmctld."""
        out = self.run("squeue", "--noheader", "--states=all", "--jobs", job_id, "--format=%i %T")
        assert out.returncode == 0, f"squeue for job {job_id} failed: {out.stderr}"
        return dict(line.split() for line in out.stdout.splitlines() if line.strip())

    def wait(self, job_id: str, timeout: float = 120, until=None) -> dict[str, str]:
        """Poll until every task is in a terminal state (or `until(states)` holds); fail after timeout."""
        until = until or (lambda s: s and all(v in self.TERMINAL for v in s.values()))
        deadline = time.monotonic() + timeout
        while True:
            states = self.states(job_id)
            if until(states):
                return states
            if time.monotonic() > deadline:
                self.run("scancel", job_id)
                pytest.fail(f"Slurm job {job_id} not done after {timeout} s: {states}")
            time.sleep(0.3)

    def cancel_all(self) -> None:
        if self.submitted:
            self.run("scancel", *self.submitted)


@pytest.fixture(scope="session")
def slurm_up() -> None:
    """Skip (with the reason) unless the local Slurm of slurm/start.sh answers `sinfo`."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"Slurm not usable ({err}); start it with: bash slurm/start.sh")
    if out.returncode != 0 or not out.stdout.strip():
        pytest.skip(
            f"local Slurm cluster not running (sinfo: {out.stderr.strip() or 'no node'}); "
            "start it with: bash slurm/start.sh (scripts/test.sh does this)"
        )


@pytest.fixture
def slurm(slurm_up) -> SlurmCluster:
    """The running one-node cluster; jobs submitted through it are cancelled after the test."""
    cluster = SlurmCluster()
    yield cluster
    cluster.cancel_all()


# ------------------------------------------------------------------ model: host-sync detector

# Ops that copy a device value to the host (a GPU stream sync): .item(), bool(tensor), nonzero, ...
_HOST_SYNC_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "is_nonzero", "unique", "_unique2")


@pytest.fixture
def no_host_sync():
    """Context manager factory: fails the test if code inside calls an op that forces a host sync.
    Runs on CPU through a TorchDispatchMode, so it catches on CPU what would stall a GPU."""
    import contextlib

    from torch.utils._python_dispatch import TorchDispatchMode

    class _Detector(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name in _HOST_SYNC_OPS:
                pytest.fail(f"host synchronisation inside a forward pass: aten.{name}")
            return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def guard():
        with _Detector():
            yield

    return guard


# ------------------------------------------------------------------ preprocessing: a small processed dataset


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """Synthetic Comephore archives (3 days, 100 x 100 px, 2 hours missing) run through ingest and
    shards for the paper's pairs plus (3, 2) (grid not divisible by 3) and (4, 5) (t not dividing
    24 h), in-process on one rank. Returns {'raw', 'out', 'pairs'}; tests must not modify it."""
    from hpcsr.factors import PAPER_PAIRS, FactorPair
    from preprocessing.ingest import IngestConfig, ingest
    from preprocessing.parallel import Comm
    from preprocessing.shards import ShardConfig, make_shards
    from preprocessing.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("preprocessed")
    raw, out = root / "raw", root / "out"
    synthesize(raw, SynthConfig(days=3, size=100, seed=7, missing_hours=2), progress=False)
    pairs = PAPER_PAIRS + (FactorPair(3, 2), FactorPair(4, 5))
    ingest(out, IngestConfig(comephore=(str(raw),)), Comm(), progress=False)
    make_shards(out, ShardConfig(pairs=pairs), Comm(), progress=False)
    return {"raw": raw, "out": out, "pairs": pairs}


# ------------------------------------------------------------------ training: a tiny processed dataset


@pytest.fixture(scope="session")
def train_dataset(tmp_path_factory):
    """Synthetic Comephore archives (4 days, 48 x 48 px, 2 hours missing) through the real ingest
    and shard writers for pairs (4, 3) and (2, 1). Returns the output folder (hr.h5, shards/);
    tests must not modify it."""
    from preprocessing.ingest import IngestConfig, ingest
    from preprocessing.parallel import Comm
    from preprocessing.shards import ShardConfig, make_shards
    from preprocessing.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("train_data")
    raw, out = root / "raw", root / "out"
    synthesize(raw, SynthConfig(days=4, size=48, seed=3, missing_hours=2), progress=False)
    ingest(out, IngestConfig(comephore=(str(raw),)), Comm(), progress=False)
    make_shards(out, ShardConfig(pairs=("4x3", "2x1")), Comm(), progress=False)
    return out
