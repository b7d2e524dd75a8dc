"""Training with the mean network's 'motion' start (model.mean_skip=motion) on a real shard: the
patch loader hands every item its start, and the mean stage, the diffusion stage's residual scale,
its validation and its spread calibration all use it; the exports record the choice, and the
fresh mean network's validation loss is that of its start (the output layer starts at zero); 'auto'
resolves from the shard's step."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_dist import COMMON, train_one_rank  # noqa: E402

from hpcsr.data.normalise import Normaliser  # noqa: E402
from hpcsr.data.patches import PatchDataset, PatchSpec  # noqa: E402
from hpcsr.data.store import Shard  # noqa: E402
from hpcsr.models.start_space import resolve_start_unit  # noqa: E402
from hpcsr.train.trainer import stacked  # noqa: E402

MOTION = [*COMMON, "model.mean_skip=motion", "data.val_patches=4", "train.val_every=1"]  # no future frame


def train(tmp_path, data, stage, steps, *extra):
    args = [*MOTION, f"train.stage={stage}", f"train.steps={steps}", f"data_dir={data}", f"run_dir={tmp_path}"]
    return train_one_rank([*args, *extra], timeout=600)


@pytest.mark.slow
def test_both_stages_train_with_the_motion_start(train_dataset, tmp_path):
    # 'auto' on this hourly shard at t = 3 (3-hour LR steps): the linear start, recorded as such
    out = train(tmp_path / "auto", train_dataset, "mean", 1, "model.mean_skip=auto")
    assert out.returncode == 0, out.stderr[-4000:]
    meta = json.loads((tmp_path / "auto" / "mean" / "export" / "model.json").read_text())
    assert meta["model"]["mean_skip"] == "linear" and "mean_skip auto -> linear (LR step 180 min)" in out.stderr
    out = train(tmp_path, train_dataset, "mean", 1, "train.lr=1e-12")  # one step that changes nothing
    assert out.returncode == 0, out.stderr[-4000:]
    meta = json.loads((tmp_path / "mean" / "export" / "model.json").read_text())
    assert meta["model"]["mean_skip"] == "motion"
    # the validation loss at step 1 is the start's MSE on the validation patches (nothing learned)
    shard_path = train_dataset / "shards" / "s4_t3.h5"
    with Shard(shard_path) as shard:
        norm = Normaliser.from_stats(shard.stats, "log1p")
        unit = resolve_start_unit("auto", shard.hr_histogram())  # model.start_unit auto, recorded as the number
    assert meta["model"]["start_unit"] == unit
    spec = PatchSpec(context=2, patch=24, future=0, motion_start=True, start_unit=unit)
    val = PatchDataset(shard_path, spec, "val", norm, seed=0, stream="val")
    lr, hr, start = stacked([val[i] for i in range(4)])
    valid = torch.isfinite(hr)
    expected = float((start - hr)[valid].square().mean())
    rows = [json.loads(line) for line in (tmp_path / "mean" / "logs" / "metrics.jsonl").read_text().splitlines()]
    (loss,) = [r["val_loss"] for r in rows if r.get("kind") == "val"]
    assert abs(loss - expected) < 1e-4 * expected
    out = train(tmp_path, train_dataset, "diffusion", 2, "train.calibration_members=2", "sample.steps=2")
    assert out.returncode == 0, out.stderr[-4000:]
    meta = json.loads((tmp_path / "diffusion" / "export" / "model.json").read_text())
    assert meta["model"]["mean_skip"] == "motion" and meta["spread_calibration"]["gain"] >= 1
