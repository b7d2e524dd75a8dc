"""The Hydra tree composes, validates into dataclasses and refuses bad keys and values clearly."""

import pytest

from hpcsr.config import ConfigError, compose
from hpcsr.factors import recipe


def test_default_composition_is_complete():
    cfg = compose()
    for section in ("factor", "model", "data", "train", "deepspeed", "launcher", "cluster", "grid"):
        assert hasattr(cfg, section)
    assert (cfg.factor.s, cfg.factor.t) == (10, 3)
    assert cfg.factor.recipe() == recipe(10, 3)
    assert cfg.run_dir == "runs/s10_t3"


@pytest.mark.parametrize("option,pair", [("s1_t3", (1, 3)), ("s10_t1", (10, 1)), ("s25_t6", (25, 6))])
def test_factor_group_options(option, pair):
    cfg = compose([f"factor={option}"])
    assert (cfg.factor.s, cfg.factor.t) == pair
    assert cfg.run_dir == f"runs/s{pair[0]}_t{pair[1]}"


def test_recipe_overrides_apply():
    cfg = compose(["factor.s=2", "factor.t=2", "factor.context=7", "factor.beta_end=0.03", "factor.mass_power=0.5"])
    r = cfg.factor.recipe()
    assert (r.pair.s, r.pair.t, r.context, r.beta_end, r.mass.power) == (2, 2, 7, 0.03, 0.5)
    assert r.mass.offset == recipe(2, 2).mass.offset


def test_unknown_key_names_key_and_allowed():
    with pytest.raises(ConfigError, match=r"train\.stepz.*allows.*steps"):
        compose(["+train.stepz=3"])


def test_bad_choice_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"train\.stage='pretrain'.*'mean', 'diffusion', 'joint'"):
        compose(["train.stage=pretrain"])


def test_grid_shift_refuses_the_joint_stage_and_the_mm_term():
    for extra in ["train.stage=joint", "train.mean_loss_mm_weight=0.5"]:
        with pytest.raises(ConfigError, match=r"mean_grid_shift is for the mean stage"):
            compose(["train.mean_grid_shift=true", extra])
    assert compose(["train.mean_grid_shift=true", "train.stage=diffusion"]).train.mean_grid_shift


def test_bad_type_names_value():
    with pytest.raises(ConfigError, match=r"train\.steps='many' must be an integer"):
        compose(["train.steps=many"])


def test_factor_out_of_range_is_refused():
    with pytest.raises(ConfigError, match=r"s=30 is outside 1\.\.25"):
        compose(["factor.s=30"])


def test_patch_must_divide_by_s():
    with pytest.raises(ConfigError, match=r"factor.patch=101 must be a positive multiple of s=10"):
        compose(["factor.patch=101"])


def test_unknown_group_option_is_clear():
    with pytest.raises(ConfigError, match="deepspeed"):
        compose(["deepspeed=zero9"])


def test_hash_is_stable_and_sensitive():
    a, b, c = compose(), compose(), compose(["train.steps=7"])
    assert a.hash() == b.hash() != c.hash()


def test_mass_preset_and_scale_reach_the_recipe():
    author = compose(["factor.s=2", "factor.t=1", "factor.mass_preset=author"]).factor.recipe()
    assert (author.mass.power, author.mass_scale) == (0.5, "image")
    framed = compose(["factor.s=2", "factor.t=1", "factor.mass_scale=frame"]).factor.recipe()
    assert (framed.mass.power, framed.mass.offset, framed.mass_scale) == (1.0, 0.0, "frame")
    with pytest.raises(ConfigError, match=r"factor.mass_preset='paper' must be one of measured, author"):
        compose(["factor.mass_preset=paper"])
    with pytest.raises(ConfigError, match=r"factor.mass_scale='tile' must be one of image, frame, cell"):
        compose(["factor.mass_scale=tile"])


def test_spread_gain_floor_is_checked_before_training():
    assert compose().train.calibration_min_gain == 1.0  # the fit only widens by default (hpcsr.train.calibration)
    assert compose(["train.calibration_min_gain=0"]).train.calibration_min_gain == 0.0
    with pytest.raises(ConfigError, match=r"train.calibration_min_gain=3.0 must be in \[0, 2\]"):
        compose(["train.calibration_min_gain=3"])


def test_log_unit_is_checked_before_training():
    assert compose().data.log_unit == 1.0  # the plain log1p (hpcsr.data.normalise)
    assert compose(["data.log_unit=0.1"]).data.log_unit == 0.1
    with pytest.raises(ConfigError, match=r"data.log_unit=0.0 must be > 0"):
        compose(["data.log_unit=0"])
    with pytest.raises(ConfigError, match=r"data.log_unit=0.5 must be > 0 \(and 1 with normalisation 'scale'\)"):
        compose(["data.normalisation=scale", "data.log_unit=0.5"])
