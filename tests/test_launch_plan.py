"""hpcsr-launch without a scheduler: grid forms, transfer levels, plans and their dependencies, bad
input (named values and fixes), the resource check against sinfo's answer, and the dry-run output
compared with a golden copy (no timestamps, no machine-specific paths)."""

import json
from pathlib import Path

import pytest

from hpcsr.config import ConfigError, build, compose
from hpcsr.factors import PAPER_PAIRS, FactorPair
from hpcsr.launch import cli, sbatch
from hpcsr.launch import plan as planning
from hpcsr.launch.config import ClusterConfig, LauncherConfig
from hpcsr.launch.stages import ElementSpec, identity

GOLDEN_ARGS = [
    "plan",
    "launcher=slurm",
    "cluster=example_site",
    "grid.pairs=[[10,1],[5,2],[10,3]]",
    "+grid.parents={s10_t3:s10_t1}",
    "launcher.stages=[preprocess,probe]",
    "run_root=/scratch/hpcsr",
    "launcher.python=python3",
]
GOLDEN = """plan: 3 factor pairs (s10_t1, s5_t2, s10_t3), stages preprocess -> probe: 3 arrays, 4 elements; backend slurm, cluster example_site
array       stage       pair    parent  after                     nodes x ranks  gpus/node  cpus/rank  mem/node  time      partition
preprocess  preprocess  all     -       -                         1x16           0          1          256G      04:00:00  cpu
L0.probe    probe       s10_t1  -       preprocess                2x4            4          8          256G      12:00:00  gpu
L0.probe    probe       s5_t2   -       preprocess                2x4            4          8          256G      12:00:00  gpu
L1.probe    probe       s10_t3  s10_t1  preprocess + L0.probe[0]  2x4            4          8          256G      12:00:00  gpu

sbatch scripts (launch folder /scratch/hpcsr/launch/{launch}; <array> stands for that array's job id):

# ---- preprocess: sbatch /scratch/hpcsr/launch/{launch}/preprocess/<submission file>
#!/bin/bash

# Parameters
#SBATCH --account=my_project
#SBATCH --cpus-per-task=1
#SBATCH --error='/scratch/hpcsr/launch/{launch}/preprocess/%j_0_log.err'
#SBATCH --exclusive
#SBATCH --job-name=hpcsr-preprocess
#SBATCH --kill-on-invalid-dep=yes
#SBATCH --mail-type=FAIL
#SBATCH --mem=256G
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=16
#SBATCH --open-mode=append
#SBATCH --output='/scratch/hpcsr/launch/{launch}/preprocess/%j_0_log.out'
#SBATCH --partition=cpu
#SBATCH --qos=normal
#SBATCH --requeue
#SBATCH --signal=USR2@300
#SBATCH --time=240

# setup
export PYTHONPATH='/scratch/hpcsr/launch/{launch}/code'${PYTHONPATH:+:$PYTHONPATH}
module load cuda/12.4
export NCCL_DEBUG=WARN

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output '/scratch/hpcsr/launch/{launch}/preprocess/%j_%t_log.out' --error '/scratch/hpcsr/launch/{launch}/preprocess/%j_%t_log.err' --mpi=pmix python3 -u -m hpcsr.launch.job '/scratch/hpcsr/launch/{launch}/preprocess'

# ---- L0.probe: sbatch /scratch/hpcsr/launch/{launch}/L0.probe/<submission file>
#!/bin/bash

# Parameters
#SBATCH --account=my_project
#SBATCH --array=0-1%2
#SBATCH --constraint=a100
#SBATCH --cpus-per-task=8
#SBATCH --dependency='afterok:<preprocess>'
#SBATCH --error='/scratch/hpcsr/launch/{launch}/L0.probe/%A_%a_0_log.err'
#SBATCH --exclusive
#SBATCH --gpus-per-node=4
#SBATCH --job-name=hpcsr-L0.probe
#SBATCH --kill-on-invalid-dep=yes
#SBATCH --mail-type=FAIL
#SBATCH --mem=256G
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --open-mode=append
#SBATCH --output='/scratch/hpcsr/launch/{launch}/L0.probe/%A_%a_0_log.out'
#SBATCH --partition=gpu
#SBATCH --qos=normal
#SBATCH --requeue
#SBATCH --signal=USR2@300
#SBATCH --time=720

# setup
export PYTHONPATH='/scratch/hpcsr/launch/{launch}/code'${PYTHONPATH:+:$PYTHONPATH}
module load cuda/12.4
export NCCL_DEBUG=WARN

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output '/scratch/hpcsr/launch/{launch}/L0.probe/%A_%a_%t_log.out' --error '/scratch/hpcsr/launch/{launch}/L0.probe/%A_%a_%t_log.err' --mpi=pmix python3 -u -m hpcsr.launch.job '/scratch/hpcsr/launch/{launch}/L0.probe'

# ---- L1.probe: sbatch /scratch/hpcsr/launch/{launch}/L1.probe/<submission file>
#!/bin/bash

# Parameters
#SBATCH --account=my_project
#SBATCH --constraint=a100
#SBATCH --cpus-per-task=8
#SBATCH --dependency='afterok:<preprocess>,afterok:<L0.probe>_0'
#SBATCH --error='/scratch/hpcsr/launch/{launch}/L1.probe/%j_0_log.err'
#SBATCH --exclusive
#SBATCH --gpus-per-node=4
#SBATCH --job-name=hpcsr-L1.probe
#SBATCH --kill-on-invalid-dep=yes
#SBATCH --mail-type=FAIL
#SBATCH --mem=256G
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --open-mode=append
#SBATCH --output='/scratch/hpcsr/launch/{launch}/L1.probe/%j_0_log.out'
#SBATCH --partition=gpu
#SBATCH --qos=normal
#SBATCH --requeue
#SBATCH --signal=USR2@300
#SBATCH --time=720

# setup
export PYTHONPATH='/scratch/hpcsr/launch/{launch}/code'${PYTHONPATH:+:$PYTHONPATH}
module load cuda/12.4
export NCCL_DEBUG=WARN

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output '/scratch/hpcsr/launch/{launch}/L1.probe/%j_%t_log.out' --error '/scratch/hpcsr/launch/{launch}/L1.probe/%j_%t_log.err' --mpi=pmix python3 -u -m hpcsr.launch.job '/scratch/hpcsr/launch/{launch}/L1.probe'

dry run: nothing was submitted
"""


