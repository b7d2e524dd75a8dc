"""The netCDF files hpcsr writes are CF-1.11 and real climate tools read them.

- The grid mapping of every shared radar network's CRS (Albers, two polar stereographics, the Swiss
  oblique Mercator with its datum shift, lat/lon, Lambert azimuthal) comes out of hpcsr.cf with the
  right grid_mapping_name and parameters that place the grid where the original CRS does.
- The IOOS compliance checker (`cf:1.11`) finds no error in an ensemble sampled from a netCDF input,
  one sampled from a shard, the demo's truth crop and the skill experiment's radar crop; the only
  warnings allowed are listed with their reason in ALLOWED_WARNINGS.
- CDO (Debian package, installed by `scripts/setup.sh --system`) reads the ensemble (`sinfon`),
  averages it over time (`timmean`) and over members, and regrids it bilinearly to lat/lon
  (`remapbil`); cf-xarray finds the axes, the grid mapping and the precipitation by standard name.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from pyproj import CRS, Transformer

from hpcsr import cf
from hpcsr.coarsen import coarsen
from hpcsr.data.store import Shard
from hpcsr.evaluate.truth import write_truth
from hpcsr.factors import FactorPair

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_radar import write_radar_nc  # noqa: E402
from test_sample import PAIR, make_export, run_sample  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
NETWORKS = {  # file: grid_mapping_name pyproj gives its CRS
    "bom_c10_20201031.nc": "albers_conical_equal_area",
    "comephore_sample_20111104.nc": "polar_stereographic",
    "knmi_20100826.nc": "polar_stereographic",
    "mch_aqc_20150515.nc": "oblique_mercator",
    "meteonet_nw_20160828.nc": "latitude_longitude",
    "opera_france_20180824.nc": "lambert_azimuthal_equal_area",
}
LOSSY = {"mch_aqc_20150515.nc": "angle from rectified to skew grid"}  # CRS that CF parameters cannot express
# Checker warnings that are kept on purpose (substring of the message: why)
ALLOWED_WARNINGS = {
    "time (T), member (U), y (Y), x (X)": "CF recommends (not requires) extra dimensions left of T; CDO cannot read a variable whose first "
    "dimension is not time ('Time must be the first dimension'), so the ensemble is (time, member, y, x) "
    "and CDO reads the members as levels",
}


def cf_check(path: Path, tmp: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) of `compliance-checker --test cf:1.11` on `path` (high / medium priority)."""
    from compliance_checker.runner import CheckSuite, ComplianceChecker

    CheckSuite().load_all_available_checkers()
    report = tmp / f"{path.stem}.cf.json"
    ComplianceChecker.run_checker(
        str(path), ["cf:1.11"], 0, "normal", output_filename=str(report), output_format="json"
    )
    results = json.loads(report.read_text())["cf:1.11"]
    found = {}
    for level in ("high_priorities", "medium_priorities"):
        found[level] = [f"{r['name']}: {m}" for r in results[level] for m in r["msgs"] if r["value"][0] < r["value"][1]]
    return found["high_priorities"], found["medium_priorities"]


