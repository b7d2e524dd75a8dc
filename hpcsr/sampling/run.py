"""`run_sample`: the sample stage's entry point, export + LR input -> ensemble netCDF, on one rank
or several (`hpcsr sample` and the launcher's sample stage call it with a SampleStageConfig).

Launched with several processes (torchrun, srun, mpirun: anything `hpcsr.dist.discover` reads),
every rank loads the export and the input, samples its share of the (target, member) units and
rank 0 gathers and writes. One process needs no torch.distributed at all.
"""

from __future__ import annotations

import datetime
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hpcsr import cf
from hpcsr.artifacts import code_version
from hpcsr.atomic import check_target
from hpcsr.dist import discover, init_distributed
from hpcsr.export import load_export
from hpcsr.factors import FactorPair
from hpcsr.sampling.checks import check_grid, check_has_data
from hpcsr.sampling.config import SampleStageConfig
from hpcsr.sampling.ensemble import EnsembleSampler, sample_sequence, target_times
from hpcsr.sampling.inputs import open_hr, open_lr
from hpcsr.sampling.writer import EnsembleWriter

log = logging.getLogger(__name__)


def check_pair(export, requested) -> None:
    """Refuse an export of another factor pair than the one asked for, naming both."""
    if requested is None:
        return
    requested = FactorPair.parse(requested)
    if export.pair != requested:
        raise ValueError(
            f"export {export.path} was trained for factor pair {export.pair.name} (s={export.pair.s}, "
            f"t={export.pair.t}) but {requested.name} (s={requested.s}, t={requested.t}) was requested: "
            f"use an export of {requested.name}, or drop --pair to sample at {export.pair.name}"
        )


def pick_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but no CUDA GPU is visible: use --device cpu")
    return torch.device(device)


def hr_times(targets: np.ndarray, t: int, hr_step_s: int) -> np.ndarray:
    """End time of each HR step of the target blocks, in order."""
    offsets = (np.arange(t) - (t - 1)) * hr_step_s
    return (targets[:, None] + offsets[None, :]).reshape(-1)


@dataclass(frozen=True)
class SampleResult:
    """What run_sample wrote (rank 0; the other ranks get path None and nothing else)."""

    path: Path | None  # the ensemble netCDF
    counts: dict = field(default_factory=dict)  # target blocks, masked cells and pixels, absent frames
    settings: dict = field(default_factory=dict)  # factor_pair, sampler, sampler_steps as the file records them

    def summary(self) -> dict:
        """The JSON-able record (the CLI's return value, the launcher's done marker); {} off rank 0."""
        return {"path": str(self.path), **self.counts, **self.settings} if self.path is not None else {}


def run_sample(cfg: SampleStageConfig, *, command: str | None = None) -> SampleResult:
    """Write the ensemble of `cfg.lr` (LR netCDF or shard) or of `cfg.hr` coarsened (HR netCDF or
    HR store) to `cfg.out`, sampled as `cfg` says. `command` is recorded as the file's history
    (default: this process's command line). Must be called by every rank when several run."""
    if cfg.export is None or cfg.out is None:
        raise ValueError("sample: give the export (sample.export, --export) and the output file (sample.out, --out)")
    if (cfg.lr is None) == (cfg.hr is None):
        raise ValueError(
            "give exactly one input: sample.lr (--lr: LR netCDF or shard) or sample.hr (--hr with --coarsen: "
            "perfect-model test)"
        )
    check_target(cfg.out)  # before the model is loaded
    info = discover()
    group = None
    if info.world_size > 1:
        import torch.distributed as dist

        info = init_distributed()
        group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    export = load_export(cfg.export)
    check_pair(export, cfg.pair)
    seq = (
        open_lr(cfg.lr, export.pair, cfg.hr_step_minutes)
        if cfg.lr is not None
        else open_hr(cfg.hr, export.pair, cfg.hr_step_minutes, cfg.phase_minutes)
    )
    check_grid(export, seq, cfg.allow_other_grid)
    targets = target_times(seq, cfg.time_range)
    check_has_data(seq, targets)
    sampler = EnsembleSampler(export, seq, cfg.sampling(), pick_device(cfg.device, info.local_rank))
    if info.rank == 0:
        log.info(
            "sampling %d blocks x %d members of %s on %d x %d HR pixels (%d tiles of %d, overlap %d; the "
            "denoiser's %d, overlap %d), %s %d steps, %d rank(s)",
            len(targets),
            cfg.members,
            export.pair.name,
            *sampler.layout.hr_shape,
            len(sampler.layout),
            sampler.layout.tile,
            sampler.layout.overlap,
            len(sampler.residual_layout),
            sampler.residual_layout.overlap,
            cfg.sampler,
            sampler.steps,
            info.world_size,
        )
    writer = None
    attrs = {}
    if info.rank == 0:
        attrs = {
            **cf.global_attrs(
                f"HR precipitation ensemble ({export.pair.name}) from hpcsr sample",
                f"hpcsr sample (conditional mean + residual diffusion), export {cfg.export}",
                command or " ".join(sys.argv),
            ),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "interval_minutes": seq.hr_step_s // 60,
            "input": seq.source,
            "world_size": info.world_size,
            "device": str(sampler.device),
            "code_version": code_version(),
            **sampler.attributes(),
        }
        writer = EnsembleWriter(
            cfg.out,
            cfg.members,
            hr_times(targets, seq.pair.t, seq.hr_step_s),
            seq.x_hr,
            seq.y_hr,
            seq.x_attrs,
            seq.y_attrs,
            seq.crs,
            seq.hr_step_s // 60,
            attrs,
        )
    try:
        counts = sample_sequence(sampler, targets, writer, info.rank, info.world_size, group, cfg.progress)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if info.rank != 0:
        return SampleResult(None)
    path = writer.close(counts)
    for key, value in counts.items():
        log.info("%s: %d", key, value)
    if counts["masked_target_cells"] or counts["absent_context_frames"]:
        log.warning(
            "input had gaps: %d target LR cells masked (NaN output), %d context frames absent, %d targets with "
            "incomplete context (policy %r)",
            counts["masked_target_cells"],
            counts["absent_context_frames"],
            counts["targets_with_incomplete_context"],
            cfg.context,
        )
    log.info("wrote %s", path)
    settings = {k: v for k, v in attrs.items() if k in ("factor_pair", "sampler", "sampler_steps")}
    return SampleResult(Path(path), counts, settings)