def test_dry_run_output_is_stable(capsys):
    assert cli.main(GOLDEN_ARGS) == 0
    first = capsys.readouterr().out
    assert first == GOLDEN
    assert cli.main(GOLDEN_ARGS) == 0
    assert capsys.readouterr().out == first


def probe_plan(*overrides, **kw):
    return planning.build(["launcher.stages=[probe]", *overrides], **kw)


@pytest.mark.slow  # composes the tree for every grid
def test_grid_forms_paper_list_product():
    assert planning.build(["launcher.stages=[probe]"]).pairs == list(PAPER_PAIRS)
    listed = probe_plan("grid=list").pairs
    assert [p.name for p in listed] == ["s10_t1", "s10_t3", "s20_t3", "s5_t2"]
    product = probe_plan("grid=product", "grid.s=[2,5]", "grid.t=[1,3]")
    assert [p.name for p in product.pairs] == ["s2_t1", "s2_t3", "s5_t1", "s5_t3"]
    (array,) = product.arrays
    assert [e.pair for e in array.elements] == product.pairs
    assert [e.cfg.run_dir for e in array.elements] == [str(Path("runs").resolve() / p.name) for p in product.pairs]
    assert all(e.cfg.factor.pair == e.pair for e in array.elements)


@pytest.mark.parametrize(
    "override,message",
    [
        ("grid.pairs=[[30,1],[10,1]]", r"grid\.pairs\[0\]=\[30, 1\]: factor s=30 is outside 1\.\.25"),
        ("grid.pairs=[[10,1],[10,7]]", r"grid\.pairs\[1\]=\[10, 7\]: factor t=7 is outside 1\.\.6"),
        ("grid.pairs=[[10,1],[10,1]]", r"pair s10_t1 is listed twice"),
        ("grid.kind=product", r"grid\.kind=product needs non-empty grid\.s and grid\.t"),
        ("+cluster.partitionn=gpu", r"unknown key cluster\.partitionn: ClusterConfig allows .*partition"),
        ("cluster=nowhere", r"cluster"),
        ("+cluster.sbatch_extra.partition=gpu", r"cluster\.sbatch_extra\.partition is set by the launcher"),
        ("+cluster.sbatch_extra={Mail_Type:FAIL}", r"'Mail_Type' is not an sbatch long option name"),
        ("launcher.stages=[probe,preprocess]", r"out of order"),
        ("launcher.stages=[train]", r"stage 'train' is unknown: the registered stages are preprocess, mean, diffusion"),
        ("sample.members=0", r"sample: members=0 must be a positive integer"),
        ("sample.window=flat", r"blend window 'flat' unknown"),
        (
            "evaluate.baselines=[cubic]",
            r"evaluate: baseline 'cubic' unknown: use some of nearest, bicubic, motion, mean",
        ),
    ],
)
def test_bad_config_names_value_and_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        compose([override])


