"""Credibility scores of `hpcsr.evaluate`: wet fraction, seam ratios, spectral ratio and the mass
error at the claimed scale, against hand-computed values on tiny fields and through `evaluate`."""

import json

import numpy as np
import pytest
import xarray as xr

from hpcsr.evaluate import evaluate
from hpcsr.evaluate.cli import main
from hpcsr.evaluate.evaluation import wet_threshold
from hpcsr.evaluate.mass_error import claimed_error, claimed_scale
from hpcsr.evaluate.report import credibility_blocks, json_safe, render_markdown
from hpcsr.evaluate.spectra import spectral_ratio
from hpcsr.evaluate.structure import FieldStructure, cell_edge_pairs, tile_edge_pairs


def _structure(field, scored=None, wet_mm=0.1):
    """FieldStructure of one (Y, X) frame as one member and one step."""
    field = np.asarray(field, dtype=np.float32)
    scored = np.isfinite(field) if scored is None else scored
    fs = FieldStructure(field.shape, wet_mm)
    fs.add(field[None, None], scored[None])
    return fs


def test_seam_ratio_hand_values_on_a_4x4_field():
    # columns 0 1 | 3 4 in every row (s = 2): across the cell edge the step is 2, inside cells 1;
    # rows are equal, so every vertical difference is 0.
    # edges: 4 horizontal pairs of 2 + 4 vertical of 0 -> mean 1; inside: 8 of 1 + 8 of 0 -> mean 0.5
    field = np.tile([0.0, 1.0, 3.0, 4.0], (4, 1))
    assert list(cell_edge_pairs(4, 2)) == [False, True, False]
    assert _structure(field).seam_ratio(2) == pytest.approx(2.0)
    # pixel (0, 1) left out, and its pairs: an edge pair of 2, an inside pair of 1 and one of 0
    # -> edges 6 / 7, inside 7 / 14
    field[0, 1] = np.nan
    assert _structure(field).seam_ratio(2) == pytest.approx((6 / 7) / 0.5)
    # s = 1: no pair inside a cell
    assert _structure(field).seam_ratio(1) is None


def test_seam_ratio_edge_cases():
    smooth = np.add.outer(np.arange(6.0), np.arange(6.0))  # a ramp: every step 1
    assert _structure(smooth).seam_ratio(3) == pytest.approx(1.0)
    blocks = np.kron(np.arange(4.0).reshape(2, 2), np.ones((3, 3)))  # constant inside cells
    assert _structure(blocks).seam_ratio(3) == float("inf")
    assert _structure(np.ones((6, 6))).seam_ratio(3) is None  # no difference anywhere


def test_tile_seam_ratio_hand_values():
    assert tile_edge_pairs((8, 8), 2, 8, 0) is None  # one tile
    rows, cols = tile_edge_pairs((8, 8), 2, 4, 0)  # tiles 0-4, 4-8: the edge pair (3, 4)
    assert list(np.flatnonzero(rows)) == list(np.flatnonzero(cols)) == [3]
    rows, _ = tile_edge_pairs((8, 8), 2, 4, 2)  # tiles start every cell: 0-4, 2-6, 4-8
    assert list(np.flatnonzero(rows)) == [1, 3, 5]
    # steps 1 1 1 3 1 1 1 along x, rows equal; cell edges (s = 2) at pairs 1, 3, 5, the tile edge at 3
    field = np.tile([0.0, 1, 2, 3, 6, 7, 8, 9], (8, 1))
    fs = _structure(field)
    edges = tile_edge_pairs((8, 8), 2, 4, 0)
    # tile edge: 8 pairs of 3 + 8 of 0 -> 1.5; other cell edges: 16 pairs of 1 + 16 of 0 -> 0.5
    assert fs.tile_seam_ratio(2, edges) == pytest.approx(3.0)
    # cell edges: 8 * (1 + 3 + 1) / 48; inside: 8 * 4 / 64
    assert fs.seam_ratio(2) == pytest.approx((40 / 48) / 0.5)
    assert fs.scores(2, edges) == {
        "wet_fraction": pytest.approx(56 / 64),
        "seam_ratio": pytest.approx(5 / 3),
        "tile_seam_ratio": pytest.approx(3.0),
    }