def _crs_attrs(path: Path) -> dict:
    with xr.open_dataset(path, decode_coords=False) as ds:
        return dict(ds[ds["precip"].attrs["grid_mapping"]].attrs)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_grid_mapping_from_each_radar_network_crs(name):
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    given = _crs_attrs(path)
    original = CRS.from_user_input(given["crs_wkt"])
    gm = cf.grid_mapping_attrs({"crs_wkt": given["crs_wkt"]})  # from the WKT alone, as from an HR store
    assert gm["grid_mapping_name"] == NETWORKS[name]
    assert gm["crs_wkt"] == given["crs_wkt"]
    # the CF parameters alone (no WKT) place the grid's corners where the original CRS does, except
    # where pyproj says CF cannot express the CRS: then the comment says crs_wkt is authoritative
    rebuilt = CRS.from_cf({k: v for k, v in gm.items() if k not in ("crs_wkt", "proj4", "comment")})
    with xr.open_dataset(path) as ds:
        xs, ys = ds["x"].values[[0, -1, 0, -1]], ds["y"].values[[0, 0, -1, -1]]
    lonlat = "EPSG:4326"
    a = np.array(Transformer.from_crs(original, lonlat, always_xy=True).transform(xs, ys))
    b = np.array(Transformer.from_crs(rebuilt, lonlat, always_xy=True).transform(xs, ys))
    if name in LOSSY:
        assert "crs_wkt is authoritative" in gm["comment"] and LOSSY[name] in gm["comment"]
        assert np.abs(a - b).max() > 1.0  # the parameters alone would misplace the grid by degrees
        assert CRS.from_cf(gm).equals(original)  # a reader that takes crs_wkt gets it right
    else:
        assert "comment" not in gm
        np.testing.assert_allclose(a, b, atol=1e-6)
    x_attrs, y_attrs = cf.axis_attrs(gm, "X"), cf.axis_attrs(gm, "Y")
    if NETWORKS[name] == "latitude_longitude":
        assert (x_attrs["standard_name"], x_attrs["units"]) == ("longitude", "degrees_east")
        assert (y_attrs["standard_name"], y_attrs["units"]) == ("latitude", "degrees_north")
    else:
        assert (x_attrs["standard_name"], x_attrs["units"]) == ("projection_x_coordinate", "m")
        assert (y_attrs["standard_name"], y_attrs["units"]) == ("projection_y_coordinate", "m")


def test_unreadable_crs_gives_no_grid_mapping_and_a_warning(caplog):
    assert cf.grid_mapping_attrs({"crs_wkt": "not a crs"}) == {}
    assert "could not be read as a CRS" in caplog.text
    assert cf.grid_mapping_attrs({}) == {}
    assert cf.axis_attrs({}, "X", {"units": "km"}) == {
        "long_name": "x of cell centre",
        "axis": "X",
        "units": "km",
        "standard_name": "projection_x_coordinate",
    }


# ------------------------------------------------------------------ files from a small end-to-end run


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, small_dataset) -> dict[str, Path]:
    """An ensemble from a netCDF input (a synthetic storm in the Comephore layout), one from a shard
    with its truth crop (as the demo writes it), and the skill experiment's held-out crop of an HR
    store."""
    work = tmp_path_factory.mktemp("cf")
    hr_nc = work / "hr.nc"
    write_radar_nc(hr_nc, (8, 40, 36))
    ens_nc = work / "ensemble_from_netcdf.nc"
    assert (
        run_sample(
            "--export",
            make_export(work / "s4_t2.pt", PAIR),
            "--hr",
            hr_nc,
            "--coarsen",
            "--members",
            "3",
            "--steps",
            "2",
            "--out",
            ens_nc,
        )
        == 0
    )
    shard_path = small_dataset["out"] / "shards" / "s10_t3.h5"
    with Shard(shard_path) as shard:  # two blocks with complete context and HR truth
        i = int(shard.context_windows(5)[0])
        first, end = shard.hr_store().times[shard.hr_start[i]], shard.times[i + 1]
    ens_shard = work / "ensemble_from_shard.nc"
    assert (
        run_sample(
            "--export",
            make_export(work / "s10_t3.pt", FactorPair(10, 3)),
            "--lr",
            shard_path,
            "--members",
            "2",
            "--steps",
            "1",
            "--time-range",
            str(first),
            str(end),
            "--out",
            ens_shard,
        )
        == 0
    )
    truth = write_truth(ens_shard, small_dataset["out"] / "hr.h5", work / "truth.nc")
    sys.path.insert(0, str(REPO / "benchmarks"))
    import skill_experiment

    crop = work / "crop.nc"
    skill_experiment.write_crop(small_dataset["out"] / "hr.h5", crop, 32, 4, "the test data")
    return {"ensemble_netcdf": ens_nc, "ensemble_shard": ens_shard, "truth": truth, "skill_crop": crop}


