"""Checkpoints of a training stage: DeepSpeed tags that exist only once their completion marker does.

Layout under `<stage folder>/checkpoints/`:
    step_<N>/                   one DeepSpeed tag per saved step (model, ZeRO shards, client state)
    step_<N>/rank_<r>.pt        each rank's RNG states
    step_<N>/COMPLETE.json      the completion marker, written last, atomically, by rank 0
    universal/step_<N>/         DeepSpeed universal checkpoint made from step_<N> when a run resumes
                                on another world size or ZeRO stage (+ its own COMPLETE.json)

Saving is collective. DeepSpeed writes its `latest` file after rank 0's own shards only, so it is
not used (`save_latest=False`); instead every rank's writes go through a guard that fsyncs each
file and records an error (disk full, read-only folder) rather than raising mid-collective, the
ranks agree on success with an all_reduce, and only then rank 0 writes the marker (temp file,
fsync, rename, fsync of the folder) listing every file with its size and SHA-256. Each rank hashes
the files it wrote right after writing them (read back from the page cache, in parallel across
ranks) and rank 0 gathers the digests. A failed save deletes its partial tag and keeps the previous
checkpoint; a process killed mid-save leaves a tag without marker, which resume ignores and the
next save removes. Only the newest `keep` complete checkpoints are kept.

Resume (`latest`) verifies the newest checkpoint's digests, and falls back to the one before with a
warning naming the file when a file differs from its digest (a bit flip, a copy gone wrong): a
checkpoint that looks complete but is not is never resumed. Listing checkpoints (`complete`, used
when pruning) checks sizes only. Markers written before digests existed are checked by size.

Fault injection for tests (environment, read at each save):
    HPCSR_FAULT_SAVE_DELAY_S=<step>:<s>  sleep s seconds after each file written when saving that step
    HPCSR_FAULT_SAVE_ERROR=<step>:<rank> that rank's writes of that step fail with ENOSPC
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import logging
import os
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from hpcsr.artifacts import file_sha256
from hpcsr.atomic import write_json_atomic

log = logging.getLogger(__name__)

MARKER = "COMPLETE.json"
MARKER_FORMAT = "hpcsr-checkpoint"
UNIVERSAL_DIR = "universal"
_TAG = re.compile(r"step_(\d+)")


def tag_of(step: int) -> str:
    return f"step_{step}"


class CheckpointIncompatible(ValueError):
    """A checkpoint made for another factor pair or architecture."""


@dataclass(frozen=True)
class CheckpointInfo:
    """A complete checkpoint on disk and its marker."""

    step: int
    path: Path
    marker: dict

    @property
    def tag(self) -> str:
        return self.path.name


class _GuardedWrites:
    """Stands in for DeepSpeed's checkpoint engine during a save: an OSError is recorded, later
    writes are skipped, and DeepSpeed's collective save runs to its end on every rank."""

    def __init__(self, inner, step: int, rank: int):
        self.inner, self.error = inner, None
        self.digests = {}  # path -> SHA-256 of every file this rank wrote
        at, _, seconds = os.environ.get("HPCSR_FAULT_SAVE_DELAY_S", "").partition(":")
        self.delay = float(seconds) if at == str(step) and seconds else 0.0
        self.fail = os.environ.get("HPCSR_FAULT_SAVE_ERROR", "") == f"{step}:{rank}"

    def _guard(self, fn, *args, **kwargs):
        if self.error is not None:
            return None
        try:
            if self.fail:
                raise OSError(errno.ENOSPC, "No space left on device (injected by HPCSR_FAULT_SAVE_ERROR)")
            return fn(*args, **kwargs)
        except OSError as err:
            self.error = err
            return None

    def save(self, state_dict, path):
        self._guard(self.inner.save, state_dict, path)
        self._guard(_fsync_file, path)  # on disk before the marker can name it
        self.hash(path)
        if self.delay:
            time.sleep(self.delay)

    def hash(self, path) -> None:
        digest = self._guard(file_sha256, path)
        if digest is not None:
            self.digests[str(Path(path).resolve())] = digest

    def makedirs(self, path, exist_ok=False):
        return self._guard(self.inner.makedirs, path, exist_ok=exist_ok)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _fsync_file(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _agree_errors(error: Exception | None) -> list[str]:
    """Every rank's error as 'rank r: message' on every rank; empty when no rank failed."""
    if not (dist.is_available() and dist.is_initialized()):
        return [f"rank 0: {error}"] if error is not None else []
    flag = torch.tensor([1.0 if error is not None else 0.0])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() == 0:
        return []
    errors = [None] * dist.get_world_size()
    dist.all_gather_object(errors, None if error is None else str(error))
    return [f"rank {r}: {e}" for r, e in enumerate(errors) if e is not None]


def _gather_digests(mine: dict, world_size: int) -> dict:
    """Every rank's {absolute path: SHA-256}, merged (collective when several ranks run)."""
    if dist.is_available() and dist.is_initialized() and world_size > 1:
        parts = [None] * world_size
        dist.all_gather_object(parts, mine)
        return {k: v for part in parts for k, v in (part or {}).items()}
    return dict(mine)


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _remove_tree(path: Path) -> None:
    """Delete a checkpoint folder, its marker first (so it never looks complete half-deleted)."""
    if not path.is_dir():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    with contextlib.suppress(FileNotFoundError):
        (path / MARKER).unlink()
    shutil.rmtree(path, ignore_errors=True)


class CheckpointManager:
    """Save, find, check, load and prune the checkpoints of one stage folder."""

    def __init__(self, root, keep: int, rank: int = 0, world_size: int = 1):
        if keep < 1:
            raise ValueError(f"keep={keep} must be >= 1")
        self.root, self.keep, self.rank, self.world_size = Path(root), keep, rank, world_size
        self.last_error: str | None = None

    # ------------------------------------------------------------------ finding

    def _tags(self) -> list[tuple[int, Path]]:
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            m = _TAG.fullmatch(entry.name)
            if m and entry.is_dir():
                found.append((int(m.group(1)), entry))
        return sorted(found)

    @staticmethod
    def _read_marker(path: Path) -> dict | None:
        """The marker of a tag folder if it exists, parses and all listed files have their sizes."""
        try:
            marker = json.loads((path / MARKER).read_text())
        except (OSError, ValueError):
            return None
        if marker.get("format") != MARKER_FORMAT:
            return None
        for rel, size in marker.get("files", {}).items():
            try:
                if (path / rel).stat().st_size != size:
                    log.warning("checkpoint %s: %s has the wrong size; skipping this checkpoint", path, rel)
                    return None
            except OSError:
                log.warning("checkpoint %s: %s is missing; skipping this checkpoint", path, rel)
                return None
        return marker

    def complete(self) -> list[CheckpointInfo]:
        """Complete checkpoints, oldest first."""
        out = []
        for step, path in self._tags():
            marker = self._read_marker(path)
            if marker is not None:
                out.append(CheckpointInfo(step, path, marker))
        return out

    @staticmethod
    def verify(info: CheckpointInfo) -> str | None:
        """None when every file of `info` matches its SHA-256 in the marker (or the marker has none),
        else the first file that does not."""
        for rel, digest in info.marker.get("sha256", {}).items():
            try:
                if file_sha256(info.path / rel) != digest:
                    return rel
            except OSError:
                return rel
        return None

    def latest(self) -> CheckpointInfo | None:
        """The newest complete checkpoint whose files match their digests (decided by rank 0, the
        same on every rank); a damaged one is skipped with a warning naming the file."""
        choice = [None]
        if self.rank == 0:
            for info in reversed(self.complete()):
                started = time.perf_counter()
                bad = self.verify(info)
                if bad is None:
                    log.info(
                        "checkpoint %s verified (SHA-256 of %d files in %.2f s)",
                        info.tag,
                        len(info.marker.get("sha256", {})),
                        time.perf_counter() - started,
                    )
                    choice = [info]
                    break
                log.warning(
                    "checkpoint %s: %s does not match its SHA-256 in %s (damaged): falling back to the "
                    "previous checkpoint",
                    info.path,
                    bad,
                    MARKER,
                )
        if dist.is_available() and dist.is_initialized() and self.world_size > 1:
            dist.broadcast_object_list(choice, src=0)
        return choice[0]

    # ------------------------------------------------------------------ saving

    def save(self, engine, step: int, client_state: dict, marker_extra: dict) -> bool:
        """Collective save of tag step_<step>; True when complete. On failure every rank returns
        False, the partial tag is removed and `last_error` says why; the previous checkpoint stays."""
        tag = tag_of(step)
        path = self.root / tag
        done = [self._read_marker(path) is not None if self.rank == 0 else None]
        if dist.is_available() and dist.is_initialized() and self.world_size > 1:
            dist.broadcast_object_list(done, src=0)
        if done[0]:
            return True  # this step is saved already (no step ran since it was loaded)
        if self.rank == 0 and path.exists():
            _remove_tree(path)  # a partial save interrupted earlier
        _barrier()
        error = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe_rank{self.rank}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as err:
            error = err
        errors = _agree_errors(error)
        if errors:
            return self._failed(step, errors)

        guard = _GuardedWrites(engine.checkpoint_engine, step, self.rank)
        engine.checkpoint_engine = guard
        try:
            engine.save_checkpoint(str(self.root), tag=tag, client_state=client_state, save_latest=False)
            buffer = io.BytesIO()
            torch.save(rng_state(), buffer)
            guard._guard(self._write_bytes, path / f"rank_{self.rank:05d}.pt", buffer.getvalue())
            guard.hash(path / f"rank_{self.rank:05d}.pt")
        finally:
            engine.checkpoint_engine = guard.inner
        errors = _agree_errors(guard.error)
        if errors:
            if self.rank == 0:
                _remove_tree(path)
            _barrier()
            return self._failed(step, errors)

        digests = _gather_digests(guard.digests, self.world_size)
        if self.rank == 0:
            try:
                listed = [p for p in sorted(path.rglob("*")) if p.is_file()]
                files = {str(p.relative_to(path)): p.stat().st_size for p in listed}
                sha = {str(p.relative_to(path)): digests.get(str(p.resolve())) or file_sha256(p) for p in listed}
                marker = {
                    "format": MARKER_FORMAT,
                    "step": step,
                    "tag": tag,
                    "world_size": self.world_size,
                    "files": files,
                    "sha256": sha,
                    **marker_extra,
                }
                write_json_atomic(path / MARKER, marker, default=str)
            except OSError as err:
                error = err
        errors = _agree_errors(error)
        if errors:
            return self._failed(step, errors)
        if self.rank == 0:
            self.prune()
        _barrier()
        self.last_error = None
        return True

    @staticmethod
    def _write_bytes(path: Path, data: bytes) -> None:
        with open(path, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def _failed(self, step: int, errors: list[str]) -> bool:
        if self.rank == 0:
            done = self.complete()
            kept = f"the previous checkpoint {done[-1].tag} is kept" if done else "there is no earlier checkpoint"
        else:
            kept = "rank 0 reports which checkpoint is kept"
        self.last_error = f"checkpoint {tag_of(step)} NOT saved ({'; '.join(errors)}); {kept}"
        if self.rank == 0:
            log.error(self.last_error)
        return False

    def prune(self) -> None:
        """Rank 0: keep the newest `keep` complete checkpoints; delete older tags, partial tags older
        than the newest complete one, and universal copies of deleted tags."""
        done = self.complete()
        if not done:
            return
        keep = {c.path for c in done[-self.keep :]}
        newest = done[-1].step
        for step, path in self._tags():
            if path not in keep and step <= newest:
                _remove_tree(path)
        universal = self.root / UNIVERSAL_DIR
        if universal.is_dir():
            kept_tags = {p.name for p in keep}
            for entry in universal.iterdir():
                if entry.name not in kept_tags:
                    _remove_tree(entry)

    # ------------------------------------------------------------------ loading

    def needs_universal(self, info: CheckpointInfo, zero_stage: int) -> bool:
        """True when `info` was written by another world size or ZeRO stage."""
        return (
            int(info.marker["world_size"]) != self.world_size
            or int(info.marker.get("zero_stage", zero_stage)) != zero_stage
        )

    def universal_path(self, info: CheckpointInfo) -> Path:
        return self.root / UNIVERSAL_DIR / info.tag

    def prepare_universal(self, info: CheckpointInfo) -> Path:
        """Collective: rank 0 converts `info` with DeepSpeed's ds_to_universal (once; kept next to
        it) while the others wait. Returns the folder to pass to load_checkpoint as load_dir."""
        target = self.universal_path(info)
        error = None
        if self.rank == 0 and not (target / MARKER).exists():
            try:
                convert_to_universal(info.path, target)
            except Exception as err:  # reported to all ranks below
                error = err
                log.error("converting %s to a universal checkpoint failed: %s", info.path, err)
        errors = _agree_errors(error)
        if errors:
            raise RuntimeError(
                f"cannot resume {info.path} on world size {self.world_size}: the conversion to a "
                f"DeepSpeed universal checkpoint failed ({'; '.join(errors)}); resume on "
                f"{info.marker['world_size']} ranks instead"
            )
        return target.parent

    def load(self, engine, info: CheckpointInfo, universal: bool) -> dict:
        """Collective: load model, optimizer, schedule and client state; restore this rank's RNG
        when the world size is unchanged. Returns DeepSpeed's client state."""
        load_dir = self.universal_path(info).parent if universal else self.root
        path, client_state = engine.load_checkpoint(
            str(load_dir),
            tag=info.tag,
            load_module_strict=True,
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load checkpoint {info.tag} from {load_dir}")
        rng_file = info.path / f"rank_{self.rank:05d}.pt"
        if not universal and rng_file.exists():
            set_rng_state(torch.load(rng_file, weights_only=False))
        return client_state or {}


def convert_to_universal(tag_path: Path, target: Path) -> None:
    """ds_to_universal (in this process, no worker pool) into a temporary folder, renamed when done,
    then marked complete."""
    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    args = argparse.Namespace(
        input_folder=str(tag_path),
        output_folder=str(tmp),
        num_extract_workers=1,
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        inject_missing_state=True,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        ds_to_universal(args)
    with contextlib.suppress(FileNotFoundError):
        (tmp.parent / "latest_universal").unlink()  # names the temporary folder; tags are always explicit here
    if target.exists():
        _remove_tree(target)
    os.sync()  # the converted files reach the disk before the folder gets its final name and marker
    os.replace(tmp, target)
    write_json_atomic(
        target / MARKER, {"format": MARKER_FORMAT, "source": str(tag_path), "universal": True, "files": {}}, default=str
    )
