"""benchmarks/skill_experiment.py --quick end to end on the real radar files: preprocessing of the
BoM (training, at 500 m with its 1 km aggregate mixed in: --train-pixels 1,2) and KNMI (evaluation)
days, both training stages of three pairs, sampling, evaluation and the result files. Seconds of
training cannot show skill, so only the shape of the result is checked: every number is there and
finite, and the reports with their figures exist. The criteria are checked on a hand-made metrics
dict.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import skill_experiment  # noqa: E402

DATA = REPO.parent / "shared" / "data"
FILES = ("bom_c10_20201031.nc", "knmi_20100826.nc")
NUMBERS = (
    "ensemble_crps",
    "ensemble_rmse",
    "ensemble_mae",
    "spread_skill",
    "mean_rmse",
    "mean_mae",
    "bicubic_rmse",
    "bicubic_mae",
    "nearest_rmse",
    "nearest_mae",
    "bicubic_cell_mass_rmse",
    "bicubic_cell_mass_mae",
    "untrained_mean_rmse",
    "untrained_mean_mae",
)
VERDICTS = (
    "crps_beats_bicubic_mae",
    "mean_rmse_beats_bicubic",
    "crps_beats_bicubic_cell_mass_mae",
    "mean_rmse_beats_bicubic_cell_mass",
)
CRITERIA = {
    "crps_to_bicubic_mae",
    "spread_skill",
    "rank_lowest_to_flat",
    "rank_highest_to_flat",
    "rank_end_balance",
    "mean_rmse_to_bicubic",
    "mean_rmse_to_bicubic_cell_mass",
    "mean_rmse_to_untrained",
    "spectral_ratio_min",
    "spectral_ratio_max",
    "wet_fraction_ratio",
    "ensemble_seam_ratio",
    "mean_seam_ratio",
    "mass_error_claimed_scale",
}


def test_criteria_on_hand_made_metrics():
    metrics = {
        "forecasts": {
            "ensemble": {
                "crps": 0.05,
                "rmse": 0.09,
                "spread_skill_ratio": 1.0,
                "rank_histogram": [12, 10, 10, 10, 10, 8],
                "spectral_ratio": {"min": 0.7, "max": 1.6},
                "wet_fraction_ratio": 1.1,
                "seam_ratio": 1.05,
                "tile_seam_ratio": 1.16,
                "mass": {"cell_relative": 3e-7},
            },
            "bicubic": {"mae": 0.1, "rmse": 0.1},
            "mean": {"rmse": 0.08, "seam_ratio": 1.2, "tile_seam_ratio": None},
        },
        "truth": {"seam_ratio": 1.0, "tile_seam_ratio": 1.08},
        "mass_claim": {"scale": "cell", "relative_error": 3e-7, "note": ""},
        "undefined": {},
    }
    c = skill_experiment.criteria(metrics, bicubic_cell_mass_rmse=0.09, untrained_mean_rmse=0.07)
    assert set(c) == CRITERIA | {"ensemble_tile_seam_to_truth", "mean_tile_seam_to_truth"}
    assert c["crps_to_bicubic_mae"] == {"group": 1, "value": pytest.approx(0.5), "target": "<= 0.6", "met": True}
    # rank ends 12 and 8 of a mean 10: 1.2 and 0.8 x flat, 1.5 x each other (at the limit)
    assert c["rank_lowest_to_flat"]["value"] == pytest.approx(1.2) and c["rank_end_balance"]["met"]
    assert c["mean_rmse_to_bicubic"]["met"] and c["mean_rmse_to_bicubic_cell_mass"]["met"]
    assert not c["mean_rmse_to_untrained"]["met"] and c["mean_rmse_to_untrained"]["target"] == "< 1"
    assert c["spectral_ratio_min"]["met"] and not c["spectral_ratio_max"]["met"]
    assert c["wet_fraction_ratio"]["target"] == "0.85 .. 1.15" and c["wet_fraction_ratio"]["met"]
    assert c["ensemble_seam_ratio"]["met"] and not c["mean_seam_ratio"]["met"]
    # tile seams over the truth's at the same pairs: 1.16 / 1.08, met where the raw 1.16 would not be
    assert c["ensemble_tile_seam_to_truth"]["value"] == pytest.approx(1.16 / 1.08)
    assert c["ensemble_tile_seam_to_truth"]["met"]
    assert c["ensemble_tile_seam_to_truth"]["note"] == "tile seam ratio 1.16 over the truth's 1.08"
    assert c["mean_tile_seam_to_truth"] == {
        "group": 5,
        "value": None,
        "target": "<= 1.1",
        "met": False,
        "note": "tile seam ratio n/a over the truth's 1.08",
    }
    metrics["truth"]["tile_seam_ratio"] = 1.0  # the same raw 1.16 where the truth has no excess: not met
    assert not skill_experiment.criteria(metrics, 0.09, 0.07)["ensemble_tile_seam_to_truth"]["met"]
    assert c["mass_error_claimed_scale"]["met"] and "cell-scale error 3e-07" in c["mass_error_claimed_scale"]["note"]
    tables = skill_experiment.criteria_tables([{"pair": "s4_t1", "criteria": c}])
    assert tables.count("### ") == 6
    assert "| s4_t1 | crps_to_bicubic_mae | 0.5 | <= 0.6 | met |" in tables
    assert "| s4_t1 | spectral_ratio_max | 1.6 | <= 1.5 | NOT met |" in tables


def test_extra_training_networks_never_include_the_evaluation_network():
    assert skill_experiment.extra_networks("none", "knmi") == []
    assert skill_experiment.extra_networks("others", "knmi") == ["mch"]
    assert skill_experiment.extra_networks("others", "mch") == ["knmi"]
    assert skill_experiment.extra_networks(" mch ", "knmi") == ["mch"]
    with pytest.raises(SystemExit, match="evaluation network"):
        skill_experiment.extra_networks("mch,knmi", "knmi")
    with pytest.raises(SystemExit, match="unknown network.*opera"):
        skill_experiment.extra_networks("opera", "knmi")


def test_training_pixel_sizes_are_distinct_ones_and_twos_the_first_the_main_shard():
    assert skill_experiment.pixel_sizes("1,2") == [1, 2]
    assert skill_experiment.pixel_sizes(" 2 ") == [2]
    for bad in ("", "1,1", "3", "1,4"):
        with pytest.raises(SystemExit, match="--train-pixels"):
            skill_experiment.pixel_sizes(bad)


def test_a_run_is_named_by_its_options_that_differ_from_the_defaults():
    """The result's title says which training and sampling options the run changed, so a variant's
    committed .md cannot pass for the default run."""
    p = argparse.ArgumentParser()
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--train-pixels", default="1")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--jobs", type=int, default=2)  # neither training nor sampling: not named
    assert skill_experiment.run_name(p.parse_args(["--jobs", "1"]), p) == "default run"
    a = p.parse_args(["--patch", "48", "--train-pixels", "2,1", "--set", "x=1", "--set", "y=2"])
    assert skill_experiment.run_name(a, p) == "run with --patch 48 --train-pixels 2,1 --set x=1 --set y=2"


@pytest.mark.slow  # ingests and shards the whole BoM day
@pytest.mark.skipif(not (DATA / FILES[0]).is_file(), reason=f"real data {FILES[0]} absent from {DATA}")
def test_dequantised_training_data_is_its_own_store_and_run(tmp_path):
    """--dequantise-train Q: the training day is ingested with --dequantise Q into a store of its own
    name that records Q, where most light-rain values are off BoM's 0.05 mm grid; the setting is part
    of the run's tag."""
    import h5py
    import numpy as np

    train = skill_experiment.preprocess_train(tmp_path, ["s4_t1"], 1, 0.05)
    assert train.name == "train_dq0.05" and (train / "shards" / "s4_t1.h5").is_file()
    with h5py.File(train / "hr.h5") as f:
        assert float(f.attrs["dequantise_mm"]) == 0.05
    from hpcsr.data.store import HRStore

    light = HRStore(train / "hr.h5").read(60, 61)
    light = light[(light > 0) & (light < 0.3)]
    assert light.size > 1000 and np.mean(np.abs(light / 0.05 - np.round(light / 0.05)) > 1e-3) > 0.5
    assert "dequantise_train" in skill_experiment.TRAIN_KEYS  # a run on it never reuses a plain run's exports


