"""Progress lines, the Markdown summary and the log-log plots of benchmarks/scaling.py."""

from __future__ import annotations

import time
from pathlib import Path

from common import format_value

START = time.monotonic()


def say(msg: str) -> None:
    print(f"[scaling {time.monotonic() - START:7.1f} s] {msg}", flush=True)


def _table(head: list, rows: list) -> list:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(map(str, r)) + " |" for r in rows),
    ]


def _f(v) -> str:
    return format_value(float(v))


def _preprocess(part: dict, proj: dict | None) -> list:
    lines = ["## Preprocessing (`hpcsr-preprocess all`, 4 pairs)", ""]
    rows = [
        (
            r["days"],
            r["frames"],
            _f(r["wall_s"]),
            _f(r["cpu_s"]),
            _f(r["wall_s"] / r["frames"]),
            _f(r["peak_rss_mb"]),
            _f(r["input_mb"]),
            _f(r["hr_store_mb"] + r["shards_mb"]),
            f"{r['load_average_1']:.1f}",
        )
        for r in part["periods"]
    ]
    head = ["days", "frames", "wall s", "CPU s", "wall s/frame", "peak RSS MB", "input MB", "output MB", "load"]
    lines += _table(head, rows) + [""]
    rk = part["ranks"]
    rows = [
        (
            n,
            ", ".join(_f(r["wall_s"]) for r in runs),
            ", ".join(_f(r["cpu_s"]) for r in runs),
            _f(max(r["peak_rss_mb"] for r in runs)),
            _f(max(r["peak_tree_rss_mb"] for r in runs)),
            ", ".join(f"{r['load_average_1']:.1f}" for r in runs),
        )
        for n, runs in rk["runs"].items()
    ]
    lines += [f"Ranks at {rk['days']} d ({rk['frames']} frames), repeats interleaved:", ""]
    lines += _table(["ranks", "wall s", "CPU s (all ranks)", "peak RSS/rank MB", "peak RSS all ranks MB", "load"], rows)
    if proj:
        lines += ["", f"Projection (serial share {proj['serial_share']:.2f}):", ""]
        rows = [
            (
                r["period"],
                r["frames"],
                r["ranks"],
                _f(r["ideal_hours"]),
                _f(r["hours"]),
                _f(r["cpu_hours"]),
                _f(r["output_gb"]),
            )
            for r in proj["rows"]
        ]
        head = ["period", "frames", "ranks", "wall hours (ideal)", "wall hours (fitted)", "CPU hours", "output GB"]
        lines += _table(head, rows)
        lines += ["", *(f"- {a}" for a in proj["assumptions"])]
    return lines + [""]


def _sampling(part: dict, proj: dict | None) -> list:
    lines = [
        f"## Sampling (`hpcsr sample`, {part['pair']}, {part['model']} model, {part['members']} member(s), {part['sampler']})",
        "",
    ]
    rows = [
        (
            r["side"],
            r["tiles"],
            _f(r["wall_s"]),
            _f(r["cpu_s"]),
            _f(r["cpu_s"] / r["tiles"]),
            _f(r["peak_rss_mb"]),
            _f(r["gflops_per_cpu_s"]),
            f"{r['load_average_1']:.1f}",
        )
        for r in part["runs"]
    ]
    lines += _table(["side px", "tiles", "wall s", "CPU s", "CPU s/tile", "peak RSS MB", "GFLOP/CPU-s", "load"], rows)
    lines += ["", f"Weights: {part['weights']}."]
    if proj:
        lines += [
            "",
            f"Projection, one year of full-domain ensembles: {_f(proj['tflop_per_year'])} TFLOP; "
            f"{_f(proj['cpu_core_days'])} CPU-core days ({_f(proj['this_machine_days'])} days on this 2-core machine); "
            f"{_f(proj['h200_hours'])} hours on one H200.",
            "",
            *(f"- {a}" for a in proj["assumptions"]),
        ]
    return lines + [""]


def _training(part: dict, proj: dict | None) -> list:
    lines = [
        f"## Training memory and checkpoints ({part['stage']} stage, batch {part['batch_per_rank']}/rank, {part['precision']})",
        "",
    ]
    runs = [(f"{size}, {part['ranks']} ranks", rec) for size, rec in part["sizes"].items()]
    if part.get("more_ranks"):
        more = part["more_ranks"]
        runs.append((f"{more['size']}, {more['ranks']} ranks", more))
    rows = []
    for label, rec in runs:
        z1 = rec["engines"].get("zero1", {}).get("tensor_mb")
        for engine, e in rec["engines"].items():
            ck = e.get("checkpoint") or {}
            rows.append(
                (
                    label,
                    f"{rec['trainable']:,}",
                    engine,
                    _f(e["tensor_mb"]),
                    _f(e["model_mb"]),
                    f"{e['tensor_mb'] / z1:.2f}" if z1 else "-",
                    _f(e["peak_growth_mb"]),
                    _f(e["step_s"]),
                    _f(ck["save_s"]) if ck else "-",
                    _f(ck["load_s"]) if ck else "-",
                    _f(ck["mb"]) if ck else "-",
                )
            )
    head = [
        "size",
        "trained params",
        "engine",
        "live tensors MiB/rank",
        "model MiB/rank",
        "vs ZeRO-1",
        "peak RSS growth MB",
        "step s",
        "ckpt save s",
        "ckpt load s",
        "ckpt MB",
    ]
    lines += _table(head, rows)
    lines += [
        "",
        "model = weights + gradients + fp32 master + Adam per rank from the bytes-per-parameter model "
        "in scaling_parts/training.py; live tensors = measured between backward and the optimiser step.",
    ]
    if proj:
        ratios = ", ".join(f"{n} ranks {r:.2f}" for n, r in proj["ratio_by_ranks"].items())
        lines += ["", f"ZeRO-3 / ZeRO-1 per-rank state by rank count (bytes-per-parameter model): {ratios}.", ""]
        lines += [f"- {a}" for a in proj["assumptions"]]
    return lines + [""]


