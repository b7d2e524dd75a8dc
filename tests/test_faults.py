"""Fault injection (issue 15): a failed rerun leaves the previous complete output byte-identical,
and bad input is refused with a clear error before anything is replaced. Each test names the
finding of issue 15 it reproduces; all use real files (HDF5 stores, netCDF inputs)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from preprocessing import cli as preprocess_cli

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SAMPLE = DATA / "comephore_sample_20111104.nc"
needs_sample = pytest.mark.skipif(not SAMPLE.is_file(), reason=f"real data {SAMPLE} absent (../shared/data)")


def digests(folder: Path) -> dict:
    """sha256 of every file under `folder`, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def variant(src: Path, out: Path, change) -> Path:
    """A copy of the netCDF `src` with its precip values replaced by change(values)."""
    with xr.open_dataset(src) as ds:
        ds = ds.load()
    ds["precip"].values[...] = change(ds["precip"].values)
    ds.to_netcdf(out)
    return out


@needs_sample
def test_ingest_rerun_on_all_missing_input_keeps_the_store(tmp_path, capsys):
    """Finding 1: a rerun into the same folder with an all-NaN file of the same shape used to replace
    hr.h5 with an empty store (and crash on an index error) while the manifest kept the old checksum."""
    out = tmp_path / "data"
    assert preprocess_cli.main(["ingest", "--out", str(out), "--netcdf", str(SAMPLE), "--quiet"]) == 0
    before = digests(out)
    empty = variant(SAMPLE, tmp_path / "all_missing.nc", lambda v: np.full_like(v, np.nan))
    capsys.readouterr()
    assert preprocess_cli.main(["ingest", "--out", str(out), "--netcdf", str(empty), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "no usable frame" in err and "left as it was" in err, err
    after = digests(out)
    for name in ("hr.h5", "manifest.json"):
        assert after[name] == before[name], f"{name} changed by the failed rerun"
