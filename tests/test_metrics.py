"""Pointwise ensemble scores against reference libraries and hand-computed values."""

import numpy as np
import properscoring
import pytest
import scoringrules

from hpcsr.evaluate.metrics import (
    crps_ensemble,
    ensemble_variance,
    observation_rank,
    rank_ends,
    rank_histogram,
    spread_skill_ratio,
)
from hpcsr.evaluate.quantiles import UpperTail


@pytest.mark.parametrize("members", [2, 3, 10, 25])
def test_standard_crps_matches_properscoring(members):
    rng = np.random.default_rng(members)
    obs = rng.gamma(0.6, 2.0, size=(7, 9))
    ens = rng.gamma(0.6, 2.0, size=(members, 7, 9))
    ens[:, 0, 0] = 0.0  # ties at zero, as dry pixels give
    obs[0, 0] = 0.0
    expected = properscoring.crps_ensemble(obs, np.moveaxis(ens, 0, -1))
    np.testing.assert_allclose(crps_ensemble(ens, obs, fair=False), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("members", [2, 5, 10, 30])
def test_fair_crps_matches_scoringrules_and_hand_formula(members):
    rng = np.random.default_rng(100 + members)
    obs = rng.normal(size=40)
    ens = rng.normal(size=(members, 40))
    ours = crps_ensemble(ens, obs, fair=True)
    np.testing.assert_allclose(ours, scoringrules.crps_ensemble(obs, ens, m_axis=0, estimator="fair"), rtol=1e-10)
    # direct double sum: mean|x_i - y| - sum_ij |x_i - x_j| / (2 m (m - 1))
    pairs = np.abs(ens[:, None, :] - ens[None, :, :]).sum(axis=(0, 1))
    hand = np.abs(ens - obs).mean(axis=0) - pairs / (2 * members * (members - 1))
    np.testing.assert_allclose(ours, hand, rtol=1e-12)


def test_crps_hand_computed_two_members():
    # members 0 and 2, obs 1: mean|x - y| = 1; sum_ij |x_i - x_j| = 4
    ens, obs = np.array([[0.0], [2.0]]), np.array([1.0])
    assert crps_ensemble(ens, obs, fair=True)[0] == pytest.approx(1 - 4 / 4)  # 0
    assert crps_ensemble(ens, obs, fair=False)[0] == pytest.approx(1 - 4 / 8)  # 0.5


def test_crps_single_member_is_absolute_error_and_fair_needs_two():
    assert crps_ensemble(np.array([[3.0]]), np.array([1.0]), fair=False)[0] == 2.0
    with pytest.raises(ValueError, match="at least 2 members"):
        crps_ensemble(np.array([[3.0]]), np.array([1.0]), fair=True)


def test_crps_propagates_nan_to_that_point_only():
    ens = np.array([[1.0, np.nan], [2.0, 1.0], [3.0, 1.0]])
    out = crps_ensemble(ens, np.array([2.0, 1.0]))
    assert np.isfinite(out[0]) and np.isnan(out[1])


def test_spread_skill_ratio_is_one_for_exchangeable_truth_only_with_correction():
    rng = np.random.default_rng(3)
    m, n = 5, 400_000
    centre = rng.normal(scale=3.0, size=n)  # predictive mean varies from point to point
    ens = centre + rng.normal(size=(m, n))
    obs = centre + rng.normal(size=n)
    mse = np.mean((ens.mean(axis=0) - obs) ** 2)
    var = ensemble_variance(ens).mean()
    assert spread_skill_ratio(var, mse, m) == pytest.approx(1.0, abs=0.01)
    assert np.sqrt(var / mse) == pytest.approx(np.sqrt(m / (m + 1)), abs=0.01)  # without the correction: 0.913
    narrow = centre + 0.5 * rng.normal(size=(m, n))
    ratio = spread_skill_ratio(ensemble_variance(narrow).mean(), np.mean((narrow.mean(axis=0) - obs) ** 2), m)
    assert ratio < 0.6  # under-dispersive


def test_observation_rank_hand_cases_and_random_ties():
    rng = np.random.default_rng(0)
    ens = np.array([0.0, 0.0, 0.0, 1.0, 2.0])[:, None].repeat(20_000, axis=1)
    ranks = observation_rank(ens, np.zeros(20_000), rng)  # 0 below, 3 equal -> uniform on 0..3
    counts = rank_histogram(ranks, 5)
    assert counts[4:].sum() == 0
    np.testing.assert_allclose(counts[:4] / 20_000, 0.25, atol=0.015)
    assert observation_rank(ens[:, :1], np.array([1.5]), rng)[0] == 4
    assert observation_rank(ens[:, :1], np.array([9.0]), rng)[0] == 5
    assert observation_rank(ens[:, :1], np.array([-1.0]), rng)[0] == 0


def test_rank_histogram_flat_for_all_dry_and_reproducible():
    m, n = 9, 50_000
    ens, obs = np.zeros((m, n)), np.zeros(n)
    counts = rank_histogram(observation_rank(ens, obs, np.random.default_rng(7)), m)
    expected = n / (m + 1)
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 30  # 9 degrees of freedom: p < 1e-3 above ~27.9
    again = rank_histogram(observation_rank(ens, obs, np.random.default_rng(7)), m)
    np.testing.assert_array_equal(counts, again)


def test_upper_tail_matches_numpy_quantile_over_chunks():
    rng = np.random.default_rng(5)
    chunks = [rng.gamma(0.3, 3.0, size=k).astype(np.float32) for k in (1000, 37, 5000, 1, 2500)]
    everything = np.concatenate(chunks).astype(np.float64)
    tail = UpperTail(capacity=20_000, lowest_level=0.9)
    for c in chunks:
        tail.add(c)
    assert tail.top.size <= tail.keep < everything.size
    for level in (0.9, 0.99, 0.999, 0.9999, 0.95):
        assert tail.quantile(level) == pytest.approx(np.quantile(everything, level), rel=1e-12)


def test_upper_tail_limits():
    tail = UpperTail(capacity=10, lowest_level=0.99)
    assert np.isnan(tail.quantile(0.99))
    tail.add(np.arange(10.0))
    assert tail.quantile(0.99) == pytest.approx(np.quantile(np.arange(10.0), 0.99))
    with pytest.raises(ValueError, match="below the lowest level"):
        tail.quantile(0.5)
    with pytest.raises(ValueError, match="raise capacity"):
        tail.add(np.ones(1))


def test_rank_ends_are_multiples_of_a_flat_share():
    assert rank_ends([6, 2, 2, 2]) == (2.0, 0.6666666666666666)  # flat share 3
    assert rank_ends([5, 5, 5]) == (1.0, 1.0)
    assert all(np.isnan(rank_ends([0, 0, 0])))  # nothing counted: undefined, not 0 or inf
