"""Motion-compensated interpolation in time: HR steps between two LR frames along the rain's motion.

Linear interpolation in time (the `bicubic_linear` baseline, the mean network's 'linear' start)
fades one LR frame into the next: a rain band that moves between them appears twice, half as
strong, and its sub-steps never sit where the band was. Interpolating along the motion instead
(as nowcasting's semi-Lagrangian schemes and video frame interpolation do) moves each frame
towards the step's time before blending:

    step i between block centres c_l <= i <= c_r (c_r - c_l = t HR steps), w = (i - c_l) / t:
    out_i = (1 - w) warp(up_l, v (i - c_l)) + w warp(up_r, v (i - c_r)),   v = d(up_l, up_r) / t

with up_j the bicubic LR frame j on the HR grid and d the displacement of the rain from one frame
to the next: the shift that maximises the cross-correlation of their log1p anomalies on the LR
grid, times s (zero-padded, so nothing wraps round; parabolic sub-pixel peak), one vector per pair
of frames over the whole field given. With v = 0 this
is linear interpolation in time. Measured on the ten radar days of ../shared/data (the wettest
256 px x 24 steps of each, benchmarks/motion_baseline.py), with the cell mass transform on both:
RMSE 0.70-0.98 x that of linear interpolation at t = 2 and 0.85-0.98 x at t = 3 on 10-min steps;
0.96-1.01 x on 15-min and hourly steps, where the rain changes more than it moves between frames.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hpcsr.coarsen import upsample_space
from hpcsr.models.inputs import prepare_lr


def _peak_offset(values: np.ndarray, i: int) -> float:
    """Sub-sample position of the maximum at index i of a 1-D profile (parabola through 3 points)."""
    if 0 < i < len(values) - 1:
        curvature = values[i - 1] - 2 * values[i] + values[i + 1]
        if curvature < 0:
            return i + 0.5 * (values[i - 1] - values[i + 1]) / curvature
    return float(i)


def _filled(frame) -> np.ndarray:
    """frame (torch or numpy) as float64 numpy, NaN read as its smallest value (dry; 0 if all NaN)."""
    f = np.asarray(frame.cpu() if isinstance(frame, torch.Tensor) else frame, np.float64)
    return np.nan_to_num(f, nan=np.nanmin(f) if np.isfinite(f).any() else 0.0)


def displacement(a, b, max_shift: int | None = None) -> tuple[float, float]:
    """(dy, dx) in pixels that the rain moved from frame a to frame b, both (Y, X) in a unit where
    the correlation is meaningful (log1p of mm, or the networks' normalised units, an affine map of
    it: the same answer); NaN reads as the frame's smallest value (dry). The argmax of the
    cross-correlation of the two frames minus their means within |dy|, |dx| <= max_shift (default a
    quarter of the smaller side); (0, 0) when either frame is flat."""
    a, b = _filled(a), _filled(b)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"frames must be two (Y, X) arrays of one shape, got {a.shape} and {b.shape}")
    a, b = a - a.mean(), b - b.mean()
    if not (a.any() and b.any()):
        return 0.0, 0.0
    Y, X = a.shape
    m = min(Y, X) // 4 if max_shift is None else int(max_shift)
    m = max(0, min(m, Y - 1, X - 1))
    size = (2 * Y, 2 * X)  # zero padding: a linear, not circular, correlation
    corr = np.fft.irfft2(np.conj(np.fft.rfft2(a, size)) * np.fft.rfft2(b, size), size)
    window = np.roll(corr, (m, m), axis=(0, 1))[: 2 * m + 1, : 2 * m + 1]  # lags -m .. m on both axes
    iy, ix = np.unravel_index(int(np.argmax(window)), window.shape)
    return _peak_offset(window[:, ix], iy) - m, _peak_offset(window[iy, :], ix) - m


def velocity(lr_a, lr_b, s: int, t: int) -> tuple[float, float]:
    """(vy, vx) in HR pixels per HR step from two consecutive LR frames (Y/s, X/s) (`displacement`
    units), t HR steps apart: the displacement is found on the LR grid (as good as on the HR grid:
    within 0.02 of the RMSE ratios of benchmarks/motion_baseline.py on five radar days) and scaled by
    s. (0, 0) unless frame a moved by it matches frame b better than frame a left still (mean squared
    difference on the LR grid): where the rain grows, decays or is nearly absent rather than moving,
    the correlation's peak is noise, and the start stays the linear one."""
    a, b = _filled(lr_a), _filled(lr_b)
    dy, dx = displacement(a, b)
    if (dy, dx) == (0.0, 0.0) or np.mean((warp(a, dy, dx) - b) ** 2) >= np.mean((a - b) ** 2):
        return 0.0, 0.0
    return dy * s / t, dx * s / t


