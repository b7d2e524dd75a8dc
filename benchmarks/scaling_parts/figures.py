"""The figures of benchmarks/scaling.py (benchmarks/common.py contract) from the parts' measurements.

Growth checks are ratios of the largest run to the smallest (or, for memory bounded by the tile
batch, to the middle one): time per extra frame (the start-up cost cancels) or per tile stays
within 1.25x (linear growth), peak memory within 1.1x (preprocessing) or 1.25x (sampling: the
domain-sized fields add a little).
"""

from __future__ import annotations

from common import figure

LINEAR = 0.8  # per-item cost of the largest run at most 1.25x the smallest's
FLAT_PREPROCESS = 1 / 1.1
FLAT_SAMPLING = 1 / 1.25
ZERO3_TARGET = 1 / 0.6


def _marginal(a: dict, b: dict, key: str) -> float:
    """Seconds per extra frame from run a to the longer run b (the fixed start-up cost cancels)."""
    return (b[key] - a[key]) / (b["frames"] - a["frames"])


def _preprocess(part: dict) -> list:
    runs = sorted(part["periods"], key=lambda r: r["frames"])
    small, large = runs[0], runs[-1]
    span = f"{large['days']} d vs {small['days']} d, 1 rank"
    out = [
        figure(
            f"preprocessing {label} per extra frame, {runs[-2]['days']}-{large['days']} d vs {small['days']}-{runs[1]['days']} d",
            "s/frame",
            [_marginal(runs[-2], large, key)],
            f"{small['days']}-{runs[1]['days']} d",
            [_marginal(small, runs[1], key)],
            higher_is_better=False,
            target_ratio=LINEAR,
        )
        for key, label in (("wall_s", "wall s"), ("cpu_s", "CPU s"))
    ]
    out.append(
        figure(
            f"preprocessing peak RSS per rank, {span}",
            "MB",
            [large["peak_rss_mb"]],
            f"{small['days']} d",
            [small["peak_rss_mb"]],
            higher_is_better=False,
            target_ratio=FLAT_PREPROCESS,
        )
    )
    ranks = part["ranks"]
    rate = {n: [ranks["frames"] / r["wall_s"] for r in runs_] for n, runs_ in ranks["runs"].items()}
    out.append(
        figure(
            f"preprocessing frames/s on 2 ranks vs 1 rank ({ranks['days']} d)",
            "frames/s",
            rate["2"],
            "1 rank",
            rate["1"],
            target_ratio=1.6,
        )
    )
    return out


def _sampling(part: dict) -> list:
    runs = sorted(part["runs"], key=lambda r: r["side"])
    small, mid, large = runs[0], runs[len(runs) // 2], runs[-1]
    return [
        figure(
            f"sampling CPU s per tile, {large['side']} px vs {small['side']} px",
            "CPU s/tile",
            [large["cpu_s"] / large["tiles"]],
            f"{small['side']} px",
            [small["cpu_s"] / small["tiles"]],
            higher_is_better=False,
            target_ratio=LINEAR,
        ),
        figure(
            f"sampling peak RSS, {large['side']} px vs {mid['side']} px",
            "MB",
            [large["peak_rss_mb"]],
            f"{mid['side']} px",
            [mid["peak_rss_mb"]],
            higher_is_better=False,
            target_ratio=FLAT_SAMPLING,
        ),
    ]


def _training(part: dict) -> list:
    out = []
    sizes = list(part["sizes"])
    for size in sizes:
        engines = part["sizes"][size]["engines"]
        out.append(
            figure(
                f"ZeRO-3 live tensors per rank, {size} size, 2 ranks",
                "MiB",
                [engines["zero3"]["tensor_mb"]],
                "ZeRO-1",
                [engines["zero1"]["tensor_mb"]],
                higher_is_better=False,
                target_ratio=ZERO3_TARGET if size == sizes[-1] else None,
            )
        )
    more = part.get("more_ranks")
    if more:
        out.append(
            figure(
                f"ZeRO-3 live tensors per rank, {more['size']} size, {more['ranks']} ranks",
                "MiB",
                [more["engines"]["zero3"]["tensor_mb"]],
                "ZeRO-1",
                [more["engines"]["zero1"]["tensor_mb"]],
                higher_is_better=False,
                target_ratio=ZERO3_TARGET,
            )
        )
    return out


def _loader(part: dict) -> list:
    one = part["one_process"]["samples_per_s"]
    return [
        figure(
            f"patch samples/s of one loader process vs one H200's diffusion-stage appetite at {part['gpu']['mfu']:.0%} MFU",
            "samples/s",
            [one],
            "H200 appetite",
            [part["appetite"]["diffusion"]["samples_per_s"]],
        ),
        figure(
            "patch samples/s through a DataLoader, 2 workers vs 1",
            "samples/s",
            [part["dataloader_samples_per_s"]["2"]],
            "1 worker",
            [part["dataloader_samples_per_s"]["1"]],
        ),
    ]


def build(parts: dict) -> list:
    makers = {"preprocess": _preprocess, "sampling": _sampling, "training": _training, "loader": _loader}
    return [fig for name, make in makers.items() if name in parts for fig in make(parts[name])]
