"""`python -m hpcsr.evaluate` on netCDF files made from real Comephore data: outputs, report,
coordinate alignment, factor grid and bad input."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from synthetic_radar import write_radar_nc

from hpcsr.coarsen import coarsen
from hpcsr.evaluate import evaluate
from hpcsr.evaluate.baselines import bicubic_linear
from hpcsr.evaluate.cli import main

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_case(folder: Path, s: int, t: int, members: int = 10, seed: int = 0):
    """HR truth (a synthetic storm on the Comephore sample's grid, cropped to whole blocks), LR with
    end-of-block times, and an ensemble of randomly perturbed bicubic fields with a `precip_mean`
    variable, as netCDF files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    with xr.open_dataset(write_radar_nc(folder / "storm.nc", (8, 117, 67))) as ds:
        hr = ds.precip.isel(
            time=slice(0, ds.sizes["time"] // t * t),
            y=slice(0, ds.sizes["y"] // s * s),
            x=slice(0, ds.sizes["x"] // s * s),
        ).load()
    lr_values = coarsen(hr.values, s, t)
    coords = {
        "time": hr.time.values[t - 1 :: t],
        "y": hr.y.values.reshape(-1, s).mean(1),
        "x": hr.x.values.reshape(-1, s).mean(1),
    }
    xr.Dataset({"precip": (("time", "y", "x"), lr_values)}, coords=coords).to_netcdf(folder / "lr.nc")
    hr.to_dataset().to_netcdf(folder / "hr.nc")
    rng = np.random.default_rng(seed)
    base = bicubic_linear(lr_values, s, t)
    ens = np.stack([base * rng.lognormal(-0.1, 0.45, base.shape).astype(np.float32) for _ in range(members)])
    out = xr.Dataset(
        {"precip": (("member", "time", "y", "x"), ens), "precip_mean": (("time", "y", "x"), base)},
        coords={"member": np.arange(members), "time": hr.time, "y": hr.y, "x": hr.x},
        attrs={"factor_pair": f"s{s}_t{t}"},
    )
    out.x.attrs["units"] = "m"
    out.to_netcdf(folder / "ens.nc")
    return hr.values, lr_values, ens


@pytest.mark.slow  # a whole evaluation with figures
def test_cli_end_to_end_writes_metrics_and_report(tmp_path):
    truth, lr, ens = _write_case(tmp_path, 3, 2)
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpcsr.evaluate",
            "--truth",
            tmp_path / "hr.nc",
            "--ensemble",
            tmp_path / "ens.nc",
            "--lr",
            tmp_path / "lr.nc",
            "--out",
            out,
            "--scales",
            "1,9",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "ensemble" in proc.stdout and "bicubic" in proc.stdout
    result = json.loads((out / "metrics.json").read_text())
    assert result["pair"] == {"s": 3, "t": 2, "name": "s3_t2"} and result["members"] == 10
    assert set(result["forecasts"]) == {"ensemble", "nearest", "bicubic", "mean"}
    assert result["settings"]["pixel_size_km"] == pytest.approx(1.0)
    assert result["forecasts"]["nearest"]["mass"]["cell_relative"] == 0.0
    # the file route gives the same numbers as the array API
    direct = evaluate(truth, ens, lr, 3, 2, mean=bicubic_linear(lr, 3, 2), scales=(1, 9), progress=False)
    for name, res in direct["forecasts"].items():
        assert result["forecasts"][name]["crps"] == pytest.approx(res["crps"], rel=1e-6)
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("pair,s,t,forecast")
    for png in ("panels", "spectra", "rank_histogram", "qq", "fss"):
        data = (out / f"{png}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, png
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert "<img src='panels.png'" in html and "![rank histogram of the truth](rank_histogram.png)" in md
    assert not list(out.glob(".*tmp*"))  # no temporary file left behind


def test_cli_lines_up_larger_truth_and_lr_by_coordinates(tmp_path):
    truth, lr, _ = _write_case(tmp_path / "full", 3, 2)
    with xr.open_dataset(tmp_path / "full" / "ens.nc") as ds:  # ensemble over a window: steps 2..5, a sub-domain
        ds.isel(time=slice(2, 6), y=slice(30, 90), x=slice(12, 48)).to_netcdf(tmp_path / "ens_window.nc")
    assert (
        main(
            [
                "--truth",
                str(tmp_path / "full" / "hr.nc"),
                "--ensemble",
                str(tmp_path / "ens_window.nc"),
                "--lr",
                str(tmp_path / "full" / "lr.nc"),
                "--out",
                str(tmp_path / "out"),
                "--scales",
                "1",
                "--quiet",
                "--baselines",
                "nearest",
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert result["shape"] == {"time": 4, "y": 60, "x": 36}
    with xr.open_dataset(tmp_path / "ens_window.nc") as ds:
        direct = evaluate(
            truth[2:6, 30:90, 12:48],
            ds.precip.values,
            lr[1:3, 10:30, 4:16],
            3,
            2,
            baselines=("nearest",),
            mean=ds.precip_mean.values,
            scales=(1,),
            progress=False,
        )
    assert result["forecasts"]["ensemble"]["rmse"] == pytest.approx(direct["forecasts"]["ensemble"]["rmse"], rel=1e-6)
    assert result["forecasts"]["nearest"]["mass"]["cell_relative"] == 0.0  # the right LR blocks were picked


@pytest.mark.slow  # two whole evaluations with figures
@pytest.mark.filterwarnings("ignore:4 members")
def test_run_evaluation_of_the_config_section_is_the_cli(tmp_path):
    """`hpcsr evaluate FLAGS` and run_evaluation(the evaluate section with the same keys) write the
    same metrics; a grid report from `pairs` alone returns no metrics of its own."""
    from hpcsr.config import compose
    from hpcsr.evaluate.config import EvaluateConfig
    from hpcsr.evaluate.run import EvaluationResult, run_evaluation

    _write_case(tmp_path, 3, 2, members=4)
    files = {"truth": "hr.nc", "ensemble": "ens.nc", "lr": "lr.nc"}
    flags = [x for key, name in files.items() for x in (f"--{key}", str(tmp_path / name))]
    assert main([*flags, "--out", str(tmp_path / "cli"), "--scales", "1,9", "--baselines", "nearest", "--quiet"]) == 0
    keys = [f"evaluate.{key}={tmp_path / name}" for key, name in files.items()]
    cfg = compose(
        [*keys, f"evaluate.out={tmp_path / 'typed'}", "evaluate.scales=[1,9]", "evaluate.baselines=[nearest]"]
        + ["evaluate.progress=false"]
    ).evaluate
    result = run_evaluation(cfg)
    assert isinstance(result, EvaluationResult) and result.written["json"] == tmp_path / "typed" / "metrics.json"
    assert set(result.metrics["forecasts"]) == {"ensemble", "nearest", "mean"}
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert json.loads(result.written["json"].read_text()) == cli
    grid = run_evaluation(EvaluateConfig(pairs=(str(result.written["json"]),), out=str(tmp_path / "grid")))
    assert grid.metrics is None and grid.written["html"].is_file()


@pytest.mark.slow  # whole evaluations with figures
def test_cli_perfect_model_and_factor_grid(tmp_path):
    for s, t in ((3, 1), (3, 2)):
        _write_case(tmp_path / f"s{s}t{t}", s, t, members=6)
        with pytest.warns(UserWarning, match="6 members < 10"):
            code = main(
                [
                    "--truth",
                    str(tmp_path / f"s{s}t{t}" / "hr.nc"),
                    "--ensemble",
                    str(tmp_path / f"s{s}t{t}" / "ens.nc"),
                    "--out",
                    str(tmp_path / f"out{s}{t}"),
                    "--scales",
                    "1",
                    "--quiet",
                    "--baselines",
                    "bicubic",
                ]
            )
        assert code == 0
    result = json.loads((tmp_path / "out32" / "metrics.json").read_text())
    assert result["lr_source"].startswith("perfect model")
    assert result["forecasts"]["ensemble"]["flags"] == ["fewer_than_10_members"]
    assert result["warnings"] == [
        "6 members < 10: fair CRPS, spread-skill and rank histogram are noisy; results flagged 'fewer_than_10_members'"
    ]
    grid = tmp_path / "grid"
    assert (
        main(
            [
                "--pairs",
                str(tmp_path / "out31" / "metrics.json"),
                str(tmp_path / "out32" / "metrics.json"),
                "--out",
                str(grid),
            ]
        )
        == 0
    )
    assert (grid / "factor_grid.png").read_bytes().startswith(PNG_MAGIC)
    md = (grid / "report.md").read_text()
    assert "| s3_t1 |" in md and "| s3_t2 |" in md


@pytest.mark.filterwarnings("ignore:3 members")
@pytest.mark.parametrize(
    "mutate, args, message",
    [
        ("drop_member", [], "dims"),
        (
            "shift_start",
            [],
            r"LR .*must start at a block's first step\) lacks 3 of the time values needed, first 2011-11-04T23",
        ),
        (None, ["--variable", "rain"], "no variable 'rain'"),
        (None, ["--s", "5", "--t", "2"], "not whole blocks of \\(s=5, t=2\\)"),
        (None, ["--scales", "1,4"], "odd integer"),
    ],
)
def test_cli_bad_input_exits_2_with_a_named_reason(tmp_path, capsys, mutate, args, message):
    _write_case(tmp_path, 3, 2, members=3)
    ens_path = tmp_path / "ens.nc"
    if mutate:
        with xr.open_dataset(ens_path) as ds:
            bad = ds.isel(member=0) if mutate == "drop_member" else ds.isel(time=slice(1, 7))
            bad.load()
        ens_path = tmp_path / "bad.nc"
        bad.to_netcdf(ens_path)
    code = main(
        [
            "--truth",
            str(tmp_path / "hr.nc"),
            "--ensemble",
            str(ens_path),
            "--lr",
            str(tmp_path / "lr.nc"),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            *args,
        ]
    )
    assert code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out" / "metrics.json").exists()
