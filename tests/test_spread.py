"""The spread gain's two spaces (hpcsr.spread) on hand-computed values."""

import pytest
import torch

from hpcsr.data.normalise import Normaliser
from hpcsr.spread import widened_mm

NORM = Normaliser("log1p", 0.0, 1.0)  # normalised = log1p(mm)


def z(mm):
    return torch.log1p(torch.tensor(mm, dtype=torch.float64))


def test_in_mm_the_departure_from_the_mean_networks_rain_scales():
    mean, member = z([1.0, 1.0, 0.0, 4.0]), z([3.0, 0.5, 2.0, 0.0])
    out = widened_mm(mean, member - mean, 2.0, NORM, "mm")
    # M + 2 (X - M): 1 + 2*2, 1 - 2*0.5, 0 + 2*2, 4 - 2*4 -> clipped at 0
    torch.testing.assert_close(out, torch.tensor([5.0, 0.0, 4.0, 0.0], dtype=torch.float64))


def test_in_normalised_units_the_ratio_to_the_mean_is_raised_to_the_gain():
    mean, member = z([1.0, 3.0]), z([3.0, 0.0])
    out = widened_mm(mean, member - mean, 2.0, NORM, "normalised")
    # (1 + X) / (1 + M) squared: 2 * 2^2 - 1 = 7; 4 * (1/4)^2 - 1 = -0.75 -> 0
    torch.testing.assert_close(out, torch.tensor([7.0, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("space", ["mm", "normalised"])
def test_gain_one_is_the_member_itself(space):
    mean, member = z([0.0, 2.0, 7.5]), z([1.0, 0.0, 9.0])
    out = widened_mm(mean, member - mean, 1.0, NORM, space)
    torch.testing.assert_close(out, torch.tensor([1.0, 0.0, 9.0], dtype=torch.float64))


def test_an_unknown_space_is_refused():
    with pytest.raises(ValueError, match="use one of mm, normalised"):
        widened_mm(z([1.0]), z([0.0]), 1.5, NORM, "log")
