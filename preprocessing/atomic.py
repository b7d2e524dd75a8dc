"""Crash-safe file writing: temporary name + flush + fsync + os.replace, checksums, and the manifest
that says which outputs are complete (an output not in the manifest with a matching checksum is
treated as absent, so a killed run never leaves anything that looks finished)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

MANIFEST = "manifest.json"


@contextlib.contextmanager
def atomic_path(final):
    """Yield a temporary path next to `final`; on normal exit fsync it and rename it to `final`,
    on an exception delete it. Readers never see a half-written `final`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def sha256_file(path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def text_hash(*parts) -> str:
    """Short stable hash of JSON-serialisable parts (keys of resumable work)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Manifest:
    """`<out>/manifest.json`: {relative path: {sha256, size, key, ...}} of completed outputs.
    Only one process (rank 0) writes it; every update is atomic."""

    def __init__(self, out_dir):
        self.root = Path(out_dir)
        self.path = self.root / MANIFEST
        self.entries = json.loads(self.path.read_text())["outputs"] if self.path.exists() else {}

    def complete(self, rel: str, key: str, verify: bool = True) -> bool:
        """True when `rel` is recorded with this `key` and (if verify) its checksum still matches."""
        entry = self.entries.get(rel)
        target = self.root / rel
        if entry is None or entry.get("key") != key or not target.exists():
            return False
        if target.stat().st_size != entry["size"]:
            return False
        return not verify or sha256_file(target) == entry["sha256"]

    def record(self, rel: str, key: str, sha256: str | None = None, **extra) -> dict:
        """Record `rel` as complete (its checksum is computed unless given)."""
        target = self.root / rel
        entry = {"sha256": sha256 or sha256_file(target), "size": target.stat().st_size, "key": key, **extra}
        self.entries[rel] = entry
        write_json_atomic(self.path, {"format": "hpcsr-preprocess-manifest", "version": 1, "outputs": self.entries})
        return entry
