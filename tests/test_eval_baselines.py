"""Baselines (nearest, bicubic + linear in time, mean only) and the mass-error metric."""

import numpy as np
import pytest

from hpcsr.coarsen import coarsen, repeat_blocks, upsample_space
from hpcsr.evaluate.baselines import bicubic_linear, block_centres, mean_only, nearest
from hpcsr.evaluate.mass_error import mass_error_sums


def _lr(n=5, ny=4, nx=6, seed=0):
    return np.random.default_rng(seed).gamma(0.7, 2.0, size=(n, ny, nx)).astype(np.float32)


def test_nearest_is_block_repeat_for_any_step_range():
    lr = _lr()
    full = nearest(lr, 3, 2)
    np.testing.assert_array_equal(full, repeat_blocks(lr, 3, 2))
    np.testing.assert_array_equal(nearest(lr, 3, 2, 3, 8), full[3:8])


@pytest.mark.parametrize("t", [2, 3, 4])
def test_linear_time_placement_is_exact_for_fields_linear_in_time(t):
    # HR field a + b*i (step i at time i): the mean of block j is its value at the block centre
    # j*t + (t-1)/2, so linear interpolation between centres is exact between the first and last centre.
    n_blocks, s = 6, 2
    steps = np.arange(n_blocks * t, dtype=np.float64)
    hr = (1.0 + 0.5 * steps)[:, None, None] * np.ones((1, 4, 4))
    lr = coarsen(hr, s, t)
    centres = block_centres(n_blocks, t)
    np.testing.assert_allclose(lr[:, 0, 0], 1.0 + 0.5 * centres)
    out = bicubic_linear(lr, s, t)
    inside = (steps >= centres[0]) & (steps <= centres[-1])
    np.testing.assert_allclose(out[inside], hr[inside], rtol=1e-6)
    np.testing.assert_allclose(out[steps < centres[0]], lr[0, 0, 0], rtol=1e-6)  # held before the first centre
    np.testing.assert_allclose(out[steps > centres[-1]], lr[-1, 0, 0], rtol=1e-6)


def test_bicubic_linear_with_t1_is_clipped_bicubic_and_chunks_agree():
    lr = _lr(seed=1)
    np.testing.assert_allclose(bicubic_linear(lr, 4, 1), np.maximum(upsample_space(lr, 4), 0), rtol=1e-6)
    full = bicubic_linear(lr, 2, 3)
    for a, b in ((0, 3), (4, 11), (13, 15)):
        np.testing.assert_allclose(bicubic_linear(lr, 2, 3, a, b), full[a:b], rtol=1e-6)
    assert (full >= 0).all()
    assert (bicubic_linear(lr, 4, 1, clip_negative=False) < 0).any()  # bicubic overshoots below 0


def test_linear_time_mixes_neighbouring_blocks_by_seven_ninths_for_t3():
    lr = _lr(n=4, ny=2, nx=2, seed=2)
    blocks = coarsen(bicubic_linear(lr, 1, 3).astype(np.float64), 1, 3)
    np.testing.assert_allclose(blocks[1:-1], 7 / 9 * lr[1:-1] + (lr[:-2] + lr[2:]) / 9, rtol=1e-5)


def test_baseline_step_range_and_mean_shape_errors():
    lr = _lr()
    with pytest.raises(ValueError, match=r"HR step range \[0, 11\)"):
        nearest(lr, 2, 2, 0, 11)
    with pytest.raises(ValueError, match="mean prediction has shape"):
        mean_only(np.zeros((3, 4, 4)), (3, 4, 5))
    np.testing.assert_array_equal(mean_only(np.ones((2, 3, 3)), (2, 3, 3)), 1.0)


