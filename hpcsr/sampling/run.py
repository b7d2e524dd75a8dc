"""`sample_to_netcdf`: export + LR input -> ensemble netCDF, on one rank or several.

Launched with several processes (torchrun, srun, mpirun: anything `hpcsr.dist.discover` reads),
every rank loads the export and the input, samples its share of the (target, member) units and
rank 0 gathers and writes. One process needs no torch.distributed at all.
"""

from __future__ import annotations

import datetime
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from hpcsr import cf
from hpcsr.artifacts import code_version
from hpcsr.atomic import check_target
from hpcsr.factors import FactorPair
from hpcsr.sampling.checks import check_grid, check_has_data
from hpcsr.sampling.ensemble import EnsembleSampler, SampleConfig, sample_sequence, target_times
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


def sample_to_netcdf(
    export_path,
    out,
    cfg: SampleConfig,
    *,
    lr=None,
    hr=None,
    pair=None,
    time_range=None,
    hr_step_minutes=None,
    phase_minutes: int = 0,
    device: str = "auto",
    progress: bool = True,
    command: str | None = None,
    allow_other_grid: bool = False,
) -> dict:
    """Write the ensemble of `lr` (LR netCDF or shard) or of `hr` coarsened (HR netCDF or HR store)
    to `out`. Returns a summary (counts, settings) on rank 0, {} elsewhere. Must be called by every
    rank when several processes run."""
    from hpcsr.dist import discover, init_distributed
    from hpcsr.train.export import load_export

    if (lr is None) == (hr is None):
        raise ValueError(
            "give exactly one input: --lr (LR netCDF or shard) or --hr with --coarsen (perfect-model test)"
        )
    check_target(out)  # before the model is loaded
    info = discover()
    group = None
    if info.world_size > 1:
        import torch.distributed as dist

        info = init_distributed()
        group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    export = load_export(export_path)
    check_pair(export, pair)
    seq = (
        open_lr(lr, export.pair, hr_step_minutes)
        if lr is not None
        else open_hr(hr, export.pair, hr_step_minutes, phase_minutes)
    )
    check_grid(export, seq, allow_other_grid)
    targets = target_times(seq, time_range)
    check_has_data(seq, targets)
    sampler = EnsembleSampler(export, seq, cfg, pick_device(device, info.local_rank))
    if info.rank == 0:
        log.info(
            "sampling %d blocks x %d members of %s on %d x %d HR pixels (%d tiles of %d, overlap %d), %s %d steps, "
            "%d rank(s)",
            len(targets),
            cfg.members,
            export.pair.name,
            *sampler.layout.hr_shape,
            len(sampler.layout),
            sampler.layout.tile,
            sampler.layout.overlap,
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
                f"hpcsr sample (conditional mean + residual diffusion), export {export_path}",
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
            out,
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
        counts = sample_sequence(sampler, targets, writer, info.rank, info.world_size, group, progress)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if info.rank != 0:
        return {}
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
    return {
        "path": str(Path(path)),
        **counts,
        **{k: v for k, v in attrs.items() if k in ("factor_pair", "sampler", "sampler_steps")},
    }
