"""The spread gain fitted on validation patches (hpcsr.train.calibration) and its use by the
sampler: a truth drawn like the members asks for no change, a truth with half the residual asks
for about half (spread/skill near 1 either way), and `hpcsr sample` applies the export's gain only for the sampler it was fitted
with. Real SRModels at micro size with random weights; no training needed."""

import dataclasses

import numpy as np
import pytest
import torch

from hpcsr.data.normalise import Normaliser
from hpcsr.factors import recipe
from hpcsr.models import ModelConfig, build_model
from hpcsr.spread import widened_mm
from hpcsr.train.calibration import GAINS, fit_spread_gain

MICRO = ModelConfig(widths=(8, 16), heads=2, windows=(1, 1), emb_dim=8)
NORM = Normaliser("log1p", 0.3, 0.5)


def micro_model(mass_scale: str = "none", seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(MICRO, dataclasses.replace(recipe(4, 2), mass_scale=mass_scale))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def batches(model, residual_factor: float, n: int = 3, B: int = 4, P: int = 16, space: str = "mm"):
    """(lr, hr) normalised batches whose truth is one more member widened by residual_factor in `space`
    (hpcsr.spread) as the fit widens its members."""
    g = torch.Generator().manual_seed(7)
    out = []
    for _ in range(n):
        lr = torch.randn(B, model.frames, P // model.s, P // model.s, generator=g)
        mean = model.predict_mean(lr)
        draw = model.sample(lr, 1, "dpmpp2m", 6, generator=g, mean=mean)[:, 0]
        out.append((lr, NORM.forward(widened_mm(mean, draw - mean, residual_factor, NORM, space))))
    return out


def test_a_truth_drawn_like_the_members_keeps_gain_one():
    model = micro_model()
    fit = fit_spread_gain(model, batches(model, 1.0), NORM, 8, "dpmpp2m", 6, 0.0, seed=1)
    assert 2**-0.3 <= fit.gain <= 2**0.3, fit
    assert 0.8 < fit.spread_skill_at_gain < 1.25
    assert (fit.sampler, fit.steps, fit.members, fit.patches, fit.space) == ("dpmpp2m", 6, 8, 12, "mm")


@pytest.mark.parametrize("space", ["mm", "normalised"])
def test_a_truth_with_half_the_residual_asks_for_about_half_in_either_space(space):
    """The fit widens (or narrows) in the space it is told, and records it."""
    model = micro_model()
    fit = fit_spread_gain(model, batches(model, 0.5, space=space), NORM, 8, "dpmpp2m", 6, 0.0, 1, 0.0, space)
    assert 2**-1.4 <= fit.gain <= 2**-0.6 and fit.space == space, fit
    with pytest.raises(ValueError, match="spread gain space 'log' unknown"):
        fit_spread_gain(model, batches(model, 1.0, n=1), NORM, 2, "dpmpp2m", 2, 0.0, 1, 1.0, "log")


def test_a_truth_with_half_the_residual_asks_for_about_half():
    model = micro_model()
    fit = fit_spread_gain(model, batches(model, 0.5), NORM, 8, "dpmpp2m", 6, 0.0, seed=1, min_gain=0.0)
    assert 2**-1.4 <= fit.gain <= 2**-0.6, fit
    assert fit.free_gain == fit.gain and fit.min_gain == 0.0
    assert fit.spread_skill_at_one > 1.3 and 0.8 < fit.spread_skill_at_gain < 1.25
    assert fit.crps_at_gain < fit.crps_at_one  # here the calibrated ensemble also scores better
    assert fit.gain in GAINS


def test_the_default_floor_only_widens():
    """With the default floor (1) an over-dispersed ensemble keeps gain 1 and the free fit is recorded;
    an under-dispersed one (truth with twice the residual) is still widened; a floor outside the grid
    is refused."""
    model = micro_model()
    narrow = fit_spread_gain(model, batches(model, 0.5), NORM, 8, "dpmpp2m", 6, 0.0, seed=1)
    assert narrow.gain == 1.0 and narrow.min_gain == 1.0 and 2**-1.4 <= narrow.free_gain <= 2**-0.6
    assert narrow.spread_skill_at_gain == narrow.spread_skill_at_one > 1.3
    wide = fit_spread_gain(model, batches(model, 2.0), NORM, 8, "dpmpp2m", 6, 0.0, seed=1)
    assert 2**0.6 <= wide.gain <= GAINS[-1] and wide.gain == wide.free_gain, wide
    assert wide.spread_skill_at_one < 0.8 and abs(np.log(wide.spread_skill_at_gain)) < abs(
        np.log(wide.spread_skill_at_one)
    )
    with pytest.raises(ValueError, match="smallest spread gain 3"):
        fit_spread_gain(model, batches(model, 1.0, n=1), NORM, 2, "ddim", 4, 0.5, seed=2, min_gain=3.0)


def test_the_mass_transform_is_part_of_the_fit():
    """With the recipe's cell mass transform the members are scored after it, as the evaluation does."""
    model = micro_model("cell")
    fit = fit_spread_gain(model, batches(model, 1.0), NORM, 4, "ddim", 4, 0.5, seed=2)
    assert fit.gain in GAINS and np.isfinite(fit.crps_at_gain)
    assert abs(np.log(fit.spread_skill_at_gain)) <= abs(np.log(fit.spread_skill_at_one))
    with pytest.raises(ValueError, match="at least 2 members"):
        fit_spread_gain(model, batches(model, 1.0, n=1), NORM, 1, "ddim", 4, 0.5, seed=2)


def test_the_gain_moves_only_as_far_as_the_patches_show():
    """The gain kept is the one nearest 1 whose bootstrap interval of spread/skill over the patches
    holds 1, not the one whose point estimate is nearest 1: a clear deficit is corrected, by the
    least change the patches call for."""
    model = micro_model()
    fit = fit_spread_gain(model, batches(model, 1.5, n=4, B=4), NORM, 8, "dpmpp2m", 6, 0.0, seed=1)
    lo, hi = fit.spread_skill_interval_at_one
    assert lo <= fit.spread_skill_at_one <= hi < 1, fit  # the deficit is outside the patches' noise
    lo, hi = fit.spread_skill_interval_at_gain
    assert lo <= 1 <= hi and lo <= fit.spread_skill_at_gain <= hi, fit
    assert 1 < fit.gain <= fit.point_gain and fit.gain == fit.free_gain, fit
    assert fit.spread_skill_at_gain <= 1 or fit.gain == fit.point_gain  # the interval's edge, from below


def test_a_fit_stopped_at_the_grid_end_says_so(caplog):
    """A truth with four times the residual needs more than the grid's largest gain (2): the fit keeps
    2 and warns that the ensemble stays under-dispersed; a fit inside the grid does not warn."""
    model = micro_model()
    with caplog.at_level("WARNING", logger="hpcsr.train.calibration"):
        fit = fit_spread_gain(model, batches(model, 4.0), NORM, 8, "dpmpp2m", 6, 0.0, seed=1)
    assert fit.gain == GAINS[-1] and fit.spread_skill_interval_at_gain[1] < 1, fit
    assert "end of its gain grid (2)" in caplog.text and "under-dispersed" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="hpcsr.train.calibration"):
        fit_spread_gain(model, batches(model, 1.0), NORM, 8, "dpmpp2m", 6, 0.0, seed=1)
    assert "gain grid" not in caplog.text
