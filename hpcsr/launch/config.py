"""Schemas of the `launcher`, `cluster` and `grid` config sections.

`launcher` says how and what to launch (backend, stages, folders), `cluster` what one job asks the
scheduler for (resources, partition, account, signals), `grid` which factor pairs to run and which
pair seeds which (transfer chains). Values that reach sbatch are checked here for characters that
could escape a `#SBATCH` line; sbatch itself judges whether the site knows them.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field, fields

from hpcsr.factors import expand_grid
from hpcsr.launch.registry import stage, stage_order

# sbatch options the launcher sets itself; cluster.sbatch_extra may not change them.
MANAGED_OPTIONS = frozenset(
    {
        "array",
        "dependency",
        "output",
        "error",
        "open-mode",
        "job-name",
        "signal",
        "requeue",
        "no-requeue",
        "wrap",
        "kill-on-invalid-dep",
        "nodes",
        "ntasks-per-node",
        "cpus-per-task",
        "gpus-per-node",
        "time",
        "partition",
        "account",
        "qos",
        "constraint",
        "mem",
    }
)
_OPTION_NAME = re.compile(r"[a-z][a-z0-9-]*")


def check_sbatch_value(key: str, value) -> None:
    """Refuse control characters (a newline would end the `#SBATCH` line and start a shell line)."""
    if isinstance(value, str) and any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(
            f"{key}={value!r} contains a control character (newline, tab, ...): Slurm names never do; remove it"
        )


@dataclass
class ProbeConfig:
    """The probe stage (hpcsr.launch.probe): a small checkpointed workload for site checks and tests."""

    steps: int = 60  # gradient steps in total
    step_s: float = 0.5  # seconds each step sleeps (stands for work)
    lr: float = 0.05  # gradient step size
    checkpoint_every: int = 10  # steps between checkpoints (a signal also checkpoints)
    hold_at: int = (
        0  # first attempt only: at this step, wait for the time-limit signal (checks the requeue path; 0: never)
    )

    def __post_init__(self):
        for key in ("steps", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"launcher.probe.{key}={getattr(self, key)} must be >= 1")
        if not 0 <= self.hold_at < self.steps:
            raise ValueError(
                f"launcher.probe.hold_at={self.hold_at} must be 0 (off) or a step below steps={self.steps}"
            )
        if self.step_s < 0 or self.lr <= 0:
            raise ValueError(f"launcher.probe: step_s={self.step_s} must be >= 0 and lr={self.lr} > 0")


@dataclass
class LauncherConfig:
    # keys of older versions: {key: what to write instead} (hpcsr.config names it when one is given)
    MOVED: typing.ClassVar[dict] = {
        "sample": "the sample stage's settings moved to the sample section: write each `hpcsr sample` "
        "flag --name-x v as sample.name_x=v, e.g. sample.members=20 sample.steps=10 (see configs/sample/default.yaml)",
        "preprocess": "the preprocess stage's settings moved to the preprocess section: write the source as "
        "preprocess.source=comephore preprocess.inputs=[/data/comephore] (or netcdf; synthetic is the default, "
        "preprocess.synthetic.days=2 ...) and each `hpcsr-preprocess all` flag --name-x v as preprocess.name_x=v, "
        "e.g. preprocess.split_fractions=[0.7,0.2,0.1] (see configs/preprocess/default.yaml)",
    }
    kind: typing.Literal["local", "slurm"] = "local"  # local processes or Slurm through submitit
    folder: str = "${run_root}/launch"  # launch records, submitit logs and pickles (one numbered subfolder per launch)
    stages: list[str] = field(default_factory=lambda: ["mean", "diffusion"])  # stages chained per pair, in order
    stage_overrides: dict[str, list[str]] = field(
        default_factory=dict
    )  # extra config overrides per stage, e.g. {diffusion: [train.steps=5000]}
    snapshot: bool = False  # copy the code into the launch folder so queued jobs run the code as it was at submission
    python: typing.Optional[str] = None  # command that starts Python in a job (None: this interpreter)
    max_requeues: int = 10  # requeues of one element (preemption, time limit) before it counts as failed
    poll_s: float = 5.0  # seconds between state polls of --wait
    probe: ProbeConfig = field(default_factory=ProbeConfig)  # settings of the probe stage

    def __post_init__(self):
        if not self.stages:
            raise ValueError("launcher.stages is empty: list at least one of " + ", ".join(stage_order()))
        for name in list(self.stages) + list(self.stage_overrides):
            stage(name)  # registered and loadable (hpcsr.launch.registry), else an error naming the registered ones
        if len(set(self.stages)) != len(self.stages):
            raise ValueError(f"launcher.stages={list(self.stages)} names a stage twice")
        order = [stage(name).order for name in self.stages]
        if order != sorted(order):
            raise ValueError(
                f"launcher.stages={list(self.stages)} is out of order: a stage runs after the ones it "
                f"needs, write them in the order {', '.join(stage_order())}"
            )
        if self.max_requeues < 0:
            raise ValueError(f"launcher.max_requeues={self.max_requeues} must be >= 0")
        if self.poll_s <= 0:
            raise ValueError(f"launcher.poll_s={self.poll_s} must be > 0")


@dataclass
class StageResources:
    """Per-stage changes to the cluster's resources (None: keep the cluster value; "" clears a
    partition, qos or constraint)."""

    nodes: typing.Optional[int] = None  # nodes per element
    tasks_per_node: typing.Optional[int] = None  # ranks per node
    gpus_per_node: typing.Optional[int] = None  # GPUs per node
    cpus_per_task: typing.Optional[int] = None  # CPU cores per rank
    mem_gb: typing.Optional[float] = None  # memory per node in GB
    time_min: typing.Optional[int] = None  # wall-clock limit in minutes
    partition: typing.Optional[str] = None  # Slurm partition ("": the default)
    qos: typing.Optional[str] = None  # quality of service ("": the default)
    constraint: typing.Optional[str] = None  # node features ("": any node)


@dataclass
class ClusterConfig:
    name: str = "local"  # label shown in plans and job names
    nodes: int = 1  # nodes per element (job array task)
    tasks_per_node: int = 1  # ranks per node
    gpus_per_node: int = 0  # GPUs per node
    cpus_per_task: int = 1  # CPU cores per rank
    mem_gb: typing.Optional[float] = None  # memory per node in GB (None: the site default)
    time_min: int = 60  # wall-clock limit in minutes
    partition: typing.Optional[str] = None  # Slurm partition (None: the cluster's default)
    account: typing.Optional[str] = None  # Slurm account charged (None: your default)
    qos: typing.Optional[str] = None  # quality of service (None: the default)
    constraint: typing.Optional[str] = None  # node features, e.g. "a100&ib" (None: any node)
    array_parallelism: int = 2  # elements of one array running at the same time
    signal_delay_s: int = 30  # SIGUSR2 to every rank this long before the time limit: checkpoint, requeue
    mpi: typing.Optional[str] = None  # srun --mpi=<value> (pmix, pmi2; None: the site default)
    setup: list[str] = field(
        default_factory=list
    )  # shell lines run in the job before srun (module load ...), written as given
    sbatch_extra: dict[str, str] = field(
        default_factory=dict
    )  # more sbatch options, name: value ("" for a flag), e.g. {mail-type: FAIL}
    stages: dict[str, StageResources] = field(
        default_factory=dict
    )  # per-stage resource changes, e.g. {preprocess: {gpus_per_node: 0}}
    check_resources: bool = True  # compare each request with `sinfo` before submitting anything
    release_requeued: bool = True  # --wait starts requeued jobs at once instead of after Slurm's ~2 min hold

    def __post_init__(self):
        for key in ("nodes", "tasks_per_node", "cpus_per_task", "time_min", "array_parallelism"):
            if getattr(self, key) < 1:
                raise ValueError(f"cluster.{key}={getattr(self, key)} must be >= 1")
        if self.gpus_per_node < 0:
            raise ValueError(f"cluster.gpus_per_node={self.gpus_per_node} must be >= 0")
        if self.mem_gb is not None and self.mem_gb <= 0:
            raise ValueError(f"cluster.mem_gb={self.mem_gb} must be > 0 (or null for the site default)")
        if self.signal_delay_s < 0:
            raise ValueError(f"cluster.signal_delay_s={self.signal_delay_s} must be >= 0")
        for key in ("name", "partition", "account", "qos", "constraint", "mpi"):
            check_sbatch_value(f"cluster.{key}", getattr(self, key))
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ValueError(f"cluster.name={self.name!r} must be letters, digits, '_', '.', '-' (it names jobs)")
        for option, value in self.sbatch_extra.items():
            if not _OPTION_NAME.fullmatch(option):
                raise ValueError(
                    f"cluster.sbatch_extra key {option!r} is not an sbatch long option name "
                    "(lower-case letters, digits, '-'; without the leading '--')"
                )
            if option in MANAGED_OPTIONS:
                raise ValueError(
                    f"cluster.sbatch_extra.{option} is set by the launcher: use the cluster key "
                    f"for it (nodes, time_min, partition, ...) instead"
                )
            check_sbatch_value(f"cluster.sbatch_extra.{option}", value)
        for name, res in self.stages.items():
            if name not in stage_order():
                raise ValueError(f"cluster.stages.{name}: unknown stage, choose from {', '.join(stage_order())}")
            for f in fields(res):
                value = getattr(res, f.name)
                check_sbatch_value(f"cluster.stages.{name}.{f.name}", value)
                if (
                    isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and value < (0 if f.name == "gpus_per_node" else 1)
                ):
                    raise ValueError(f"cluster.stages.{name}.{f.name}={value} is too small")


@dataclass
class GridConfig:
    kind: typing.Literal["pairs", "product"] = "pairs"  # pairs: the list below; product: every s with every t
    pairs: list[list[int]] = field(
        default_factory=lambda: [[1, 3], [10, 1], [10, 3], [25, 6]]
    )  # (s, t) pairs (kind=pairs)
    s: list[int] = field(default_factory=list)  # spatial factors (kind=product)
    t: list[int] = field(default_factory=list)  # temporal factors (kind=product)
    parents: dict[str, str] = field(default_factory=dict)  # transfer chains, child: parent (e.g. s10_t3: s10_t1)
    transfer: typing.Literal["none", "auto"] = (
        "none"  # when parents is empty: none = all from scratch, auto = nearest pair (hpcsr.transfer.plan)
    )

    def __post_init__(self):
        if self.kind == "product" and not (self.s and self.t):
            raise ValueError(
                f"grid.kind=product needs non-empty grid.s and grid.t (got s={list(self.s)}, "
                f"t={list(self.t)}), e.g. grid.s=[5,10] grid.t=[1,3]"
            )
        if self.kind == "pairs" and not self.pairs:
            raise ValueError("grid.pairs is empty: list (s, t) pairs, e.g. grid.pairs=[[10,1],[10,3]]")
        expand_grid(self)  # every pair valid, none twice