def _loader(part: dict) -> list:
    one = part["one_process"]
    lines = ["## Loader vs GPU appetite", ""]
    rows = [
        (k, _f(a["gflop_per_sample"]), _f(a["samples_per_s"]), _f(part["workers_per_gpu"][k]))
        for k, a in part["appetite"].items()
    ]
    lines += [
        f"One loader process: {_f(one['samples_per_s'])} samples/s ({_f(one['samples_per_cpu_s'])} per CPU-s); "
        f"DataLoader with 1 worker {_f(part['dataloader_samples_per_s']['1'])}, with 2 workers "
        f"{_f(part['dataloader_samples_per_s']['2'])} samples/s.",
        "",
    ]
    gpu = part["gpu"]
    lines += _table(
        [
            "stage",
            "GFLOP/sample (fwd+bwd)",
            f"{gpu['name']} samples/s at {gpu['mfu']:.0%} MFU",
            "loader processes per GPU",
        ],
        rows,
    )
    return lines + [""]


def markdown(result: dict) -> str:
    meta = result["meta"]
    parts, proj = meta["parts"], meta["projections"]
    lines = [
        f"# Scaling{' (--quick)' if result['quick'] else ''}",
        "",
        f"{meta['cpus']} CPUs ({meta['cpu']}), torch {meta['torch']}, {meta['time']}; a SHARED machine: the "
        "1-minute load average is given with every run, and CPU time beside wall time.",
        "",
        "| figure | value | baseline | baseline value | ratio | target | met |",
        "|---|---:|---|---:|---:|---|---|",
    ]
    for fig in result["figures"]:
        target = fig["target"]["ratio"] if fig["target"] else None
        met = {True: "yes", False: "**no**", None: "-"}[fig["met"]]
        lines.append(
            f"| {fig['name']} | {_f(fig['value'])} {fig['unit']} | {fig['baseline']['name']} | "
            f"{_f(fig['baseline']['value'])} | {fig['ratio']:.2f}x | {f'>= {target:.2f}x' if target else '-'} | {met} |"
        )
    lines.append("")
    if "preprocess" in parts:
        lines += _preprocess(parts["preprocess"], proj.get("preprocess"))
    if "sampling" in parts:
        lines += _sampling(parts["sampling"], proj.get("sampling"))
    if "training" in parts:
        lines += _training(parts["training"], proj.get("training"))
    if "loader" in parts:
        lines += _loader(parts["loader"])
    return "\n".join(lines)


def plots(parts: dict, path: Path) -> None:
    """Log-log panels: preprocessing and sampling time and memory vs size, per-rank memory and
    checkpoint time vs parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    if "preprocess" in parts:
        ax, runs = axes[0, 0], sorted(parts["preprocess"]["periods"], key=lambda r: r["frames"])
        x = [r["frames"] for r in runs]
        for key, label in (("wall_s", "wall s"), ("cpu_s", "CPU s"), ("peak_rss_mb", "peak RSS MB")):
            ax.loglog(x, [r[key] for r in runs], "o-", label=label)
        ax.loglog(x, [runs[0]["wall_s"] * v / x[0] for v in x], "k:", label="linear")
        ax.set(title="preprocessing (1 rank, 4 pairs)", xlabel="1536 x 1536 frames")
        ax.set_xticks(x, [str(v) for v in x], minor=False)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend()
    if "sampling" in parts:
        ax, runs = axes[0, 1], sorted(parts["sampling"]["runs"], key=lambda r: r["side"])
        x = [r["side"] ** 2 for r in runs]
        for key, label in (("wall_s", "wall s"), ("cpu_s", "CPU s"), ("peak_rss_mb", "peak RSS MB")):
            ax.loglog(x, [r[key] for r in runs], "o-", label=label)
        ax.loglog(x, [runs[-1]["cpu_s"] * v / x[-1] for v in x], "k:", label="linear in area")
        ax.set(title=f"sampling ({parts['sampling']['model']} model)", xlabel="HR pixels")
        ax.legend()
    if "training" in parts:
        sizes = parts["training"]["sizes"]
        params = [rec["trainable"] for rec in sizes.values()]
        engines = list(next(iter(sizes.values()))["engines"])
        for engine in engines:
            axes[1, 0].loglog(
                params, [rec["engines"][engine]["tensor_mb"] for rec in sizes.values()], "o-", label=engine
            )
            ck = [rec["engines"][engine].get("checkpoint") for rec in sizes.values()]
            if all(ck):
                axes[1, 1].loglog(params, [c["save_s"] for c in ck], "o-", label=f"{engine} save")
                axes[1, 1].loglog(params, [c["load_s"] for c in ck], "s--", label=f"{engine} load")
        axes[1, 0].set(title="live tensors per rank (2 ranks)", xlabel="trained parameters", ylabel="MiB")
        axes[1, 1].set(title="checkpoint (2 ranks)", xlabel="trained parameters", ylabel="s")
        axes[1, 0].legend()
        axes[1, 1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
