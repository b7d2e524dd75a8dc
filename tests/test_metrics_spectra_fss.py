"""Power spectrum, log-spectral distance and FSS against known fields and hand-computed cases."""

import numpy as np
import pytest
from scipy.ndimage import uniform_filter

from hpcsr.evaluate.fss import check_scale, fss_from_terms, fss_terms, neighbourhood_fraction
from hpcsr.evaluate.spectra import log_spectral_distance, radial_bins, radial_power_spectrum


def _sinusoid(ny, nx, cycles_y, cycles_x, amplitude=2.0):
    y, x = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    return amplitude * np.cos(2 * np.pi * (cycles_y * y / ny + cycles_x * x / nx)) + 5.0


def test_sinusoid_power_sits_in_its_ring_with_its_variance():
    k, power = radial_power_spectrum(_sinusoid(64, 64, 0, 5), window=None)
    _, _, counts = radial_bins(64, 64)
    assert k[4] == pytest.approx(5 / 64)
    assert np.argmax(power) == 4  # ring 5 (rings start at k = 1/64)
    energy = power * counts
    assert energy[4] == pytest.approx(2.0**2 / 2)  # variance of a cosine of amplitude 2; the mean 5 is dropped
    assert energy.sum() - energy[4] == pytest.approx(0.0, abs=1e-20)


def test_non_square_field_uses_physical_frequency():
    # 6 cycles along y over 48 rows and 8 cycles along x over 64 columns are both 0.125 cycles/pixel
    for field in (_sinusoid(48, 64, 6, 0), _sinusoid(48, 64, 0, 8)):
        k, power = radial_power_spectrum(field, window=None)
        assert k[np.argmax(power)] == pytest.approx(0.125)
    k, power = radial_power_spectrum(_sinusoid(48, 64, 3, 4), window=None)  # diagonal: sqrt(1/16^2 + 1/16^2)
    assert k[np.argmax(power)] == pytest.approx(np.hypot(3 / 48, 4 / 64), abs=0.5 / 48)


def test_hann_window_keeps_the_peak_and_most_energy_near_it():
    k, power = radial_power_spectrum(_sinusoid(64, 64, 7, 0), window="hann")
    _, _, counts = radial_bins(64, 64)
    energy = power * counts
    assert np.argmax(power) == 6
    assert energy[5:8].sum() / energy.sum() > 0.9


