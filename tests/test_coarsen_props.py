"""Properties of hpcsr.coarsen.coarsen (the one definition of LR from HR), checked with hypothesis:
block-sum identity, s = t = 1 identity, commuting with crops on block boundaries, the NaN policy,
and numpy / torch agreement; plus hand-computed values."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcsr.coarsen import coarsen


@st.composite
def hr_blocks(draw, with_nan=False):
    s = draw(st.integers(1, 5))
    t = draw(st.integers(1, 4))
    nt, ny, nx = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    hr = (rng.gamma(0.3, 2.0, size=(nt * t, ny * s, nx * s)) * (rng.random((nt * t, ny * s, nx * s)) < 0.4)).astype(
        np.float32
    )
    if with_nan:
        hr[rng.random(hr.shape) < draw(st.sampled_from([0.02, 0.2, 0.6]))] = np.nan
    return hr, s, t


def block_sums_float64(hr, s, t):
    """Explicit loops over blocks, in float64: sums and valid counts."""
    T, Y, X = hr.shape
    sums = np.zeros((T // t, Y // s, X // s))
    counts = np.zeros_like(sums)
    for i in range(T // t):
        for j in range(Y // s):
            for k in range(X // s):
                block = hr[i * t : (i + 1) * t, j * s : (j + 1) * s, k * s : (k + 1) * s].astype(np.float64)
                sums[i, j, k] = np.nansum(block)
                counts[i, j, k] = np.count_nonzero(~np.isnan(block))
    return sums, counts


@settings(max_examples=60, deadline=None)
@given(hr_blocks())
def test_block_sum_identity(case):
    hr, s, t = case
    lr = coarsen(hr, s, t)
    sums, _ = block_sums_float64(hr, s, t)
    assert lr.dtype == np.float32
    np.testing.assert_allclose(lr.astype(np.float64) * s * s * t, sums, rtol=2e-6, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(hr_blocks(with_nan=True))
def test_unit_factors_are_the_identity(case):
    hr, _, _ = case
    out = coarsen(hr, 1, 1)
    assert out.shape == hr.shape
    np.testing.assert_array_equal(out, hr)  # NaN positions included


@settings(max_examples=60, deadline=None)
@given(hr_blocks(with_nan=True), st.data())
def test_commutes_with_crop_on_block_boundaries(case, data):
    hr, s, t = case
    nt, ny, nx = hr.shape[0] // t, hr.shape[1] // s, hr.shape[2] // s
    i0 = data.draw(st.integers(0, nt - 1))
    i1 = data.draw(st.integers(i0 + 1, nt))
    j0 = data.draw(st.integers(0, ny - 1))
    j1 = data.draw(st.integers(j0 + 1, ny))
    k0 = data.draw(st.integers(0, nx - 1))
    k1 = data.draw(st.integers(k0 + 1, nx))
    cropped = coarsen(hr[i0 * t : i1 * t, j0 * s : j1 * s, k0 * s : k1 * s], s, t)
    whole = coarsen(hr, s, t)[i0:i1, j0:j1, k0:k1]
    # the same blocks and NaN pattern; values to float32 rounding, since numpy's summation order
    # depends on the array's shape
    assert np.array_equal(np.isnan(cropped), np.isnan(whole))
    np.testing.assert_allclose(cropped, whole, rtol=1e-6, atol=1e-7)


@settings(max_examples=60, deadline=None)
@given(hr_blocks(with_nan=True), st.sampled_from([1.0, 0.75, 0.5, 0.1]))
def test_nan_policy(case, min_valid):
    hr, s, t = case
    lr = coarsen(hr, s, t, min_valid=min_valid)
    sums, counts = block_sums_float64(hr, s, t)
    enough = counts >= min_valid * s * s * t - 1e-9
    assert np.array_equal(~np.isnan(lr), enough)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.testing.assert_allclose(lr[enough], (sums / counts)[enough], rtol=2e-6, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(hr_blocks(with_nan=True))
def test_numpy_and_torch_agree(case):
    hr, s, t = case
    a = coarsen(hr, s, t, min_valid=0.5)
    b = coarsen(torch.from_numpy(hr), s, t, min_valid=0.5).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, equal_nan=True)


def test_hand_computed_block():
    # one 2 x 2 x 2 block (s = 2, t = 2): values 0..7, mean 3.5; sum 28 = 8 * 3.5
    hr = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    assert coarsen(hr, 2, 2).item() == 3.5
    hr[1, 1, 1] = np.nan  # one of eight missing: 0..6 remain, mean 3
    assert np.isnan(coarsen(hr, 2, 2).item())
    assert coarsen(hr, 2, 2, min_valid=7 / 8).item() == 3.0
    assert np.isnan(coarsen(hr, 2, 2, min_valid=0.9).item())


def test_misaligned_shapes_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match="not divisible by s=3: crop to 3 x 3"):
        coarsen(np.zeros((1, 4, 4), np.float32), 3, 1)
    with pytest.raises(ValueError, match="not a multiple of t=2: trim to 2 steps"):
        coarsen(np.zeros((3, 4, 4), np.float32), 1, 2)
