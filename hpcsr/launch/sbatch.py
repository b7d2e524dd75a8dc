"""What Slurm receives for one array: submitit parameters, the dependency option, the batch script
(rendered by submitit's own function, so a dry run prints exactly what a submission writes), and a
check of the requested resources against `sinfo` before anything is submitted.

Config values go into `#SBATCH` option lines, which sbatch reads itself (no shell); values with
control characters are refused by the config schema, so none can start a shell line of its own.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional

from submitit.slurm.slurm import _make_sbatch_string

from hpcsr.launch.plan import ArrayPlan, Dep


def job_command(python: Optional[str], folder) -> str:
    """The command srun starts on every rank: hpcsr's submitit job runner."""
    return " ".join([python or shlex.quote(sys.executable), "-u -m hpcsr.launch.job", shlex.quote(str(folder))])


def element_job_id(array_id: str, size: int, index: int) -> str:
    """Slurm's id of element `index`: '12_3' in an array; '12' when the array has one element
    (submitit submits a single element as a plain job)."""
    return array_id if size == 1 else f"{array_id}_{index}"


def dependency(deps: list[Dep], ids: dict[str, tuple[str, int]]) -> Optional[str]:
    """The --dependency value; `ids` maps an array key to (its Slurm id, its number of elements)."""
    parts = []
    for dep in deps:
        job, size = ids[dep.array]
        if dep.kind == "aftercorr" and size > 1:
            parts.append(f"aftercorr:{job}")
        elif dep.indices is None or size == 1:
            parts.append(f"afterok:{job}")
        else:
            parts.append("afterok:" + ":".join(element_job_id(job, size, i) for i in dep.indices))
    return ",".join(parts) or None


