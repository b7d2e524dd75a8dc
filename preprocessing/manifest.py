"""Checksums and the manifest that says which preprocessing outputs are complete (an output not in
the manifest with a matching checksum is treated as absent, so a killed run never leaves anything
that looks finished). Files themselves are written through hpcsr.atomic."""

from __future__ import annotations

import json
from pathlib import Path

from hpcsr.artifacts import file_sha256, json_hash
from hpcsr.atomic import write_json_atomic

MANIFEST = "manifest.json"


def text_hash(*parts) -> str:
    """Short stable hash of JSON-serialisable parts (keys of resumable work)."""
    return json_hash(list(parts))


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
        return not verify or file_sha256(target) == entry["sha256"]

    def record(self, rel: str, key: str, sha256: str | None = None, save: bool = True, **extra) -> dict:
        """Record `rel` as complete (its checksum is computed unless given) and write the manifest,
        or leave the writing to `save()` when recording several finished outputs at once."""
        target = self.root / rel
        entry = {"sha256": sha256 or file_sha256(target), "size": target.stat().st_size, "key": key, **extra}
        self.entries[rel] = entry
        if save:
            self.save()
        return entry

    def save(self) -> None:
        """Write the manifest (atomic: a reader sees the old or the new list, never a mix)."""
        write_json_atomic(self.path, {"format": "hpcsr-preprocess-manifest", "version": 1, "outputs": self.entries})
