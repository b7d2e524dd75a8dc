"""Coarsening and upsampling operators, one definition for numpy arrays and torch tensors.

`coarsen(hr, s, t)` is the perfect-model LR of an HR block: the mean over t consecutive steps and
s x s pixels, so the HR sum over an s x s x t block equals s*s*t times the LR value. Preprocessing,
the mass-conservation transform and the mass-error metric all call it, so they agree by
construction. Time blocks start at index 0 of the array given: aligning them to a fixed phase and
never across a gap is the caller's job (preprocessing picks the block starts).
"""

from __future__ import annotations

import numpy as np


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


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


def _block_sum(x, s: int, t: int):
    """Sum over s x s x t blocks in three single-axis passes, time first, x last: each pass
    shrinks the data before the next, and the middle-axis sums are contiguous adds."""
    *lead, T, Y, X = x.shape
    if t > 1:
        x = x.reshape(*lead, T // t, t, Y, X).sum(-3)
    if s > 1:
        x = x.reshape(*lead, x.shape[-3], Y // s, s, X).sum(-2)
        x = x.reshape(*lead, x.shape[-3], Y // s, X // s, s).sum(-1)
    return x


def coarsen(hr, s: int, t: int, min_valid: float = 1.0):
    """Block mean of `hr` (..., T, Y, X) over t steps and s x s pixels -> (..., T/t, Y/s, X/s).

    NaN marks missing HR values. A block whose valid fraction is below `min_valid` (1.0: every
    value must be present) is NaN; otherwise it is the mean of its valid values. Works on numpy
    arrays and torch tensors (differentiable, no host synchronisation) alike and keeps the
    input's floating dtype.
    """
    _check_divisible(hr.shape, s, t)
    if not 0.0 < min_valid <= 1.0:
        raise ValueError(f"min_valid={min_valid} must be in (0, 1]")
    size = s * s * t
    if _is_torch(hr):
        import torch

        if not hr.is_floating_point():
            hr = hr.float()
        if size == 1:
            return hr
        valid = ~torch.isnan(hr)
        total = _block_sum(torch.where(valid, hr, hr.new_zeros(())), s, t)
        count = _block_sum(valid.to(hr.dtype), s, t)
        enough = count >= min_valid * size - 1e-6
        return torch.where(enough, total / count.clamp_min(1), torch.full_like(total, float("nan")))
    hr = np.asarray(hr)
    if not np.issubdtype(hr.dtype, np.floating):
        hr = hr.astype(np.float32)
    if size == 1:
        return hr
    if min_valid == 1.0:  # NaN propagates through the sums: a block with a missing value is NaN
        return _block_sum(hr, s, t) / hr.dtype.type(size)
    missing = np.isnan(hr)
    total = _block_sum(np.where(missing, hr.dtype.type(0), hr), s, t)
    count = _block_sum((~missing).astype(hr.dtype), s, t)
    enough = count >= min_valid * size - 1e-6
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(enough, total / np.maximum(count, 1), np.asarray(np.nan, dtype=hr.dtype))


def repeat_blocks(lr, s: int, t: int):
    """Nearest-neighbour inverse of the block layout: each LR value copied over its s x s x t HR
    block, (..., T, Y, X) -> (..., T*t, Y*s, X*s). `coarsen(repeat_blocks(lr))` is `lr`."""
    if _is_torch(lr):
        return lr.repeat_interleave(t, dim=-3).repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)
    return np.repeat(np.repeat(np.repeat(np.asarray(lr), t, axis=-3), s, axis=-2), s, axis=-1)


def upsample_space(lr, s: int, mode: str = "bicubic"):
    """Spatial upsampling of (..., Y, X) frames by s: 'bicubic' (align_corners=False, as the
    paper's inputs), 'bilinear' or 'nearest'. NaN stays confined to where the stencil touches it.
    numpy in -> numpy out; torch in -> torch out (differentiable)."""
    if mode not in ("bicubic", "bilinear", "nearest"):
        raise ValueError(f"upsampling mode {mode!r} unknown: use 'bicubic', 'bilinear' or 'nearest'")
    import torch
    import torch.nn.functional as F

    is_torch = _is_torch(lr)
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
