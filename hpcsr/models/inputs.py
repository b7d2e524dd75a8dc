"""Input checks and LR preparation shared by both networks.

LR input arrives at LR resolution (B, frames, Y/s, X/s) in normalised units. Missing values (NaN
or inf) are replaced by 0 and flagged in a validity channel, so they never reach the output; then
both are upsampled to the HR grid (values with the configured interpolation, validity nearest).
"""

from __future__ import annotations

import torch

from hpcsr.coarsen import upsample_space


def check_lr(lr: torch.Tensor, frames: int, future: int) -> None:
    if lr.dim() != 4:
        raise ValueError(f"lr must be (batch, frames, Y/s, X/s), got shape {tuple(lr.shape)}")
    if lr.shape[1] != frames:
        past = frames - future
        raise ValueError(
            f"lr has {lr.shape[1]} frames but this model expects {frames} "
            f"(recipe context L={past}" + (f" + {future} future frames" if future else "") + "): "
            f"give the last {frames} LR frames or rebuild the model with a recipe whose context is {lr.shape[1] - future}"
        )
    if not lr.is_floating_point():
        raise ValueError(f"lr must be a floating tensor, got {lr.dtype}")


def check_hr_like(name: str, x: torch.Tensor, lr: torch.Tensor, s: int, t: int) -> None:
    """x must be (B, t, Y, X) with Y, X = s times the LR grid of `lr`."""
    if x.dim() != 4:
        raise ValueError(f"{name} must be (batch, t, Y, X), got shape {tuple(x.shape)}")
    B, frames, Y, X = x.shape
    for side in (Y, X):
        if side % s:
            raise ValueError(
                f"{name} patch side {side} is not divisible by s={s}: use a patch of {side - side % s} or {side - side % s + s}"
            )
    if frames != t:
        raise ValueError(
            f"{name} has {frames} frames but the factor pair has t={t}: give the t={t} HR frames under the target LR frame"
        )
    expected = (lr.shape[0], t, lr.shape[2] * s, lr.shape[3] * s)
    if tuple(x.shape) != expected:
        raise ValueError(
            f"{name} shape {tuple(x.shape)} does not match lr {tuple(lr.shape)} with s={s}, t={t}: expected {expected}"
        )


def check_static(static, lr: torch.Tensor, s: int, channels: int) -> None:
    if channels == 0:
        if static is not None:
            raise ValueError(
                "static fields were given but model.static_channels=0: set model.static_channels or drop them"
            )
        return
    expected = (lr.shape[0], channels, lr.shape[2] * s, lr.shape[3] * s)
    if static is None or tuple(static.shape) != expected:
        got = None if static is None else tuple(static.shape)
        raise ValueError(f"static fields must have shape {expected} (model.static_channels={channels}), got {got}")


def prepare_lr(lr: torch.Tensor, s: int, mode: str, space=None):
    """(B, F, y, x) with NaN -> (values, validity), both (B, F, y*s, x*s); values are 0 where missing,
    or, with `space` (hpcsr.models.start_space.StartSpace), interpolated in that space."""
    valid = torch.isfinite(lr)
    if space is not None:
        values = space.upsample(lr, s, mode)
    else:
        values = upsample_space(torch.where(valid, lr, torch.zeros((), dtype=lr.dtype, device=lr.device)), s, mode)
    return values, upsample_space(valid.to(lr.dtype), s, "nearest")