def test_control_characters_never_reach_a_batch_script():
    for key in ("partition", "account", "qos", "constraint"):
        with pytest.raises(ConfigError, match=rf"cluster\.{key}='gpu\\ntouch /tmp/x' contains a control character"):
            build(ClusterConfig, {key: "gpu\ntouch /tmp/x"}, "cluster")
    with pytest.raises(ConfigError, match="control character"):
        build(ClusterConfig, {"sbatch_extra": {"comment": "a\rb"}}, "cluster")


def test_transfer_levels_dependencies_and_init(tmp_path):
    plan = probe_plan("grid=list", f"run_root={tmp_path}")
    assert [a.key for a in plan.arrays] == ["L0.probe", "L1.probe", "L2.probe"]
    l0, l1, l2 = plan.arrays
    assert [e.pair.name for e in l0.elements] == ["s10_t1", "s5_t2"]
    assert [(e.pair.name, e.parent.name) for e in l1.elements] == [("s10_t3", "s10_t1")]
    assert l1.deps == [planning.Dep("afterok", "L0.probe", (0,))]
    assert l2.deps == [planning.Dep("afterok", "L1.probe", (0,))]
    assert l1.elements[0].cfg.train.init_from == str(tmp_path / "s10_t1" / "probe")
    assert l0.elements[0].cfg.train.init_from is None
    ids = {"L0.probe": ("41", 2), "L1.probe": ("42", 1)}
    assert sbatch.dependency(l1.deps, ids) == "afterok:41_0"
    assert sbatch.dependency(l2.deps, ids) == "afterok:42"


def test_stage_chain_uses_aftercorr_and_once_stage_afterok():
    plan = planning.build(["launcher.stages=[preprocess,probe]", "grid.pairs=[[10,1],[10,3]]"])
    pre, probe = plan.arrays
    assert (pre.key, [e.pair for e in pre.elements]) == ("preprocess", [None])
    assert probe.deps == [planning.Dep("afterok", "preprocess")]
    assert sbatch.dependency(probe.deps, {"preprocess": ("7", 1)}) == "afterok:7"
    chained = [planning.Dep("aftercorr", "L0.mean")]
    assert sbatch.dependency(chained, {"L0.mean": ("8", 4)}) == "aftercorr:8"
    assert sbatch.dependency(chained, {"L0.mean": ("8", 1)}) == "afterok:8"  # a one-element array is a plain job


@pytest.mark.slow  # composes the tree per case
def test_parents_cycles_and_unknown_parents_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"grid\.parents has a cycle s10_t3 -> s10_t1 -> s10_t3"):
        probe_plan("grid.pairs=[[10,1],[10,3]]", "+grid.parents={s10_t3:s10_t1,s10_t1:s10_t3}")
    with pytest.raises(ValueError, match=r"parent s2_t1 is neither in the grid nor finished"):
        probe_plan("grid.pairs=[[10,1]]", "+grid.parents={s10_t1:s2_t1}", f"run_root={tmp_path}")
    with pytest.raises(ValueError, match=r"pair s5_t5 is not in the grid"):
        probe_plan("grid.pairs=[[10,1]]", "+grid.parents={s5_t5:s10_t1}")


