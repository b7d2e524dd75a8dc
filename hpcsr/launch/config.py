"""Schemas of the `launcher`, `cluster` and `grid` config sections."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field


@dataclass
class LauncherConfig:
    kind: typing.Literal["local", "slurm"] = "local"  # local processes or Slurm through submitit
    folder: str = "${run_root}/launch"  # submitit logs and pickles


@dataclass
class ClusterConfig:
    nodes: int = 1  # nodes per job
    tasks_per_node: int = 1  # ranks per node
    gpus_per_node: int = 0  # GPUs per node
    cpus_per_task: int = 1  # CPU cores per rank
    time_min: int = 60  # wall-clock limit in minutes
    partition: typing.Optional[str] = None  # Slurm partition (None: the cluster's default)


@dataclass
class GridConfig:
    pairs: list[list[int]] = field(default_factory=lambda: [[1, 3], [10, 1], [10, 3], [25, 6]])  # (s, t) pairs to run
