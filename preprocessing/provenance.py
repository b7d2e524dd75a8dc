"""Provenance records of preprocessing outputs: the identity of input files (the code version is
hpcsr.artifacts.code_version, the one record every stage writes)."""

from __future__ import annotations

import os


def input_record(path) -> dict:
    """Absolute path, size and modification time of an input file or folder."""
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
