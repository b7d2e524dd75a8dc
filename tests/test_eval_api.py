"""`hpcsr.evaluate.evaluate`: scores against direct computations, masking and counts, chunking, bad input."""

import warnings

import numpy as np
import pytest
import scoringrules

from hpcsr.coarsen import coarsen, repeat_blocks
from hpcsr.evaluate import evaluate
from hpcsr.evaluate.baselines import bicubic_linear


def _case(members=10, T=6, Y=20, X=30, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.gamma(0.5, 2.0, size=(T, Y, X)).astype(np.float32)
    ensemble = rng.gamma(0.5, 2.0, size=(members, T, Y, X)).astype(np.float32)
    return truth, ensemble


def test_scores_match_direct_computation_on_valid_points():
    truth, ens = _case()
    truth[0, :4, :5] = np.nan  # missing truth
    ens[3, 1, 7, 7] = np.nan  # one member missing at one point
    lr = coarsen(np.nan_to_num(truth), 5, 3)
    res = evaluate(truth, ens, lr, 5, 3, baselines=("bicubic",), scales=(1, 3), progress=False)
    valid = np.isfinite(truth) & np.isfinite(ens).all(axis=0)
    e = res["forecasts"]["ensemble"]
    assert e["n_truth_valid"] == truth.size - 20 and e["n_valid"] == valid.sum() == truth.size - 21
    assert e["n_forecast_missing"] == 1 and res["counts"]["truth_missing"] == 20
    y, x = truth[valid].astype(np.float64), ens[:, valid].astype(np.float64)
    err = x.mean(axis=0) - y
    assert e["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)), rel=1e-10)
    assert e["mae"] == pytest.approx(np.mean(np.abs(err)), rel=1e-10)
    assert e["crps"] == pytest.approx(scoringrules.crps_ensemble(y, x, m_axis=0, estimator="fair").mean(), rel=1e-10)
    assert e["crps_standard"] == pytest.approx(
        scoringrules.crps_ensemble(y, x, m_axis=0, estimator="nrg").mean(), rel=1e-10
    )
    assert sum(e["rank_histogram"]) == e["n_valid"] and len(e["rank_histogram"]) == 11
    assert e["quantiles"]["0.99"]["truth"] == pytest.approx(np.quantile(y, 0.99), rel=1e-6)
    assert e["quantiles"]["0.999"]["forecast"] == pytest.approx(np.quantile(x, 0.999), rel=1e-6)
    b = res["forecasts"]["bicubic"]
    base = bicubic_linear(lr, 5, 3)
    ok = valid & np.isfinite(base)  # every forecast is scored on the same points (the ensemble's NaN too)
    assert b["n_valid"] == ok.sum() == e["n_valid"]
    assert b["deterministic"] and b["crps"] == b["mae"]
    assert b["rmse"] == pytest.approx(np.sqrt(np.mean((base[ok] - truth[ok]) ** 2)), rel=1e-6)
    assert e["flags"] == [] and res["warnings"] == []
    assert 0 <= res["showcase_step"] < 6


def test_exchangeable_ensemble_is_calibrated_and_perfect_ensemble_scores_zero():
    truth, ens = _case(members=12, T=6, Y=40, X=40, seed=1)
    res = evaluate(truth, ens, None, 4, 3, baselines=(), scales=(1,), progress=False)
    e = res["forecasts"]["ensemble"]
    assert e["spread_skill_ratio"] == pytest.approx(1.0, abs=0.05)
    counts = np.asarray(e["rank_histogram"])
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()
    perfect = evaluate(
        truth, np.repeat(truth[None], 10, axis=0), None, 4, 3, baselines=("nearest",), scales=(1, 5), progress=False
    )
    p = perfect["forecasts"]["ensemble"]
    assert p["rmse"] == 0.0 and p["crps"] == 0.0 and p["lsd_db"] == pytest.approx(0.0, abs=1e-9)
    assert p["mass"]["cell_relative"] == pytest.approx(0.0, abs=1e-6) and perfect["lr_source"].startswith(
        "perfect model"
    )
    assert all(v == pytest.approx(1.0, abs=1e-6) for by_scale in p["fss"].values() for v in by_scale.values())
    assert perfect["forecasts"]["nearest"]["mass"]["cell_relative"] == 0.0


def test_results_do_not_depend_on_time_chunking():
    truth, ens = _case(members=10, T=12, seed=2)
    one = evaluate(truth, ens, None, 5, 2, progress=False, scales=(1, 5))
    many = evaluate(truth, ens, None, 5, 2, time_chunk=2, progress=False, scales=(1, 5))
    assert many["settings"]["time_chunk"] == 2 and one["settings"]["time_chunk"] == 12
    for name in one["forecasts"]:
        a, b = one["forecasts"][name], many["forecasts"][name]
        for key in ("rmse", "mae", "crps", "lsd_db"):
            assert a[key] == pytest.approx(b[key], rel=1e-9)
        assert a["mass"] == pytest.approx(b["mass"], rel=1e-9)
        for q in a["fss"]:
            assert a["fss"][q] == pytest.approx(b["fss"][q], rel=1e-9)
        for level in a["quantiles"]:
            assert a["quantiles"][level] == pytest.approx(b["quantiles"][level], rel=1e-9)
    assert one["forecasts"]["ensemble"]["rank_histogram"] == many["forecasts"]["ensemble"]["rank_histogram"]


def test_few_members_warn_and_flag():
    truth, ens = _case(members=4)
    with pytest.warns(UserWarning, match="4 members < 10"):
        res = evaluate(truth, ens, None, 5, 3, baselines=(), scales=(1,), progress=False)
    assert res["forecasts"]["ensemble"]["flags"] == ["fewer_than_10_members"]
    assert "4 members" in res["warnings"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(truth, np.concatenate([ens, ens, ens]), None, 5, 3, baselines=(), scales=(1,), progress=False)


def test_tile_mass_error_between_cell_and_frame():
    truth, ens = _case()
    res = {
        k: evaluate(truth, ens, None, 5, 3, baselines=(), scales=(1,), tile_cells=k, progress=False)
        for k in (1, 2, None)
    }
    mass = {k: r["forecasts"]["ensemble"]["mass"] for k, r in res.items()}
    assert mass[1]["tile_relative"] == pytest.approx(mass[1]["cell_relative"])  # one-cell tiles are cells
    assert mass[1]["tile_relative"] >= mass[2]["tile_relative"] >= mass[None]["tile_relative"] > 0


def test_mean_network_baseline_is_scored():
    truth, ens = _case()
    mean = truth * 0.5
    res = evaluate(truth, ens, None, 5, 3, baselines=("nearest",), mean=mean, scales=(1,), progress=False)
    assert set(res["forecasts"]) == {"ensemble", "nearest", "mean"}
    assert res["forecasts"]["mean"]["mae"] == pytest.approx(np.mean(np.abs(0.5 * truth)), rel=1e-6)
    # half the truth has half its mass: bias -1/2 at every scale
    assert res["forecasts"]["mean"]["mass"]["bias_relative"] == pytest.approx(-0.5, rel=1e-6)


def test_all_missing_truth_gives_nan_scores_and_counts():
    truth, ens = _case()
    truth[:] = np.nan
    with pytest.warns(UserWarning, match="no frame had valid data"):
        res = evaluate(truth, ens, np.zeros((2, 4, 6), np.float32), 5, 3, baselines=(), scales=(1,), progress=False)
    e = res["forecasts"]["ensemble"]
    assert e["n_valid"] == 0 and np.isnan(e["rmse"]) and np.isnan(e["crps"])
    assert res["counts"]["truth_missing"] == truth.size


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(t=4), r"6 HR steps are not whole LR blocks of t=4: trim to 4"),
        (dict(s=3), r"HR grid 20 x 30 is not divisible by s=3"),
        (dict(lr=np.zeros((2, 4, 5))), r"LR has shape \(2, 4, 5\).*needs \(2, 4, 6\)"),
        (dict(ensemble=np.zeros((6, 20, 30))), r"ensemble must be \(member, time, y, x\)"),
        (dict(ensemble=np.zeros((10, 6, 20, 31))), r"does not match truth"),
        (dict(baselines=("cubic",)), r"unknown baseline\(s\) \['cubic'\]"),
        (dict(baselines=("mean",)), r"baseline 'mean' needs"),
        (dict(mean=np.zeros((6, 20, 29))), r"mean prediction has shape"),
        (dict(scales=(1, 4)), r"FSS neighbourhood size 4 must be an odd integer"),
        (dict(s=30), r"factor s=30 is outside"),
        (dict(quantile_levels=(0.99, 1.0)), r"quantile levels"),
        (dict(tile_cells=4), r"tile_cells=4 does not divide the LR grid 4 x 6"),
        (dict(time_chunk=0), r"time_chunk=0 must be a positive"),
    ],
)
def test_bad_input_is_named(change, message):
    truth, ens = _case()
    kwargs = dict(truth=truth, ensemble=ens, lr=None, s=5, t=3)
    kwargs.update(change)
    with pytest.raises(ValueError, match=message):
        evaluate(**kwargs, progress=False)


def test_perfect_model_block_repeat_on_nan_lr():
    truth, ens = _case(members=10, seed=5)
    lr = coarsen(truth, 5, 3)
    lr[0, 0, 0] = np.nan
    res = evaluate(
        truth,
        repeat_blocks(lr, 5, 3)[None].repeat(10, axis=0),
        lr,
        5,
        3,
        baselines=("nearest",),
        scales=(1,),
        progress=False,
    )
    for name in ("ensemble", "nearest"):
        mass = res["forecasts"][name]["mass"]
        assert mass["cell_relative"] == 0.0 and mass["cells"] == (lr.size - 1) * (10 if name == "ensemble" else 1)
    assert res["counts"]["lr_missing"] == 1
    assert res["forecasts"]["ensemble"]["n_forecast_missing"] == 75  # the 5 x 5 x 3 block under the NaN cell
