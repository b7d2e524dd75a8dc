"""Provenance records: code version (package version and `git describe` when the code sits in a git
checkout) and the identity of input files, stored in every output so it can be traced."""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path

import hpcsr


@lru_cache(maxsize=1)
def code_version() -> dict:
    """{'code_version': hpcsr.__version__, 'git': 'v0.1-3-gabc1234-dirty' or None}."""
    repo = Path(__file__).resolve().parents[1]
    git = None
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty", "--tags"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0:
            git = out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        git = None
    return {"code_version": hpcsr.__version__, "git": git}


def input_record(path) -> dict:
    """Absolute path, size and modification time of an input file or folder."""
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