@pytest.mark.slow  # samples ensembles, then the IOOS checker per file
@pytest.mark.parametrize("which", ["ensemble_netcdf", "ensemble_shard", "truth", "skill_crop"])
def test_cf_checker_finds_no_error(outputs, which, tmp_path):
    errors, warnings = cf_check(outputs[which], tmp_path)
    assert errors == [], "\n".join(errors)
    unexplained = [w for w in warnings if not any(key in w for key in ALLOWED_WARNINGS)]
    assert unexplained == [], "\n".join(unexplained)


@pytest.mark.slow  # the sampled ensembles of `outputs`
def test_precipitation_attributes_and_provenance(outputs):
    with xr.open_dataset(outputs["ensemble_shard"]) as ens, xr.open_dataset(outputs["truth"]) as truth:
        for ds in (ens, truth):
            assert ds.attrs["Conventions"] == "CF-1.11"
            assert ds.attrs["title"] and ds.attrs["source"] and ds.attrs["history"]
            assert ds["precip"].attrs["standard_name"] == "lwe_thickness_of_precipitation_amount"
            assert ds["precip"].attrs["units"] == "mm" and ds["precip"].attrs["cell_methods"] == "time: sum"
            assert ds["crs"].attrs["grid_mapping_name"] == "polar_stereographic"
        assert "hpcsr" in ens.attrs["history"] or "pytest" in ens.attrs["history"]
        assert ens["member"].attrs["standard_name"] == "realization"
        np.testing.assert_array_equal(ens["time"].values, truth["time"].values)


# ------------------------------------------------------------------ real clients


def _cdo() -> str:
    cdo = shutil.which("cdo")
    if cdo is None:
        pytest.fail("CDO is not installed: run 'bash scripts/setup.sh --system' (Debian package cdo)")
    return cdo


