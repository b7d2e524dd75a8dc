"""benchmarks/skill_experiment.py --quick end to end on the real radar files: preprocessing of the
BoM (training) and MeteoSwiss (evaluation) days, both training stages of two pairs, sampling,
evaluation and the result files. Seconds of training cannot show skill, so only the shape of the
result is checked: every number is there and finite, and the reports with their figures exist.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
FILES = ("bom_c10_20201031.nc", "mch_aqc_20160711.nc")
NUMBERS = ("ensemble_crps", "ensemble_rmse", "ensemble_mae", "spread_skill", "mean_rmse", "mean_mae", "bicubic_rmse",
           "bicubic_mae", "nearest_rmse", "nearest_mae", "bicubic_cell_mass_rmse", "bicubic_cell_mass_mae",
           "untrained_mean_rmse", "untrained_mean_mae")
VERDICTS = ("crps_beats_bicubic_mae", "mean_rmse_beats_bicubic", "crps_beats_bicubic_cell_mass_mae",
            "mean_rmse_beats_bicubic_cell_mass")


@pytest.mark.slow
@pytest.mark.skipif(not all((DATA / f).is_file() for f in FILES),
                    reason=f"real data {FILES} absent from {DATA} (the shared folder ../shared/data)")
def test_quick_run_writes_finite_scores_and_reports(tmp_path):
    out = tmp_path / "results" / "skill.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "skill_experiment.py"), "--quick",
                           "--work", str(tmp_path / "work"), "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["benchmark"] == "skill_experiment" and result["quick"] is True
    rows = result["meta"]["pairs"]
    assert [r["pair"] for r in rows] == ["s4_t1", "s4_t2"]
    for r in rows:
        for key in NUMBERS:
            assert math.isfinite(r[key]) and r[key] >= 0, (r["pair"], key, r[key])
        for key in VERDICTS:
            assert isinstance(r[key], bool), (r["pair"], key)
        assert len(r["rank_histogram"]) == result["meta"]["settings"]["members"] + 1
        assert sum(r["rank_histogram"]) > 0 and r["rank_histogram_shape"]
        folder = out.with_suffix("") / r["pair"]
        for name in ("report.md", "report.html", "metrics.json", "rank_histogram.png", "panels.png"):
            assert (folder / name).stat().st_size > 0, folder / name
        # the evaluation's own bicubic equals the experiment's in-script reference (same crop, same points)
        assert r["references"]["bicubic"]["rmse"] == pytest.approx(r["bicubic_rmse"], rel=1e-4)
    assert len(result["figures"]) == 2 * len(rows)
    assert all(math.isfinite(f["value"]) and math.isfinite(f["baseline"]["value"]) for f in result["figures"])
    assert "| s4_t2 |" in out.with_suffix(".md").read_text()