def test_wet_fraction_and_threshold_rule():
    values = np.array([[0.0, 0.05, 0.1], [0.2, 1.0, np.nan]])
    assert _structure(values).wet_fraction() == pytest.approx(2 / 5)  # strictly above 0.1, NaN left out
    assert wet_threshold(None, 60) == (pytest.approx(0.1), "0.1 mm/h over 60-min HR steps")
    wet, rule = wet_threshold(None, None)
    assert wet == pytest.approx(0.1 / 6) and "assumed" in rule
    assert wet_threshold(0.5, 10) == (0.5, "given")
    with pytest.raises(ValueError, match="wet_mm=-1"):
        wet_threshold(-1, None)
    with pytest.raises(ValueError, match="interval_minutes=0"):
        wet_threshold(None, 0)


def test_spectral_ratio_band_and_values():
    k = np.arange(1, 17) / 32  # a 32 x 32 grid
    power = np.linspace(1.0, 0.01, 16)
    same = spectral_ratio(k, power, power, 4)
    assert same["wavelengths_px"] == pytest.approx([32 / n for n in range(8, 17)])  # 4 px .. 2 px
    assert same["ratio"] == pytest.approx([1.0] * 9) and same["min"] == same["max"] == pytest.approx(1.0)
    double = spectral_ratio(k, power, 4 * power, 4)  # a field scaled by 2 has 4 times the power
    assert double["min"] == pytest.approx(4.0) and double["max"] == pytest.approx(4.0)
    assert spectral_ratio(k, power, power, 1) is None


