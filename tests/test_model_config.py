"""Model config: the YAML files mirror ModelConfig key for key (each with a comment), compose through
hpcsr.config, bad values are refused by name; the size-table command runs."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from hpcsr.config import ConfigError, compose
from hpcsr.models import ModelConfig
from hpcsr.models.size_table import main, pair_sizes

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"


@pytest.mark.parametrize(
    "name,expected", [("default", ModelConfig()), ("tiny", ModelConfig.tiny()), ("large", ModelConfig.large())]
)
def test_yaml_mirrors_the_dataclass(name, expected):
    text = (CONFIGS / f"{name}.yaml").read_text()
    data = yaml.safe_load(text)
    assert set(data) == {f.name for f in dataclasses.fields(ModelConfig)}
    assert ModelConfig(**data) == expected
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert "#" in line, f"key without a comment in {name}.yaml: {line}"


def test_author_size_is_the_default():
    cfg = compose().model
    assert cfg.widths == (16, 32, 64, 128, 256) and cfg.heads == 4 and cfg.windows == (3, 3, 1, 1, 1)
    assert compose(["model=tiny"]).model == ModelConfig.tiny()
    assert compose(["model=large"]).model == ModelConfig.large() == ModelConfig.named("large")
    assert compose(["model=tiny", "model.widths=[8,16,32,64]", "model.windows=[3,3,1,1]"]).model.levels == 4


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.heads=3", r"model.heads=3 must divide every width"),
        ("model.windows=[3,1]", r"model.windows=\[3, 1\] needs one entry per level \(5 widths\)"),
        ("model.windows=[2,3,1,1,1]", r"must be odd"),
        (
            "model.schedule=quadratic",
            r"model.schedule='quadratic' is not allowed: choose one of 'linear', 'cosine', 'sigmoid'",
        ),
        ("model.residual_scale=0", r"model.residual_scale=0.0 must be > 0"),
        ("model.sigma_data=0", r"model.sigma_data=0.0 must be > 0"),
    ],
)
def test_bad_values_are_refused_by_name(override, message):
    with pytest.raises(ConfigError, match=message):
        compose([override])


def test_size_table_counts():
    one, three = pair_sizes(ModelConfig.tiny(), 10, 1, 40), pair_sizes(ModelConfig.tiny(), 10, 3, 40)
    assert one["params_mean"] == three["params_mean"] and one["params_denoiser"] == three["params_denoiser"]
    # the denoiser runs once per output frame (3 against 1), attending to L = 5 against 10 LR frames
    assert 2.0 < three["gflop_step"] / one["gflop_step"] < 3.0
    assert three["gflop_ddim50"] == pytest.approx(50 * three["gflop_step"])
    assert one["gflop_mean"] > three["gflop_mean"]  # the mean encoder runs on L = 10 frames against 5


def test_size_table_command(capsys):
    """`python -m hpcsr.models.size_table` is this main(); run in-process to spare a torch import."""
    main(["--tiny", "--patch", "50"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("s")]
    assert [r[0] for r in rows] == ["s1_t3", "s10_t1", "s10_t3", "s25_t6"]
    assert len({(r[3], r[4]) for r in rows}) == 1  # same parameters for every pair
    with pytest.raises(SystemExit):
        main(["--patch", "30"])
    assert "--patch 30 is not a multiple of s=25" in capsys.readouterr().err
