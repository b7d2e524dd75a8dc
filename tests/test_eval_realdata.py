"""Baselines and identities on real radar fields (Comephore, MeteoSwiss) coarsened with hpcsr.coarsen."""

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from hpcsr.coarsen import coarsen
from hpcsr.evaluate import evaluate

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _load(name, **window):
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real data file {path} not found")
    with xr.open_dataset(path) as ds:
        return ds.precip.isel(**window).values


@pytest.mark.parametrize(
    "name, window, s",
    [
        ("comephore_sample_20111104.nc", dict(y=slice(0, 117), x=slice(0, 66)), 3),
        ("comephore_sample_20111104.nc", dict(y=slice(0, 115), x=slice(0, 65)), 5),
        ("mch_aqc_20150515.nc", dict(time=slice(0, 12), y=slice(360, 480), x=slice(400, 520)), 4),
        ("mch_aqc_20150515.nc", dict(time=slice(0, 12), y=slice(360, 480), x=slice(400, 520)), 8),
    ],
)
def test_bicubic_beats_nearest_in_space_and_perfect_model_mass_is_zero(name, window, s):
    truth = _load(name, **window)
    lr = coarsen(truth, s, 1)
    perfect = np.repeat(truth[None], 10, axis=0)  # the truth as a 10-member ensemble
    res = evaluate(truth, perfect, lr, s, 1, baselines=("nearest", "bicubic"), scales=(1, 9), progress=False)
    near, bic, ens = (res["forecasts"][k] for k in ("nearest", "bicubic", "ensemble"))
    assert bic["rmse"] < near["rmse"] and bic["mae"] < near["mae"]
    assert near["mass"]["cell_relative"] == 0.0 and near["mass"]["tile_relative"] == 0.0  # block repeat is exact
    assert ens["mass"]["cell_relative"] < 1e-6 and ens["rmse"] == 0.0  # perfect model: coarsen(truth) is the LR
    assert bic["mass"]["cell_relative"] > 1e-3  # bicubic does not conserve block mass; reported, not hidden
    assert near["lsd_db"] > 0 and bic["lsd_db"] > 0


def test_missing_radar_coverage_is_masked_and_counted():
    # a rainy MeteoSwiss window across the edge of the radar composite: about 40 % of it has no data
    truth = _load("mch_aqc_20150515.nc", time=slice(0, 6), y=slice(480, 576), x=slice(576, 672))
    missing = np.isnan(truth)
    assert 0 < missing.mean() < 1, "window must straddle the coverage edge"
    s, t = 4, 2
    lr = coarsen(truth, s, t)  # blocks with any missing value are missing
    rng = np.random.default_rng(0)
    ens = np.stack([np.nan_to_num(truth) * rng.lognormal(0, 0.3, truth.shape) for _ in range(10)]).astype(np.float32)
    res = evaluate(truth, ens, lr, s, t, baselines=("nearest", "bicubic"), scales=(1, 5), progress=False)
    assert res["counts"]["truth_missing"] == missing.sum()
    assert res["counts"]["lr_missing"] == np.isnan(lr).sum() > 0
    e, n, b = (res["forecasts"][k] for k in ("ensemble", "nearest", "bicubic"))
    under_lr = ~np.isnan(np.repeat(np.repeat(np.repeat(lr, t, 0), s, 1), s, 2))
    # every forecast is scored on the same points: valid truth under a valid LR cell (the bicubic
    # baseline masks only the pixels of a missing LR cell, as nearest does)
    assert e["n_valid"] == n["n_valid"] == b["n_valid"] == (np.isfinite(truth) & under_lr).sum()
    assert n["n_forecast_missing"] > 0  # HR cells under a missing LR block
    for res_ in (e, n, res["forecasts"]["bicubic"]):
        assert np.isfinite([res_["rmse"], res_["crps"], res_["lsd_db"], res_["mass"]["cell_relative"]]).all()
    assert n["mass"]["cell_relative"] == 0.0