@pytest.mark.slow
@pytest.mark.skipif(
    not all((DATA / f).is_file() for f in FILES),
    reason=f"real data {FILES} absent from {DATA} (the shared folder ../shared/data)",
)
def test_quick_run_writes_finite_scores_and_reports(tmp_path):
    out = tmp_path / "results" / "skill.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "skill_experiment.py"),
            "--quick",
            "--train-pixels",
            "1,2",
            "--set",
            "model.pixel_input=true",  # the option's whole path: told per patch, per crop, in the in-domain check
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["benchmark"] == "skill_experiment" and result["quick"] is True
    rows = result["meta"]["pairs"]
    assert [r["pair"] for r in rows] == ["s4_t1", "s4_t2", "s8_t2"]
    for r in rows:
        for key in NUMBERS:
            assert math.isfinite(r[key]) and r[key] >= 0, (r["pair"], key, r[key])
        for key in VERDICTS:
            assert isinstance(r[key], bool), (r["pair"], key)
        assert CRITERIA <= set(r["criteria"]) and isinstance(r["all_met"], bool)
        assert all(isinstance(c["met"], bool) and c["target"] for c in r["criteria"].values())
        assert len(r["rank_histogram"]) == result["meta"]["settings"]["members"] + 1
        assert sum(r["rank_histogram"]) > 0 and r["rank_histogram_shape"]
        folder = out.with_suffix("") / r["pair"]
        for name in ("report.md", "report.html", "metrics.json", "rank_histogram.png", "panels.png"):
            assert (folder / name).stat().st_size > 0, folder / name
        # the evaluation's own bicubic equals the experiment's in-script reference (same crop, same points)
        assert r["references"]["bicubic"]["rmse"] == pytest.approx(r["bicubic_rmse"], rel=1e-4)
    assert len(result["figures"]) == 2 * len(rows)
    assert all(math.isfinite(f["value"]) and math.isfinite(f["baseline"]["value"]) for f in result["figures"])
    md = out.with_suffix(".md").read_text()
    assert "| s8_t2 |" in md and "### 6. " in md
    # model.mean_skip auto on these 10-min steps: the motion start at t = 2 (20-min LR steps), linear at t = 1
    for r in rows:
        meta = json.loads((Path(r["run_dir"]) / "mean" / "export" / "model.json").read_text())
        assert meta["model"]["mean_skip"] == ("linear" if r["pair"] == "s4_t1" else "motion"), r["pair"]
        # --train-pixels 1,2: BoM at 500 m with its validation split, its 1 km train split mixed in
        assert Path(meta["shard"]).parts[-3] == "train", meta["shard"]
        assert [Path(x).parts[-3] for x in meta["extra_shards"]] == ["train_px2"], meta["extra_shards"]
        # several pixel sizes, the networks told each patch's (--set model.pixel_input=true)
        assert meta["model"]["pixel_input"] is True, r["pair"]
    assert "(the mean network's start with model.mean_skip 'motion')" in md
