"""Finding, checking and pruning checkpoints on disk (the completion-marker rules), without a
DeepSpeed engine; the collective save itself is tested with real processes in test_train_faults.py."""

import os

from hpcsr.atomic import write_json_atomic
from hpcsr.train.checkpoint import MARKER, MARKER_FORMAT, UNIVERSAL_DIR, CheckpointManager


def make_tag(root, step, complete=True, payload=b"weights", world_size=2, zero_stage=1):
    path = root / f"step_{step}"
    path.mkdir(parents=True)
    (path / "mp_rank_00_model_states.pt").write_bytes(payload * step)
    if complete:
        files = {"mp_rank_00_model_states.pt": len(payload) * step}
        write_json_atomic(
            path / MARKER,
            {"format": MARKER_FORMAT, "step": step, "files": files, "world_size": world_size, "zero_stage": zero_stage},
        )
    return path


def test_only_marked_checkpoints_count(tmp_path):
    make_tag(tmp_path, 2)
    make_tag(tmp_path, 4)
    make_tag(tmp_path, 6, complete=False)  # a save interrupted before its marker
    (tmp_path / "step_x").mkdir()
    (tmp_path / "zero_to_fp32.py").write_text("# DeepSpeed's helper")
    m = CheckpointManager(tmp_path, keep=3)
    assert [c.step for c in m.complete()] == [2, 4]
    assert m.latest().step == 4 and m.latest().tag == "step_4"


def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    make_tag(tmp_path, 2)
    newest = make_tag(tmp_path, 4)
    (newest / "mp_rank_00_model_states.pt").write_bytes(b"trunc")  # size no longer matches the marker
    assert CheckpointManager(tmp_path, keep=2).latest().step == 2
    (newest / MARKER).write_text("{not json")
    assert CheckpointManager(tmp_path, keep=2).latest().step == 2
    os.remove(tmp_path / "step_2" / "mp_rank_00_model_states.pt")
    assert CheckpointManager(tmp_path, keep=2).latest() is None


def test_prune_keeps_the_newest_k_and_drops_stale_partials(tmp_path):
    for step in (1, 2, 3, 4):
        make_tag(tmp_path, step)
    make_tag(tmp_path, 5, complete=False)  # newer than every complete one: may be a save in progress
    partial_old = make_tag(tmp_path, 0, complete=False)
    (tmp_path / UNIVERSAL_DIR / "step_1").mkdir(parents=True)
    (tmp_path / UNIVERSAL_DIR / "step_4").mkdir(parents=True)
    (tmp_path / UNIVERSAL_DIR / "latest_universal").write_text("step_1")
    m = CheckpointManager(tmp_path, keep=2)
    m.prune()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("step_")) == ["step_3", "step_4", "step_5"]
    assert not partial_old.exists()
    assert [p.name for p in (tmp_path / UNIVERSAL_DIR).iterdir()] == ["step_4"]


def test_world_size_or_zero_stage_change_needs_universal(tmp_path):
    make_tag(tmp_path, 3, world_size=2, zero_stage=1)
    info = CheckpointManager(tmp_path, keep=1, world_size=2).latest()
    assert not CheckpointManager(tmp_path, keep=1, world_size=2).needs_universal(info, zero_stage=1)
    assert CheckpointManager(tmp_path, keep=1, world_size=1).needs_universal(info, zero_stage=1)
    assert CheckpointManager(tmp_path, keep=1, world_size=2).needs_universal(info, zero_stage=3)


def test_same_size_damage_is_caught_by_the_digest(tmp_path, caplog):
    """A marker with SHA-256 digests: a file changed in place at the same size is not resumed; the
    warning names it. A marker without digests (older runs) is still checked by size."""
    import hashlib
    import json

    for step in (2, 4):
        path = make_tag(tmp_path, step)
        marker = json.loads((path / MARKER).read_text())
        marker["sha256"] = {"mp_rank_00_model_states.pt": hashlib.sha256(b"weights" * step).hexdigest()}
        write_json_atomic(path / MARKER, marker)
    (tmp_path / "step_4" / "mp_rank_00_model_states.pt").write_bytes(b"WEIGHTS" * 4)
    m = CheckpointManager(tmp_path, keep=2)
    assert [c.step for c in m.complete()] == [2, 4]  # sizes match: listing does not hash
    with caplog.at_level("WARNING"):
        assert m.latest().step == 2
    assert "step_4: mp_rank_00_model_states.pt does not match its SHA-256" in caplog.text
    make_tag(tmp_path, 6)  # no digests: accepted on its sizes
    assert m.latest().step == 6
