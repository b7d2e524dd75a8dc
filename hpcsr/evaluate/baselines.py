"""Reference forecasts on the HR grid made from the LR sequence alone (or from the mean network).

LR layout: lr (N, Y/s, X/s) holds block means in mm per HR step; LR block j covers HR steps
j*t .. j*t + t - 1. Every baseline can produce any range of HR steps [start, stop), so a long
sequence can be evaluated in chunks.

- `nearest`: each LR value repeated over its s x s x t block. Conserves block mass exactly.
- `bicubic_linear`: each LR frame upsampled by `hpcsr.coarsen.upsample_space` (bicubic,
  align_corners=False), then linear in time. Timing: HR step i is placed at time i (in HR steps)
  and LR block j's mean at its block's centre c_j = j*t + (t-1)/2; HR step i takes the linear
  interpolation between the two block centres around it, and before c_0 / after c_{N-1} the first
  / last frame is held. With t=1 this is the identity in time. Negative bicubic overshoots are set
  to 0 (precipitation cannot be negative). It does NOT conserve block mass: bicubic
  reconstruction does not preserve block means, interpolation in time mixes neighbouring blocks
  (for t=3 a block's mean becomes 7/9 of its own value plus 1/9 of each neighbour's) and clipping
  adds mass; the evaluation reports its mass error like any other forecast's. Missing LR cells
  are filled with 0 before the spatial interpolation (as the networks' input is); in time, a
  missing neighbour block leaves the other one; the s x s x t pixels of a missing block are NaN,
  so a gap masks the pixels under it only, as for `nearest`.
- `motion`: bicubic in space, interpolated in time along the rain's motion between the two LR
  frames around each step (`hpcsr.motion.motion_linear`; zero motion gives `bicubic_linear`), timed,
  clipped and masked as `bicubic_linear`. Does not conserve block mass either.
- `mean_only`: the mean network's prediction (already on the HR grid, mm), checked and passed on;
  it takes an array so this module does not depend on the model code.
"""

from __future__ import annotations

import numpy as np

from hpcsr.coarsen import upsample_space
from hpcsr.motion import motion_linear

NAMES = ("nearest", "bicubic", "motion", "mean")
FROM_LR = ("nearest", "bicubic", "motion")  # the baselines made from the LR alone (`from_lr`)


def _step_range(lr: np.ndarray, t: int, start: int, stop: int | None) -> tuple[int, int]:
    total = lr.shape[-3] * t
    stop = total if stop is None else stop
    if not 0 <= start < stop <= total:
        raise ValueError(f"HR step range [{start}, {stop}) is outside the {total} steps the LR covers")
    return start, stop


def nearest(lr: np.ndarray, s: int, t: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """HR steps [start, stop) of the block-repeated LR, shape (stop - start, Y, X)."""
    lr = np.asarray(lr)
    start, stop = _step_range(lr, t, start, stop)
    frames = lr[np.arange(start, stop) // t]
    return np.repeat(np.repeat(frames, s, axis=-2), s, axis=-1)


def block_centres(n_blocks: int, t: int) -> np.ndarray:
    """Time (in HR steps, step i at i) at which each LR block mean is placed: its block's centre."""
    return np.arange(n_blocks) * t + (t - 1) / 2.0


def bicubic_linear(
    lr: np.ndarray, s: int, t: int, start: int = 0, stop: int | None = None, clip_negative: bool = True
) -> np.ndarray:
    """HR steps [start, stop) of bicubic-in-space, linear-in-time upsampling (float32)."""
    lr = np.asarray(lr, dtype=np.float32)
    start, stop = _step_range(lr, t, start, stop)
    n_blocks = lr.shape[-3]
    position = (np.arange(start, stop) - (t - 1) / 2.0) / t  # fractional block index of each HR step
    position = np.clip(position, 0.0, n_blocks - 1)
    left = np.floor(position).astype(np.int64)
    right = np.minimum(left + 1, n_blocks - 1)
    weight = (position - left).astype(np.float32)[:, None, None]
    needed = np.arange(left.min(), right.max() + 1)
    missing = ~np.isfinite(lr[needed])
    space = upsample_space(np.where(missing, np.float32(0), lr[needed]), s, mode="bicubic")
    space[np.repeat(np.repeat(missing, s, axis=-2), s, axis=-1)] = np.nan
    a, b = space[left - needed[0]], space[right - needed[0]]
    out = np.where(weight > 0, (1 - weight) * a + weight * b, a)
    out = np.where(np.isnan(out), np.where(np.isnan(a), b, a), out)  # a missing neighbour block: hold the other
    out[np.isnan(nearest(lr, s, t, start, stop))] = np.nan  # the step's own block is missing
    return np.maximum(out, 0.0) if clip_negative else out


def motion(lr: np.ndarray, s: int, t: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """HR steps [start, stop) of bicubic-in-space, motion-compensated-in-time upsampling (float32)."""
    lr = np.asarray(lr, dtype=np.float32)
    start, stop = _step_range(lr, t, start, stop)
    out = motion_linear(lr, s, t, start, stop)
    out[np.isnan(nearest(lr, s, t, start, stop))] = np.nan  # the step's own block is missing
    return np.maximum(out, 0.0)


def from_lr(name: str, lr: np.ndarray, s: int, t: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """HR steps [start, stop) of the LR-only baseline `name` (one of FROM_LR)."""
    makers = {"nearest": nearest, "bicubic": bicubic_linear, "motion": motion}
    if name not in makers:
        raise ValueError(f"baseline {name!r} is not made from the LR alone: use one of {', '.join(FROM_LR)}")
    return makers[name](lr, s, t, start, stop)


def mean_only(mean: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The mean network's HR prediction (T, Y, X) in mm, checked against the truth's `shape`."""
    mean = np.asarray(mean)
    if mean.shape != tuple(shape):
        raise ValueError(
            f"mean prediction has shape {mean.shape}, truth has {tuple(shape)}: give the mean for the same steps and grid"
        )
    return mean
