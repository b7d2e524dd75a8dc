"""Coarsening and upsampling operators, one definition for numpy arrays and torch tensors.

`coarsen(hr, s, t)` is the perfect-model LR of an HR block: the mean over t consecutive steps and
s x s pixels, so the HR sum over an s x s x t block equals s*s*t times the LR value. Preprocessing,
the mass-conservation transform and the mass-error metric all call it, so they agree by
construction. Time blocks start at index 0 of the array given: aligning them to a fixed phase and
never across a gap is the caller's job (preprocessing picks the block starts).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _check_divisible(shape, s: int, t: int):
    if len(shape) < 3:
        raise ValueError(f"coarsen needs (..., time, y, x) data, got shape {tuple(shape)}")
    T, Y, X = shape[-3:]
    if s < 1 or t < 1:
        raise ValueError(f"factors must be >= 1, got s={s}, t={t}")
    if T % t:
        raise ValueError(f"{T} time steps are not a multiple of t={t}: trim to {T - T % t} steps")
    if Y % s or X % s:
        raise ValueError(f"grid {Y} x {X} is not divisible by s={s}: crop to {Y - Y % s} x {X - X % s}")


def coarsen(hr, s: int, t: int, min_valid: float = 1.0):
    """Block mean of `hr` (..., T, Y, X) over t steps and s x s pixels -> (..., T/t, Y/s, X/s).

    NaN marks missing HR values. A block whose valid fraction is below `min_valid` (1.0: every
    value must be present) is NaN; otherwise it is the mean of its valid values. Works on numpy
    arrays and torch tensors (differentiable) alike and keeps the input's floating dtype.
    """
    _check_divisible(hr.shape, s, t)
    if not 0.0 < min_valid <= 1.0:
        raise ValueError(f"min_valid={min_valid} must be in (0, 1]")
    is_torch = isinstance(hr, torch.Tensor)
    if not is_torch:
        hr = np.asarray(hr)
        if not np.issubdtype(hr.dtype, np.floating):
            hr = hr.astype(np.float32)
    elif not hr.is_floating_point():
        hr = hr.float()
    *lead, T, Y, X = hr.shape
    blocks = hr.reshape(*lead, T // t, t, Y // s, s, X // s, s)
    axes = (-5, -3, -1)
    if s == 1 and t == 1:
        return blocks.reshape(*lead, T, Y, X)
    valid = ~(torch.isnan(blocks) if is_torch else np.isnan(blocks))
    zero = blocks.new_zeros(()) if is_torch else blocks.dtype.type(0)
    filled = torch.where(valid, blocks, zero) if is_torch else np.where(valid, blocks, zero)
    if is_torch:
        total = filled.sum(dim=axes)
        count = valid.sum(dim=axes).to(hr.dtype)
    else:
        total = filled.sum(axis=axes)
        count = valid.sum(axis=axes).astype(hr.dtype)
    size = s * s * t
    enough = count >= min_valid * size - 1e-9
    nan = float("nan")
    if is_torch:
        return torch.where(enough, total / count.clamp_min(1), torch.full_like(total, nan))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(enough, total / np.maximum(count, 1), np.asarray(nan, dtype=hr.dtype))


def repeat_blocks(lr, s: int, t: int):
    """Nearest-neighbour inverse of the block layout: each LR value copied over its s x s x t HR
    block, (..., T, Y, X) -> (..., T*t, Y*s, X*s). `coarsen(repeat_blocks(lr))` is `lr`."""
    if isinstance(lr, torch.Tensor):
        return lr.repeat_interleave(t, dim=-3).repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)
    return np.repeat(np.repeat(np.repeat(np.asarray(lr), t, axis=-3), s, axis=-2), s, axis=-1)


def upsample_space(lr, s: int, mode: str = "bicubic"):
    """Spatial upsampling of (..., Y, X) frames by s: 'bicubic' (align_corners=False, as the
    paper's inputs), 'bilinear' or 'nearest'. NaN stays confined to where the stencil touches it.
    numpy in -> numpy out; torch in -> torch out (differentiable)."""
    if mode not in ("bicubic", "bilinear", "nearest"):
        raise ValueError(f"upsampling mode {mode!r} unknown: use 'bicubic', 'bilinear' or 'nearest'")
    is_torch = isinstance(lr, torch.Tensor)
    x = lr if is_torch else torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32))
    *lead, Y, X = x.shape
    flat = x.reshape(-1, 1, Y, X)
    if s == 1:
        out = flat
    else:
        kwargs = {} if mode == "nearest" else {"align_corners": False}
        out = F.interpolate(flat, scale_factor=s, mode=mode, **kwargs)
    out = out.reshape(*lead, Y * s, X * s)
    return out if is_torch else out.numpy()