def warp(frame, dy: float, dx: float):
    """`frame` (..., Y, X), torch or numpy, with its content moved by (dy, dx) pixels: bilinear,
    edge values held beyond the field, NaN where a NaN pixel contributes. Same type out."""
    is_numpy = not isinstance(frame, torch.Tensor)
    x = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32)) if is_numpy else frame
    if dy != 0 or dx != 0:
        *lead, Y, X = x.shape
        gy = (torch.arange(Y, dtype=torch.float64) - dy) * (2 / max(Y - 1, 1)) - 1
        gx = (torch.arange(X, dtype=torch.float64) - dx) * (2 / max(X - 1, 1)) - 1
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).to(x.dtype).to(x.device)
        flat = x.reshape(-1, 1, Y, X)
        grid = grid[None].expand(flat.shape[0], Y, X, 2)
        x = F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=True).reshape(x.shape)
    return x.numpy() if is_numpy else x


def _blend(a, b, w, v: tuple[float, float], own: float, other: float):
    """The module's formula for one HR step: frame a moved by v own blended with frame b moved by
    v other, weight w (a number or a field) on b."""
    moved = warp(a, v[0] * own, v[1] * own)
    return moved + w * (warp(b, v[0] * other, v[1] * other) - moved)


def target_steps(up, valid, velocities: dict, t: int, target: int):
    """The t HR steps (t, Y, X) of block `target` from upsampled LR frames up (F, Y, X) with validity
    valid (F, Y, X) (torch): step k sits p = (k + 0.5) / t - 0.5 blocks from the target frame's centre
    and blends the target frame moved by v p t and its neighbour on the step's side moved by v (p t -/+ t),
    weights 1 - |p| and |p| (the module's formula, v = velocities[j] for the frames j, j + 1 around
    the step, HR px per HR step); where some of the neighbour's cells are missing, the moved target
    frame alone there, and where the step's side has no frame (none given: nowcasting; or a wholly
    missing one: no velocity for that pair), the target frame moved on with the other side's
    motion. With v = 0 this is the mean network's 'linear' start (`hpcsr.models.mean_net.linear_in_time`)."""
    steps = []
    for k in range(t):
        p = (k + 0.5) / t - 0.5
        side = 1 if p > 0 else -1
        neighbour = target + side
        own, other = p * t, p * t - side * t  # HR steps from each frame's centre
        pair = min(target, neighbour)
        if not 0 <= neighbour < up.shape[0] or pair not in velocities:
            # no frame on this side: the target frame carried on with the other side's motion
            vy, vx = next(iter(velocities.values()), (0.0, 0.0))
            steps.append(warp(up[target], vy * own, vx * own))
            continue
        if p == 0:
            steps.append(up[target])
            continue
        v = velocities[pair]
        weight = abs(p) * warp(valid[neighbour], v[0] * other, v[1] * other)  # 0 where it is missing
        steps.append(_blend(up[target], up[neighbour], weight, v, own, other))
    return torch.stack(steps)


