"""Crash-safe file writes: every file the project writes as a whole (records, markers, manifests,
exports, stores, ensembles, reports, figures) goes through here.

A write goes to a temporary file in the target's folder, which is flushed to disk (fsync) and only
then renamed over the target (os.replace, atomic on POSIX filesystems); the folder is fsynced too,
so after a power loss or node crash the rename itself is not lost (a completion marker or manifest
that names finished work must survive the crash that it guards against; the cost is one more fsync
per file). A reader therefore sees the old file or the new one, never a mix, even when the
writer is killed with SIGKILL. On an exception the temporary file is removed and the target is left
as it was; a SIGKILL leaves only a hidden temporary file behind.

Temporary names are `.<name>.<host>.<pid>-<random>.tmp`: hidden, unique per writer (processes,
threads and hosts sharing a filesystem), and never ending in the target's suffix, so a reader
scanning a folder for `*.json` or `*.nc` never opens a half-written file. A new writer of `<name>`
removes the temporaries of earlier writers of it on the same host whose process is gone (a killed
run's leftovers); those of live processes and of other hosts are left alone. Writers that guess a format from the extension must be told it
(`savefig(tmp, format="png")`). New files get the usual mode (0666 less the umask).

    with AtomicPath(path) as tmp:            # any writer that takes a path (torch.save, h5py, netCDF)
        torch.save(obj, tmp)
    write_text_atomic(path, text)            # also write_bytes_atomic, write_json_atomic

A writer that spans several calls keeps `a = AtomicPath(path)`, writes `a.tmp`, then calls
`a.commit()` or `a.discard()`.

A folder output (an evaluation report: metrics, figures, pages) is written whole into a temporary
sibling folder and swapped in by `AtomicFolder`: the previous folder is renamed aside, the new one
renamed in, the old one deleted. A failure before the swap leaves the previous folder untouched;
a crash between the two renames leaves the previous folder under `.<name>.<host>.<pid>-<rand>.old`,
which the next writer of that folder puts back before it starts. So a reader finds one complete run's
files, never a mix of two.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import secrets
import shutil
import socket
from pathlib import Path


class _Swap:
    """The context-manager protocol of a writer with commit() and discard(): yields `tmp`, commits
    on normal exit, discards on an exception (or when the commit itself fails)."""

    tmp: Path

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()
            return
        try:
            self.commit()
        except BaseException:
            self.discard()
            raise


def _temporary_name(path: Path) -> str:
    """`.<name>.<host>.<pid>-<random>`: hidden, unique per writer, its owner readable back."""
    return f".{path.name}.{HOST}.{os.getpid()}-{secrets.token_hex(4)}"


def _dead_leftovers(path: Path) -> list[Path]:
    """Temporaries of `path` left on this host by writers whose process is gone."""
    found = []
    for left in sorted(path.parent.glob(f".{glob.escape(path.name)}.{glob.escape(HOST)}.*")):
        pid = left.name[len(path.name) + len(HOST) + 3 :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            found.append(left)
    return found


class AtomicPath(_Swap):
    """A temporary file next to `path` (created empty, in `tmp`) that replaces `path` on commit().
    As a context manager it yields `tmp`, commits on normal exit and discards on an exception."""

    def __init__(self, path):
        self.path = Path(path)
        check_target(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        self.tmp = self.path.with_name(_temporary_name(self.path) + ".tmp")
        os.close(os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))

    def commit(self) -> Path:
        """fsync the temporary file, rename it over `path`, fsync the folder. Returns `path`."""
        _fsync(self.tmp)
        os.replace(self.tmp, self.path)
        _fsync(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Remove the temporary file; `path` stays as it was."""
        self.tmp.unlink(missing_ok=True)


HOST = socket.gethostname().replace(".", "_") or "host"


def check_target(path) -> Path:
    """Refuse (ValueError naming it) a target that cannot be written: an ancestor that is a file,
    or the target itself a folder. Cheap: call it before long work to fail early."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output {path} is a folder: give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"output {path} cannot be written: {parent} is a file, not a folder")
            break
    return path


def remove_stale_temporaries(path) -> list[Path]:
    """Remove `path`'s temporaries left on this host by writers whose process is gone; returns them."""
    removed = [tmp for tmp in _dead_leftovers(Path(path)) if tmp.suffix == ".tmp" and tmp.is_file()]
    for tmp in removed:
        tmp.unlink(missing_ok=True)
    return removed


class AtomicFolder(_Swap):
    """A temporary folder beside `path` (in `tmp`) that replaces the folder `path` whole on
    commit(). `marker`: a file name that a previous output folder must contain to be replaced (so a
    folder of other files given by mistake is refused, never deleted). As a context manager it yields
    `tmp`, commits on normal exit and removes `tmp` on an exception."""

    def __init__(self, path, marker: str):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"output folder {self.path} is a file: give a folder name")
        check_target(self.path / marker)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._recover()
        if self.path.is_dir() and any(self.path.iterdir()) and not (self.path / marker).is_file():
            raise ValueError(
                f"output folder {self.path} holds other files (no {marker}): it would be replaced "
                "whole, so give a new or empty folder"
            )
        name = _temporary_name(self.path)
        self.tmp = self.path.with_name(name + ".tmp")
        self._old = self.path.with_name(name + ".old")
        self.tmp.mkdir()

    def _recover(self) -> None:
        """Put back a previous folder left aside by a crash mid-swap; remove dead writers' folders."""
        for left in _dead_leftovers(self.path):
            if not left.is_dir():
                continue
            if left.suffix == ".old" and not self.path.exists():
                os.replace(left, self.path)
            else:
                shutil.rmtree(left, ignore_errors=True)

    def commit(self) -> Path:
        for f in self.tmp.rglob("*"):
            if f.is_file():
                _fsync(f)
        had_old = self.path.exists()
        if had_old:
            os.replace(self.path, self._old)
        os.replace(self.tmp, self.path)
        _fsync(self.path.parent)
        if had_old:
            shutil.rmtree(self._old, ignore_errors=True)
        return self.path

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        # some filesystems (FUSE mounts among them) cannot fsync a folder and answer EINVAL; the
        # rename is then as durable as that filesystem makes it
        if err.errno != errno.EINVAL or not path.is_dir():
            raise
    finally:
        os.close(fd)


def write_bytes_atomic(path, data: bytes) -> Path:
    """Write `data` to `path` atomically. Returns `path`."""
    with AtomicPath(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path, text: str) -> Path:
    """Write `text` as UTF-8 to `path` atomically, byte for byte (no newline translation)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path, obj, **json_kwargs) -> Path:
    """Write `obj` as JSON plus a final newline to `path` atomically. `json_kwargs` go to json.dumps;
    the default layout is indent=1, sort_keys=True (give indent/sort_keys to change it)."""
    json_kwargs = {"indent": 1, "sort_keys": True, **json_kwargs}
    return write_text_atomic(path, json.dumps(obj, **json_kwargs) + "\n")