def _case(members=4, T=4, Y=16, X=16, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.gamma(0.5, 2.0, size=(T, Y, X)).astype(np.float32)
    return truth, rng.gamma(0.5, 2.0, size=(members, T, Y, X)).astype(np.float32)


@pytest.mark.filterwarnings("ignore:. members < 10")
def test_evaluate_returns_the_credibility_scores():
    truth, ens = _case()
    truth[0, 0, 0] = np.nan
    res = evaluate(
        truth,
        ens,
        None,
        4,
        2,
        baselines=("nearest",),
        scales=(1,),
        wet_mm=0.5,
        tiles=(8, 0),
        time_chunk=2,
        progress=False,
    )
    e, n = res["forecasts"]["ensemble"], res["forecasts"]["nearest"]
    scored = np.ones(truth.shape, dtype=bool)
    scored[:2, :4, :4] = False  # the NaN's LR block, where nearest is NaN too
    assert e["n_valid"] == scored.sum()
    assert e["wet_fraction"] == pytest.approx(np.mean(ens[:, scored] > 0.5))
    assert res["truth"]["wet_fraction"] == pytest.approx(np.mean(truth[scored] > 0.5))
    assert e["wet_fraction_ratio"] == pytest.approx(e["wet_fraction"] / res["truth"]["wet_fraction"])
    assert set(res["truth"]) == {"wet_fraction", "seam_ratio", "tile_seam_ratio"}
    assert 0.5 < e["seam_ratio"] < 2 and 0.5 < e["tile_seam_ratio"] < 2
    assert n["seam_ratio"] == float("inf")  # nearest is constant inside cells
    band = e["spectral_ratio"]
    assert band["wavelengths_px"] == pytest.approx([16 / n for n in range(4, 9)])
    assert band["min"] == min(band["ratio"]) and band["max"] == max(band["ratio"])
    assert res["settings"]["wet_mm_per_step"] == 0.5 and res["undefined"] == {}
    one_chunk = evaluate(
        truth, ens, None, 4, 2, baselines=("nearest",), scales=(1,), wet_mm=0.5, tiles=(8, 0), progress=False
    )
    for key in ("wet_fraction", "seam_ratio", "tile_seam_ratio"):
        assert one_chunk["forecasts"]["ensemble"][key] == pytest.approx(e[key], rel=1e-12)


@pytest.mark.filterwarnings("ignore:. members < 10")
def test_members_tile_seams_count_the_denoisers_tile_edges_too():
    """With (tile, overlap, the denoiser's overlap) the ensemble's tile seams are scored at both
    tilings' edges (members carry both), the other forecasts' at the mean's: a step that only the
    denoiser's tiles make shows in the ensemble's ratio and nowhere else. 64 px at s = 4: 32 px tiles
    overlapping by 8 px start at 0, 24, 32 px; by 4 px at 0, 28, 32 px."""
    rng = np.random.default_rng(0)
    truth = rng.gamma(2.0, 1.0, size=(2, 64, 64)).astype(np.float32)
    ens = np.repeat(truth[None], 10, axis=0).copy()
    ens[..., 28:, :] += 10.0  # a step between rows 27 and 28: the denoiser's tile edge only
    ens[..., :, 28:] += 10.0
    kwargs = dict(baselines=("nearest",), scales=(1,), progress=False)
    same = evaluate(truth, ens, None, 4, 1, tiles=(32, 8), **kwargs)
    both = evaluate(truth, ens, None, 4, 1, tiles=(32, 8, 4), **kwargs)
    assert same["forecasts"]["ensemble"]["tile_seam_ratio"] < 1.5 < both["forecasts"]["ensemble"]["tile_seam_ratio"]
    for key in ("nearest",):
        assert both["forecasts"][key]["tile_seam_ratio"] == same["forecasts"][key]["tile_seam_ratio"]
    assert both["truth"]["tile_seam_ratio"] == same["truth"]["tile_seam_ratio"]
    assert both["settings"]["sampling_tiles"] == {"tile_px": 32, "overlap_px": 8, "residual_overlap_px": 4}


def test_perfect_and_doubled_ensembles():
    truth, _ = _case()
    perfect = evaluate(truth, np.repeat(truth[None], 10, axis=0), None, 4, 1, baselines=(), scales=(1,), progress=False)
    p = perfect["forecasts"]["ensemble"]
    assert p["wet_fraction_ratio"] == 1.0 and p["seam_ratio"] == pytest.approx(perfect["truth"]["seam_ratio"])
    assert p["spectral_ratio"]["ratio"] == pytest.approx([1.0] * 5)
    assert "tile_seam_ratio" not in p  # no tiling given
    doubled = evaluate(
        truth, np.repeat(2 * truth[None], 10, axis=0), None, 4, 1, baselines=(), scales=(1,), progress=False
    )
    assert doubled["forecasts"]["ensemble"]["spectral_ratio"]["ratio"] == pytest.approx([4.0] * 5)


@pytest.mark.filterwarnings("ignore:. members < 10")
def test_s1_has_no_seam_or_spectral_ratio_and_says_why():
    truth, ens = _case()
    res = evaluate(truth, ens, None, 1, 1, baselines=(), scales=(1,), tiles=(16, 0), progress=False)
    e = res["forecasts"]["ensemble"]
    assert e["seam_ratio"] is None and e["spectral_ratio"] is None
    assert set(res["undefined"]) == {"seam_ratio", "spectral_ratio", "tile_seam_ratio"}
    assert "s = 1" in res["undefined"]["seam_ratio"]


def test_claimed_mass_scale_from_the_attributes():
    scores = {"cell_relative": 1e-7, "tile_relative": 2e-8}
    assert claimed_error(claimed_scale({"mass_scale": "cell"}), None, scores)["relative_error"] == 1e-7
    assert claimed_error(claimed_scale({"mass_scale": "frame"}), None, scores)["relative_error"] == 2e-8
    image = claimed_scale({"mass_scale": "image", "mass_region_cells": 4})
    assert image["tile_cells"] == 4 and claimed_error(image, 4, scores)["relative_error"] == 2e-8
    wrong = claimed_error(image, None, scores)
    assert wrong["relative_error"] is None and "--tile-cells 4" in wrong["note"]
    blended = claimed_scale({"mass_scale": "image", "mass_region_cells": 0})
    assert blended["scale"] == "image: domain total" and blended["tile_cells"] is None
    assert claimed_error(claimed_scale({"mass_scale": "none"}), None, scores)["relative_error"] is None


@pytest.mark.filterwarnings("ignore:. members < 10")
def test_report_table_shows_the_credibility_scores():
    truth, ens = _case()
    res = json_safe(evaluate(truth, ens, None, 4, 1, baselines=("bicubic",), scales=(1,), tiles=(8, 0), progress=False))
    md = render_markdown(credibility_blocks(res))
    assert "| field | wet fraction | wet / truth | spectral ratio min (2..4 px) |" in md
    assert "tile seam ratio" in md and "| truth |" in md and "| bicubic |" in md
    assert "0.1 mm/h over 10-min HR steps, step length unknown: assumed" in md


@pytest.mark.slow  # a whole evaluation
@pytest.mark.filterwarnings("ignore:. members < 10")
def test_cli_reads_tiling_interval_and_mass_claim_from_the_ensemble(tmp_path):
    truth, ens = _case(T=4, Y=16, X=16)
    coords = {"time": np.arange(4).astype("datetime64[h]"), "y": np.arange(16.0), "x": np.arange(16.0)}
    xr.Dataset({"precip": (("time", "y", "x"), truth)}, coords=coords).to_netcdf(tmp_path / "hr.nc")
    attrs = {"factor_pair": "s4_t1", "tile": 8, "overlap": 0, "mass_scale": "image", "mass_region_cells": 2}
    xr.Dataset(
        {"precip": (("member", "time", "y", "x"), ens)}, coords={"member": np.arange(4), **coords}, attrs=attrs
    ).to_netcdf(tmp_path / "ens.nc")
    assert (
        main(
            [
                "--truth",
                str(tmp_path / "hr.nc"),
                "--ensemble",
                str(tmp_path / "ens.nc"),
                "--out",
                str(tmp_path / "out"),
                "--scales",
                "1",
                "--baselines",
                "bicubic",
                "--quiet",
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    settings = result["settings"]
    assert settings["wet_mm_per_step"] == pytest.approx(0.1) and settings["wet_rule"] == "0.1 mm/h over 60-min HR steps"
    assert settings["sampling_tiles"] == {"tile_px": 8, "overlap_px": 0} and settings["tile_cells"] == 2
    assert "tile_seam_ratio" in result["forecasts"]["ensemble"]
    claim = result["mass_claim"]
    assert claim["scale"] == "image: regions of 2 x 2 LR cells"
    assert claim["relative_error"] == pytest.approx(result["forecasts"]["ensemble"]["mass"]["tile_relative"])
    assert "Credibility of the fields" in (tmp_path / "out" / "report.md").read_text()
    assert (
        main(
            [
                "--truth",
                str(tmp_path / "hr.nc"),
                "--ensemble",
                str(tmp_path / "ens.nc"),
                "--out",
                str(tmp_path / "out2"),
                "--scales",
                "1",
                "--baselines",
                "",
                "--quiet",
                "--wet-mm",
                "0.3",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "out2" / "metrics.json").read_text())["settings"]["wet_rule"] == "given"


def test_criterion_check_and_ratio():
    from hpcsr.evaluate.criteria import check, ratio

    assert check(0.6, high=0.6) == {"value": 0.6, "target": "<= 0.6", "met": True}
    assert check(1.0, high=1, strict=True) == {"value": 1.0, "target": "< 1", "met": False}
    assert check(0.79, low=0.8, high=1.2) == {"value": 0.79, "target": "0.8 .. 1.2", "met": False}
    assert check(None, low=0.5)["met"] is False and check(float("inf"), low=0.5)["value"] is None
    assert ratio(1.0, 4.0) == 0.25 and ratio(1.0, 0.0) is None and ratio(None, 2.0) is None
    with pytest.raises(ValueError, match="bound"):
        check(1.0)


def test_a_value_just_past_a_round_target_is_not_printed_as_the_target():
    from hpcsr.evaluate.criteria import shown

    assert shown(1.003) == "1.003" and shown(0.6004) == "0.6004" and shown(1.496) == "1.496"
    assert shown(1.0) == "1" and shown(0.9355) == "0.935" and shown(1.0076) == "1.01" and shown(2.14) == "2.14"
    assert shown(4.05e-8) == "4.05e-08" and shown(None) == "n/a" and shown(float("nan")) == "n/a"
