"""The launch plan: configs composed per factor pair and stage, grouped into job arrays with their
resources and dependencies. Building a plan submits nothing; `hpcsr-launch --dry-run` prints it.

Arrays and dependencies (the choice, and why):
  - one array per stage and transfer level, one element per pair, pairs in grid order;
  - a stage after another stage of the same level uses `aftercorr` on it: element i (pair i) starts
    as soon as element i of the stage before has succeeded, so a slow pair never holds back the
    others (Slurm's per-element dependency between arrays of equal size and order);
  - a stage run once for the whole grid (preprocess) is a single job; what follows it uses `afterok`;
  - parents come from grid.parents, or when it is empty and grid.transfer=auto, from the nearest-pair
    plan of hpcsr.transfer.plan (hpcsr.launch.grid.chosen_parents);
  - a training stage of transfer level k also waits (`afterok`) for the parents' elements of the same
    stage at level k-1, and is initialised from the parent's export of that stage
    (train.init_from = <parent run_dir>/<stage>; a child that already has a checkpoint resumes
    instead). Slurm applies an array's dependency to all its elements, so a child may wait for its
    level's other parents too: correct, sometimes later than needed.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from hpcsr.config import ConfigError, RootConfig, compose_section, compose_variants
from hpcsr.factors import FactorPair, expand_grid
from hpcsr.launch.grid import chosen_parents, levels, parse_parents
from hpcsr.launch.registry import stage as registered
from hpcsr.launch.stages import ElementSpec, check_element

RESOURCE_KEYS = (
    "nodes",
    "tasks_per_node",
    "gpus_per_node",
    "cpus_per_task",
    "mem_gb",
    "time_min",
    "partition",
    "qos",
    "constraint",
)


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
        values = {k: (None if v == "" else v) for k, v in values.items()}  # "" clears partition/qos/constraint
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
    base: RootConfig  # the configuration of the grid's first pair (launcher, cluster, grid sections)
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
    """Configs per pair and stage: one Hydra composition per set of stage overrides, the pairs set
    as plain values (compose_variants), cached; paths made absolute."""

    def __init__(self, overrides: list[str], config_path):
        self.overrides, self.config_path, self.cache = list(overrides), config_path, {}
        self.pairs: list[FactorPair] = []

    def grid(self):
        return compose_section("grid", self.overrides, self.config_path)

    def __call__(self, pair: FactorPair, extra: tuple = ()) -> RootConfig:
        if (pair, extra) not in self.cache:
            pairs = list(dict.fromkeys(self.pairs + [pair]))
            variants = [{"factor.s": p.s, "factor.t": p.t} for p in pairs]
            for p, cfg in zip(pairs, compose_variants(self.overrides + list(extra), variants, self.config_path)):
                self.cache[(p, extra)] = absolute_paths(cfg)
        return self.cache[(pair, extra)]

    def for_stage(self, pair: FactorPair, stage: str, launcher) -> RootConfig:
        extra = list(launcher.stage_overrides.get(stage, []))
        if registered(stage).train_stage:
            extra.append(f"train.stage={registered(stage).train_stage}")
        try:
            return self(pair, tuple(extra))
        except ConfigError as err:
            raise ConfigError(f"stage {stage}, pair {pair.name}: {err}") from None


def build(overrides=(), config_path=None, export_exists: Callable[[FactorPair], bool] | None = None) -> Plan:
    """Compose, expand the grid and lay out the arrays; raises ConfigError/ValueError on bad input."""
    composer = _Composer(list(overrides), config_path)
    pairs = composer.pairs = expand_grid(composer.grid())
    base = composer(pairs[0])  # launcher, cluster and grid sections; the config of stages run once
    launcher, cluster = base.launcher, base.cluster
    if export_exists is None:

        def export_exists(pair):  # every training stage of the launch has its finished export
            run_dir = Path(composer(pair).run_dir)
            return all(
                (run_dir / s / registered(s).export).is_file() for s in launcher.stages if registered(s).training
            )

    transfers = parse_parents(chosen_parents(base.grid, pairs), pairs, export_exists)
    once = [s for s in launcher.stages if not registered(s).per_pair]
    per_pair = [s for s in launcher.stages if registered(s).per_pair]
    if once and launcher.stages[: len(once)] != once:
        raise ValueError(
            f"launcher.stages={list(launcher.stages)}: stages run once for the grid ({', '.join(once)}) must come first"
        )
    if launcher.kind == "local":
        for stage in launcher.stages:
            res = Resources.for_stage(cluster, stage)
            if res.nodes != 1:
                raise ValueError(
                    f"launcher.kind=local runs every element on this machine, but stage {stage} asks "
                    f"for cluster nodes={res.nodes}: set cluster.nodes=1 or use launcher=slurm"
                )

    arrays: list[ArrayPlan] = []
    for stage in once:
        spec = ElementSpec(stage, None, None, base, tuple(pairs), launcher.max_requeues)
        check_element(spec)
        deps = [Dep("afterok", arrays[-1].key)] if arrays else []
        arrays.append(ArrayPlan(stage, stage, 0, [spec], Resources.for_stage(cluster, stage), deps))
    after_once = arrays[-1].key if arrays else None
    for level, level_pairs in enumerate(levels(pairs, transfers)):
        previous = None
        for stage in per_pair:
            elements = []
            for pair in level_pairs:
                link = transfers.get(pair)
                cfg = composer.for_stage(pair, stage, launcher)
                if link is not None and registered(stage).training:
                    cfg = RootConfig(**vars(cfg))
                    init = os.path.join(composer(link.parent).run_dir, stage)
                    cfg.train = dataclasses.replace(cfg.train, init_from=init)
                spec = ElementSpec(stage, pair, link.parent if link else None, cfg, tuple(pairs), launcher.max_requeues)
                check_element(spec)
                elements.append(spec)
            deps = []
            if previous is not None:
                deps.append(Dep("aftercorr", previous.key))
            elif after_once is not None:
                deps.append(Dep("afterok", after_once))
            if level > 0 and registered(stage).training:
                parents = next(a for a in arrays if a.key == f"L{level - 1}.{stage}")
                wanted = {transfers[p].parent for p in level_pairs if transfers[p].in_grid}
                index = sorted(i for i, e in enumerate(parents.elements) if e.pair in wanted)
                deps.append(Dep("afterok", parents.key, tuple(index)))
            array = ArrayPlan(f"L{level}.{stage}", stage, level, elements, Resources.for_stage(cluster, stage), deps)
            arrays.append(array)
            previous = array
    return Plan(arrays, base, list(overrides), pairs)