def test_parent_outside_the_grid_with_a_finished_export(tmp_path):
    export = tmp_path / "s2_t1" / "probe" / "export.json"
    export.parent.mkdir(parents=True)
    export.write_text(json.dumps({"x": [0.0] * 8}))
    plan = probe_plan("grid.pairs=[[10,1]]", "+grid.parents={s10_t1:s2_t1}", f"run_root={tmp_path}")
    (array,) = plan.arrays
    assert array.deps == [] and array.elements[0].parent == FactorPair(2, 1)
    assert array.elements[0].cfg.train.init_from == str(tmp_path / "s2_t1" / "probe")


def test_local_backend_refuses_several_nodes():
    with pytest.raises(ValueError, match=r"launcher\.kind=local .* cluster nodes=2: set cluster\.nodes=1"):
        probe_plan("cluster.nodes=2")


def test_identity_ignores_where_a_stage_runs_not_what_it_computes():
    def spec(*overrides):
        cfg = compose(["launcher.stages=[probe]", *overrides])
        return ElementSpec("probe", FactorPair(10, 3), None, cfg, (FactorPair(10, 3),), 3)

    base = identity(spec())
    assert identity(spec("cluster.time_min=5", "launcher.poll_s=1", "preprocess.source=store")) == base
    assert identity(spec("launcher.probe.steps=7")) != base
    assert identity(spec("train.steps=7")) != base
    assert identity(spec("sample.members=3")) == base  # the sample section is the sample stage's own


def test_the_old_launcher_sample_key_names_the_sample_section():
    """launcher.sample (hpcsr sample flags as a string list) is gone: on the command line and in a
    launcher YAML of one's own the error says what to write instead."""
    for found in (
        lambda: compose(["launcher.sample=[--members,20]"]),
        lambda: compose(["+launcher.sample=[--members,20]"]),
        lambda: build(LauncherConfig, {"sample": []}, "launcher"),
    ):
        with pytest.raises(ConfigError, match=r"launcher\.sample=.*moved to the sample section: .*sample\.members=20"):
            found()


def test_the_old_launcher_preprocess_key_names_the_preprocess_section():
    """launcher.preprocess (hpcsr-preprocess arguments as a string list) is gone: the error names
    the preprocess section's keys, on the command line and in a launcher YAML of one's own."""
    for found in (
        lambda: compose(["launcher.preprocess=[all,--comephore,/data/comephore]"]),
        lambda: build(LauncherConfig, {"preprocess": ["all"]}, "launcher"),
    ):
        with pytest.raises(
            ConfigError,
            match=r"launcher\.preprocess=.*preprocess\.source=comephore preprocess\.inputs=\[/data/comephore\]",
        ):
            found()


@pytest.mark.parametrize(
    "override,message",
    [
        ("preprocess.cadence=0", r"preprocess\.cadence=0: minutes >= 1"),
        ("preprocess.source=comephore", r"preprocess\.source=comephore needs its files: preprocess\.inputs=\["),
        ("preprocess.synthetic.size=8", r"preprocess\.synthetic\.size=8 must be in 16\.\.1536"),
        ("preprocess.split_fractions=[0.5,0.2]", r"preprocess\.split_fractions: .* summing to 1"),
        ("+preprocess.days=2", r"unknown key preprocess\.days: PreprocessConfig allows"),
    ],
)
def test_a_bad_preprocess_value_stops_the_plan_naming_the_key(override, message, tmp_path):
    """hpcsr keeps the preprocess section as a mapping; the preprocess stage's check (preprocessing
    .config) refuses a bad value when the plan is built, before anything is queued."""
    stages = ["launcher.stages=[preprocess,probe]", f"run_root={tmp_path}", f"data_dir={tmp_path / 'data'}"]
    assert compose([*stages, override]).preprocess  # composes: hpcsr does not read the section
    with pytest.raises(ConfigError, match=message):
        planning.build([*stages, override])
    assert not (tmp_path / "launch").exists() and not (tmp_path / "data").exists()


