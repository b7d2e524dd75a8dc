"""Every Hydra default is written twice, in configs/<section>/*.yaml and in the section's dataclass:
this test keeps the two in step for every section of hpcsr.config.SECTIONS and for the plugin
sections (PLUGIN_SECTIONS, whose schemas live outside hpcsr, e.g. preprocessing.config). Each option file names
exactly the dataclass's fields (nested dataclass sections too, both directions), every top-level
key has a comment, and the option chosen in config.yaml's defaults list has the dataclass's default values."""

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from hpcsr.config import PLUGIN_SECTIONS, SECTIONS, _section_class, build
from preprocessing.config import PreprocessConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEFAULTS = {
    group: option
    for entry in yaml.safe_load((CONFIGS / "config.yaml").read_text())["defaults"]
    if isinstance(entry, dict)
    for group, option in entry.items()
}
# every section's schema: hpcsr's own, and the plugin sections' (hpcsr keeps those as mappings)
SCHEMAS = {**{name: _section_class(name) for name in SECTIONS}, "preprocess": PreprocessConfig}
OPTIONS = [(name, path) for name in SCHEMAS for path in sorted((CONFIGS / name).glob("*.yaml"))]


def key_mismatches(cls, data: dict, where: str) -> list[str]:
    """Keys of `data` the dataclass `cls` lacks and fields it has that `data` lacks, recursing into
    fields whose type is itself a dataclass."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    out = [f"{where}.{key}: not a field of {cls.__name__}" for key in sorted(set(data) - fields)]
    out += [f"{where}.{key}: field of {cls.__name__} missing from the YAML" for key in sorted(fields - set(data))]
    for key in sorted(fields & set(data)):
        if dataclasses.is_dataclass(hints[key]) and isinstance(data[key], dict):
            out += key_mismatches(hints[key], data[key], f"{where}.{key}")
    return out


def test_every_section_has_a_default_option():
    assert set(SCHEMAS) == set(SECTIONS) | set(PLUGIN_SECTIONS)
    assert set(DEFAULTS) == set(SCHEMAS)
    for name, option in DEFAULTS.items():
        assert (CONFIGS / name / f"{option}.yaml").is_file()


@pytest.mark.parametrize("name,path", OPTIONS, ids=[f"{n}/{p.stem}" for n, p in OPTIONS])
def test_yaml_keys_are_the_dataclass_fields(name, path):
    text = path.read_text()
    assert key_mismatches(SCHEMAS[name], yaml.safe_load(text) or {}, name) == []
    for line in text.splitlines():
        if line[:1].isalpha():  # a top-level key
            assert "#" in line, f"key without a comment in {path}: {line}"


@pytest.mark.parametrize("name", SCHEMAS)
def test_default_option_values_are_the_dataclass_defaults(name):
    cls = SCHEMAS[name]
    path = CONFIGS / name / f"{DEFAULTS[name]}.yaml"
    from_yaml = build(cls, yaml.safe_load(path.read_text()), name)
    expected = cls()
    differ = [
        f"{name}.{f.name}: {path.name} has {getattr(from_yaml, f.name)!r}, {cls.__name__} {getattr(expected, f.name)!r}"
        for f in dataclasses.fields(cls)
        if getattr(from_yaml, f.name) != getattr(expected, f.name)
    ]
    assert differ == []
