"""The main job (`hpcsr demo`): its settings compose into valid launches, bad folders are refused,
the progress view reads element logs, and the reduced job (--quick) runs end to end through real
hpcsr-launch processes, with finite metrics, mass conserved at the sampler's scale (checked here
against the shard's LR independently of hpcsr.evaluate), a transfer lineage, and a rerun that
reuses every finished stage. Its report pages open in headless Chromium with every image and
link loading, and its netCDF outputs pass the CF checker (tests/browser.py, tests/test_cf_outputs.py)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpcsr.config import compose
from hpcsr.demo import claim
from hpcsr.demo.progress import latest_line, stderr_of
from hpcsr.demo.settings import FULL, QUICK, SCRATCH, TRANSFER, DemoSize, preprocess_launch, training_launch
from preprocessing.config import from_mapping

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import Browser, page_links  # noqa: E402
from test_cf_outputs import ALLOWED_WARNINGS, cf_check  # noqa: E402


@pytest.mark.parametrize("size", [FULL, QUICK], ids=["full", "quick"])
def test_launches_compose_into_valid_configs(size, tmp_path):
    prep = compose(preprocess_launch(size, tmp_path, "local"))
    assert prep.launcher.stages == ["preprocess"]
    assert sorted(tuple(p) for p in prep.grid.pairs) == sorted(SCRATCH + TRANSFER)
    hours = 24 * size.days
    settings = from_mapping(prep.preprocess)  # what the preprocess stage checks when the plan is built
    assert settings.source == "synthetic" and (settings.synthetic.days, settings.synthetic.size) == (
        size.days,
        size.size,
    )
    assert [round(f * hours, 6) for f in settings.split_fractions] == [
        hours - size.val_hours - size.test_hours,
        size.val_hours,
        size.test_hours,
    ]
    seed = tmp_path / "seeds" / "s5_t3_mean.pt"
    child = compose(training_launch(size, tmp_path, "local", TRANSFER, {"mean": seed}))
    assert child.launcher.stages == ["mean", "diffusion", "sample"] and child.grid.pairs == [[5, 3]]
    assert child.launcher.stage_overrides == {
        "mean": [f"train.steps={size.mean_steps}", f"train.init_from={seed}"],
        "diffusion": [f"train.steps={size.diffusion_steps}"],
    }
    assert (
        child.model.widths == (8, 16, 32)
        and child.factor.patch == size.patch
        and child.data_dir == str(tmp_path / "data")
    )
    assert child.cluster.tasks_per_node == 1 and child.data.batch_size == size.batch
    for s, t in SCRATCH + TRANSFER:  # every pair's validation split holds one context window of L blocks
        r = compose(
            training_launch(size, tmp_path, "local", [(s, t)]) + [f"factor.s={s}", f"factor.t={t}"]
        ).factor.recipe()
        assert r.context * t <= size.val_hours and size.patch % s == 0 and size.size % size.patch == 0


def test_size_checks_name_the_bad_value():
    with pytest.raises(ValueError, match="patch=30 must be a multiple of 2, 4, 5"):
        DemoSize(**{**QUICK.__dict__, "patch": 30})
    with pytest.raises(ValueError, match="val_hours=10"):
        DemoSize(**{**QUICK.__dict__, "val_hours": 10})


def test_a_folder_of_other_settings_is_refused_untouched(tmp_path):
    claim(tmp_path, {"mode": "quick", "size": {"a": 1}})
    claim(tmp_path, {"mode": "quick", "size": {"a": 1}})  # the same settings: fine
    (tmp_path / "keep.txt").write_text("results")
    with pytest.raises(ValueError, match=r"other settings \(mode differ\): use another --out"):
        claim(tmp_path, {"mode": "full", "size": {"a": 1}})
    assert json.loads((tmp_path / "demo.json").read_text())["mode"] == "quick"
    assert (tmp_path / "keep.txt").read_text() == "results"


def test_bad_arguments_exit_2(tmp_path):
    from hpcsr.demo import main

    with pytest.raises(SystemExit) as stop:
        main(["--backend", "cloud"])
    assert stop.value.code == 2
    (tmp_path / "demo.json").write_text(json.dumps({"mode": "full"}))
    assert main(["--quick", "--out", str(tmp_path)]) == 2


def test_progress_reads_the_last_bar_of_an_element_log(tmp_path):
    err = tmp_path / "12_0_log.err"
    err.write_text(
        "INFO starting\ntrain mean:  10%|#  | 1/10 [00:01<00:09]\rtrain mean:  50%|##### | 5/10 [00:05<00:05]\r"
        "WARNING a note\n"
    )
    assert latest_line(str(err)).startswith("train mean:  50%")
    out = tmp_path / "12_0_log.out"
    out.write_text("plain line one\nplain line two\n")
    assert latest_line(None, str(out)) == "plain line two"
    assert stderr_of(str(out)) == str(err) and stderr_of(None) is None


def _ensemble_mass_check(ensemble: Path, shard: Path) -> float:
    """Largest relative difference, over the sampler's exact mass regions (the whole domain for the
    default blended tiles) and all members, between the region sums of coarsen(member) and of the
    shard's LR (cells valid on both sides)."""
    import xarray as xr

    from hpcsr.coarsen import coarsen
    from hpcsr.data.store import Shard

    with xr.open_dataset(ensemble) as ds, Shard(shard) as sh:
        s, t, region = int(ds.attrs["factor_s"]), int(ds.attrs["factor_t"]), int(ds.attrs["mass_region_cells"])
        members = ds["precip"].transpose("member", "time", "y", "x").values  # (M, T, Y, X)
        ends = ds["time"].values.astype("datetime64[s]").astype(np.int64)[t - 1 :: t]  # end of each LR block
        lr = np.stack([sh.lr[int(np.flatnonzero(sh.time_s == e)[0])] for e in ends])  # (N, Y/s, X/s)
    blocks = coarsen(members, s, t)  # (M, N, Y/s, X/s)
    valid = np.isfinite(lr)[None] & np.isfinite(blocks)
    worst = 0.0
    ny, nx = lr.shape[-2:]
    region = region or max(ny, nx)
    for y in range(0, ny, region):
        for x in range(0, nx, region):
            v = valid[..., y : y + region, x : x + region]
            have = np.where(v, blocks[..., y : y + region, x : x + region], 0).sum(axis=(-2, -1))
            want = np.where(v, np.broadcast_to(lr[None, :, y : y + region, x : x + region], v.shape), 0).sum(
                axis=(-2, -1)
            )
            wet = want > 1e-3
            if wet.any():
                worst = max(worst, float(np.max(np.abs(have[wet] - want[wet]) / want[wet])))
    return worst


