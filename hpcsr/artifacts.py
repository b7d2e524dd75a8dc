"""Where artifacts live and how they are identified: the run and data layout (every path a stage
reads or writes is built here, never spelt by hand), the code version recorded as provenance, and
the two hashes (of a file, of JSON-able data). A leaf module: it imports nothing else of hpcsr, so
every stage, the launcher, the demo and `preprocessing` import it without a cycle.

    <data_dir>/hr.h5                       HR store (hpcsr.data.store documents the format)
    <data_dir>/shards/s{s}_t{t}.h5         LR shard of one factor pair
    <run_dir>/<stage>/export/model.pt      a training stage's final export (hpcsr.export)
    <run_dir>/sample/ensemble.nc           the launcher's sample stage: the ensemble of the test split
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import subprocess
from pathlib import Path

import hpcsr

HR_FILE = "hr.h5"
SHARD_DIR = "shards"
EXPORT_DIR = "export"
EXPORT_NAME = "model.pt"
HASH_CHUNK = 1 << 22  # bytes read at a time when hashing a file


def shard_name(pair) -> str:
    """File name of the LR shard of `pair` (a FactorPair): s{s}_t{t}.h5."""
    return f"{pair.name}.h5"


def shard_path(data_dir, pair) -> Path:
    """<data_dir>/shards/s{s}_t{t}.h5."""
    return Path(data_dir) / SHARD_DIR / shard_name(pair)


def export_path(stage_dir) -> Path:
    """The final export of a training stage folder: <stage_dir>/export/model.pt."""
    return Path(stage_dir) / EXPORT_DIR / EXPORT_NAME


def ensemble_path(run_dir) -> Path:
    """The ensemble the launcher's sample stage writes for a pair: <run_dir>/sample/ensemble.nc."""
    return Path(run_dir) / "sample" / "ensemble.nc"


def file_sha256(path) -> str:
    """SHA-256 of a file (hex), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def json_hash(data) -> str:
    """Short stable hash of JSON-able data: the first 16 hex digits of the SHA-256 of its sorted JSON
    (values JSON cannot write are written as str)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_version() -> dict:
    """{'hpcsr': version} plus, in a git checkout, 'git_commit' and 'git_dirty' (tracked files changed)."""
    return dict(_code_version())


@functools.lru_cache(maxsize=1)
def _code_version() -> dict:  # git runs once per process
    out = {"hpcsr": hpcsr.__version__}
    repo = Path(hpcsr.__file__).resolve().parent.parent
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        run = dict(cwd=repo, capture_output=True, text=True, timeout=10)
        head = subprocess.run(["git", "rev-parse", "HEAD"], **run)
        if head.returncode == 0:
            out["git_commit"] = head.stdout.strip()
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **run)
            out["git_dirty"] = bool(status.stdout.strip())
    return out
