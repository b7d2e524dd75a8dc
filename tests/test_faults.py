"""Fault injection (issue 15): a failed rerun leaves the previous complete output byte-identical,
and bad input is refused with a clear error before anything is replaced. Each test names the
finding of issue 15 it reproduces; all use real files (HDF5 stores, netCDF inputs)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from synthetic_radar import write_radar_nc

from preprocessing import cli as preprocess_cli


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """A synthetic storm in the layout of the Comephore sample (8 hourly frames of 117 x 67 km)."""
    return write_radar_nc(tmp_path_factory.mktemp("faults") / "storm.nc", (8, 117, 67))


def digests(folder: Path) -> dict:
    """sha256 of every file under `folder`, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def variant(src: Path, out: Path, change) -> Path:
    """A copy of the netCDF `src` with its precip values replaced by change(values)."""
    with xr.open_dataset(src) as ds:
        ds = ds.load()
    ds["precip"].values[...] = change(ds["precip"].values)
    ds.to_netcdf(out)
    return out


def test_ingest_rerun_on_all_missing_input_keeps_the_store(sample, tmp_path, capsys):
    """Finding 1: a rerun into the same folder with an all-NaN file of the same shape used to replace
    hr.h5 with an empty store (and crash on an index error) while the manifest kept the old checksum."""
    out = tmp_path / "data"
    assert preprocess_cli.main(["ingest", "--out", str(out), "--netcdf", str(sample), "--quiet"]) == 0
    before = digests(out)
    empty = variant(sample, tmp_path / "all_missing.nc", lambda v: np.full_like(v, np.nan))
    capsys.readouterr()
    assert preprocess_cli.main(["ingest", "--out", str(out), "--netcdf", str(empty), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "no usable frame" in err and "left as it was" in err, err
    after = digests(out)
    for name in ("hr.h5", "manifest.json"):
        assert after[name] == before[name], f"{name} changed by the failed rerun"


# ------------------------------------------------------------------ sampling: inputs checked against the model

COMEPHORE_GRID = {"interval_minutes": 60, "units": "m", "hr_pixel": [1000.0, 1000.0]}  # 1 km, hourly


def comephore_variant(src: Path, out: Path, *, stretch: float = 1.0, interval: int | None = None, values=None) -> Path:
    """The netCDF `src`'s top-left 40 x 36 px with its x/y spacing multiplied by `stretch`, its
    interval_minutes replaced, or its values replaced."""
    with xr.open_dataset(src) as ds:
        ds = ds.isel(y=slice(0, 40), x=slice(0, 36)).load()
    for axis in ("x", "y"):
        ds[axis] = (axis, ds[axis].values[0] + (ds[axis].values - ds[axis].values[0]) * stretch, ds[axis].attrs)
    if interval is not None:
        ds.attrs["interval_minutes"] = ds["precip"].attrs["interval_minutes"] = interval
    if values is not None:
        ds["precip"].values[...] = values(ds["precip"].values)
    ds.to_netcdf(out)
    return out


@pytest.mark.parametrize(
    "case,expected",
    [
        ({"stretch": 2.0}, "HR pixel 2000 m along x in the input"),  # LR made at another factor: 2 km cells read as s=2
        ({"interval": 30}, "HR step 30 min in the input, 60 min in the training data"),
        ({"values": lambda v: np.full_like(v, np.nan)}, "has no value in the"),
    ],
)
def test_sample_refuses_inputs_the_model_was_not_trained_for(sample, tmp_path, capsys, case, expected):
    """Finding 4: an input on another grid, at another cadence, or all missing, used to be sampled
    (exit 0, an ensemble on the wrong scales or all NaN). Now refused before the model runs, naming
    both grids; nothing is written."""
    from test_sample import PAIR, make_export, run_sample

    export = make_export(tmp_path / "m.pt", PAIR, data_grid=COMEPHORE_GRID)
    source = comephore_variant(sample, tmp_path / "input.nc", **case)
    out = tmp_path / "ens.nc"
    capsys.readouterr()
    assert (
        run_sample("--export", export, "--hr", source, "--coarsen", "--members", "2", "--steps", "1", "--out", out) == 2
    )
    err = capsys.readouterr().err
    assert expected in err, err
    assert not out.exists() and not list(tmp_path.glob(".ens.nc*"))


@pytest.mark.slow  # two `hpcsr sample` runs
def test_sample_on_another_grid_when_asked(sample, tmp_path):
    """--allow-other-grid samples the 2 km input anyway (a deliberate transfer), and an input on the
    training grid needs no flag."""
    from test_sample import PAIR, make_export, run_sample

    export = make_export(tmp_path / "m.pt", PAIR, data_grid=COMEPHORE_GRID)
    args = ["--coarsen", "--members", "2", "--steps", "1"]
    same = comephore_variant(sample, tmp_path / "same.nc")
    other = comephore_variant(sample, tmp_path / "other.nc", stretch=2.0)
    assert run_sample("--export", export, "--hr", same, *args, "--out", tmp_path / "a.nc") == 0
    assert run_sample("--export", export, "--hr", other, *args, "--out", tmp_path / "b.nc", "--allow-other-grid") == 0
    with xr.open_dataset(tmp_path / "b.nc") as ds:
        assert np.isfinite(ds["precip"].values).any()


# ------------------------------------------------------------------ configuration

REPO = Path(__file__).resolve().parents[1]


def hpcsr(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hpcsr.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_numeric_keys_refuse_nan_and_inf(value):
    """Finding 5: train.lr=nan and inf passed validation."""
    from hpcsr.config import ConfigError, compose

    with pytest.raises(ConfigError, match=f"train.lr={value} must be a finite number"):
        compose(["model=tiny", f"train.lr={value}"])


@pytest.fixture
def config_copy(tmp_path):
    """A copy of the repository's configs/ with an empty and a malformed cluster file."""
    copy = tmp_path / "configs"
    shutil.copytree(REPO / "configs", copy)
    (copy / "cluster" / "empty.yaml").write_text("")
    (copy / "cluster" / "broken.yaml").write_text("name: broken\nnodes: [1, 2\n")
    return copy


@pytest.mark.slow  # one process per command
def test_empty_and_malformed_yaml_name_the_file_in_one_line(config_copy):
    """Finding 5: an empty cluster YAML silently planned 1-node CPU jobs; a malformed one printed a
    100-line yaml traceback."""
    env = {"HPCSR_CONFIG_DIR": str(config_copy)}
    out = hpcsr("train", "cluster=empty", env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"{config_copy / 'cluster' / 'empty.yaml'} is empty" in out.stderr
    out = hpcsr("train", "cluster=broken", env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert f"malformed YAML in {config_copy / 'cluster' / 'broken.yaml'}, line 3" in out.stderr


@pytest.mark.slow  # one process per command
def test_a_config_folder_that_does_not_exist_is_an_error(tmp_path):
    """Finding 5: HPCSR_CONFIG_DIR pointing at a missing folder was ignored (the packaged configs used)."""
    out = hpcsr("train", "model=tiny", env={"HPCSR_CONFIG_DIR": str(tmp_path / "nowhere")})
    assert out.returncode == 2 and f"HPCSR_CONFIG_DIR={tmp_path / 'nowhere'}: no such folder" in out.stderr


@pytest.mark.slow  # several `hpcsr train` processes
def test_train_setup_errors_are_one_line_without_traceback(tmp_path):
    """Finding 7: `hpcsr train` printed a full traceback before its one-line message on every setup
    error; --debug still shows it."""
    out = hpcsr("train", "model=tiny", f"data_dir={tmp_path}")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"hpcsr train: shard {tmp_path}/shards/s10_t3.h5 for factor pair s10_t3 does not exist: run `hpcsr-preprocess` "
        "with this pair, or set data.shard / data_dir"
    ]
    out = hpcsr("train", "model=tiny", f"data_dir={tmp_path}", "--debug")
    assert out.returncode == 2 and "Traceback" in out.stderr


# ------------------------------------------------------------------ outputs: early checks, killed writers


@pytest.mark.slow  # one process per command
def test_outputs_below_a_file_are_refused_before_any_model_is_read(tmp_path):
    """Finding 7: `sample` (after loading the model) and `transfer seed` gave a raw FileExistsError
    traceback when --out lay below a file. The export named here does not exist: the output check
    comes first, so its message is the one shown."""
    blocker = tmp_path / "afile"
    blocker.write_text("")
    missing = tmp_path / "no_export"
    for args in (
        ["sample", "--export", missing, "--hr", missing, "--coarsen", "--out", blocker / "ens.nc"],
        ["transfer", "seed", missing, "--to", "4x2", "--out", blocker / "seed.pt"],
    ):
        out = hpcsr(*map(str, args))
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert f"{blocker} is a file, not a folder" in out.stderr, out.stderr


def test_a_new_writer_removes_what_killed_writers_left(tmp_path):
    """Temporaries of a dead process on this host go; a live writer's and another host's stay."""
    from hpcsr.atomic import HOST, AtomicPath

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "ens.nc"
    left = tmp_path / f".ens.nc.{HOST}.{dead.pid}-0000.tmp"
    live = tmp_path / f".ens.nc.{HOST}.{os.getpid()}-1111.tmp"
    other_host = tmp_path / f".ens.nc.elsewhere.{dead.pid}-2222.tmp"
    for p in (left, live, other_host):
        p.write_text("partial")
    with AtomicPath(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done"
    assert not left.exists() and live.exists() and other_host.exists()


# `hpcsr sample` whose writer holds after its first chunk, saying so on stdout: a kill then always
# lands mid-write, however fast the machine samples.
HOLD_AFTER_FIRST_WRITE = """
import sys, time
from hpcsr.cli import main
from hpcsr.sampling.writer import EnsembleWriter

write_mean = EnsembleWriter.write_mean

def write_then_hold(self, *args):
    write_mean(self, *args)
    print("first chunk written", flush=True)
    time.sleep(3600)

EnsembleWriter.write_mean = write_then_hold
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # two `hpcsr sample` processes
def test_killed_sample_leaves_nothing_that_a_rerun_does_not_clean(sample, tmp_path):
    """Finding 7: a sample killed with SIGKILL mid-write left .ens.nc.<pid>.tmp that later runs never
    removed. The rerun writes the ensemble and removes the leftover."""
    import signal

    from test_sample import PAIR, make_export

    export = make_export(tmp_path / "m.pt", PAIR, data_grid=COMEPHORE_GRID)
    out = tmp_path / "ens.nc"
    hr = comephore_variant(sample, tmp_path / "hr.nc")
    args = ["sample", "--export", str(export), "--hr", str(hr), "--coarsen", "--members", "2", "--steps", "2"]
    args += ["--time-chunk", "1", "--out", str(out), "--quiet"]
    held = [sys.executable, "-c", HOLD_AFTER_FIRST_WRITE, *args]
    proc = subprocess.Popen(held, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "first chunk written", f"the sampler ended with {proc.wait()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert not out.exists() and list(tmp_path.glob(".ens.nc.*.tmp"))
    rerun = subprocess.run([sys.executable, "-m", "hpcsr.cli", *args], cwd=REPO, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert out.is_file() and not list(tmp_path.glob(".ens.nc.*.tmp"))


# ------------------------------------------------------------------ evaluation: the report folder whole


@pytest.mark.slow  # two whole evaluations with figures
def test_failed_evaluation_rerun_leaves_the_previous_report_byte_identical(tmp_path, monkeypatch):
    """Finding 2: a rerun that failed while drawing (the FSS figure's log axis) had already
    overwritten metrics.json/csv and left the older report and figures: a folder mixing two runs.
    The failure is injected in the figure code here (any failure after the scores would do)."""
    from test_eval_cli import _write_case

    from hpcsr.evaluate import plots
    from hpcsr.evaluate.cli import main as evaluate_main

    _write_case(tmp_path, 3, 2)
    out = tmp_path / "report"
    args = [
        "--truth",
        str(tmp_path / "hr.nc"),
        "--ensemble",
        str(tmp_path / "ens.nc"),
        "--out",
        str(out),
        "--scales",
        "1",
        "--quiet",
    ]
    assert evaluate_main(args) == 0
    (out / "from_an_older_run.png").write_bytes(b"old")
    before = digests(out)

    def broken(*a, **k):
        raise RuntimeError("injected: the figure cannot be drawn")

    monkeypatch.setattr(plots, "plot_fss", broken)
    with pytest.raises(RuntimeError, match="injected"):
        evaluate_main(args + ["--thresholds", "0.5"])
    assert digests(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".report")) == []
    monkeypatch.undo()
    assert evaluate_main(args) == 0  # a good rerun replaces the folder whole: no file of the older run
    assert not (out / "from_an_older_run.png").exists() and (out / "report.html").is_file()


def test_evaluation_refuses_to_replace_a_folder_of_other_files(tmp_path):
    """The report folder is replaced whole, so a folder that is not a report is refused, not emptied."""
    from hpcsr.atomic import AtomicFolder

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="holds other files"):
        AtomicFolder(tmp_path / "mine", "report.md")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_a_crash_mid_swap_is_undone_by_the_next_writer(tmp_path):
    """Killed between moving the old folder aside and moving the new one in: the next writer finds
    the folder missing and its previous version under .old, and puts it back before starting."""
    from hpcsr.atomic import HOST, AtomicFolder

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    aside = tmp_path / f".report.{HOST}.{dead.pid}-abcd.old"
    half = tmp_path / f".report.{HOST}.{dead.pid}-abcd.tmp"
    for folder in (aside, half):
        folder.mkdir()
        (folder / "report.md").write_text(folder.suffix)
    writer = AtomicFolder(tmp_path / "report", "report.md")
    assert (tmp_path / "report" / "report.md").read_text() == ".old" and not aside.exists() and not half.exists()
    writer.discard()


# ------------------------------------------------------------------ exports: verified before use


def test_a_damaged_export_is_refused_by_name(sample, tmp_path):
    """Finding 3, exports: an export whose bytes changed after it was written (same size) is refused
    before sampling or transfer uses it; its JSON beside it keeps the digest."""
    from test_sample import PAIR, make_export

    from hpcsr.export import ExportError, load_export

    export = make_export(tmp_path / "m.pt", PAIR)
    load_export(export)
    data = bytearray(export.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit
    export.write_bytes(bytes(data))
    with pytest.raises(ExportError, match=r"m.pt is damaged: its SHA-256 differs from the one recorded in m.json"):
        load_export(export)
    out = hpcsr("sample", "--export", str(export), "--hr", str(sample), "--coarsen", "--out", str(tmp_path / "e.nc"))
    assert out.returncode == 2 and "is damaged" in out.stderr and "Traceback" not in out.stderr


# ------------------------------------------------------------------ preprocessing: counted, never silent


@pytest.fixture(scope="module")
def gtif(tmp_path_factory) -> Path:
    """A folder of eight hourly Comephore GeoTIFFs, 2011-11-04 21 UTC to 2011-11-05 04 UTC
    (YYYYMMDDHH_RR.gtif, the hour's end), cut from preprocessing.synth's monthly archive."""
    import tarfile

    from preprocessing.synth import SynthConfig, synthesize

    work = tmp_path_factory.mktemp("gtif")
    (archive,) = synthesize(work / "tars", SynthConfig(start="2011-11-04", days=2, size=48), progress=False)
    folder = work / "gtif"
    folder.mkdir()
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if "2011110421" <= Path(member.name).name[:10] <= "2011110504":
                (folder / Path(member.name).name).write_bytes(tar.extractfile(member).read())
    assert len(list(folder.iterdir())) == 8
    return folder


def manifest_entry(out: Path) -> dict:
    import json

    return json.loads((out / "manifest.json").read_text())["outputs"]["hr.h5"]


def test_a_raster_with_an_unreadable_name_is_counted(gtif, tmp_path, caplog):
    """Finding 6: GeoTIFFs whose names do not match YYYYMMDDHH_<KIND>.gtif were skipped with no
    message or count. Other files (a README) stay silent."""
    folder = tmp_path / "gtif"
    shutil.copytree(gtif, folder)
    (folder / "2011110504_RR.gtif").rename(folder / "2011110504_RR (copy).gtif")
    (folder / "README.txt").write_text("notes")
    with caplog.at_level("WARNING"):
        assert (
            preprocess_cli.main(["ingest", "--out", str(tmp_path / "out"), "--comephore", str(folder), "--quiet"]) == 0
        )
    assert "2011110504_RR (copy).gtif: not named YYYYMMDDHH_<KIND>.gtif" in caplog.text
    assert "README" not in caplog.text
    assert manifest_entry(tmp_path / "out")["skipped"] == {"bad-name": 1}


def test_a_cut_archive_counts_the_hours_it_lost(gtif, tmp_path, caplog):
    """Finding 6: a tar cut mid-member warned, but the summary said '0 gap(s)' (the lost hours lie
    after the last frame read, so they are no gap between frames)."""
    import tarfile

    archive = tmp_path / "H_COMEPHORE_201111.tar"
    with tarfile.open(archive, "w") as tar:
        for f in sorted(gtif.iterdir()):
            tar.add(f, arcname=f.name)
    members = tarfile.open(archive).getmembers()
    cut = members[5].offset_data + members[5].size // 2  # inside the 6th raster (2011-11-05 02 UTC)
    with open(archive, "r+b") as fh:
        fh.truncate(cut)
    with caplog.at_level("INFO"):
        assert (
            preprocess_cli.main(["ingest", "--out", str(tmp_path / "out"), "--comephore", str(archive), "--quiet"]) == 0
        )
    entry = manifest_entry(tmp_path / "out")
    assert entry["skipped"] == {"damaged-archive": 1, "unreadable": 1}  # the archive, and its cut raster
    # the month's hours after the cut raster (2011-11-05 02 UTC) up to 2011-12-01 00 UTC: 22 + 25 x 24
    assert entry["hours_lost"] == 622
    assert f"and {entry['hours_lost']} hour(s) lost at the end of damaged archives" in caplog.text


def test_a_step_off_the_file_grid_is_counted(sample, tmp_path, caplog):
    """Finding 6: a frame 30 min off the hourly grid was dropped without a warning."""
    with xr.open_dataset(sample) as ds:
        ds = ds.load()
    times = ds["time"].values.copy()
    times[3] = times[3] + np.timedelta64(30, "m")
    ds = ds.assign_coords(time=("time", times, ds["time"].attrs))
    ds.to_netcdf(tmp_path / "shifted.nc")
    with caplog.at_level("WARNING"):
        assert (
            preprocess_cli.main(
                ["ingest", "--out", str(tmp_path / "out"), "--netcdf", str(tmp_path / "shifted.nc"), "--quiet"]
            )
            == 0
        )
    assert "is off the 60-min grid of the file: skipped" in caplog.text
    assert manifest_entry(tmp_path / "out")["skipped"] == {"off-grid": 1}  # its own hour becomes a gap


def test_split_bounds_outside_the_data_are_reported(sample, tmp_path, caplog):
    """Finding 6: split bounds outside the data left val/test empty without a word."""
    out = tmp_path / "out"
    assert preprocess_cli.main(["ingest", "--out", str(out), "--netcdf", str(sample), "--quiet"]) == 0
    with caplog.at_level("WARNING"):
        assert (
            preprocess_cli.main(
                ["shards", "--out", str(out), "--pairs", "2x1", "--split-bounds", "2030-01-01,2030-02-01", "--quiet"]
            )
            == 0
        )
    assert "s2_t1: split 'val' holds no block" in caplog.text and "s2_t1: split 'test' holds no block" in caplog.text


# ------------------------------------------------------------------ one error surface


@pytest.mark.slow  # one process per command
def test_every_command_answers_bad_input_with_one_line_and_the_same_code(tmp_path):
    """The exit-code table (hpcsr.exits): a user error is one line and BAD_INPUT from every
    command, whatever it is; --debug shows the traceback."""
    from hpcsr import exits

    missing = str(tmp_path / "missing")
    cases = {
        "train": hpcsr("train", "model=tiny", f"data_dir={missing}"),
        "sample": hpcsr("sample", "--export", missing, "--hr", missing, "--coarsen", "--out", str(tmp_path / "e.nc")),
        "evaluate": hpcsr("evaluate", "--truth", missing, "--ensemble", missing, "--out", str(tmp_path / "r")),
        "transfer": hpcsr("transfer", "seed", missing, "--to", "4x2", "--out", str(tmp_path / "s.pt")),
        "preprocess": subprocess.run(
            [sys.executable, "-m", "preprocessing.cli", "ingest", "--out", str(tmp_path / "d"), "--comephore", missing],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        ),
    }
    for name, out in cases.items():
        assert out.returncode == exits.BAD_INPUT, (name, out.returncode, out.stderr)
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, (name, out.stderr)
        assert "missing" in out.stderr, (name, out.stderr)
    debug = hpcsr(
        "sample", "--export", missing, "--hr", missing, "--coarsen", "--out", str(tmp_path / "e.nc"), "--debug"
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


# ------------------------------------------------------------------ evaluation on any weather


def weather_case(src: Path, folder: Path, kind: str, s: int = 3, t: int = 2, members: int = 10) -> None:
    """Truth and ensemble netCDF on the grid and times of the netCDF `src` with synthetic values:
    'dry' (all zero), 'drizzle' (0.01-0.05 mm, below every FSS threshold) or 'wet' (1-5 mm everywhere)."""
    rng = np.random.default_rng(0)
    with xr.open_dataset(src) as ds:
        hr = ds.precip.isel(time=slice(0, ds.sizes["time"] // t * t), y=slice(0, 48), x=slice(0, 48)).load()
    low, high = {"dry": (0.0, 0.0), "drizzle": (0.01, 0.05), "wet": (1.0, 5.0)}[kind]
    truth = rng.uniform(low, high, hr.shape).astype(np.float32)
    hr.values[...] = truth
    folder.mkdir(parents=True, exist_ok=True)
    hr.to_dataset().to_netcdf(folder / "hr.nc")
    ens = np.stack([truth * rng.uniform(0.8, 1.2, truth.shape).astype(np.float32) for _ in range(members)])
    xr.Dataset(
        {"precip": (("member", "time", "y", "x"), ens)},
        coords={"member": np.arange(members), "time": hr.time, "y": hr.y, "x": hr.x},
        attrs={"factor_pair": f"s{s}_t{t}"},
    ).to_netcdf(folder / "ens.nc")


@pytest.mark.parametrize("kind", ["dry", "drizzle", "wet"])
def test_evaluation_of_dry_drizzle_and_all_wet_windows(sample, tmp_path, kind):
    """Finding 2 and the deliverable 'evaluation works on dry, drizzle-only and all-wet windows':
    exit 0, every figure drawn, metrics.json strict JSON with null where a score is undefined."""
    import json

    from hpcsr.evaluate.cli import main as evaluate_main

    weather_case(sample, tmp_path, kind)
    out = tmp_path / "report"
    assert (
        evaluate_main(
            [
                "--truth",
                str(tmp_path / "hr.nc"),
                "--ensemble",
                str(tmp_path / "ens.nc"),
                "--out",
                str(out),
                "--s",
                "3",
                "--t",
                "2",
                "--scales",
                "1,3",
                "--quiet",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())  # allow_nan=False when written: strict JSON
    for name in ("report.md", "report.html", "panels.png", "qq.png", "fss.png", "spectra.png", "rank_histogram.png"):
        assert (out / name).stat().st_size > 0, name
    ens = metrics["forecasts"]["ensemble"]
    assert ens["crps"] is not None and ens["crps"] >= 0
    if kind == "dry":  # no rain: ratios to the truth's wet fraction, spectrum and seams are undefined
        assert ens["wet_fraction_ratio"] is None and ens["seam_ratio"] is None and ens["lsd_db"] is None
        assert "| ensemble | 0 | n/a | n/a | n/a | n/a | n/a |" in (out / "report.md").read_text()
    if kind != "wet":  # no field reaches the FSS thresholds: undefined, and the figure says so
        assert all(v is None for by_scale in ens["fss"].values() for v in by_scale.values())
    else:
        assert all(v is not None for v in ens["fss"]["1"].values())
