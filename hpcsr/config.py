"""Configuration: Hydra composes the YAML tree in `configs/`, then every section is turned into a
validated dataclass, so a wrong key or value stops at start with the key, the value and what is
allowed. Each area keeps its own section schema next to its code; this module assembles them.
A section owned by a package outside hpcsr (PLUGIN_SECTIONS: `preprocess`, whose schema is
preprocessing.config) stays a plain mapping here; its launcher stage checks it when a plan is built.

    cfg = compose(["factor=s10_t3", "model=tiny", "train.steps=20"])
    cfg.factor.recipe()      # recipe(s, t) with any overrides from the config applied
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from hpcsr.artifacts import json_hash
from hpcsr.factors import MASS_PRESETS, FactorPair, MassFunction, Recipe, recipe
from hpcsr.mass import SCALES


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message says what is allowed."""


@dataclass
class FactorConfig:
    """The factor pair and optional overrides of its recipe (None = take recipe(s, t))."""

    s: int = 10  # spatial factor, 1..25
    t: int = 3  # temporal factor, 1..6
    context: typing.Optional[int] = None  # L, LR frames of context (None: recipe)
    beta_end: typing.Optional[float] = None  # end of the linear noise schedule (None: recipe)
    mass_power: typing.Optional[float] = None  # p in f(x) = min(max(x^p - c, 0), cap) (None: recipe)
    mass_offset: typing.Optional[float] = None  # c in f (None: recipe)
    mass_cap: typing.Optional[float] = None  # cap in f (None: recipe, no cap)
    mass_scale: typing.Optional[str] = None  # where sampling matches the LR mass: cell, frame, image (None: recipe)
    mass_preset: str = (
        "measured"  # recipe mass transform: measured (identity per LR cell) or author (sqrt/identity-c over the tile)
    )
    patch: typing.Optional[int] = None  # HR patch side, a multiple of s (None: recipe)

    def __post_init__(self):
        try:
            FactorPair(self.s, self.t)
        except ValueError as err:
            raise ConfigError(f"factor: {err}") from None
        if self.context is not None and not 1 <= self.context <= 48:
            raise ConfigError(f"factor.context={self.context} must be in 1..48 LR frames")
        if self.beta_end is not None and not 1e-4 < self.beta_end < 1:
            raise ConfigError(f"factor.beta_end={self.beta_end} must be in (1e-4, 1)")
        if self.mass_preset not in MASS_PRESETS:
            raise ConfigError(f"factor.mass_preset={self.mass_preset!r} must be one of {', '.join(MASS_PRESETS)}")
        if self.mass_scale is not None and self.mass_scale not in SCALES:
            raise ConfigError(
                f"factor.mass_scale={self.mass_scale!r} must be one of {', '.join(SCALES)} (or null: recipe)"
            )
        if self.patch is not None and (self.patch <= 0 or self.patch % self.s):
            raise ConfigError(f"factor.patch={self.patch} must be a positive multiple of s={self.s}")

    @property
    def pair(self) -> FactorPair:
        return FactorPair(self.s, self.t)

    def recipe(self) -> Recipe:
        base = recipe(self.s, self.t, self.mass_preset)
        mass = MassFunction(
            base.mass.power if self.mass_power is None else self.mass_power,
            base.mass.offset if self.mass_offset is None else self.mass_offset,
            base.mass.cap if self.mass_cap is None else self.mass_cap,
        )
        return dataclasses.replace(
            base,
            context=base.context if self.context is None else self.context,
            beta_end=base.beta_end if self.beta_end is None else self.beta_end,
            patch=base.patch if self.patch is None else self.patch,
            mass=mass,
            mass_scale=base.mass_scale if self.mass_scale is None else self.mass_scale,
        )


# section name -> "module:Class"; each area owns its schema.
SECTIONS = {
    "factor": "hpcsr.config:FactorConfig",
    "model": "hpcsr.models.config:ModelConfig",
    "data": "hpcsr.data.config:DataConfig",
    "train": "hpcsr.train.config:TrainConfig",
    "deepspeed": "hpcsr.train.config:DeepSpeedConfig",
    "launcher": "hpcsr.launch.config:LauncherConfig",
    "cluster": "hpcsr.launch.config:ClusterConfig",
    "grid": "hpcsr.launch.config:GridConfig",
    "sample": "hpcsr.sampling.config:SampleStageConfig",
    "evaluate": "hpcsr.evaluate.config:EvaluateConfig",
}
# sections whose schema lives outside hpcsr, with the launcher stage that owns them (hpcsr never
# imports preprocessing): kept as plain mappings, checked by that stage's Stage.check at plan time
PLUGIN_SECTIONS = ("preprocess",)
ROOT_KEYS = {
    "seed": int,  # global seed
    "data_dir": str,  # preprocessing output folder: hr.h5 and shards/
    "run_root": str,  # parent folder of all run folders
    "run_dir": str,  # this pair's run folder (deterministic, no timestamps)
}


class RootConfig(types.SimpleNamespace):
    """The validated configuration: one attribute per section (a dataclass; a plugin section's
    mapping as composed) plus the root keys."""

    def to_dict(self) -> dict:
        return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in vars(self).items()}

    def hash(self) -> str:
        """Stable hash of the configuration (sha256 of its sorted JSON), recorded in checkpoints."""
        return json_hash(self.to_dict())


