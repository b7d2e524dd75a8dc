"""Training noise levels: uniform steps as before, EDM's lognormal sigma mapped to the nearest step."""

import math

import pytest
import torch

from hpcsr.config import ConfigError, compose
from hpcsr.diffusion import NoiseSchedule
from hpcsr.diffusion.noise_levels import NoiseLevels, nearest_steps, schedule_log_sigma
from hpcsr.factors import recipe


def test_uniform_levels_are_the_draws_training_made_before():
    schedule = NoiseSchedule("linear", 1000, 1e-4, 0.02)
    drawn = NoiseLevels("uniform").draw(schedule, 64, torch.Generator().manual_seed(3))
    expected = torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(drawn, expected)


def test_schedule_sigma_against_hand_values():
    schedule = NoiseSchedule("linear", 3, 0.1, 0.5)  # alphabar 0.9, 0.9 * 0.7 = 0.63, 0.63 * 0.5 = 0.315
    hand = [0.5 * math.log((1 - ab) / ab) for ab in (0.9, 0.63, 0.315)]
    torch.testing.assert_close(schedule_log_sigma(schedule), torch.tensor(hand, dtype=torch.float64), rtol=1e-6, atol=0)
    # nearest in log sigma: each table value, points just either side of a midpoint, the ends beyond
    mid = 0.5 * (hand[0] + hand[1])
    got = nearest_steps(schedule, torch.tensor([*hand, mid - 1e-3, mid + 1e-3, -50.0, 50.0]))
    assert got.tolist() == [0, 1, 2, 0, 1, 0, 2]


@pytest.mark.parametrize(
    "levels,middle_share", [(NoiseLevels("lognormal", -1.2, 1.2), 0.77), (NoiseLevels("lognormal"), 0.64)]
)
def test_lognormal_levels_follow_the_edm_distribution(levels, middle_share):
    """The drawn steps' ln sigma has the asked mean and spread (to the schedule's step size), and
    most draws sit at the low and middle noise levels rather than uniformly over the schedule
    (shares of N(mean, std) at sigma 0.05 .. 1: 0.774 for EDM's -1.2, 0.643 for the lognormal default -0.5)."""
    schedule = NoiseSchedule("linear", 1000, 1e-4, recipe(4, 1).beta_end)
    steps = levels.draw(schedule, 200_000, torch.Generator().manual_seed(0))
    log_sigma = schedule_log_sigma(schedule)[steps]
    inside = (log_sigma > -4.6) & (log_sigma < 2.5)  # away from the schedule's ends (sigma 0.01 .. 12.6)
    assert float(inside.double().mean()) > 0.99
    assert float(log_sigma.mean()) == pytest.approx(levels.log_mean, abs=0.03)
    assert float(log_sigma.std()) == pytest.approx(levels.log_std, abs=0.03)
    middle = (log_sigma > math.log(0.05)) & (log_sigma < 0.0)
    assert float(middle.double().mean()) == pytest.approx(middle_share, abs=0.01)  # uniform steps: 0.35
    uniform = schedule_log_sigma(schedule)[
        NoiseLevels("uniform").draw(schedule, 200_000, torch.Generator().manual_seed(0))
    ]
    assert float(((uniform > math.log(0.05)) & (uniform < 0.0)).double().mean()) == pytest.approx(0.35, abs=0.01)


def test_bad_noise_levels_are_named():
    with pytest.raises(ValueError, match="noise levels 'edm' unknown"):
        NoiseLevels("edm")
    with pytest.raises(ValueError, match="log std > 0"):
        NoiseLevels("lognormal", -1.2, 0.0)
    with pytest.raises(ConfigError, match="log std > 0"):
        compose(["train.noise_levels=lognormal", "train.noise_log_std=-1"])
    with pytest.raises(ConfigError, match="noise_levels"):
        compose(["train.noise_levels=edm"])
    assert compose(["train.noise_levels=lognormal"]).train.levels == NoiseLevels("lognormal", -0.5, 1.2)
    assert compose().train.levels == NoiseLevels("uniform")  # the default (the author's)