def test_spectrum_batches_and_rejects_nan():
    fields = np.stack([_sinusoid(32, 32, 0, 3), _sinusoid(32, 32, 0, 5)])
    _, power = radial_power_spectrum(fields, window=None)
    assert power.shape == (2, 16) and np.argmax(power[0]) == 2 and np.argmax(power[1]) == 4
    fields[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        radial_power_spectrum(fields)
    with pytest.raises(ValueError, match="window"):
        radial_power_spectrum(fields[1], window="blackman")


def test_log_spectral_distance_hand_values():
    ref = np.array([1.0, 2.0, 4.0, 8.0])
    assert log_spectral_distance(ref, ref) == 0.0
    assert log_spectral_distance(ref, 10 * ref) == pytest.approx(10.0)
    assert log_spectral_distance(ref, ref * np.array([10, 1, 10, 1])) == pytest.approx(np.sqrt(50.0))
    assert log_spectral_distance(ref, np.array([0.0, 2.0, 4.0, 8.0])) == 0.0  # empty ring left out


def _one_pixel(row, col):
    field = np.zeros((1, 3, 3))
    field[0, row, col] = 1.0
    return field


def test_fss_hand_computed_displaced_pixel():
    # 3x3 domain, observed event at (0, 0), forecast at (2, 2). n=1: no overlap, FSS = 0.
    # n=3 (windows clipped at the edge): O = 1/4, 1/6, 1/6, 1/9 at (0,0), (0,1), (1,0), (1,1) and F the mirror,
    # sum (F-O)^2 = 2/16 + 4/36 = 17/72, sum F^2 + O^2 = 2 (1/16 + 2/36 + 1/81) = 169/648 -> FSS = 16/169.
    obs, fc = _one_pixel(0, 0), _one_pixel(2, 2)
    terms = fss_terms(obs, fc[None], np.ones(obs.shape, bool), 0.5, (1, 3))
    assert fss_from_terms(*terms[1][0]) == 0.0
    np.testing.assert_allclose(terms[3][0], [17 / 72, 169 / 648], rtol=1e-6)
    assert fss_from_terms(*terms[3][0]) == pytest.approx(16 / 169, rel=1e-6)
    np.testing.assert_allclose(terms[3][1], [[17 / 72, 169 / 648]], rtol=1e-6)  # the single member
    o3 = neighbourhood_fraction(obs[0], 0.5, 3)
    np.testing.assert_allclose(o3, [[1 / 4, 1 / 6, 0], [1 / 6, 1 / 9, 0], [0, 0, 0]], atol=1e-12)


def test_neighbourhood_fraction_matches_scipy_uniform_filter_with_missing_pixels():
    rng = np.random.default_rng(1)
    field = rng.gamma(0.5, 2.0, size=(3, 23, 31))
    field[rng.random(field.shape) < 0.2] = np.nan
    valid = np.isfinite(field)
    for size in (1, 3, 7, 61):
        window = (1, size, size)
        hits = uniform_filter(np.where(valid, field >= 1.0, 0).astype(float), window, mode="constant")
        present = uniform_filter(valid.astype(float), window, mode="constant")
        expected = np.where(present > 0.5 / size**2, hits / np.where(present > 0, present, 1), np.nan)
        np.testing.assert_allclose(neighbourhood_fraction(field, 1.0, size), expected, rtol=1e-9, atol=1e-12)


def test_ensemble_fss_terms_match_member_fractions():
    rng = np.random.default_rng(2)
    truth = rng.gamma(0.5, 2.0, size=(2, 16, 20))
    ens = rng.gamma(0.5, 2.0, size=(4, 2, 16, 20))
    valid = rng.random(truth.shape) > 0.1
    terms = fss_terms(truth, ens, valid, 1.0, (5,))[5]
    joint = lambda a: np.where(valid, a, np.nan)  # noqa: E731
    obs = neighbourhood_fraction(joint(truth), 1.0, 5)[valid]
    members = np.stack([neighbourhood_fraction(joint(e), 1.0, 5)[valid] for e in ens])
    mean = members.mean(axis=0)
    np.testing.assert_allclose(terms[0], [np.sum((mean - obs) ** 2), np.sum(mean**2 + obs**2)], rtol=1e-5)
    for i in range(4):
        np.testing.assert_allclose(
            terms[1][i], [np.sum((members[i] - obs) ** 2), np.sum(members[i] ** 2 + obs**2)], rtol=1e-5
        )


def test_fss_limits_and_missing_pixels():
    rng = np.random.default_rng(0)
    field = rng.gamma(0.5, 2.0, size=(2, 20, 20))
    everywhere = np.ones(field.shape, bool)
    assert fss_from_terms(*fss_terms(field, field[None], everywhere, 1.0, (5,))[5][0]) == 1.0
    # a window wider than twice the domain sees the whole frame: the fraction is the frame's wet fraction
    big = neighbourhood_fraction(field, 1.0, 41)
    f_frac = (field >= 1.0).mean(axis=(1, 2))
    np.testing.assert_allclose(big, f_frac[:, None, None] * np.ones((1, 20, 20)), atol=1e-12)
    # NaN does not count as dry: an all-wet field with one hole keeps fraction 1 at every pixel
    wet = np.ones((5, 5))
    wet[2, 2] = np.nan
    np.testing.assert_allclose(neighbourhood_fraction(wet, 0.5, 3), 1.0)  # the hole gets its neighbours' fraction
    assert np.isnan(neighbourhood_fraction(np.full((3, 3), np.nan), 0.5, 3)).all()
    # no event in either field: FSS undefined
    dry = np.zeros((1, 4, 4))
    assert np.isnan(fss_from_terms(*fss_terms(dry, dry[None], np.ones(dry.shape, bool), 1.0, (3,))[3][0]))


@pytest.mark.parametrize("bad", [0, 2, 4.5, -3, True])
def test_fss_scale_must_be_odd_positive(bad):
    with pytest.raises(ValueError, match="odd integer"):
        check_scale(bad)
