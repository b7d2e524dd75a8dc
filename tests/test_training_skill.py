"""Training must be able to fail: a tiny mean network trained briefly on real radar (the BoM
Rainfields3 day in ../shared/data, 4 km -> 1 km) must beat, on held-back patches of the validation
split (09-12 UTC, never trained on), both its own untrained start (its output layer at zero: bicubic of
the normalised LR, linear in time, which at t = 1 is the target frame) and
bicubic in mm, all three with the members' mass transform (identity per LR cell, smooth).
Real preprocessing and a real `hpcsr train` process; the RMSE is in mm.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hpcsr.coarsen import upsample_space
from hpcsr.data.patches import PatchDataset, PatchSpec
from hpcsr.export import load_export
from hpcsr.factors import MassFunction
from hpcsr.mass import conserve

REPO = Path(__file__).resolve().parents[1]
BOM = REPO.parent / "shared" / "data" / "bom_c10_20201031.nc"
PATCHES = 96  # held-back validation patches scored


def run(cmd, env, timeout=900):
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.mark.slow  # real preprocessing and 150 training steps in one process (~2-4 min on 2 cores)
@pytest.mark.skipif(not BOM.is_file(), reason=f"real radar sample {BOM} absent (../shared/data)")
def test_mean_network_beats_its_untrained_start_and_bicubic_on_held_back_radar(tmp_path, launch_env, capsys):
    env = launch_env | {"PYTHONPATH": str(REPO)}
    data = tmp_path / "bom"
    py = [sys.executable, "-m", "preprocessing.cli"]
    run(py + ["ingest", "--out", str(data), "--netcdf", str(BOM), "--cadence", "10", "--quiet"], env)
    run(
        py
        + [
            "shards",
            "--out",
            str(data),
            "--pairs",
            "4x1",
            "--split-bounds",
            "2020-10-31T09:00,2020-10-31T12:00",
            "--quiet",
        ],
        env,
    )
    run(
        [
            sys.executable,
            "-m",
            "hpcsr.train.cli",
            "model=tiny",
            "factor.s=4",
            "factor.t=1",
            "factor.patch=32",
            f"data_dir={data}",
            f"run_dir={tmp_path / 'run'}",
            "data.batch_size=8",
            "data.val_patches=0",
            "train.stage=mean",
            "train.steps=150",
            "train.warmup_steps=10",
            "train.lr=1e-3",
            "train.val_every=0",
            "train.checkpoint_every=150",
            "train.progress=false",
        ],
        env,
    )

    export = load_export(tmp_path / "run" / "mean")
    model, norm = export.build_model().eval(), export.normaliser
    L, s, t = export.recipe.context, export.recipe.pair.s, export.recipe.pair.t
    # held back: the validation split, uniform draws (no wet bias), its own stream
    spec = PatchSpec(L, 32, model.frames - L)  # the LR frames the model takes: L and any future ones
    val = PatchDataset(data / "shards" / "s4_t1.h5", spec, "val", norm, 0, 1.0, "held-back")
    items = [val[i] for i in range(PATCHES)]
    lr, hr = torch.stack([x["lr"] for x in items]), torch.stack([x["hr"] for x in items])
    truth, lr_mm = norm.inverse(hr), norm.inverse(lr[:, L - 1 : L])
    start = export.build_model().eval()
    start.mean_net.drop_correction_()  # the same network before training: its output layer at zero
    with torch.no_grad():
        trained = torch.relu(norm.inverse(model.predict_mean(lr)))
        untrained = torch.relu(norm.inverse(start.predict_mean(lr)))
    bicubic = torch.relu(upsample_space(lr_mm, s, "bicubic"))
    assert float((truth > 0.1).float().mean()) > 0.01, "the held-back patches must hold some rain"

    def rmse(x):
        x = conserve(x, lr_mm, s, t, MassFunction(1.0, 0.0), "cell", "smooth")
        return float(((x - truth) ** 2).mean().sqrt())

    scores = {"trained": rmse(trained), "untrained": rmse(untrained), "bicubic": rmse(bicubic)}
    with capsys.disabled():
        print(
            "\n[training skill] held-back BoM (4,1) RMSE mm, smooth cell mass: "
            + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
        )
    assert scores["trained"] < scores["untrained"], scores
    assert scores["trained"] < scores["bicubic"], scores