def test_mass_error_is_zero_for_block_repeat_and_truth():
    rng = np.random.default_rng(4)
    hr = rng.gamma(0.4, 3.0, size=(6, 15, 10)).astype(np.float32)
    lr = coarsen(hr, 5, 3)
    for forecast in (repeat_blocks(lr, 5, 3), hr):
        sums = mass_error_sums(forecast[None], lr, 5, 3)
        assert sums.cell_abs == pytest.approx(0.0, abs=1e-6 * sums.lr_total)  # LR made in float32
        assert sums.cells == lr.size
    exact = mass_error_sums(repeat_blocks(lr, 5, 3)[None], lr, 5, 3)
    assert exact.cell_abs == 0.0 and exact.tile_abs == 0.0  # float64 coarsening of a repeat is exact


def test_mass_error_hand_computed():
    # s=2, t=1; block A = [[1,1],[1,1]] (mean 1) against LR 2, block B = [[4,0],[0,0]] (mean 1) against LR 1
    forecast = np.array([[[1, 1, 4, 0], [1, 1, 0, 0]]], dtype=np.float64)[None]
    lr = np.array([[[2.0, 1.0]]])
    score = mass_error_sums(forecast, lr, 2, 1).scores()
    assert score == {
        "cell_mae": 0.5,
        "cell_relative": 1 / 3,
        "tile_relative": 1 / 3,
        "bias_relative": -1 / 3,
        "cells": 2,
    }
    # compensating errors: +1 and -1 cancel over the tile but not per cell
    score = mass_error_sums(forecast, np.array([[[2.0, 0.0]]]), 2, 1).scores()
    assert score["cell_relative"] == pytest.approx(1.0) and score["tile_relative"] == 0.0
    # tiles of one LR cell equal the cell scale; NaN LR cells are left out of both sides
    score = mass_error_sums(forecast, np.array([[[2.0, np.nan]]]), 2, 1, tile_cells=1).scores()
    assert score == {"cell_mae": 1.0, "cell_relative": 0.5, "tile_relative": 0.5, "bias_relative": -0.5, "cells": 1}


def test_mass_error_bad_shapes():
    with pytest.raises(ValueError, match="not divisible by s=3"):
        mass_error_sums(np.zeros((1, 2, 4, 4)), np.zeros((2, 1, 1)), 3, 1)
    with pytest.raises(ValueError, match="coarsens to"):
        mass_error_sums(np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 2)), 2, 1)
    with pytest.raises(ValueError, match="tiles of 3 cells"):
        mass_error_sums(np.zeros((1, 2, 8, 8)), np.zeros((2, 4, 4)), 2, 1, tile_cells=3)


def test_bicubic_masks_only_the_pixels_of_a_missing_lr_cell():
    """A gap in the LR masks the s x s x t pixels under it, not its bicubic neighbourhood; the
    other pixels equal the interpolation of the LR with the gap filled by 0 (the networks' input)."""
    rng = np.random.default_rng(3)
    lr = rng.gamma(0.5, 2.0, size=(3, 6, 6)).astype(np.float32)
    gap = lr.copy()
    gap[1, 2, 3] = np.nan
    s, t = 4, 1
    got = bicubic_linear(gap, s, t)
    hole = np.zeros(got.shape, bool)
    hole[1, 8:12, 12:16] = True
    assert np.isnan(got[hole]).all() and np.isfinite(got[~hole]).all()
    filled = gap.copy()
    filled[1, 2, 3] = 0.0
    np.testing.assert_array_equal(got[~hole], bicubic_linear(filled, s, t)[~hole])


def test_linear_time_holds_the_other_block_next_to_a_missing_one():
    lr = np.full((3, 2, 2), 2.0, np.float32)
    lr[1, 0, 0] = np.nan
    s, t = 2, 2
    got = bicubic_linear(lr, s, t)
    assert np.isnan(got[2:4, :2, :2]).all()  # the missing block's own pixels
    assert np.isfinite(got[[0, 1, 4, 5]]).all()  # its neighbours in time keep their own value
    np.testing.assert_allclose(got[[0, 1, 4, 5], :2, :2], 2.0, rtol=1e-6)
