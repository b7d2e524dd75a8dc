"""MPI fan-out: `mpirun -n 2 hpcsr-preprocess` (real MPICH ranks) gives the same HR store and shards
as one process, dataset by dataset and byte for byte."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import hpcsr.data.store  # noqa: F401  (registers the blosc filter for reading the files)
from preprocessing.synth import SynthConfig, synthesize

REPO = Path(__file__).resolve().parents[1]
PAIRS = "10x3,4x5,3x2,1x1"


def cli_command(raw, out) -> list[str]:
    """hpcsr-preprocess all from `raw` to `out`: the installed console script when there is one
    (pip install -e .), else python -m preprocessing."""
    script = Path(sys.executable).parent / "hpcsr-preprocess"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "preprocessing"]
    args = ["all", "--comephore", str(raw), "--unit-frames", "12", "--pairs", PAIRS, "--window-frames", "12"]
    return [*command, *args, "--out", str(out), "--quiet"]


def run_cli(prefix, out, raw, env):
    env = dict(env, PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    command = [*prefix, *cli_command(raw, out)]
    r = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, f"{' '.join(command)}: {r.stderr}"
    return r.stderr


def _walk(f: h5py.File) -> dict:
    items = {}
    f.visititems(lambda name, obj: items.__setitem__(name, obj))
    items[""] = f
    return items


def _attrs(obj) -> dict:
    out = {}
    for k, v in obj.attrs.items():
        if k == "provenance":
            v = json.loads(v)
            v.pop("code_version", None)
            v.get("hr_store_provenance", {}).pop("code_version", None)
        out[k] = v.tolist() if isinstance(v, np.ndarray) else v
    return out


def assert_same_h5(a: Path, b: Path) -> None:
    with h5py.File(a) as fa, h5py.File(b) as fb:
        ia, ib = _walk(fa), _walk(fb)
        assert sorted(ia) == sorted(ib)
        for name in ia:
            assert _attrs(ia[name]) == _attrs(ib[name]), f"{a.name}:{name} attributes differ"
            if isinstance(ia[name], h5py.Dataset):
                da, db = ia[name][()], ib[name][()]
                assert da.dtype == db.dtype and da.shape == db.shape
                assert da.tobytes() == db.tobytes(), f"{a.name}:{name} differs"


@pytest.mark.mpi
@pytest.mark.slow
def test_two_mpi_ranks_write_what_one_process_writes(tmp_path, launch_env, venv_bin):
    mpirun = venv_bin / "mpirun"
    if not mpirun.exists():
        pytest.skip(f"{mpirun} not found: install the 'mpich' extra (pip install .[mpich])")
    raw = tmp_path / "raw"
    synthesize(raw, SynthConfig(days=2, size=60, seed=11, missing_hours=3), progress=False)
    run_cli([], tmp_path / "one", raw, launch_env)
    log = run_cli([str(mpirun), "-n", "2"], tmp_path / "two", raw, launch_env)
    assert "[hpcsr-preprocess r1]" in log and "2 ranks" in log  # both ranks worked
    files = ["hr.h5"] + [f"shards/{p.name}" for p in sorted((tmp_path / "one" / "shards").glob("*.h5"))]
    assert len(files) == 5
    for rel in files:
        assert_same_h5(tmp_path / "one" / rel, tmp_path / "two" / rel)
    # the work really was split: two ranks wrote different part files
    one_parts = {p.name for p in (tmp_path / "one" / "parts" / "shards" / "s10_t3").iterdir()}
    two_parts = {p.name for p in (tmp_path / "two" / "parts" / "shards" / "s10_t3").iterdir()}
    assert len(one_parts) == 1 and len(two_parts) == 2
    # and a rerun under MPI finds everything done
    shutil.rmtree(tmp_path / "two" / "parts")
    log = run_cli([str(mpirun), "-n", "2"], tmp_path / "two", raw, launch_env)
    assert "nothing to ingest" in log and "4 already complete" in log
