"""hpcsr.atomic: a reader sees the old file or the new one, never a mix, and no temporary file is
left behind except by a SIGKILL. The kill tests use real child processes and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hpcsr.atomic import AtomicPath, write_bytes_atomic, write_json_atomic, write_text_atomic

REPO = Path(__file__).resolve().parents[1]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_replaces_content_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.txt"  # missing folders are made
    assert write_text_atomic(target, "old\n") == target
    write_text_atomic(target, "new ü\r\n")
    assert target.read_bytes() == "new ü\r\n".encode()  # UTF-8, no newline translation
    write_bytes_atomic(target, b"\x00\xff")
    assert target.read_bytes() == b"\x00\xff"
    assert leftovers(target.parent) == []


def test_new_file_mode_follows_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "a", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o640


def test_exception_in_block_keeps_old_file_and_removes_temporary(tmp_path):
    target = tmp_path / "model.pt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError, match="disk full"):
        with AtomicPath(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_failed_rename_removes_temporary(tmp_path):
    target = tmp_path / "taken"
    with pytest.raises(IsADirectoryError):
        with AtomicPath(target) as tmp:
            tmp.write_text("x")
            target.mkdir()  # appears while the writer works: a file cannot replace a folder
    assert target.is_dir() and leftovers(tmp_path) == []


def test_unwritable_targets_are_refused_before_writing(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a folder"):
        write_text_atomic(tmp_path / "folder", "x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        write_text_atomic(tmp_path / "file" / "below" / "x.json", "x")
    assert leftovers(tmp_path) == [] and (tmp_path / "file").read_text() == ""


def test_explicit_commit_and_discard(tmp_path):
    target = tmp_path / "ens.nc"
    first = AtomicPath(target)
    first.tmp.write_text("first")
    assert first.tmp.name.startswith(".ens.nc.") and first.tmp.suffix == ".tmp"
    assert not target.exists()  # nothing visible before commit
    assert first.commit() == target and target.read_text() == "first"
    second = AtomicPath(target)
    second.tmp.write_text("second")
    second.discard()
    assert target.read_text() == "first" and leftovers(tmp_path) == []


def test_json_round_trip_and_layout(tmp_path):
    obj = {"b": [1, 2.5, None], "a": {"s": "é", "t": True}}
    path = write_json_atomic(tmp_path / "x.json", obj)
    text = path.read_text()
    assert json.loads(text) == obj
    assert text == json.dumps(obj, indent=1, sort_keys=True) + "\n"
    write_json_atomic(path, {"z": 1, "p": tmp_path}, indent=2, sort_keys=False, default=str)
    assert path.read_text() == json.dumps({"z": 1, "p": str(tmp_path)}, indent=2) + "\n"
    with pytest.raises(TypeError):
        write_json_atomic(path, {"p": tmp_path})  # not JSON without default=str: old file kept
    assert json.loads(path.read_text())["p"] == str(tmp_path)


def test_concurrent_writers_each_write_whole_files(tmp_path):
    target = tmp_path / "shared.json"
    payloads = [{"writer": i, "data": [i] * 20000} for i in range(4)]

    def write(obj):
        for _ in range(5):
            write_json_atomic(target, obj)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert json.loads(target.read_text()) in payloads
    assert leftovers(tmp_path) == []


CHILD_MID_WRITE = """
import sys, time
from hpcsr.atomic import AtomicPath
with AtomicPath(sys.argv[1]) as tmp:
    with open(tmp, "w") as fh:
        fh.write("NEW, first half")
        fh.flush()
        print(tmp, flush=True)
        time.sleep(120)
        fh.write(", second half")
"""

CHILD_LOOP = """
import sys
from hpcsr.atomic import write_json_atomic
n = 0
while True:
    n += 1
    write_json_atomic(sys.argv[1], {"n": n, "values": [n] * 200000})
"""


def _child(code: str, target: Path, launch_env) -> subprocess.Popen:
    env = {**launch_env, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True, env=env)


def test_sigkill_mid_write_leaves_old_content(tmp_path, launch_env):
    target = tmp_path / "marker.json"
    write_text_atomic(target, "OLD")
    proc = _child(CHILD_MID_WRITE, target, launch_env)
    try:
        tmp = Path(proc.stdout.readline().strip())
        assert tmp.read_text() == "NEW, first half"  # the child is inside its write
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.stdout.close()
    assert target.read_text() == "OLD"
    assert leftovers(tmp_path) == [tmp.name]  # SIGKILL allows no cleanup; the target is untouched


@pytest.mark.parametrize("delay_s", [0.3, 0.55, 0.8])
def test_sigkill_during_repeated_writes_leaves_a_whole_version(tmp_path, launch_env, delay_s):
    target = tmp_path / "state.json"
    write_json_atomic(target, {"n": 0, "values": []})
    proc = _child(CHILD_LOOP, target, launch_env)
    try:
        deadline = time.monotonic() + 30
        while json.loads(target.read_text())["n"] < 2:  # every read while the child writes is whole
            assert proc.poll() is None and time.monotonic() < deadline, "the writing child did not get going"
            time.sleep(0.02)
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.stdout.close()
    state = json.loads(target.read_text())
    assert state["n"] >= 2 and state["values"] == [state["n"]] * 200000
    assert len(leftovers(tmp_path)) <= 1