def test_sample_and_evaluate_stage_identity_and_inputs_set_by_the_launcher(tmp_path):
    """A stage's own section changes its identity and later stages', not earlier ones'; the keys
    the launcher sets per pair are refused when the plan is built."""
    stages = "launcher.stages=[mean,diffusion,sample,evaluate]"

    def spec(stage, *overrides):
        cfg = compose([stages, *overrides])
        return ElementSpec(stage, FactorPair(10, 3), None, cfg, (FactorPair(10, 3),), 3)

    for stage, section, changed in [
        ("diffusion", "sample.members=3", False),
        ("sample", "sample.members=3", True),
        ("evaluate", "sample.members=3", True),  # another ensemble: score it again
        ("sample", "evaluate.scales=[1]", False),
        ("evaluate", "evaluate.scales=[1]", True),
    ]:
        assert (identity(spec(stage, section)) != identity(spec(stage))) == changed, (stage, section)
    for key, value in [("sample.out", "x.nc"), ("evaluate.truth", "t.nc"), ("evaluate.pairs", "[m.json]")]:
        with pytest.raises(ValueError, match=rf"{key}=.*: the launcher's .* stage sets .*leave {key} unset"):
            planning.build([stages, "grid.pairs=[[10,3]]", f"run_root={tmp_path}", f"{key}={value}"])


SINFO = [  # what read_sinfo makes of `sinfo -h -N -o %N|%P|%c|%m|%G|%l|%a` on a small site
    sbatch.NodeInfo("g1", "gpu", False, 64, 512000, 4, 2880, True),
    sbatch.NodeInfo("g2", "gpu", False, 64, 512000, 4, 2880, True),
    sbatch.NodeInfo("c1", "cpu", True, 128, 256000, 0, None, True),
]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["cluster.partition=gpux"],
            r"cluster\.partition='gpux' .* is not a partition of this cluster: choose one of cpu, gpu",
        ),
        (
            ["cluster.partition=gpu", "cluster.tasks_per_node=8", "cluster.cpus_per_task=10"],
            r"asks for 8 ranks x 10 CPUs = 80 CPUs, 0 GPUs per node, but no node of partition 'gpu' has that \(largest: 64 CPUs",
        ),
        (["cluster.partition=gpu", "cluster.gpus_per_node=8"], r"8 GPUs per node, but no node"),
        (["cluster.partition=gpu", "cluster.nodes=3"], r"cluster\.nodes=3 nodes .* has only 2 such node"),
        (
            ["cluster.partition=gpu", "cluster.time_min=3000"],
            r"cluster\.time_min=3000 minutes, but partition 'gpu' allows 2880",
        ),
        (["cluster.gpus_per_node=1"], r"default partition 'cpu'"),
    ],
)
def test_resource_check_names_request_and_limit(overrides, message):
    plan = probe_plan("launcher=slurm", "grid.pairs=[[10,1]]", *overrides)
    with pytest.raises(ValueError, match=message):
        sbatch.check_resources(plan.arrays[0], SINFO)


def test_resource_check_accepts_what_fits():
    plan = probe_plan(
        "launcher=slurm",
        "grid.pairs=[[10,1]]",
        "cluster=example_site",
        "cluster.partition=gpu",
        "cluster.constraint=null",
    )
    sbatch.check_resources(plan.arrays[0], SINFO)


@pytest.mark.parametrize(
    "text,minutes",
    [("infinite", None), ("30", 30), ("45:00", 45), ("1:30:00", 90), ("2-00:00:00", 2880), ("1-12", 2160)],
)
def test_slurm_time_limits(text, minutes):
    assert sbatch._minutes(text) == minutes


def test_cli_bad_input_exits_2_with_the_message(capsys):
    assert cli.main(["plan", "grid.pairs=[[30,1]]"]) == 2
    err = capsys.readouterr().err
    assert "hpcsr-launch: " in err and "grid.pairs[0]=[30, 1]" in err and "pick an integer s in 1..25" in err


def test_sbatch_templates_parse_and_keep_the_launch_options():
    import subprocess

    templates = Path(__file__).resolve().parents[1] / "slurm" / "templates"
    for name in ("train_array.sbatch", "chain.sh"):
        out = subprocess.run(["bash", "-n", str(templates / name)], capture_output=True, text=True)
        assert out.returncode == 0, f"{name}: {out.stderr}"
    text = (templates / "train_array.sbatch").read_text()
    from hpcsr import exits

    for option in (
        "--signal=USR2@",
        "--requeue",
        "--kill-on-invalid-dep=yes",
        "scontrol requeue",
        f'"$code" = {exits.REQUEUE}',
    ):  # the template's requeue test is the exit-code table's
        assert option in text
    assert "aftercorr:" in (templates / "chain.sh").read_text()