def parameters(array: ArrayPlan, cluster, dep: Optional[str], setup: list[str]) -> dict:
    """submitit SlurmExecutor parameters (Slurm's own names) for one array."""
    res = array.resources
    params = {
        "job_name": f"hpcsr-{array.key}",
        "time": res.time_min,
        "nodes": res.nodes,
        "ntasks_per_node": res.tasks_per_node,
        "cpus_per_task": res.cpus_per_task,
        "signal_delay_s": cluster.signal_delay_s,
        "array_parallelism": cluster.array_parallelism,
        "wckey": None,
        "additional_parameters": {
            "requeue": True,
            "kill-on-invalid-dep": "yes",
            **{k: (True if v == "" else v) for k, v in cluster.sbatch_extra.items()},
        },
    }
    optional = {
        "gpus_per_node": res.gpus_per_node or None,
        "partition": res.partition,
        "account": res.account,
        "qos": res.qos,
        "constraint": res.constraint,
        "dependency": dep,
        "mem": None if res.mem_gb is None else _mem(res.mem_gb),
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    if setup:
        params["setup"] = list(setup)
    if cluster.mpi:
        params["srun_args"] = [f"--mpi={cluster.mpi}"]
    return params


def _mem(gb: float) -> str:
    return f"{int(gb)}G" if gb == int(gb) else f"{int(gb * 1024)}M"


def script(array: ArrayPlan, params: dict, folder, python: Optional[str]) -> str:
    """The batch script submitit writes for this array (same function, same parameters)."""
    size = len(array.elements)
    return _make_sbatch_string(
        command=job_command(python, folder), folder=folder, map_count=size if size > 1 else None, **params
    )


# ---- resources against sinfo ----------------------------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    name: str
    partition: str
    default: bool
    cpus: int
    mem_mb: int
    gpus: int
    time_limit_min: Optional[int]  # None: infinite
    available: bool


def _minutes(text: str) -> Optional[int]:
    """A Slurm time limit (infinite, MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in whole
    minutes; None for no limit."""
    if text.lower() in ("infinite", "unlimited", "n/a"):
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:
        hours, minutes = (parts + [0])[:2]
    elif len(parts) == 3:
        hours, minutes = parts[:2]
    else:
        hours, minutes = 0, parts[0]
    return (int(days or 0) * 24 + hours) * 60 + minutes


def _gpus(gres: str) -> int:
    total = 0
    for item in gres.split(","):
        match = re.match(r"gpu(?::[^:(]+)?:(\d+)", item)
        if match:
            total += int(match.group(1))
    return total


def read_sinfo() -> list[NodeInfo]:
    """One NodeInfo per node and partition from `sinfo`; RuntimeError naming the cause if it fails."""
    cmd = ["sinfo", "-h", "-N", "-o", "%N|%P|%c|%m|%G|%l|%a"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RuntimeError(
            f"cannot run sinfo ({err}): is this a Slurm login node? Use launcher=local without Slurm, "
            "or set cluster.check_resources=false to skip the check"
        ) from None
    if out.returncode != 0:
        raise RuntimeError(
            f"sinfo failed ({out.stderr.strip()}): start the cluster (slurm/start.sh here) or set "
            "cluster.check_resources=false to skip the check"
        )
    nodes = []
    for line in out.stdout.splitlines():
        name, part, cpus, mem, gres, limit, avail = line.split("|")
        nodes.append(
            NodeInfo(
                name,
                part.rstrip("*"),
                part.endswith("*"),
                int(cpus),
                int(re.sub(r"\D.*", "", mem) or 0),
                _gpus(gres),
                _minutes(limit),
                avail == "up",
            )
        )
    return nodes


def check_resources(array: ArrayPlan, nodes: list[NodeInfo]) -> None:
    """ValueError naming the first request of `array` that no node of its partition can meet."""
    res = array.resources
    parts = sorted({n.partition for n in nodes})
    if res.partition is None:
        partition = next((n.partition for n in nodes if n.default), None)
        if partition is None:
            raise ValueError(
                f"array {array.key}: Slurm has no default partition; set cluster.partition to one of {', '.join(parts)}"
            )
        where = f"the default partition '{partition}'"
    else:
        partition = res.partition
        where = f"partition '{partition}'"
        if partition not in parts:
            raise ValueError(
                f"cluster.partition={partition!r} (array {array.key}) is not a partition of this cluster: "
                f"choose one of {', '.join(parts)} (sinfo)"
            )
    mine = [n for n in nodes if n.partition == partition]
    if not any(n.available for n in mine):
        raise ValueError(f"{where} is not up (sinfo): choose another partition or wait for the site")

    def fit(n):
        return (
            n.cpus >= res.tasks_per_node * res.cpus_per_task
            and n.gpus >= res.gpus_per_node
            and (res.mem_gb is None or n.mem_mb >= res.mem_gb * 1024)
        )

    need = (
        f"{res.tasks_per_node} ranks x {res.cpus_per_task} CPUs = {res.tasks_per_node * res.cpus_per_task} CPUs, "
        f"{res.gpus_per_node} GPUs" + (f", {res.mem_gb:g} GB" if res.mem_gb else "") + " per node"
    )
    most = max(mine, key=lambda n: (n.cpus, n.gpus, n.mem_mb))
    if not any(fit(n) for n in mine):
        raise ValueError(
            f"array {array.key} asks for {need}, but no node of {where} has that (largest: {most.cpus} "
            f"CPUs, {most.gpus} GPUs, {most.mem_mb // 1024} GB): lower cluster.tasks_per_node / "
            f"cpus_per_task / gpus_per_node / mem_gb, or choose another partition"
        )
    count = len({n.name for n in mine if fit(n)})
    if res.nodes > count:
        raise ValueError(
            f"array {array.key} asks for cluster.nodes={res.nodes} nodes with {need}, but {where} has "
            f"only {count} such node(s): lower cluster.nodes or choose another partition"
        )
    limit = min((n.time_limit_min for n in mine if n.time_limit_min is not None), default=None)
    if limit is not None and res.time_min > limit:
        raise ValueError(
            f"array {array.key} asks for cluster.time_min={res.time_min} minutes, but {where} allows "
            f"{limit}: lower cluster.time_min (elements continue after a requeue)"
        )
