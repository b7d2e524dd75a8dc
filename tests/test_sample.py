"""hpcsr sample on a synthetic storm in the Comephore sample's netCDF layout (tests/synthetic_radar.py)
with a small export written by hand through hpcsr.export.write_export (random weights: these
tests check the mechanics, geometry, masses, masks and seeds, not skill; they need no real data).

The export is a 2-level model (widths 8-16, no spatial attention) at factor pair (4, 2): L = 6
context frames, so the 8 hourly frames make 4 target blocks whose context is partly missing at the
start of the sequence, a real case of the masking rules. Weights are the initial ones plus noise
(the output layers start at zero) so that every output depends on the input.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from synthetic_radar import storm, write_radar_nc

from hpcsr.coarsen import coarsen
from hpcsr.data.normalise import Normaliser
from hpcsr.export import load_export, recipe_to_dict, write_export
from hpcsr.factors import FactorPair, recipe
from hpcsr.mass import conserve
from hpcsr.models import ModelConfig, build_model
from hpcsr.sample import main as sample_main
from hpcsr.sampling import EnsembleSampler, SampleConfig, target_times
from hpcsr.sampling.inputs import open_hr
from hpcsr.sampling.tiles import Blender, TileLayout, default_overlap, mean_overlap

PAIR = FactorPair(4, 2)
MICRO = ModelConfig(widths=(8, 16), heads=2, windows=(1, 1), emb_dim=8)
HR_SHAPE = (42, 37)  # cropped by sampling to (40, 36): 10 x 9 LR cells
STORM = (8, *HR_SHAPE)  # 8 hourly frames
TILE_ARGS = ["--tile", "16", "--overlap", "4"]  # 4 x 4 LR-cell tiles sharing one cell: 3 x 3 tiles


def make_export(
    path: Path,
    pair: FactorPair,
    seed: int = 0,
    data_grid: dict | None = None,
    extra: dict | None = None,
    cfg: ModelConfig = MICRO,
    fresh_mean_head: bool = False,
    patch: int | None = None,
) -> Path:
    """A model of `pair` with perturbed initial weights, normalised with the synthetic storm's log1p stats;
    `data_grid` (the training grid an export records) only when given, as in exports of older versions;
    `extra`: more metadata (e.g. a spread calibration); `fresh_mean_head`: the mean network's output
    layer left at zero, so its mean is its start; `patch`: the training patch it records (default the recipe's)."""
    torch.manual_seed(seed)
    rec = recipe(pair.s, pair.t)
    rec = rec if patch is None else dataclasses.replace(rec, patch=patch)
    model = build_model(cfg, rec)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        if fresh_mean_head:
            model.mean_net.out[-1].weight.zero_()
            model.mean_net.out[-1].bias.zero_()
    logs = np.log1p(storm(STORM))
    norm = Normaliser("log1p", float(logs.mean()), float(logs.std()))
    metadata = {
        "stage": "joint",
        "trained": ["mean_net", "denoiser"],
        "pair": {"s": pair.s, "t": pair.t, "name": pair.name},
        "recipe": recipe_to_dict(rec),
        "model": dataclasses.asdict(cfg),
        "future_context": 0,
        "normalisation": {**norm.to_dict(), "stats": {}},
        "step": 7,
        "config_hash": f"hand-{pair.name}",
        "lineage": [{"role": "self", "stage": "joint", "pair": pair.name, "step": 7, "export": str(path)}],
    }
    if data_grid is not None:
        metadata["data_grid"] = data_grid
    metadata.update(extra or {})
    return write_export(path, model.state_dict(), metadata)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sample")


@pytest.fixture(scope="module")
def export(work) -> Path:
    return make_export(work / "run" / "joint" / "export" / "model.pt", PAIR)


@pytest.fixture(scope="module")
def hr_nc(work) -> Path:
    """8 hourly frames of 42 x 37 pixels (not divisible by s=4)."""
    return write_radar_nc(work / "hr.nc", STORM)


def run_sample(*args) -> int:
    return sample_main([str(a) for a in args] + ["--quiet"])


def base_args(export, hr_nc, out, *extra):
    return [
        "--export",
        export,
        "--hr",
        hr_nc,
        "--coarsen",
        "--members",
        "2",
        "--steps",
        "2",
        *TILE_ARGS,
        "--out",
        out,
        *extra,
    ]


@pytest.fixture(scope="module")
def base(export, hr_nc, work) -> Path:
    """The reference run: 2 members, DDIM 2 steps, cell-scale mass."""
    out = work / "base.nc"
    assert run_sample(*base_args(export, hr_nc, out, "--mass", "cell")) == 0
    return out


def members_of(ds: xr.Dataset) -> np.ndarray:
    """The ensemble's members as (member, time, y, x), whatever the order on disk."""
    return ds["precip"].transpose("member", "time", "y", "x").values


def truth(hr_nc) -> np.ndarray:
    with xr.open_dataset(hr_nc) as ds:
        return ds["precip"].values[:, :40, :36]


# ------------------------------------------------------------------ layout of the file


def test_output_layout_coordinates_crs_and_attributes(base, hr_nc, export):
    with xr.open_dataset(base) as ens, xr.open_dataset(hr_nc) as hr:
        assert ens["precip"].dims == ("time", "member", "y", "x")  # time first, as CDO reads it
        assert ens["precip"].shape == (8, 2, 40, 36)
        assert ens["precip_mean"].dims == ("time", "y", "x")
        np.testing.assert_array_equal(ens["time"].values, hr["time"].values)  # 4 blocks x 2 steps = all 8 frames
        np.testing.assert_array_equal(ens["x"].values, hr["x"].values[:36])
        np.testing.assert_array_equal(ens["y"].values, hr["y"].values[:40])
        assert ens["x"].attrs["standard_name"] == "projection_x_coordinate" and ens["x"].attrs["units"] == "m"
        assert ens["precip"].attrs["grid_mapping"] == "crs" and ens["precip"].attrs["units"] == "mm"
        assert ens["crs"].attrs["crs_wkt"] == hr["crs"].attrs["crs_wkt"]
        assert ens["crs"].attrs["grid_mapping_name"] == hr["crs"].attrs["grid_mapping_name"]
        a = ens.attrs
        assert a["factor_pair"] == "s4_t2" and a["factor_s"] == 4 and a["factor_t"] == 2
        assert a["model_export"] == str(export) and a["model_config_hash"] == "hand-s4_t2"
        assert json.loads(a["model_lineage"])[0]["role"] == "self"
        assert (a["sampler"], a["sampler_steps"], a["eta"], a["seed"], a["mass_scale"]) == (
            "dpmpp2m_ddim",
            2,
            0.0,
            0,
            "cell",
        )
        assert (a["mass_mode"], a["mean_mass_mode"]) == ("smooth", "filled")
        assert a["interval_minutes"] == 60 and a["context_frames"] == 6
        assert "hpcsr" in json.loads(a["code_version"])
        assert "cropped to 40 x 36" in json.loads(a["input"])["notes"][0]
        values = members_of(ens)
    assert np.isfinite(values).all() and (values >= 0).all()
    assert np.abs(values[0] - values[1]).max() > 1e-3, "members must differ"


def test_cell_mass_is_the_lr_input_exactly(base, hr_nc):
    lr = coarsen(truth(hr_nc), 4, 2)
    with xr.open_dataset(base) as ens:
        members, mean = members_of(ens), ens["precip_mean"].values
    for field in list(members) + [mean]:
        got = coarsen(field, 4, 2)
        ok = np.isfinite(lr)
        np.testing.assert_allclose(got[ok], lr[ok], rtol=1e-5, atol=1e-6)


def test_members_get_the_smooth_mass_mode_and_the_mean_the_filled_one(base, export, hr_nc, work):
    """The same run without a mass transform, then transformed by hand: the members are the 'smooth'
    transform of theirs, the mean the 'filled' transform of its own (hpcsr.mass)."""
    raw = work / "no_mass.nc"
    assert run_sample(*base_args(export, hr_nc, raw, "--mass", "none")) == 0
    lr = torch.from_numpy(coarsen(truth(hr_nc), 4, 2))
    fn = load_export(export).recipe.mass
    with xr.open_dataset(base) as ens, xr.open_dataset(raw) as plain:
        pairs = [
            (members_of(ens), members_of(plain), "smooth"),
            (ens["precip_mean"].values, plain["precip_mean"].values, "filled"),
        ]
    for got, before, mode in pairs:
        want = conserve(torch.from_numpy(before), lr, 4, 2, fn, "cell", mode).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    smooth_mean = conserve(torch.from_numpy(pairs[1][1]), lr, 4, 2, fn, "cell", "smooth").numpy()
    assert np.abs(pairs[1][0] - smooth_mean).max() > 1e-3  # the modes differ on this field


def test_lr_netcdf_input_gives_the_same_ensemble(base, hr_nc, export, work):
    """An LR netCDF (block means, stamped at block ends, LR cell centres) reproduces the coarsened
    HR run: the HR grid rebuilt from LR centres equals the HR file's grid."""
    hr = xr.open_dataset(hr_nc).isel(y=slice(0, 40), x=slice(0, 36)).load()
    lr = xr.Dataset(
        {
            "precip": (("time", "y", "x"), coarsen(hr["precip"].values, 4, 2), {"grid_mapping": "crs", "units": "mm"}),
            "crs": hr["crs"],
        },
        coords={
            "time": hr["time"].values[1::2],
            "y": hr["y"].values.reshape(-1, 4).mean(1),
            "x": hr["x"].values.reshape(-1, 4).mean(1),
        },
        attrs={"interval_minutes": 60, "factor_pair": "s4_t2"},
    )
    lr_path = work / "lr.nc"
    lr.to_netcdf(lr_path)
    out = work / "from_lr.nc"
    assert (
        run_sample(
            "--export",
            export,
            "--lr",
            lr_path,
            "--members",
            "1",
            "--steps",
            "2",
            *TILE_ARGS,
            "--mass",
            "cell",
            "--out",
            out,
        )
        == 0
    )
    with xr.open_dataset(out) as a, xr.open_dataset(base) as b:
        np.testing.assert_allclose(a["x"].values, b["x"].values, rtol=0, atol=1e-6)
        np.testing.assert_allclose(a["y"].values, b["y"].values, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(a["time"].values, b["time"].values)
        np.testing.assert_allclose(members_of(a), members_of(b)[:1], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ seeds


def test_seeds_do_not_depend_on_batch_chunk_member_count_or_time_range(base, export, hr_nc, work):
    """Member 0 of the two blocks ending 00:00 and 02:00, sampled with other tile batches, chunks,
    member count and time range than the reference run, is the reference's member 0."""
    out = work / "regrouped.nc"
    assert (
        run_sample(
            *base_args(
                export,
                hr_nc,
                out,
                "--mass",
                "cell",
                "--members",
                "1",
                "--batch",
                "4",
                "--time-chunk",
                "2",
                "--time-range",
                "2011-11-04T23:00",
                "2011-11-05T02:00",
            )
        )
        == 0
    )
    with xr.open_dataset(base) as ref, xr.open_dataset(out) as a:
        assert a.sizes["time"] == 4 and str(a["time"].values[0])[:13] == "2011-11-04T23"
        np.testing.assert_allclose(members_of(a), members_of(ref.sel(time=a["time"]))[:1], rtol=1e-5, atol=1e-5)


def test_another_seed_gives_another_ensemble(base, export, hr_nc, work):
    out = work / "seed1.nc"
    assert (
        run_sample(
            *base_args(
                export,
                hr_nc,
                out,
                "--mass",
                "cell",
                "--seed",
                "1",
                "--time-range",
                "2011-11-05T03:00",
                "2011-11-05T04:00",
            )
        )
        == 0
    )
    with xr.open_dataset(base) as ref, xr.open_dataset(out) as a:
        diff = np.abs(members_of(a) - members_of(ref.sel(time=a["time"])))
        np.testing.assert_allclose(a["precip_mean"].values, ref["precip_mean"].sel(time=a["time"]).values, rtol=1e-5)
    assert diff.mean() > 1e-2


def test_the_exports_spread_gain_scales_the_residual_for_its_sampler_only(export, hr_nc, work):
    """An export calibrated (before s38, in normalised units) at gain 0.5 for the default sampler with 2
    steps: sampled that way, every member's residual (normalised units, where no member is clipped at
    0) is half the uncalibrated one; with another step count the gain is 1 and the file says why;
    sample.spread_gain overrides both."""
    fit = {"gain": 0.5, "sampler": "dpmpp2m_ddim", "steps": 2, "eta": 0.0, "members": 8, "patches": 4}
    calibrated = make_export(work / "calibrated" / "model.pt", PAIR, extra={"spread_calibration": fit})
    runs = {
        "plain": (export, []),
        "calibrated": (calibrated, []),
        "other_steps": (calibrated, ["--steps", "3"]),
        "override": (calibrated, ["--spread-gain", "0.25"]),
    }
    z, attrs = {}, {}
    norm = load_export(export).normaliser
    for name, (path, extra) in runs.items():
        out = work / f"gain_{name}.nc"
        args = base_args(path, hr_nc, out, "--mass", "none", "--time-range", "2011-11-05T03:00", "2011-11-05T04:00")
        assert run_sample(*args, *extra) == 0
        with xr.open_dataset(out) as ds:
            z[name] = norm.forward(members_of(ds)) - norm.forward(ds["precip_mean"].values)[None]
            attrs[name] = (ds.attrs["spread_gain"], ds.attrs["spread_gain_source"])
            if path == calibrated:  # calibrated before s38, no space named: normalised units, as then
                assert ds.attrs["spread_gain_space"] == "normalised"
    assert attrs["plain"] == (1.0, "none (the export has no spread calibration)")
    assert attrs["calibrated"] == (0.5, "export calibration on its validation patches")
    assert attrs["other_steps"][0] == 1.0 and "calibrated for dpmpp2m_ddim, 2 steps" in attrs["other_steps"][1]
    assert attrs["override"] == (0.25, "sample.spread_gain")
    unclipped = np.isfinite(z["plain"]) & np.isfinite(z["calibrated"])
    with xr.open_dataset(work / "gain_plain.nc") as a, xr.open_dataset(work / "gain_calibrated.nc") as b:
        unclipped &= (members_of(a) > 0) & (members_of(b) > 0) & (a["precip_mean"].values > 0)[None]
    assert unclipped.mean() > 0.5
    np.testing.assert_allclose(z["calibrated"][unclipped], 0.5 * z["plain"][unclipped], atol=1e-4)


def test_an_export_calibrated_in_mm_widens_each_members_rain_about_the_mean(export, hr_nc, work):
    """An export whose calibration says space 'mm' (hpcsr.spread, the default since s38): with gain 0.5
    each member's departure in mm from the mean network's rain (precip_mean without a mass transform)
    is half the uncalibrated member's, everywhere (M + 0.5 (X - M) is never below 0); the file says so."""
    fit = {"gain": 0.5, "space": "mm", "sampler": "dpmpp2m_ddim", "steps": 2, "eta": 0.0, "members": 8, "patches": 4}
    calibrated = make_export(work / "calibrated_mm" / "model.pt", PAIR, extra={"spread_calibration": fit})
    departure = {}
    for name, path in (("plain", export), ("calibrated", calibrated)):
        out = work / f"gain_mm_{name}.nc"
        args = base_args(path, hr_nc, out, "--mass", "none", "--time-range", "2011-11-05T03:00", "2011-11-05T04:00")
        assert run_sample(*args) == 0
        with xr.open_dataset(out) as ds:
            departure[name] = members_of(ds) - ds["precip_mean"].values[None]
            space = ds.attrs["spread_gain_space"]
        assert space == "mm"  # no calibration: mm as well
    both = np.isfinite(departure["plain"])
    assert both.mean() > 0.5 and np.abs(departure["plain"][both]).max() > 0.1
    np.testing.assert_allclose(departure["calibrated"][both], 0.5 * departure["plain"][both], atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------ missing data


def test_nan_cells_and_missing_steps_are_masked_and_counted(export, hr_nc, work):
    """An 8 x 8 NaN patch in frame 3 masks 2 x 2 LR cells of block 1 (frames 2, 3); dropping both
    frames of block 2 makes it absent: NaN output, counted, time axis kept regular."""
    ds = xr.open_dataset(hr_nc).load()
    ds["precip"][3, :8, :8] = np.nan
    gappy = ds.drop_isel(time=[4, 5])
    path = work / "gappy.nc"
    gappy.to_netcdf(path)
    out = work / "gappy_ens.nc"
    assert run_sample(*base_args(export, path, out, "--mass", "cell", "--members", "1")) == 0
    with xr.open_dataset(out) as ens:
        precip, mean, masked = members_of(ens), ens["precip_mean"].values, ens["masked_pixels"].values
        a = ens.attrs
        assert ens.sizes["time"] == 8
    expected = np.zeros((8, 40, 36), bool)
    expected[2:4, :8, :8] = True  # block 1 (frames 2, 3): 2 x 2 LR cells
    expected[4:6] = True  # block 2 absent
    np.testing.assert_array_equal(np.isnan(mean), expected)
    for member in precip:
        np.testing.assert_array_equal(np.isnan(member), expected)
    np.testing.assert_array_equal(masked, expected.sum(axis=(1, 2)))
    assert a["masked_pixels_per_member"] == expected.sum() == 2 * 64 + 2 * 1440
    assert a["masked_target_cells"] == 4 + 90
    assert a["absent_target_blocks"] == 1
    # L = 6: the 5 past frames of blocks 0..3 reach 5, 4, 3, 2 blocks before the data; block 3 also lacks block 2
    assert a["absent_context_frames"] == 5 + 4 + 3 + 2 + 1
    assert a["targets_with_incomplete_context"] == 4
    # elsewhere the cell masses still hold
    lr = coarsen(truth(hr_nc), 4, 2)
    got = coarsen(precip[0], 4, 2)
    ok = ~np.isnan(got)
    np.testing.assert_allclose(got[ok], lr[ok], rtol=1e-5, atol=1e-6)


def test_strict_context_masks_cells_with_any_missing_context(export, hr_nc, work):
    out = work / "strict.nc"
    assert run_sample(*base_args(export, hr_nc, out, "--context", "strict", "--members", "1")) == 0
    with xr.open_dataset(out) as ens:
        assert np.isnan(members_of(ens)).all(), "every block lacks context frames before the data start"
        assert ens.attrs["masked_pixels_per_member"] == 8 * 40 * 36


# ------------------------------------------------------------------ tiles and blending


def test_default_overlap_is_a_quarter_tile_of_at_least_two_cells():
    """Whole LR cells, ~1/4 of the tile, at least two cells (tile edges disturb about one cell) but
    never more than half the tile: (tile px, s) -> overlap px."""
    cases = {(32, 4): 8, (32, 8): 16, (64, 4): 16, (32, 2): 8, (40, 5): 10, (16, 4): 8, (24, 8): 8, (8, 8): 0}
    assert {k: default_overlap(*k) for k in cases} == cases


def test_the_mean_s_overlap_is_half_the_tile_in_whole_cells():
    """(tile px, s) -> overlap px: half the tile's cells, rounded down; a one-cell tile has none. A
    larger overlap is allowed while the tiles keep a stride of one cell."""
    cases = {(32, 4): 16, (32, 8): 16, (40, 2): 20, (40, 5): 20, (24, 8): 8, (12, 4): 4, (8, 8): 0}
    assert {k: mean_overlap(*k) for k in cases} == cases
    for (tile, s), overlap in cases.items():
        assert overlap >= default_overlap(tile, s)
        TileLayout(s, 10, 10, tile, overlap)  # a valid layout
    TileLayout(4, 10, 10, 32, 28)
    with pytest.raises(ValueError, match="leaves no stride between tiles of 32: use at most 28"):
        TileLayout(4, 10, 10, 32, 32)


def test_blending_with_ramps_longer_than_half_the_tile_is_a_partition_of_unity():
    """Tiles of 8 cells every 2 cells (sample.overlap=24 at s = 4): each side's sin^2 ramps cross; the
    blend of identical tiles returns the field, and a tile's weight peaks in its middle."""
    layout = TileLayout(s=4, ny=14, nx=12, tile=32, overlap=24)
    assert sorted({r for r, _ in layout.corners}) == [0, 2, 4, 6]
    assert sorted({c for _, c in layout.corners}) == [0, 2, 4]
    field = torch.randn(3, 56, 48, dtype=torch.float64)
    tiles = torch.stack([field[(..., *layout.hr_slices(k))] for k in range(len(layout))])
    out = Blender(layout, dtype=torch.float64).blend(tiles, 0, torch.zeros(3, 56, 48, dtype=torch.float64))
    torch.testing.assert_close(out, field, rtol=0, atol=1e-9)
    w = layout.weights(layout.corners.index((2, 2)))  # inside the domain on all four sides
    assert w[0, 16] < 0.01 and w[15, 15] == w.max() and torch.all(w > 0)


def test_blending_weights_are_a_partition_of_unity():
    layout = TileLayout(s=4, ny=10, nx=9, tile=16, overlap=4)
    assert [c for c in layout.corners] == [(r, c) for r in (0, 3, 6) for c in (0, 3, 5)]
    field = torch.randn(2, 40, 36)
    tiles = torch.stack([field[(..., *layout.hr_slices(k))] for k in range(len(layout))])
    out = Blender(layout).blend(tiles, 0, torch.zeros(2, 40, 36))
    torch.testing.assert_close(out, field, rtol=0, atol=1e-5)
    w = layout.weights(4)  # the middle tile rises on all four sides
    assert w[0, 0] < 0.05 and w[8, 8] == 1 and torch.all(w > 0)


def test_tiles_that_disagree_blend_without_steps():
    """Tiles = one field + a different constant per tile. With raised-cosine ramps of O pixels the
    normalised weights of two neighbours are sin^2 and cos^2, so the blended offset changes by at
    most max|dc| sin(pi / 2O) from one pixel to the next; a plain average jumps by |dc| / 2 where
    the overlap begins."""
    overlap = 16
    field = torch.randn(64, 48, dtype=torch.float64)
    offsets = torch.tensor([0.0, 3.0, -2.0, 1.0, 4.0, -1.0], dtype=torch.float64)
    steps = {}
    for window in ("cosine", "uniform"):
        layout = TileLayout(s=4, ny=16, nx=12, tile=32, overlap=overlap, window=window)
        assert len(layout) == 6  # 3 x 2 tiles, neighbours overlap by exactly 16 pixels
        tiles = torch.stack([field[layout.hr_slices(k)] + offsets[k] for k in range(6)])
        blended = Blender(layout, dtype=torch.float64).blend(tiles, 0, torch.zeros(64, 48, dtype=torch.float64)) - field
        steps[window] = max(blended.diff(dim=0).abs().max().item(), blended.diff(dim=1).abs().max().item())
    dc = (offsets[:, None] - offsets[None, :]).abs().max().item()
    assert steps["cosine"] <= dc * np.sin(np.pi / (2 * overlap)) + 1e-9
    assert steps["uniform"] >= 0.5 * 1.0 - 1e-9  # the smallest neighbour offset difference is 1


def _edge_ratio(layout: TileLayout, field: np.ndarray) -> float:
    """Mean |row-to-row jump| across the rows where a tile starts or ends, over the median jump."""
    edges = sorted({b for k in range(len(layout)) for b in (layout.hr_slices(k)[0].start, layout.hr_slices(k)[0].stop)})
    edges = [e for e in edges if 0 < e < layout.hr_shape[0]]
    jumps = np.abs(np.diff(field, axis=-2)).mean(axis=tuple(i for i in range(field.ndim) if i != field.ndim - 2))
    return float(jumps[[e - 1 for e in edges]].mean() / np.median(jumps))


def test_tiles_blend_without_seams(export, hr_nc):
    exp = load_export(export)
    seq = open_hr(hr_nc, exp.pair)
    target = target_times(seq)[-1:]
    fields = {}
    # 16 px tiles with the default two-cell overlap: a tile's outputs are disturbed about one LR cell in
    # from each of its edges (at all four since the pooled downsampling, s44: with a one-cell overlap this
    # random network's ratio is 1.41, 1.20 with the stride-2 convolution, which disturbs the top and left
    # edges only; with two cells 0.89 and 0.80)
    for name, tile in (("single", 40), ("cosine", 16)):
        overlap = default_overlap(tile, exp.pair.s) if tile == 16 else 0
        cfg = SampleConfig(members=1, steps=2, tile=tile, overlap=overlap, residual_overlap=overlap // 2, mass="none")
        sampler = EnsembleSampler(exp, seq, cfg)
        lr, _ = sampler.context_frames(target)
        z = sampler.normaliser.forward(torch.from_numpy(lr[0]))
        mean = sampler.mean_field(z)
        residual = sampler.residual(
            sampler.conditions(z, mean), sampler.residual_sigma(z, mean), torch.Generator().manual_seed(0)
        )
        fields[name] = (sampler.layout, mean.numpy(), residual.numpy(), sampler.residual_layout)
    layout, residual_layout = fields["cosine"][0], fields["cosine"][3]
    assert residual_layout.overlap == 4 < layout.overlap == 8  # the denoiser's tiles as asked, apart from the mean's
    # no larger row-to-row change across tile edges than elsewhere (1.0 = none at all)
    assert _edge_ratio(layout, fields["cosine"][1]) < 1.4
    assert _edge_ratio(layout, fields["single"][1]) < 1.2
    # the residual is sampled over the whole domain at once: no seams either, at the denoiser's tile
    # edges nor at the mean's
    assert _edge_ratio(residual_layout, fields["cosine"][2]) < 1.3
    assert _edge_ratio(layout, fields["cosine"][2]) < 1.3
    # tiled and single-tile means differ only by tile-border effects of the (random-weight) network
    single = fields["single"][1]
    rel = np.abs(fields["cosine"][1] - single).mean() / np.abs(single - single.mean()).mean()
    assert rel < 0.35


def test_tiles_other_than_the_training_patch_are_warned_about(work, hr_nc, caplog):
    """The networks normalise over the whole tile (GroupNorm), so a tile of another size than the
    export's training patch changes their output: the sampler says so, unless the domain is what
    keeps the tiles from the patch's size."""
    exp = load_export(make_export(work / "patch16" / "joint" / "export" / "model.pt", PAIR, patch=16))
    seq = open_hr(hr_nc, exp.pair)  # 40 x 36 px

    def warned(**options) -> bool:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hpcsr.sampling.ensemble"):
            EnsembleSampler(exp, seq, SampleConfig(members=1, **options))
        return "trained on 16 px patches" in caplog.text

    assert not warned() and not warned(tile=16)
    assert warned(tile=32) and warned(tile=8) and warned(tile=64)  # 64: the whole domain, 40 x 36
    big = load_export(make_export(work / "patch100" / "joint" / "export" / "model.pt", PAIR, patch=100))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hpcsr.sampling.ensemble"):
        EnsembleSampler(big, seq, SampleConfig(members=1, tile=40))  # the domain is smaller than the patch
    assert "px patches" not in caplog.text


def test_the_mean_tiles_overlap_by_half_and_the_denoiser_s_by_a_quarter_unless_told(export, hr_nc):
    """By default the mean network's tiles overlap by half their side and the denoiser's by
    `default_overlap`; each is set on its own, and the file records both tilings (the evaluation
    scores the seams at both)."""
    exp = load_export(export)
    seq = open_hr(hr_nc, exp.pair)
    default = EnsembleSampler(exp, seq, SampleConfig(members=1, tile=24))  # 6 x 6 cells
    assert (default.layout.overlap, default.residual_layout.overlap) == (12, 8)
    assert len(default.layout) > len(default.residual_layout)
    apart = EnsembleSampler(exp, seq, SampleConfig(members=1, tile=16, overlap=4, residual_overlap=8))
    assert apart.layout.overlap == 4 and apart.residual_layout.overlap == 8
    attrs = apart.attributes()
    assert (attrs["overlap"], attrs["residual_overlap"]) == (4, 8)
    assert attrs["residual_tiles_per_frame"] == len(apart.residual_layout) > 0
    with pytest.raises(ValueError, match="multiple of s=4"):
        EnsembleSampler(exp, seq, SampleConfig(members=1, tile=16, residual_overlap=3))


def test_the_motion_start_is_the_whole_domains_whatever_the_tiling(work):
    """model.mean_skip 'motion': the sampler computes the start along the motion over the whole
    domain and cuts it like the LR, so a fresh mean (its start) is the same with one tile or nine,
    and on a synthetic storm moving 4 px per hour it is nearer the truth than the linear start."""
    hr_nc = write_radar_nc(work / "fast.nc", STORM, drift=4)
    exports = {
        skip: make_export(
            work / f"{skip}.pt", PAIR, cfg=dataclasses.replace(MICRO, mean_skip=skip), fresh_mean_head=True
        )
        for skip in ("motion", "linear")
    }
    means = {}
    for skip, path in exports.items():
        exp = load_export(path)
        seq = open_hr(hr_nc, exp.pair)
        for tile in (40, 16):
            sampler = EnsembleSampler(
                exp, seq, SampleConfig(members=1, steps=2, tile=tile, overlap=4 if tile == 16 else 0)
            )
            lr, _ = sampler.context_frames(target_times(seq))
            z = [sampler.normaliser.forward(torch.from_numpy(x)) for x in lr]
            means[skip, tile] = torch.stack([sampler.mean_field(x) for x in z]).flatten(0, 1)
    torch.testing.assert_close(means["motion", 16], means["motion", 40], atol=1e-5, rtol=1e-5)
    norm = load_export(exports["motion"]).normaliser
    hr = torch.from_numpy(truth(hr_nc))
    rmse = {skip: float((norm.inverse(means[skip, 40]).relu() - hr).square().mean().sqrt()) for skip in exports}
    assert rmse["motion"] < 0.95 * rmse["linear"], rmse  # measured 0.92 x


def test_image_and_frame_scale_masses(export, hr_nc):
    exp = load_export(export)
    seq = open_hr(hr_nc, exp.pair)
    lr = torch.from_numpy(coarsen(truth(hr_nc)[2:4], 4, 2))  # (1, 10, 9)
    x = torch.rand(2, 40, 36) * 3
    for mass, region in (("image", 3), ("frame", None)):
        sampler = EnsembleSampler(exp, seq, SampleConfig(members=1, mass=mass, mass_region=region, tile=16, overlap=4))
        out = sampler.mass_transform(x, lr, sampler.cfg.mass_mode)
        got = coarsen(out, 4, 2)[0]
        if mass == "frame":
            torch.testing.assert_close(got.sum(), lr.sum(), rtol=1e-5, atol=0)
            continue
        for r0 in range(0, 10, 3):  # 3 x 3-cell regions, the last row/column of regions 1 cell wide
            for c0 in range(0, 9, 3):
                torch.testing.assert_close(
                    got[r0 : r0 + 3, c0 : c0 + 3].sum(), lr[0, r0 : r0 + 3, c0 : c0 + 3].sum(), rtol=1e-5, atol=0
                )
        assert not torch.allclose(coarsen(out, 4, 2), lr, rtol=1e-3), "image scale must not be cell scale"


# ------------------------------------------------------------------ bad input


def test_pair_mismatch_names_both_pairs(export, hr_nc, work, capsys):
    assert run_sample(*base_args(export, hr_nc, work / "never.nc", "--pair", "10,3")) == 2
    err = capsys.readouterr().err
    assert "s4_t2" in err and "s10_t3" in err and "--pair" in err
    assert not (work / "never.nc").exists()


def test_missing_export_and_bad_options_are_clear_errors(hr_nc, export, work, capsys):
    assert run_sample("--export", work / "nowhere", "--hr", hr_nc, "--coarsen", "--out", work / "x.nc") == 2
    assert "no export at" in capsys.readouterr().err
    assert run_sample("--export", export, "--hr", hr_nc, "--out", work / "x.nc") == 2
    assert "add --coarsen" in capsys.readouterr().err
    assert run_sample(*base_args(export, hr_nc, work / "x.nc", "--tile", "18")) == 2
    assert "tile=18" in capsys.readouterr().err
    assert run_sample(*base_args(export, hr_nc, work / "x.nc", "--time-range", "2020-01-01", "2020-01-02")) == 2
    assert "--time-range" in capsys.readouterr().err
    assert run_sample(*base_args(export, hr_nc, work / "x.nc", "--eta", "0.5")) == 2  # the default sampler has no eta
    assert "sampler 'dpmpp2m_ddim' takes none" in capsys.readouterr().err
    assert run_sample(*base_args(export, hr_nc, work / "x.nc", "--sampler", "ddim", "--eta", "1.5")) == 2
    assert "eta=1.5 must be in [0, 1]" in capsys.readouterr().err
    assert run_sample(*base_args(export, hr_nc, work / "x.nc", "--mass", "frame", "--mean-mass-mode", "filled")) == 2
    assert "mass mode 'filled' works per LR cell: use mass scale 'cell', not 'frame'" in capsys.readouterr().err
    assert not (work / "x.nc").exists()
    assert not list(work.glob(".x.nc.*.tmp")), "no temporary file may be left behind"


# ------------------------------------------------------------------ shards and several ranks


def test_shard_input_grid_times_crs_and_pair_check(small_dataset, work):
    from hpcsr.data.store import Shard

    shard_path = small_dataset["out"] / "shards" / "s10_t3.h5"
    export = make_export(work / "s10_t3" / "model.pt", FactorPair(10, 3))
    with Shard(shard_path) as shard:
        store = shard.hr_store()
        i = int(shard.context_windows(5)[0])
        end = shard.times[i + 1]
        first = store.times[shard.hr_start[i]]
        y0, y1, x0, x1 = shard.hr_window
        x_hr, y_hr, wkt = store.x[x0:x1], store.y[y0:y1], store.crs_wkt
        hr_times = store.times[shard.hr_start[i] : shard.hr_start[i + 1] + 3]
        lr = shard.lr[i : i + 2]
    out = work / "shard.nc"
    assert (
        run_sample(
            "--export",
            export,
            "--lr",
            shard_path,
            "--members",
            "2",
            "--steps",
            "1",
            "--mass",
            "cell",
            "--time-range",
            str(first),
            str(end),
            "--out",
            out,
        )
        == 0
    )
    with xr.open_dataset(out) as ens:
        np.testing.assert_allclose(ens["x"].values, x_hr, atol=1e-6)
        np.testing.assert_allclose(ens["y"].values, y_hr, atol=1e-6)
        np.testing.assert_array_equal(ens["time"].values.astype("datetime64[s]"), hr_times)
        assert ens["crs"].attrs["crs_wkt"] == wkt
        got = coarsen(members_of(ens)[0], 10, 3)
    ok = np.isfinite(lr)
    np.testing.assert_allclose(got[ok], lr[ok], rtol=1e-5, atol=1e-6)
    other = small_dataset["out"] / "shards" / "s10_t1.h5"
    with pytest.raises(ValueError, match="s10_t1.*s10_t3"):
        from hpcsr.sampling.inputs import open_lr

        open_lr(other, FactorPair(10, 3))


# ------------------------------------------------------------------ the typed entry point and the launcher's stage


def same_ensemble(a: Path, b: Path) -> None:
    """Same values, coordinates and attributes, but for when and by which command each was made."""
    with xr.open_dataset(a) as x, xr.open_dataset(b) as y:
        xr.testing.assert_equal(x, y)
        made = ("created", "history")
        assert {k: v for k, v in x.attrs.items() if k not in made} == {
            k: v for k, v in y.attrs.items() if k not in made
        }


def test_run_sample_of_the_config_section_is_the_cli(base, export, hr_nc, work):
    """`hpcsr sample FLAGS` and run_sample(the sample section with the same keys) write the same file."""
    from hpcsr.config import compose
    from hpcsr.sampling import SampleResult, run_sample

    out = work / "typed.nc"
    keys = {"members": 2, "steps": 2, "tile": 16, "overlap": 4, "mass": "cell", "progress": "false"}
    cfg = compose(
        [f"sample.export={export}", f"sample.hr={hr_nc}", f"sample.out={out}"]
        + [f"sample.{k}={v}" for k, v in keys.items()]
    ).sample
    result = run_sample(cfg)
    assert isinstance(result, SampleResult) and result.path == out
    assert result.counts["target_blocks"] == 4 and result.counts["masked_target_cells"] == 0
    assert result.settings == {"factor_pair": "s4_t2", "sampler": "dpmpp2m_ddim", "sampler_steps": 2}
    assert result.summary() == {"path": str(out), **result.counts, **result.settings}
    same_ensemble(base, out)
    with xr.open_dataset(out) as ens:
        assert "export" not in json.loads(ens.attrs["config"])  # the file records how, not where from


def test_run_sample_names_the_missing_keys(export, work):
    from hpcsr.sampling import SampleStageConfig, run_sample

    with pytest.raises(ValueError, match=r"sample\.export, --export\) and the output file \(sample\.out"):
        run_sample(SampleStageConfig(lr="lr.nc"))
    with pytest.raises(ValueError, match=r"exactly one input: sample\.lr \(--lr"):
        run_sample(SampleStageConfig(export=str(export), out=str(work / "never.nc")))
    assert not (work / "never.nc").exists()


@pytest.mark.slow  # samples twice and evaluates twice, with figures
@pytest.mark.filterwarnings("ignore:2 members")
def test_launcher_sample_and_evaluate_stages_are_the_clis(small_dataset, work):
    """The launcher's sample stage (sample section + the pair's export, shard and test split) writes
    what `hpcsr sample` writes with those flags, inside the test split; its evaluate stage scores
    that ensemble against the HR store's truth as `hpcsr evaluate` does with the same settings."""
    from hpcsr.config import compose
    from hpcsr.data.store import HRStore, Shard
    from hpcsr.dist import discover
    from hpcsr.evaluate.cli import main as evaluate_main
    from hpcsr.launch.stages import ElementSpec, evaluate, sample

    pair, run_dir = FactorPair(10, 1), work / "launched"
    make_export(run_dir / "diffusion" / "export" / "model.pt", pair)
    settings = ["sample.members=2", "sample.steps=1", "sample.mass=cell", "sample.progress=false"]
    settings += ["evaluate.scales=[1,5]", "evaluate.progress=false"]
    cfg = compose(
        ["factor=s10_t1", f"data_dir={small_dataset['out']}", f"run_dir={run_dir}"]
        + ["launcher.stages=[mean,diffusion,sample,evaluate]"]
        + settings
    )
    done = sample(ElementSpec("sample", pair, None, cfg, (pair,), 0), discover())
    ensemble = run_dir / "sample" / "ensemble.nc"
    assert done["ensemble"] == str(ensemble) and done["summary"]["target_blocks"] > 0
    shard = small_dataset["out"] / "shards" / "s10_t1.h5"
    start, end = Shard(shard).splits["test"]
    last = str(end - np.timedelta64(1, "s"))
    out = work / "launched_cli.nc"
    flags = ["--members", 2, "--steps", 1, "--mass", "cell"]
    assert (
        run_sample("--export", run_dir / "diffusion", "--lr", shard, "--time-range", start, last, *flags, "--out", out)
        == 0
    )
    same_ensemble(out, ensemble)
    with xr.open_dataset(out) as ens:
        times, ys, xs = ens["time"].values, ens["y"].values, ens["x"].values
    assert start <= times.min() and times.max() < end  # the split is [start, end) in HR-step end times

    scored = evaluate(ElementSpec("evaluate", pair, None, cfg, (pair,), 0), discover())
    truth = run_dir / "evaluate" / "truth.nc"
    assert scored["metrics"] == str(run_dir / "evaluate" / "report" / "metrics.json")
    with xr.open_dataset(truth) as tru, HRStore(small_dataset["out"] / "hr.h5") as store:
        rows = [int(np.argmin(np.abs(store.y - v))) for v in ys]
        cols = [int(np.argmin(np.abs(store.x - v))) for v in xs]
        present = np.isin(times.astype("datetime64[s]").astype(np.int64), store.time_s)
        assert not present.all(), "the test split holds one of the synthetic data's missing hours"
        for k, when in enumerate(times):
            got = tru["precip"].values[k]
            if present[k]:
                i = store.index_of(when)
                np.testing.assert_array_equal(got, store.read(i, i + 1)[0][np.ix_(rows, cols)])
            else:
                assert np.isnan(got).all()  # a gap in the record is missing truth, not an error
    metrics = json.loads(Path(scored["metrics"]).read_text())
    thresholds = ",".join(map(str, metrics["settings"]["thresholds_mm_per_step"]))
    cli_out = work / "launched_cli_report"
    args = ["--truth", truth, "--ensemble", ensemble, "--out", cli_out, "--scales", "1,5", "--thresholds", thresholds]
    assert evaluate_main([*map(str, args), "--quiet"]) == 0
    assert json.loads((cli_out / "metrics.json").read_text()) == metrics


@pytest.mark.dist
@pytest.mark.slow
def test_two_ranks_write_the_same_ensemble(base, export, hr_nc, work, launch_env, venv_bin):
    """torchrun with 2 real processes (gloo): members split over ranks, rank 0 gathers and writes."""
    out = work / "two_ranks.nc"
    cmd = [
        str(venv_bin / "torchrun"),
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "hpcsr.cli",
        "sample",
        *map(str, base_args(export, hr_nc, out, "--mass", "cell")),
        "--quiet",
    ]
    proc = subprocess.run(cmd, env=launch_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with xr.open_dataset(out) as a, xr.open_dataset(base) as b:
        assert a.attrs["world_size"] == 2
        np.testing.assert_allclose(members_of(a), members_of(b), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(a["precip_mean"].values, b["precip_mean"].values, rtol=1e-4, atol=1e-4)


def test_default_image_scale_is_seamless_and_keeps_the_domain_total(export, hr_nc):
    """Default image scale: each overlapping sampling tile is conserved on its own and the tiles are
    blended, then the domain total is made exact. On a flat input the exact partition into regions
    steps from region to region; the blended tiles ramp instead (smaller neighbour differences)."""
    exp = load_export(export)
    seq = open_hr(hr_nc, exp.pair)
    lr = torch.from_numpy(coarsen(truth(hr_nc)[2:4], 4, 2))  # (1, 10, 9)
    x = torch.ones(2, 40, 36)
    outs = {}
    for region in (None, 4):
        sampler = EnsembleSampler(
            exp, seq, SampleConfig(members=1, mass="image", mass_region=region, tile=16, overlap=4)
        )
        outs[region] = out = sampler.mass_transform(x, lr, sampler.cfg.mass_mode)
        torch.testing.assert_close(coarsen(out, 4, 2).sum(), lr.sum(), rtol=1e-5, atol=0)
    step = {k: max(v.diff(dim=-1).abs().max().item(), v.diff(dim=-2).abs().max().item()) for k, v in outs.items()}
    assert step[None] < 0.75 * step[4], step


class _RecordingWriter:
    """Records, at each member written, how many residuals the sampler had drawn by then."""

    def __init__(self, drawn: list):
        self.drawn, self.members_at, self.means = drawn, [], 0

    def write_member(self, first_step, member, field):
        assert field.ndim == 3  # one member's (steps, y, x), never the ensemble
        self.members_at.append((first_step, member, len(self.drawn)))

    def write_mean(self, first_step, mean, masked):
        self.means += 1


def test_members_are_written_as_they_are_sampled(export, hr_nc):
    """A full-domain ensemble never waits in memory: each member reaches the writer before the next
    is sampled (sample_sequence holds one member per rank, plus the chunk's means)."""
    from hpcsr.sampling import sample_sequence

    exp = load_export(export)
    seq = open_hr(hr_nc, exp.pair)
    sampler = EnsembleSampler(exp, seq, SampleConfig(members=3, steps=1, tile=16, overlap=4, time_chunk=2))
    drawn = []
    residual = sampler.residual
    sampler.residual = lambda conds, sigma, gen: drawn.append(1) or residual(conds, sigma, gen)
    writer = _RecordingWriter(drawn)
    times = target_times(seq)[-2:]
    sample_sequence(sampler, times, writer, progress=False)
    t = exp.pair.t
    assert writer.members_at == [(n * t, m, 3 * n + m + 1) for n in range(2) for m in range(3)]
    assert writer.means == 1


def test_condition_cache_budget_changes_memory_not_members(export, hr_nc):
    """With no budget every tile's condition is encoded again at each step: the same members, and
    nothing kept that grows with the domain."""
    exp = load_export(export)
    seq = open_hr(hr_nc, exp.pair)
    target = target_times(seq)[-1:]
    members = []
    for budget in (1024, 0):
        sampler = EnsembleSampler(
            exp, seq, SampleConfig(members=1, steps=2, tile=16, overlap=4, batch=2, condition_cache_mb=budget)
        )
        lr, _ = sampler.context_frames(target)
        z = sampler.normaliser.forward(torch.from_numpy(lr[0]))
        mean = sampler.mean_field(z)
        conds = sampler.conditions(z, mean)
        assert len(conds.kept) == (len(sampler.batches(sampler.residual_layout)) if budget else 0)
        sigma = sampler.residual_sigma(z, mean)
        members.append(sampler.residual(conds, sigma, torch.Generator().manual_seed(0)).numpy())
    np.testing.assert_array_equal(members[0], members[1])
