"""The launch plan: configs composed per factor pair and stage, grouped into job arrays with their
resources and dependencies. Building a plan submits nothing; `hpcsr-launch --dry-run` prints it.

Arrays and dependencies (the choice, and why):
  - one array per stage and transfer level, one element per pair, pairs in grid order;
  - a stage after another stage of the same level uses `aftercorr` on it: element i (pair i) starts
    as soon as element i of the stage before has succeeded, so a slow pair never holds back the
    others (Slurm's per-element dependency between arrays of equal size and order);
  - a stage run once for the whole grid (preprocess) is a single job; what follows it uses `afterok`;
  - the first training stage of transfer level k waits (`afterok`) for the parents' elements of the
    last training stage of level k-1, i.e. for the parents' complete runs. Slurm applies an array's
    dependency to all its elements, so a child may wait for its level's other parents too: correct,
    sometimes later than needed. Every training stage of a child is initialised from its parent's run
    folder (train.init_from; a child that already has a checkpoint resumes instead).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from hpcsr.config import ConfigError, RootConfig, compose
from hpcsr.factors import FactorPair
from hpcsr.launch.grid import expand, levels, parse_parents
from hpcsr.launch.stages import STAGES, ElementSpec, stage_function

RESOURCE_KEYS = ("nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task", "mem_gb", "time_min",
                 "partition", "qos", "constraint")


@dataclass(frozen=True)
class Resources:
    """What one element (job array task) asks the scheduler for."""

    nodes: int
    tasks_per_node: int
    gpus_per_node: int
    cpus_per_task: int
    mem_gb: Optional[float]
    time_min: int
    partition: Optional[str]
    account: Optional[str]
    qos: Optional[str]
    constraint: Optional[str]

    @classmethod
    def for_stage(cls, cluster, stage: str) -> "Resources":
        values = {key: getattr(cluster, key) for key in RESOURCE_KEYS}
        change = cluster.stages.get(stage)
        if change is not None:
            values.update({k: v for k, v in dataclasses.asdict(change).items() if v is not None})
        return cls(account=cluster.account, **values)

    @property
    def time(self) -> str:
        days, minutes = divmod(self.time_min, 24 * 60)
        text = f"{minutes // 60:02d}:{minutes % 60:02d}:00"
        return f"{days}-{text}" if days else text


@dataclass(frozen=True)
class Dep:
    """A dependency of an array on an earlier one of the plan."""

    kind: str  # "aftercorr": element i after element i; "afterok": after the listed elements (or all)
    array: str  # key of the earlier array
    indices: Optional[tuple] = None  # afterok on these elements only (None: the whole array)


@dataclass
class ArrayPlan:
    key: str  # e.g. "L0.mean": transfer level and stage; names the folder and the job
    stage: str
    level: int
    elements: list  # ElementSpec, one per pair (one in all for a stage run once)
    resources: Resources
    deps: list = field(default_factory=list)


@dataclass
class Plan:
    arrays: list  # ArrayPlan, each after the arrays it depends on
    base: RootConfig  # the configuration composed from the user's overrides alone
    overrides: list
    pairs: list

    @property
    def kind(self) -> str:
        return self.base.launcher.kind

    def array(self, key: str) -> ArrayPlan:
        return next(a for a in self.arrays if a.key == key)


def absolute_paths(cfg: RootConfig) -> RootConfig:
    """Relative folders of the config made absolute against the submitting directory, so a job
    started elsewhere (Slurm's working directory, a local queue) writes to the same place."""
    out = RootConfig(**vars(cfg))
    for key in ("run_root", "run_dir", "data_dir"):
        setattr(out, key, os.path.abspath(getattr(cfg, key)))
    out.launcher = dataclasses.replace(cfg.launcher, folder=os.path.abspath(cfg.launcher.folder))
    if cfg.train.init_from:
        out.train = dataclasses.replace(cfg.train, init_from=os.path.abspath(cfg.train.init_from))
    return out


class _Composer:
    """compose() per pair and stage, cached (Hydra takes a few tenths of a second per call)."""

    def __init__(self, overrides: list[str], config_path):
        self.overrides, self.config_path, self.cache = list(overrides), config_path, {}

    def __call__(self, pair: Optional[FactorPair] = None, extra: tuple = ()) -> RootConfig:
        key = (pair, tuple(extra))
        if key not in self.cache:
            more = [f"factor.s={pair.s}", f"factor.t={pair.t}"] if pair is not None else []
            self.cache[key] = absolute_paths(compose(self.overrides + more + list(extra), self.config_path))
        return self.cache[key]

    def for_stage(self, pair: FactorPair, stage: str, launcher) -> RootConfig:
        extra = list(launcher.stage_overrides.get(stage, []))
        if STAGES[stage].train_stage:
            extra.append(f"train.stage={STAGES[stage].train_stage}")
        try:
            return self(pair, tuple(extra))
        except ConfigError as err:
            raise ConfigError(f"stage {stage}, pair {pair.name}: {err}") from None


def build(overrides=(), config_path=None, export_exists: Callable[[FactorPair], bool] | None = None) -> Plan:
    """Compose, expand the grid and lay out the arrays; raises ConfigError/ValueError on bad input."""
    composer = _Composer(list(overrides), config_path)
    base = composer()
    launcher, cluster = base.launcher, base.cluster
    pairs = expand(base.grid)
    for stage in launcher.stages:
        stage_function(stage)  # every stage importable before anything is planned
    if export_exists is None:
        def export_exists(pair):
            return (Path(composer(pair).run_dir) / "export" / "model.pt").is_file()
    transfers = parse_parents(base.grid.parents, pairs, export_exists)
    once = [s for s in launcher.stages if not STAGES[s].per_pair]
    per_pair = [s for s in launcher.stages if STAGES[s].per_pair]
    if once and launcher.stages[: len(once)] != once:
        raise ValueError(f"launcher.stages={list(launcher.stages)}: stages run once for the grid "
                         f"({', '.join(once)}) must come first")
    if launcher.kind == "local":
        for stage in launcher.stages:
            res = Resources.for_stage(cluster, stage)
            if res.nodes != 1:
                raise ValueError(f"launcher.kind=local runs every element on this machine, but stage {stage} asks "
                                 f"for cluster nodes={res.nodes}: set cluster.nodes=1 or use launcher=slurm")

    arrays: list[ArrayPlan] = []
    for stage in once:
        spec = ElementSpec(stage, None, None, base, tuple(pairs), launcher.max_requeues)
        deps = [Dep("afterok", arrays[-1].key)] if arrays else []
        arrays.append(ArrayPlan(stage, stage, 0, [spec], Resources.for_stage(cluster, stage), deps))
    after_once = arrays[-1].key if arrays else None
    training = [s for s in per_pair if STAGES[s].training]
    last_training: dict[int, ArrayPlan] = {}
    for level, level_pairs in enumerate(levels(pairs, transfers)):
        previous = None
        for stage in per_pair:
            elements = []
            for pair in level_pairs:
                link = transfers.get(pair)
                cfg = composer.for_stage(pair, stage, launcher)
                if link is not None and STAGES[stage].training:
                    cfg = RootConfig(**vars(cfg))
                    cfg.train = dataclasses.replace(cfg.train, init_from=composer(link.parent).run_dir)
                elements.append(ElementSpec(stage, pair, link.parent if link else None, cfg, tuple(pairs),
                                            launcher.max_requeues))
            deps = []
            if previous is not None:
                deps.append(Dep("aftercorr", previous.key))
            elif after_once is not None:
                deps.append(Dep("afterok", after_once))
            if level > 0 and training and stage == training[0]:
                parents = last_training[level - 1]
                wanted = {transfers[p].parent for p in level_pairs if transfers[p].in_grid}
                index = sorted(i for i, e in enumerate(parents.elements) if e.pair in wanted)
                deps.append(Dep("afterok", parents.key, tuple(index)))
            array = ArrayPlan(f"L{level}.{stage}", stage, level, elements, Resources.for_stage(cluster, stage), deps)
            arrays.append(array)
            previous = array
        if training:
            last_training[level] = next(a for a in arrays if a.level == level and a.stage == training[-1]
                                        and STAGES[a.stage].per_pair)
    return Plan(arrays, base, list(overrides), pairs)
