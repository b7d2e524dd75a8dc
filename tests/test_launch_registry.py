"""The stage registry (hpcsr.launch.registry): hpcsr-launch finds its stages through the entry-point
group hpcsr.stages, hpcsr's own as well as a third-party package's. The third party here is a real
installed distribution (a dist-info folder with entry_points.txt on sys.path, as pip writes it)."""

import textwrap

import pytest

from hpcsr.config import ConfigError, compose
from hpcsr.launch import plan as planning
from hpcsr.launch import registry
from hpcsr.launch.stages import ElementSpec, identity


@pytest.fixture
def fresh_registry():
    """The registry read again from the installed distributions, before and after the test."""
    registry._entry_points.cache_clear()
    registry.stage.cache_clear()
    yield
    registry._entry_points.cache_clear()
    registry.stage.cache_clear()


def install(root, name: str, module: str, source: str, points: dict) -> None:
    """A distribution `name` with module `module` and entry points {stage: "module:object"} in root."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"  # as pip names it ('-' would end the name)
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "".join(f"{stage} = {target}\n" for stage, target in points.items())
    (info / "entry_points.txt").write_text(f"[{registry.GROUP}]\n{lines}")


def test_hpcsr_registers_its_stages_in_chain_order():
    assert registry.stage_order() == ("preprocess", "mean", "diffusion", "joint", "sample", "evaluate", "probe")
    assert registry.stage("preprocess").run.__module__ == "preprocessing.stage"  # a plugin too: hpcsr never imports it
    with pytest.raises(
        ValueError, match=r"stage 'nope' is unknown: the registered stages are preprocess, mean, .*probe"
    ):
        registry.stage("nope")


def test_a_third_party_stage_is_found_checked_and_planned(tmp_path, monkeypatch, fresh_registry):
    install(
        tmp_path,
        "hpcsr-extra",
        "extra_stage",
        """
        from hpcsr.launch.registry import Stage

        CHECKED = []

        def run(spec, info):
            return {"pair": spec.pair.name}

        def check(spec):
            CHECKED.append(spec.name)

        EXTRA = Stage(run, order=55, check=check, reads=("evaluate",))
        """,
        {"extra": "extra_stage:EXTRA", "broken": "extra_stage:MISSING"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert registry.stage_order()[-4:] == ("sample", "extra", "evaluate", "probe")  # by order: 50, 55, 60, 70
    plan = planning.build(["launcher.stages=[sample,extra]", "grid.pairs=[[2,1],[4,2]]", f"run_root={tmp_path}"])
    assert [a.key for a in plan.arrays] == ["L0.sample", "L0.extra"]
    import extra_stage

    assert extra_stage.CHECKED == ["extra:s2_t1", "extra:s4_t2"]

    def spec(*overrides):  # what the stage lists in Stage.reads changes its identity, other sections do not
        return ElementSpec("extra", plan.pairs[0], None, compose(["launcher.stages=[extra]", *overrides]), (), 3)

    assert identity(spec("evaluate.scales=[1]")) != identity(spec()) == identity(spec("sample.members=3"))

    with pytest.raises(ConfigError, match=r"out of order: .* write them in the order .*sample, extra, evaluate"):
        compose(["launcher.stages=[extra,sample]"])
    with pytest.raises(ConfigError, match=r"stage 'broken' \(extra_stage:MISSING\) cannot be loaded \(AttributeError"):
        compose(["launcher.stages=[broken]"])
