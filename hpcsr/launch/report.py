"""Text for people: the plan table and batch scripts of a dry run, the summary after a submission
(job ids, logs, how to follow them), and the status table. No timestamps: a dry run's output
depends on the configuration only."""

from __future__ import annotations

from pathlib import Path

from hpcsr.launch.plan import Plan


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [fmt(header)] + [fmt(r) for r in rows]


def _after(plan: Plan, array, index: int) -> str:
    parts = []
    for dep in array.deps:
        size = len(plan.array(dep.array).elements)
        if dep.kind == "aftercorr" and size > 1:
            parts.append(f"{dep.array}[{index}]")
        elif dep.indices is None or size == 1:
            parts.append(dep.array)
        else:
            parts.append(",".join(f"{dep.array}[{j}]" for j in dep.indices))
    return " + ".join(parts) or "-"


def plan_table(plan: Plan) -> str:
    cfg = plan.base
    n = sum(len(a.elements) for a in plan.arrays)
    head = (
        f"plan: {len(plan.pairs)} factor pairs ({', '.join(p.name for p in plan.pairs)}), stages "
        f"{' -> '.join(cfg.launcher.stages)}: {len(plan.arrays)} arrays, {n} elements; backend "
        f"{plan.kind}, cluster {cfg.cluster.name}"
    )
    if cfg.grid.transfer == "auto" and not cfg.grid.parents:
        head += (
            "\nparents: grid.transfer=auto, each pair seeded from its nearest pair "
            "(the distances: hpcsr transfer plan --grid ...)"
        )
    rows = []
    for array in plan.arrays:
        r = array.resources
        for i, e in enumerate(array.elements):
            rows.append(
                [
                    array.key,
                    array.stage,
                    e.pair.name if e.pair else "all",
                    e.parent.name if e.parent else "-",
                    _after(plan, array, i),
                    f"{r.nodes}x{r.tasks_per_node}",
                    r.gpus_per_node,
                    r.cpus_per_task,
                    f"{r.mem_gb:g}G" if r.mem_gb else "-",
                    r.time,
                    r.partition or "(default)",
                ]
            )
    header = [
        "array",
        "stage",
        "pair",
        "parent",
        "after",
        "nodes x ranks",
        "gpus/node",
        "cpus/rank",
        "mem/node",
        "time",
        "partition",
    ]
    return "\n".join([head] + _table(header, rows))


def dry_run(plan: Plan, scripts: dict, launch_dir: Path) -> str:
    """The plan table and, for Slurm, each array's sbatch command line and batch script."""
    out = [plan_table(plan), ""]
    if plan.kind == "slurm":
        out.append(f"sbatch scripts (launch folder {launch_dir}; <array> stands for that array's job id):")
        for array in plan.arrays:
            _, text = scripts[array.key]
            out += ["", f"# ---- {array.key}: sbatch {launch_dir / array.key / '<submission file>'}", text.rstrip()]
    else:
        out.append(
            f"local backend: a queue process in {launch_dir} runs each element as "
            f"{plan.arrays[0].resources.tasks_per_node} rank process(es) (python -m hpcsr.launch.job), "
            f"at most {plan.base.cluster.array_parallelism} element(s) at once"
        )
    out.append("")
    out.append("dry run: nothing was submitted")
    return "\n".join(out)


def submitted(launch_dir: Path, record: dict) -> str:
    """What was submitted and how to follow it."""
    folder = launch_dir.parent
    n = sum(len(a["elements"]) for a in record["arrays"])
    lines = []
    if record["backend"] == "slurm":
        lines.append(f"submitted launch {record['launch']} to Slurm: {len(record['arrays'])} arrays, {n} elements")
        rows = [
            [
                a["key"],
                a["job_id"],
                " ".join(e["pair"] or "all" for e in a["elements"]),
                a["dependency"] or "-",
                str(
                    launch_dir
                    / a["key"]
                    / (f"{a['job_id']}_<i>_0_log.out" if len(a["elements"]) > 1 else f"{a['job_id']}_0_log.out")
                ),
            ]
            for a in record["arrays"]
        ]
        lines += ["  " + ln for ln in _table(["array", "job", "pairs", "after", "log (rank 0; .err next to it)"], rows)]
        first = record["arrays"][0]
        first_log = first["elements"][0]["stdout"]
        ids = ",".join(a["job_id"] for a in record["arrays"])
        lines += [
            "follow:",
            f"  squeue -j {ids}",
            f"  tail -f {first_log}",
            f"  hpcsr-launch status --folder {folder} --launch {record['launch']} [--wait]",
            f"cancel:  hpcsr-launch cancel --folder {folder} --launch {record['launch']}",
        ]
    else:
        lines.append(
            f"started launch {record['launch']} locally: {len(record['arrays'])} arrays, {n} elements, "
            f"queue process {record.get('local_queue_pid')}"
        )
        lines += [
            "follow:",
            f"  tail -f {launch_dir / 'local_queue.log'}",
            f"  logs of each element: {launch_dir}/<array>/<job>_<rank>_log.out (paths in status)",
            f"  hpcsr-launch status --folder {folder} --launch {record['launch']} [--wait]",
            f"cancel:  hpcsr-launch cancel --folder {folder} --launch {record['launch']}",
        ]
    return "\n".join(lines)


def status_table(launch_dir: Path, record: dict, rows: list[dict]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    head = f"launch {record['launch']} ({record['backend']}, {launch_dir}): {len(rows)} elements: " + ", ".join(
        f"{v} {k}" for k, v in sorted(counts.items())
    )
    if record.get("error"):
        head += f"\nsubmission stopped: {record['error']}"
    table = _table(
        ["array", "pair", "parent", "job", "state", "reason", "log"],
        [
            [
                r["array"],
                r["pair"],
                r["parent"] or "-",
                r["job_id"] or "-",
                r["state"],
                r["reason"] or "-",
                r["stdout"] or "-",
            ]
            for r in rows
        ],
    )
    return "\n".join([head] + table)