def cdo(*args: str) -> str:
    proc = subprocess.run([_cdo(), "-s", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"cdo {' '.join(args)} failed:\n{proc.stderr[-2000:]}"
    return proc.stdout


@pytest.mark.slow  # the sampled ensembles of `outputs`, CDO
def test_cdo_reads_averages_and_regrids_the_ensemble(outputs, tmp_path):
    ens_path = outputs["ensemble_netcdf"]
    info = cdo("sinfon", str(ens_path))
    assert "precip" in info and "precip_mean" in info
    assert "projection" in info.lower() or "polar_stereographic" in info.lower(), info
    with xr.open_dataset(ens_path) as ens:
        members = ens["precip"].transpose("member", "time", "y", "x").values.astype(np.float64)
        x, y = ens["x"].values, ens["y"].values
        wkt = ens["crs"].attrs["crs_wkt"]
    # time mean of the network's prediction, and the member mean of the ensemble (members are CDO's levels)
    cdo("timmean", "-selname,precip_mean", str(ens_path), str(tmp_path / "timmean.nc"))
    with xr.open_dataset(tmp_path / "timmean.nc") as out:
        with xr.open_dataset(ens_path) as ens:
            np.testing.assert_allclose(
                out["precip_mean"].values.squeeze(), ens["precip_mean"].values.mean(0), rtol=1e-5, atol=1e-6
            )
    cdo("vertmean", "-selname,precip", str(ens_path), str(tmp_path / "member_mean.nc"))
    with xr.open_dataset(tmp_path / "member_mean.nc") as out:
        np.testing.assert_allclose(out["precip"].values.squeeze(), members.mean(0), rtol=1e-5, atol=1e-6)
    # bilinear regridding onto a lat/lon grid inside the domain
    to_ll = Transformer.from_crs(CRS.from_wkt(wkt), "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform(*np.meshgrid(x, y))
    lon0, lon1, lat0, lat1 = lon.min(), lon.max(), lat.min(), lat.max()
    pad_lon, pad_lat = 0.2 * (lon1 - lon0), 0.2 * (lat1 - lat0)
    n = 8
    grid = tmp_path / "latlon.txt"
    grid.write_text(
        f"gridtype = lonlat\nxsize = {n}\nysize = {n}\nxfirst = {lon0 + pad_lon}\n"
        f"xinc = {(lon1 - lon0 - 2 * pad_lon) / (n - 1)}\nyfirst = {lat0 + pad_lat}\n"
        f"yinc = {(lat1 - lat0 - 2 * pad_lat) / (n - 1)}\n"
    )
    cdo(f"remapbil,{grid}", "-selname,precip_mean", str(ens_path), str(tmp_path / "latlon.nc"))
    with xr.open_dataset(tmp_path / "latlon.nc") as out, xr.open_dataset(ens_path) as ens:
        regridded = out["precip_mean"].values
        field = ens["precip_mean"].values
    assert regridded.shape[-2:] == (n, n)
    assert np.isfinite(regridded).all()
    for step in range(field.shape[0]):
        assert field[step].min() - 1e-6 <= regridded[step].min() and regridded[step].max() <= field[step].max() + 1e-6


@pytest.mark.slow  # the sampled ensembles of `outputs`
def test_cf_xarray_finds_axes_grid_mapping_and_precipitation(outputs):
    import cf_xarray  # noqa: F401  (registers the .cf accessor)

    with xr.open_dataset(outputs["ensemble_netcdf"]) as ens, xr.open_dataset(outputs["truth"]) as truth:
        axes = ens.cf.axes
        assert axes["X"] == ["x"] and axes["Y"] == ["y"] and axes["T"] == ["time"]
        assert sorted(ens.cf.standard_names["lwe_thickness_of_precipitation_amount"]) == ["precip", "precip_mean"]
        assert ens.cf.grid_mapping_names == {"polar_stereographic": ["crs"]}
        assert ens.cf["realization"].name == "member"
        assert truth.cf["lwe_thickness_of_precipitation_amount"].name == "precip"
        assert truth.cf["projection_x_coordinate"].name == "x"


# ------------------------------------------------------------------ CF input as CDO writes it


@pytest.fixture(scope="module")
def cdo_inputs(tmp_path_factory) -> dict[str, Path]:
    """A synthetic storm in the Comephore layout (with a missing 5 x 5 patch) and its (4, 2) LR, each
    as written by xarray and as CDO rewrites it: packed int16 (scale_factor/add_offset, fill -32767),
    time in hours since 1970, calendar proleptic_gregorian."""
    work = tmp_path_factory.mktemp("cdo_in")
    with xr.open_dataset(write_radar_nc(work / "storm.nc", (8, 40, 36))) as ds:
        hr = ds.load()
    hr["precip"][2, :5, :5] = np.nan
    lr = xr.Dataset(
        {
            "precip": (
                ("time", "y", "x"),
                coarsen(hr["precip"].values, 4, 2),
                {"grid_mapping": "crs", "units": "mm", "interval_minutes": 60},
            ),
            "crs": hr["crs"],
        },
        coords={
            "time": hr["time"].values[1::2],
            "y": hr["y"].values.reshape(-1, 4).mean(1),
            "x": hr["x"].values.reshape(-1, 4).mean(1),
        },
        attrs={"factor_pair": PAIR.name},
    )
    paths = {}
    for name, ds in (("hr", hr), ("lr", lr)):
        paths[name] = work / f"{name}.nc"
        ds.to_netcdf(paths[name])
        paths[f"{name}_cdo"] = work / f"{name}_cdo.nc"
        cdo(
            "-b",
            "I16",
            "-pack",
            "-settunits,hours",
            "-setcalendar,proleptic_gregorian",
            str(paths[name]),
            str(paths[f"{name}_cdo"]),
        )
    with xr.open_dataset(paths["hr_cdo"], decode_cf=False) as raw:
        assert raw["precip"].dtype == np.int16 and "scale_factor" in raw["precip"].attrs
        assert raw["time"].attrs["units"].startswith("hours since")
        assert raw["time"].attrs["calendar"] == "proleptic_gregorian"
    return paths


def _packing_step(path: Path) -> float:
    with xr.open_dataset(path, decode_cf=False) as raw:
        return float(raw["precip"].attrs["scale_factor"])


@pytest.mark.slow  # CDO and two ingests
def test_ingest_reads_a_cdo_packed_file_like_the_original(cdo_inputs, tmp_path):
    from hpcsr.data.store import HRStore
    from preprocessing.ingest import IngestConfig, ingest
    from preprocessing.parallel import Comm

    stores = {}
    for name in ("hr", "hr_cdo"):
        ingest(tmp_path / name, IngestConfig(netcdf=(str(cdo_inputs[name]),)), Comm(), progress=False)
        with HRStore(tmp_path / name / "hr.h5") as store:
            stores[name] = (store.time_s.copy(), store.read(0, len(store.time_s)), store.x.copy(), store.y.copy())
    (t0, v0, x0, y0), (t1, v1, x1, y1) = stores["hr"], stores["hr_cdo"]
    np.testing.assert_array_equal(t0, t1)
    np.testing.assert_allclose(x0, x1) and np.testing.assert_allclose(y0, y1)
    np.testing.assert_array_equal(np.isnan(v0), np.isnan(v1))
    assert np.isnan(v1[2, :5, :5]).all() and np.isnan(v1).sum() == 25  # the fill, not a value, is missing
    step = _packing_step(cdo_inputs["hr_cdo"])
    ok = np.isfinite(v0)
    assert np.abs(v0[ok] - v1[ok]).max() <= 0.5 * step + 1e-5


@pytest.mark.slow  # CDO and two `hpcsr sample` runs
def test_sample_reads_a_cdo_packed_lr_file_like_the_original(cdo_inputs, tmp_path):
    export = make_export(tmp_path / "s4_t2.pt", PAIR)
    runs = {}
    for name in ("lr", "lr_cdo"):
        out = tmp_path / f"{name}_ens.nc"
        assert (
            run_sample("--export", export, "--lr", cdo_inputs[name], "--members", "2", "--steps", "2", "--out", out)
            == 0
        )
        with xr.open_dataset(out) as ens:
            runs[name] = (ens["time"].values, ens["precip"].transpose("member", "time", "y", "x").values)
    np.testing.assert_array_equal(runs["lr"][0], runs["lr_cdo"][0])
    a, b = runs["lr"][1], runs["lr_cdo"][1]
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    ok = np.isfinite(a)
    assert ok.any()
    # the LR differs by at most half a packing step; each cell's mass carries it to the members
    assert np.abs(a[ok] - b[ok]).max() < 50 * _packing_step(cdo_inputs["lr_cdo"])


@pytest.mark.slow  # CDO
def test_a_model_calendar_is_refused_with_its_name(cdo_inputs, tmp_path):
    from preprocessing.ingest import IngestConfig, ingest
    from preprocessing.parallel import Comm

    noleap = tmp_path / "noleap.nc"
    cdo("-setcalendar,365_day", str(cdo_inputs["hr"]), str(noleap))
    with pytest.raises(ValueError, match="365_day"):
        ingest(tmp_path / "store", IngestConfig(netcdf=(str(noleap),)), Comm(), progress=False)
    assert (
        run_sample(
            "--export", make_export(tmp_path / "m.pt", PAIR), "--hr", noleap, "--coarsen", "--out", tmp_path / "ens.nc"
        )
        != 0
    )
    assert not (tmp_path / "ens.nc").exists()