def _section_class(name: str):
    module, cls = SECTIONS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def _convert(tp, value, key: str):
    """Check `value` against the annotation `tp` and convert it (ints to floats, lists to tuples)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}={value!r}: none of {args} fits")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}={value!r} is not allowed: choose one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} must be a list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}={value!r} must have {len(args)} items")
            return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else typing.Any
        out = [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r} must be a mapping")
        return {k: _convert(args[1] if args else typing.Any, v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r} must be a number")
        if not math.isfinite(value):  # a NaN learning rate trains nothing; inf is never meant (null means unset)
            raise ConfigError(f"{key}={value!r} must be a finite number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r} must be an integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be true or false")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} must be a string")
        return value
    return value


def build(cls, data, key: str):
    """Instantiate dataclass `cls` from a mapping, refusing unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{key} must be a mapping of keys for {cls.__name__}, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields)
    moved = getattr(cls, "MOVED", {})
    for name in unknown:
        if name in moved:
            raise ConfigError(f"{key}.{name}={data[name]!r}: {moved[name]}")
    if unknown:
        raise ConfigError(f"unknown key {key}.{unknown[0]}: {cls.__name__} allows {', '.join(sorted(fields))}")
    kwargs = {name: _convert(hints[name], value, f"{key}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key}: {err}") from None


def config_dir() -> Path:
    """The configs/ folder: $HPCSR_CONFIG_DIR, else the repository's (editable install), else the
    copy installed inside the package (pip install .)."""
    env = os.environ.get("HPCSR_CONFIG_DIR")
    if env and not (Path(env) / "config.yaml").is_file():
        raise ConfigError(
            f"HPCSR_CONFIG_DIR={env}: {'no config.yaml in that folder' if Path(env).is_dir() else 'no such folder'}; "
            "point it to your configs/ folder (a copy of the repository's) or unset it"
        )
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent
    candidates += [here.parent / "configs", here / "conf"]
    for path in candidates:
        if (path / "config.yaml").is_file():
            return path
    raise ConfigError(
        f"no config.yaml found in {', '.join(map(str, candidates))}: set HPCSR_CONFIG_DIR to your configs/ folder"
    )


def from_container(data: dict) -> RootConfig:
    """Validate a plain dict (e.g. a composed Hydra config) into a RootConfig."""
    allowed = set(SECTIONS) | set(PLUGIN_SECTIONS) | set(ROOT_KEYS)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"unknown top-level key {unknown[0]!r}: allowed are {', '.join(sorted(allowed))}")
    out = {}
    for name, tp in ROOT_KEYS.items():
        if name not in data:
            raise ConfigError(f"missing top-level key {name!r} in config.yaml")
        out[name] = _convert(tp, data[name], name)
    for name in SECTIONS:
        out[name] = build(_section_class(name), data.get(name), name)
    for name in PLUGIN_SECTIONS:
        out[name] = _convert(dict[str, typing.Any], data.get(name) or {}, name)
    return RootConfig(**out)


def _check_moved(overrides) -> None:
    """Refuse an override of a key an older version had, naming its new spelling (a section class's
    MOVED: {key: message}); Hydra would only say that the key is not in the config."""
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        section, _, name = key.partition(".")
        if section in SECTIONS and name in getattr(_section_class(section), "MOVED", {}):
            raise ConfigError(f"{override}: {_section_class(section).MOVED[name]}")


def _hydra_compose(overrides, config_path):
    """Hydra's composition of configs/config.yaml with the overrides (interpolations unresolved)."""
    import yaml
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import open_dict
    from omegaconf.errors import OmegaConfBaseException

    _check_moved(overrides)
    path = Path(config_path) if config_path else config_dir()
    try:
        with initialize_config_dir(config_dir=str(path.resolve()), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"cannot compose configs from {path} with overrides {list(overrides)}: {err}") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        raise ConfigError(f"malformed YAML in {where}: {err.problem or err.context}") from None
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    for name in (*SECTIONS, *PLUGIN_SECTIONS):
        if name in choices and not cfg.get(name):
            raise ConfigError(
                f"{path / name / (str(choices[name]) + '.yaml')} is empty: a {name} config needs its keys "
                f"(copy one of {path / name}/*.yaml and edit it)"
            )
    return cfg


def _resolve(cfg, overrides) -> dict:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot resolve the configuration with overrides {list(overrides)}: {err}") from None


def compose(overrides=(), config_path=None) -> RootConfig:
    """Compose configs/config.yaml with Hydra overrides ('group=option', 'a.b=value') and validate."""
    return from_container(_resolve(_hydra_compose(overrides, config_path), overrides))


def compose_section(name: str, overrides=(), config_path=None):
    """One validated section (e.g. 'grid') of the composed configuration; the others unchecked."""
    if name not in SECTIONS:
        raise ConfigError(f"unknown section {name!r}: choose one of {', '.join(SECTIONS)}")
    data = _resolve(_hydra_compose(overrides, config_path), overrides)
    return build(_section_class(name), data.get(name), name)


def compose_variants(overrides, variants, config_path=None) -> list:
    """[compose(overrides + variant) for variant in variants] with one Hydra composition: each
    variant is a {dotted key: value} of plain values (no group choices) set before interpolations
    are resolved, e.g. [{"factor.s": 5, "factor.t": 1}, ...] for a grid of factor pairs."""
    import copy

    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    base = _hydra_compose(overrides, config_path)
    out = []
    for variant in variants:
        cfg = copy.deepcopy(base)
        try:
            for key, value in variant.items():
                OmegaConf.update(cfg, key, value, merge=False)
        except OmegaConfBaseException as err:
            raise ConfigError(f"cannot set {variant} on the configuration: {err}") from None
        out.append(from_container(_resolve(cfg, list(overrides) + [f"{k}={v}" for k, v in variant.items()])))
    return out