def halo_cells(velocities: dict, s: int, t: int) -> int:
    """LR cells around a window that `target_steps` on that window needs to equal the same steps
    on the whole field: the largest move (|v| t HR px), one px of bilinear reach, 2 cells of bicubic."""
    reach = max((max(abs(vy), abs(vx)) for vy, vx in velocities.values()), default=0.0) * t + 1
    return int(np.ceil(reach / s)) + 2


def frame_velocities(lr, s: int, t: int, target: int) -> dict:
    """{j: (vy, vx)} for the frame pairs (j, j + 1) around the target frame of lr (F, ny, nx) (LR
    frames in `displacement` units, NaN missing), HR px per HR step; none for a pair with a wholly
    missing frame (a sequence's first or last block, whose context the sampler marks absent), so
    that `target_steps` carries the target frame on with the known motion there rather than holding
    it still (measured on KNMI, benchmarks/skill_experiment.py at (4, 2): the start's RMSE on the
    first and last blocks 0.0656 and 0.0779 mm held, 0.0566 and 0.0691 carried on)."""

    def present(j: int) -> bool:
        return 0 <= j < lr.shape[0] and bool(torch.as_tensor(lr[j]).isfinite().any())

    return {j: velocity(lr[j], lr[j + 1], s, t) for j in (target - 1, target) if present(j) and present(j + 1)}


def field_start(lr, s: int, t: int, target: int, mode: str = "bicubic", velocities: dict | None = None, space=None):
    """The mean network's 'motion' start (t, ny*s, nx*s) of block `target` from the LR frames lr
    (F, ny, nx) (torch, the networks' normalised units, NaN missing): upsampled as the networks'
    input (`hpcsr.models.inputs.prepare_lr`, interpolation `mode`) or in the model's start space
    (`space`, hpcsr.models.start_space), then `target_steps` with `velocities` (default:
    `frame_velocities` of these frames; give those of a larger field when lr is a window of it, with
    `halo_cells` around the part that is kept)."""
    if velocities is None:
        velocities = frame_velocities(lr, s, t, target)
    up, valid = prepare_lr(lr[None], s, mode, space)
    return target_steps(up[0], valid[0], velocities, t, target)


def motion_linear(lr: np.ndarray, s: int, t: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """HR steps [start, stop) (float32, (stop - start, Y*s, X*s)) interpolated along the motion
    between the bicubic LR frames of lr (N, Y, X) (module docstring), placed in time as
    `hpcsr.evaluate.baselines.bicubic_linear` places them: the first / last frame held before
    the first / after the last block centre. NaN LR cells are 0 in the interpolation; the caller
    masks their blocks."""
    lr = np.asarray(lr, dtype=np.float32)
    n = lr.shape[-3]
    stop = n * t if stop is None else stop
    if not 0 <= start < stop <= n * t:
        raise ValueError(f"HR step range [{start}, {stop}) is outside the {n * t} steps the LR covers")
    position = np.clip((np.arange(start, stop) - (t - 1) / 2.0) / t, 0.0, n - 1)
    left = np.minimum(np.floor(position).astype(np.int64), n - 1)
    needed = np.arange(left.min(), min(left.max() + 2, n))
    up = dict(zip(needed.tolist(), upsample_space(np.nan_to_num(lr[needed]), s, mode="bicubic")))
    moves = {}
    out = []
    for i, p, lo in zip(range(start, stop), position, left.tolist()):
        hi, w = min(lo + 1, n - 1), float(p - lo)
        if hi == lo or w == 0:  # on a block centre or held beyond the ends
            out.append(up[lo])
            continue
        if lo not in moves:
            moves[lo] = velocity(*(np.log1p(np.clip(lr[j], 0, None)) for j in (lo, hi)), s, t)
        before, after = i - (lo * t + (t - 1) / 2.0), i - (hi * t + (t - 1) / 2.0)
        out.append(_blend(up[lo], up[hi], w, moves[lo], before, after))
    return np.stack(out).astype(np.float32)
