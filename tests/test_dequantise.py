"""Dequantisation of a product that rounds its amounts (preprocessing.dequantise): every wet pixel
stays inside its rounding bin, dry stays dry, missing stays missing; a rounded smooth field comes
back closer to the field before rounding and without its steps; heavy rain barely moves."""

import numpy as np
import pytest

from preprocessing.dequantise import dequantise

Q = 0.05


def rounded(field):
    return np.round(field / Q) * Q


def roughness(f):
    """Mean square of f minus its 3 x 3 mean, inside the border (0 on a plane)."""
    box = sum(f[dy : dy + f.shape[0] - 2, dx : dx + f.shape[1] - 2] for dy in range(3) for dx in range(3)) / 9
    return float(np.mean((f[1:-1, 1:-1] - box) ** 2))


def test_a_rounded_ramp_comes_back_smoother_and_closer_to_the_truth():
    yy, xx = np.mgrid[0:24, 0:24]
    truth = 0.05 + 0.004 * xx + 0.002 * yy  # light rain, 0.05 .. 0.19 mm: a few rounding levels
    q = rounded(truth)
    d = dequantise(q.astype(np.float32), Q)
    assert d.dtype == np.float32
    assert np.all(d >= q - Q / 2 - 1e-6) and np.all(d <= q + Q / 2 + 1e-6)  # inside each bin
    assert np.abs(d - truth).mean() < 0.5 * np.abs(q - truth).mean()
    assert roughness(d) < 0.1 * roughness(q)  # the staircase's steps are gone


def test_dry_missing_and_heavy_rain():
    f = np.array(
        [[0.0, 0.0, 0.05, 5.0], [0.0, 0.1, 0.05, 9.0], [np.nan, 0.05, 0.0, 2.0], [0.0, 0.0, 0.0, 7.5]], np.float32
    )
    d = dequantise(f, Q)
    assert np.array_equal(np.isnan(d), np.isnan(f))
    assert np.all(d[f == 0] == 0)  # dry stays exactly dry
    wet = f > 0
    assert np.all(np.abs(d[wet] - f[wet]) <= Q / 2 + 1e-6) and np.all(d[wet] >= Q / 2 - 1e-6)
    heavy = f >= 2
    assert np.abs(d[heavy] - f[heavy]).max() <= Q / 2 + 1e-6
    # the lone 0.1 mm pixel among 0.05 and dry ones is pulled to the bottom of its bin
    np.testing.assert_allclose(d[1, 1], 0.1 - Q / 2, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="q=0 must be > 0 mm"):
        dequantise(np.zeros((2, 2), np.float32), 0)
    with pytest.raises(ValueError, match="one 2-D frame"):
        dequantise(np.zeros((1, 2, 2), np.float32), Q)
