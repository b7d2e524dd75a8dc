"""Keep the mean network's start when it validates better than what the mean stage learned.

The mean network adds a learned correction to a start it does not learn (bicubic, linear or along
the rain's motion in time; `model.mean_skip`), through an output layer initialised at zero, so the
untrained network returns its start exactly. With `train.keep_better_start` (off by default), the
end of the mean stage scores the trained network and the same network with that layer at zero on
the validation patches with the training loss, and exports the start when its loss is lower. The
export records both losses (`mean_selection`); the raw optimised weights stay beside it.

Why: in the skill experiment (benchmarks/skill_experiment.py, trained on BoM, evaluated on KNMI) the
mean network at t = 2 came out worse than its start both on BoM's own validation patches (loss 1.08 /
1.02 x the start's at (4, 2) / (8, 2); RMSE in mm with the cell mass 0.0608 / 0.0697 against 0.0600 /
0.0690, two seeds) and on KNMI (1.09 / 1.11 x the start's RMSE), while at (4, 1) it beat its start
(loss 0.74 x). With the option on, the start was kept at both t = 2 pairs on both seeds: the mean
network's RMSE on KNMI fell to 0.780 / 0.817 x bicubic's (trained: 0.825-0.871 / 0.856-0.891) and its
cell seams to 1.07 / 1.10, but the residual diffusion trained on that mean came out under-dispersed
on KNMI (rank-histogram ends 1.4-2.1 x flat at three of the four pair-seeds), so it is not the
default (docs/SKILL_LOG.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class MeanSelection:
    """Which mean network the export carries and the validation losses that decided it."""

    kept: str  # 'trained' or 'start' (the output layer at zero)
    val_loss_trained: float  # mean training loss (normalised log1p MSE) over the validation patches
    val_loss_start: float
    patches: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def mean_loss_over(model, batches) -> tuple[float, int]:
    """Patch-weighted mean of `model.mean_loss` over (lr, hr[, start]) batches, and the patch count."""
    total, count = 0.0, 0
    for lr, hr, *start in batches:
        total += float(model.mean_loss(lr, hr, None, *start)) * len(hr)
        count += len(hr)
    if not count:
        raise ValueError("no validation patches to choose the mean network on")
    return total / count, count


@torch.no_grad()
def select_mean(model, batches) -> MeanSelection:
    """Score `model` (an SRModel in eval mode, trained weights) and its start on `batches` (a list:
    it is read twice); when the start's loss is lower, zero the output layer of `model` in place.
    A tie keeps the trained network."""
    batches = list(batches)
    trained, patches = mean_loss_over(model, batches)
    correction = [p.clone() for p in model.mean_net.out[-1].parameters()]
    model.mean_net.drop_correction_()
    start, _ = mean_loss_over(model, batches)
    kept = "start" if start < trained else "trained"
    if kept == "trained":
        for p, saved in zip(model.mean_net.out[-1].parameters(), correction):
            p.copy_(saved)
    return MeanSelection(kept, trained, start, patches)
