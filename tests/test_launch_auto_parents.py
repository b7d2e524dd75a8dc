"""grid.transfer=auto: hpcsr-launch takes each pair's parent from the nearest-pair plan of
hpcsr.transfer.plan when grid.parents is empty; explicit parents win. Plans are built from the real
configs (nothing is submitted); expected parents are worked out by hand from the distance
d = |ln s - ln s'| + |ln t - ln t'| (smallest volume s*s*t first; ties to the smaller volume)."""

import json
import re

import pytest

from hpcsr.config import ConfigError, compose
from hpcsr.factors import PAPER_PAIRS
from hpcsr.launch import cli, sbatch
from hpcsr.launch import plan as planning
from hpcsr.launch.plan import Dep
from hpcsr.transfer.plan import grid_parents

# s1_t3 (volume 3) is first, so from scratch; s10_t1: only s1_t3, d = ln 10 + ln 3 = 3.40;
# s10_t3: s10_t1 at ln 3 = 1.10 beats s1_t3 at ln 10 = 2.30; s25_t6: s10_t3 at ln 2.5 + ln 2 = 1.61
# beats s10_t1 at ln 2.5 + ln 6 = 2.71 and s1_t3 at ln 25 + ln 2 = 3.91
PAPER_AUTO = {"s10_t1": "s1_t3", "s10_t3": "s10_t1", "s25_t6": "s10_t3"}


def parents(plan) -> dict:
    return {e.pair.name: e.parent.name for a in plan.arrays for e in a.elements if e.parent is not None}


def test_paper_grid_auto_parents_levels_dependencies_and_init(tmp_path):
    plan = planning.build(
        ["grid=paper", "grid.transfer=auto", "launcher=slurm", "cluster=example_site", f"run_root={tmp_path}"]
    )
    assert parents(plan) == PAPER_AUTO == grid_parents(PAPER_PAIRS)
    assert [a.key for a in plan.arrays] == [f"L{k}.{s}" for k in range(4) for s in ("mean", "diffusion")]
    by_key = {a.key: a for a in plan.arrays}
    assert by_key["L0.mean"].deps == [] and by_key["L0.mean"].elements[0].cfg.train.init_from is None
    for k, (child, parent) in enumerate(PAPER_AUTO.items(), start=1):
        mean, diffusion = by_key[f"L{k}.mean"], by_key[f"L{k}.diffusion"]
        assert [e.pair.name for e in mean.elements] == [child]
        assert mean.deps == [Dep("afterok", f"L{k - 1}.mean", (0,))]
        assert diffusion.deps == [Dep("aftercorr", f"L{k}.mean"), Dep("afterok", f"L{k - 1}.diffusion", (0,))]
        for array, stage in ((mean, "mean"), (diffusion, "diffusion")):
            assert array.elements[0].cfg.train.init_from == str(tmp_path / parent / stage)
    ids = {"L0.diffusion": ("51", 1), "L1.mean": ("52", 1)}
    assert sbatch.dependency(by_key["L1.diffusion"].deps, ids) == "afterok:52,afterok:51"


def test_dry_run_shows_parents_and_afterok(capsys):
    assert (
        cli.main(
            [
                "plan",
                "grid=paper",
                "grid.transfer=auto",
                "launcher=slurm",
                "cluster=example_site",
                "run_root=/scratch/hpcsr",
                "launcher.python=python3",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "parents: grid.transfer=auto, each pair seeded from its nearest pair" in out
    rows = {tuple(line.split()[:5]) for line in out.splitlines() if line.startswith("L")}
    assert ("L1.mean", "mean", "s10_t1", "s1_t3", "L0.mean") in rows
    assert ("L3.mean", "mean", "s25_t6", "s10_t3", "L2.mean") in rows
    assert ("L3.diffusion", "diffusion", "s25_t6", "s10_t3", "L3.mean") in rows  # + L2.diffusion after it
    scripts = dict(re.findall(r"# ---- (\S+): sbatch .*?\n(.*?)(?=\n# ---- |\ndry run)", out, re.S))
    assert "#SBATCH --dependency='afterok:<L0.mean>'" in scripts["L1.mean"]
    assert "#SBATCH --dependency='afterok:<L3.mean>,afterok:<L2.diffusion>'" in scripts["L3.diffusion"]
    assert "--dependency" not in scripts["L0.mean"]


def test_explicit_parents_win_over_auto():
    plan = planning.build(
        ["grid=paper", "grid.transfer=auto", "++grid.parents={s25_t6:s10_t1}", "launcher.stages=[probe]"]
    )
    assert parents(plan) == {"s25_t6": "s10_t1"}
    l0, l1 = plan.arrays
    assert [e.pair.name for e in l0.elements] == ["s1_t3", "s10_t1", "s10_t3"]
    assert l1.deps == [Dep("afterok", "L0.probe", (1,))]  # s10_t1 is element 1 of L0


def test_product_grid_auto_parents_share_a_level():
    # volumes s2_t1 4, s2_t2 8, s4_t1 16, s4_t2 32; s2_t2 and s4_t1 are both ln 2 from s2_t1;
    # s4_t2 is ln 2 from s2_t2 and from s4_t1: the tie goes to the smaller volume, s2_t2
    plan = planning.build(
        ["grid=product", "grid.s=[2,4]", "grid.t=[1,2]", "grid.transfer=auto", "launcher.stages=[probe]"]
    )
    assert parents(plan) == {"s2_t2": "s2_t1", "s4_t1": "s2_t1", "s4_t2": "s2_t2"}
    l0, l1, l2 = plan.arrays
    assert [e.pair.name for e in l1.elements] == ["s2_t2", "s4_t1"]
    assert l1.deps == [Dep("afterok", "L0.probe", (0,))]
    assert l2.deps == [Dep("afterok", "L1.probe", (0,))]


def test_auto_parents_depend_on_the_grid_only(tmp_path):
    """A finished export does not change the parents, so a relaunch plans the same elements (and
    their done markers still match)."""
    export = tmp_path / "s10_t3" / "probe" / "export.json"
    export.parent.mkdir(parents=True)
    export.write_text(json.dumps({"x": [0.0] * 8}))
    plan = planning.build(["grid=paper", "grid.transfer=auto", "launcher.stages=[probe]", f"run_root={tmp_path}"])
    assert parents(plan) == PAPER_AUTO


def test_default_is_from_scratch_and_bad_values_are_named(capsys):
    plan = planning.build(["grid=paper", "launcher.stages=[probe]"])
    assert parents(plan) == {} and [a.key for a in plan.arrays] == ["L0.probe"]
    assert cli.main(["plan", "grid=paper", "launcher.stages=[probe]"]) == 0
    assert "grid.transfer=auto" not in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"grid\.transfer='nearest' is not allowed: choose one of 'none', 'auto'"):
        compose(["grid.transfer=nearest"])