@pytest.mark.slow
def test_quick_demo_end_to_end_and_rerun_reuses_everything(tmp_path, launch_env):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "hpcsr.cli", "demo", "--quick", "--backend", "local", "--out", str(out)]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=launch_env, timeout=1500)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    for n in range(1, 7):
        assert f"[{n}/6]" in first.stdout
    assert re.search(rf"{out / 'data' / 'raw' / 'H_COMEPHORE_'}\d{{6}}\.tar \(", first.stdout)  # made by launch 1
    index = out / "report" / "index.html"
    assert f"Report: {index}" in first.stdout

    # the index links every pair's report, the grid report and the figures, all present
    html = index.read_text()
    links = re.findall(r"(?:href|src)='([^']+)'", html)
    for pair in ("s2_t1", "s4_t2", "s5_t3"):
        assert f"{pair}/report.html" in links
    for link in links:
        assert (out / "report" / link).is_file() or Path(link).is_file(), link
    assert "transfer from s4_t2" in html

    for pair in ("s2_t1", "s4_t2", "s5_t3"):
        metrics = json.loads((out / "report" / pair / "metrics.json").read_text())
        assert metrics["members"] == 10 and metrics["pair"]["name"] == pair
        for name in ("ensemble", "nearest", "bicubic", "mean"):
            for key in ("rmse", "mae", "crps"):
                assert math.isfinite(metrics["forecasts"][name][key]), (pair, name, key)
        assert metrics["forecasts"]["ensemble"]["mass"]["tile_relative"] < 1e-5  # the sampler's regions
        for png in ("panels.png", "spectra.png", "rank_histogram.png"):
            assert (out / "report" / pair / png).stat().st_size > 1000
        assert (
            _ensemble_mass_check(out / "runs" / pair / "sample" / "ensemble.nc", out / "data" / "shards" / f"{pair}.h5")
            < 1e-4
        )

    # s5_t3 descends from s4_t2 through a hpcsr.transfer seed, for both stages
    for stage in ("mean", "diffusion"):
        report = json.loads((out / "seeds" / f"s5_t3_{stage}.report.json").read_text())
        assert report["status"] == "ok" and report["source"]["pair"] == "s4_t2"
        lineage = json.loads((out / "runs" / "s5_t3" / stage / "export" / "model.json").read_text())["lineage"]
        assert any(e.get("pair") == "s4_t2" for e in lineage), lineage

    # what a user opens: the index and every pair's report in a real browser, every image decoded
    # and every linked file present; the files climate tools read pass the CF checker
    pages = [index, out / "report" / "grid" / "report.html"] + [
        out / "report" / p / "report.html" for p in ("s2_t1", "s4_t2", "s5_t3")
    ]
    with Browser() as browser:
        for page in pages:
            assert browser.check(page, tmp_path / f"{page.parent.name}.png") == [], page
            assert all(target.is_file() for target in page_links(page)), page
    for nc in (out / "runs" / "s4_t2" / "sample" / "ensemble.nc", out / "report" / "truth" / "s4_t2.nc"):
        errors, warnings = cf_check(nc, tmp_path)
        assert errors == [], errors
        assert all(any(key in w for key in ALLOWED_WARNINGS) for w in warnings), warnings

    markers = sorted(out.glob("**/launch/*.done.json"))
    assert len(markers) == 1 + 3 * 3  # preprocess, and mean/diffusion/sample of 3 pairs
    before = {p: p.stat().st_mtime for p in markers}
    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=launch_env, timeout=600)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert second.stdout.count("every element finished before with this configuration") == 3
    assert "reusing it" in second.stdout  # the seeds
    assert {p: p.stat().st_mtime for p in markers} == before
    assert sorted(p.name for p in (out / "launch").iterdir() if p.is_dir()) == ["0001", "0002", "0003"]
