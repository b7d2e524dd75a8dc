"""Mass-conservation transform: rescale HR precipitation so that it coarsens back to the LR input.

    conserve(x, lr, s, t, fn, scale, mode)   x (..., n*t, Y, X) mm, lr (..., n, Y/s, X/s) mm

First f(x) = min(max(x^p - c, 0), cap) (the `MassFunction` of the recipe: p = 0.5 damps the
largest values, c removes drizzle), then the mass of f(x) is matched to the LR mass over a region:
- scale 'image': the whole tile, all frames (the author's default: per-cell gave square artefacts),
  'frame': each LR time step (all pixels of its t HR frames; equal to 'image' when n = 1),
  'cell': each s x s x t block (exact per LR cell).
- mode 'multiplicative' (default): f(x) * M / sum f(x);
  'smooth' (scale 'cell' only): multiplicative with a factor field that is continuous across cell
  edges: a per-cell factor c, interpolated to the HR grid geometrically (bilinear in
  log(c + factor_offset(s)) between cell centres: factors are ratios), is found by SMOOTH_SWEEPS
  fixed-point sweeps c <- c * M / sum(f(x) * up(c)), then the exact per-cell step corrects what is
  left (factors near 1, so the steps at cell edges that a piecewise-constant factor leaves become
  small); a wet cell beside a dry one tapers towards it instead of ending in a cliff. Why geometric
  (s45): interpolated linearly, a nearly dry cell beside a wet one received half the wet cell's
  factor at their shared edge, more rain than its LR amount allows whatever its own factor, so the
  exact step scaled the whole cell down and left a cliff along its edges. Bicubic of the LR through
  it, on 128 x 128 windows of five radar days (MeteoSwiss x 3, KNMI, BoM): seam ratio at s = 8
  1.10-1.57 -> 0.98-1.05 (truths 0.97-1.02), RMSE within -3.5 .. +0.3 %; at s = 4 0.97-1.13 ->
  0.95-1.05; at s = 2, where the linear rule left no seams, within 0.8 % of its RMSE (the offset
  factor_offset(s) keeps the taper's reach the same share of a cell at every s: with a fixed 1e-3
  it cost up to 12 % at s = 2). The (8,2) mean network on MeteoSwiss: 1.27 -> 1.14 (its own output
  1.19), members 1.19 -> 1.06;
  'filled' (scale 'cell' only; for estimates such as the mean network, not for members): 'smooth'
  where the mass a capped factor cannot give (see FACTOR_CAP) comes from a second smooth field, an
  amplitude per cell, interpolated like the factor, on the bilinear upsampling of the LR field, found in
  the same sweeps; the exact step is then a small correction at most cells, so the output carries
  fewer cell edges, but light rain appears where f(x) is dry (on unseen radar the mean network's
  cell seams 1.109 -> 1.073 at (8,2), session s42; members made this way turned wet-biased in s41's
  probe, lowest rank 1.45 x flat, so members keep 'smooth');
  'softmax': exp(f(x)) * M / sum exp(f(x)) (every pixel keeps some rain);
  'additive': f(x) + (M - sum f(x)) / count (may go negative).
Masses are taken with `hpcsr.coarsen.coarsen` and spread back with `repeat_blocks`, the operators
preprocessing uses, so `coarsen(conserve(...))` reproduces lr at the chosen scale (to float32
rounding, ~1e-7 relative). Guards: a region whose f(x) is all dry (mass < 1e-12 mm) while the LR
is wet gets the LR mass spread uniformly; a dry LR region gives zeros (multiplicative, softmax).
Per cell ('multiplicative', 'smooth' and 'filled' at scale 'cell') no factor exceeds FACTOR_CAP: where f(x)
holds under 1/FACTOR_CAP of a cell's LR mass, f(x) x FACTOR_CAP is kept and the rest of the mass is
spread along the bilinear upsampling of the LR field (in 'smooth' the factor field and the exact
step are each capped). Without it, a cell where the network left a trace of rain got the whole LR
mass piled into that trace: at t = 2 on unseen radar 0.78 % / 0.20 % of the mean network's wet cells
(mean > 0.1 mm/h) at (4,2) / (8,2) held >= 1/4 of their mass in one pixel, the truth's 0.04 % / 0 %;
capping at 4 (chosen on the training radar's validation) cut that to 0.23 % / 0 % and the mean
network's RMSE by 3.4 / 5.8 %, and left t = 1 unchanged (docs/SKILL_LOG.md, session s41).
LR cells that are NaN (missing) are left out of every mass, and their HR pixels are returned
unchanged. Computations are in float32 or wider; the result is differentiable in x and lr, with
no host synchronisation.
"""

from __future__ import annotations

import torch

from hpcsr.coarsen import coarsen, repeat_blocks, upsample_space
from hpcsr.factors import MassFunction

SCALES = ("image", "frame", "cell")
MODES = ("multiplicative", "smooth", "filled", "softmax", "additive")
CELL_MODES = ("smooth", "filled")  # modes defined per LR cell only
SMOOTH_SWEEPS = 16  # fixed-point sweeps of the smooth factor field before the exact per-cell step
DRY_MASS = 1e-12  # mm: a region whose mean f(x) is below this counts as all dry
FACTOR_CAP = 4.0  # per-cell modes: the largest factor on f(x); the rest follows the LR field's shape
CENTRE_KEEP = 0.75  # smooth modes: share of its factor a centre pixel keeps beside a factor-0 cell


def default_mode(scale: str) -> str:
    """The mode a sampler uses at `scale` unless told otherwise: 'smooth' per cell (no seams at the
    LR grid), 'multiplicative' over larger regions."""
    return "smooth" if scale == "cell" else "multiplicative"


def estimate_mode(mode: str) -> str:
    """The mode for an estimate (the mean network's output) beside members transformed with `mode`:
    'filled' beside 'smooth' (fewer cell edges; an estimate may carry light rain where members are
    dry), else the members' own mode."""
    return "filled" if mode == "smooth" else mode


def mass_function(x: torch.Tensor, fn: MassFunction) -> torch.Tensor:
    """f(x) = min(max(x^p - c, 0), cap), with negative x treated as 0 and finite gradients everywhere."""
    if not fn.power > 0 or fn.offset < 0 or not fn.cap > 0:
        raise ValueError(f"mass function {fn} needs power > 0, offset >= 0 and cap > 0")
    threshold = fn.offset ** (1.0 / fn.power) if fn.offset > 0 else 0.0
    active = x > threshold  # f(x) > 0 exactly here
    safe = torch.where(active, x, torch.ones((), dtype=x.dtype, device=x.device))
    value = (safe**fn.power - fn.offset).clamp(max=fn.cap)
    return torch.where(active, value, torch.zeros((), dtype=x.dtype, device=x.device))


def _check(x, lr, s: int, t: int, scale: str, mode: str = "multiplicative"):
    if scale not in SCALES:
        raise ValueError(f"mass scale {scale!r} unknown: use one of {', '.join(SCALES)}")
    if mode not in MODES:
        raise ValueError(f"mass mode {mode!r} unknown: use one of {', '.join(MODES)}")
    if mode in CELL_MODES and scale != "cell":
        raise ValueError(f"mass mode {mode!r} works per LR cell: use scale 'cell', not {scale!r}")
    if x.dim() < 3 or lr.dim() < 3:
        raise ValueError(f"x and lr must be (..., time, y, x), got shapes {tuple(x.shape)} and {tuple(lr.shape)}")
    T, Y, X = x.shape[-3:]
    if T % t or Y % s or X % s:
        raise ValueError(
            f"x frames x grid {T} x {Y} x {X} is not divisible by (t={t}, s={s}): crop x to whole s x s x t blocks"
        )
    expected = (T // t, Y // s, X // s)
    if tuple(lr.shape[-3:]) != expected:
        raise ValueError(
            f"lr shape {tuple(lr.shape)} does not match x {tuple(x.shape)} with s={s}, t={t}: lr must end in {expected}"
        )
    try:
        lead = torch.broadcast_shapes(x.shape[:-3], lr.shape[:-3])
    except RuntimeError:
        lead = None
    if lead != x.shape[:-3]:
        raise ValueError(f"lr leading dims {tuple(lr.shape[:-3])} do not broadcast to x's {tuple(x.shape[:-3])}")


def _region(z: torch.Tensor, scale: str, reduce: str = "sum") -> torch.Tensor:
    """Reduce an LR-grid tensor (..., n, y, x) over each region, broadcast back to its shape."""
    if scale == "cell":
        return z
    dims = (-2, -1) if scale == "frame" else (-3, -2, -1)
    out = z.sum(dims, keepdim=True) if reduce == "sum" else z.amax(dims, keepdim=True)
    return out.expand_as(z)


def _block_max(z: torch.Tensor, s: int, t: int) -> torch.Tensor:
    *lead, T, Y, X = z.shape
    return z.reshape(*lead, T // t, t, Y // s, s, X // s, s).amax(dim=(-5, -3, -1))


def region_totals(x, lr, s: int, t: int, scale: str = "image"):
    """(HR mass, LR mass) of every region on the LR grid (..., n, y, x), in units of LR cell means
    (sums over the valid LR cells of coarsen(x) and of lr): equal after `conserve` at this scale."""
    _check(x, lr, s, t, scale)
    valid = torch.isfinite(lr).expand(*x.shape[:-3], *lr.shape[-3:])
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    hr = torch.where(valid, coarsen(x, s, t), zero)
    lr = torch.where(valid, lr.expand(valid.shape).to(x.dtype), zero)
    return _region(hr, scale), _region(lr, scale)


def _smooth_factor(g, lr0, valid, s: int, t: int):
    """HR factor field (..., n*t, Y, X): a per-cell factor, bilinearly interpolated, that brings each
    cell's mass of g * field close to lr0 (see 'smooth'); 1 under missing cells, 0 under dry ones."""
    one = torch.ones((), dtype=g.dtype, device=g.device)
    have = coarsen(g, s, t)
    c = torch.where(valid, (lr0 / torch.where(have > DRY_MASS, have, one)).clamp(max=FACTOR_CAP), one)
    c = torch.where(
        valid & (have <= DRY_MASS) & (lr0 > 0), one, c
    )  # all-dry f(x) under wet LR: the exact step spreads it
    for _ in range(SMOOTH_SWEEPS):
        got = coarsen(g * _up_factor(c, s, t), s, t)
        step = (c * lr0 / torch.where(got > DRY_MASS, got, one)).clamp(max=FACTOR_CAP)
        c = torch.where(valid & (got > DRY_MASS), step, c)
    return _up_factor(c, s, t)


def _smooth_fill(g, lr0, valid, s: int, t: int):
    """'filled' before its exact step: g * up(c) + up(a) * up(lr0), with a per-cell factor c (capped)
    and a per-cell fill amplitude a >= 0, both interpolated geometrically (`_up_factor`); each sweep sets c to give the
    mass the fill leaves, then a to give what c could not. Missing cells keep c = 1, a = 0."""
    one = torch.ones((), dtype=g.dtype, device=g.device)
    shape = _up(lr0, s, t)
    shape_mass = coarsen(shape, s, t)
    c = torch.ones_like(lr0)
    a = torch.zeros_like(lr0)
    scaled, fill = g * _up_factor(c, s, t), _up_factor(a, s, t) * shape  # the two parts on the HR grid
    for _ in range(SMOOTH_SWEEPS):
        got = coarsen(scaled, s, t)
        rest = (lr0 - coarsen(fill, s, t)).clamp_min(0)
        step = (c * rest / torch.where(got > DRY_MASS, got, one)).clamp(max=FACTOR_CAP)
        c = torch.where(valid & (got > DRY_MASS), step, c)
        scaled = g * _up_factor(c, s, t)
        got = coarsen(scaled + fill, s, t)
        more = (a + (lr0 - got) / torch.where(shape_mass > DRY_MASS, shape_mass, one)).clamp_min(0)
        a = torch.where(valid & (shape_mass > DRY_MASS), more, a)
        fill = _up_factor(a, s, t) * shape
    return scaled + fill


def _up(c, s: int, t: int):
    """LR-grid values (..., n, y, x) -> HR grid (..., n*t, Y, X): bilinear in space, repeated in time."""
    return upsample_space(c, s, "bilinear").repeat_interleave(t, dim=-3).clamp_min(0)


def factor_offset(s: int) -> float:
    """The offset e of the geometric factor field at factor s: a pixel at distance d (in cells) from its
    cell's centre takes the neighbour's log(c + e) with weight d, so beside a cell of factor 0 its factor
    shrinks by about (e / c)^d; the pixels next to the centre (d = 1 / 2s) keep CENTRE_KEEP of it when
    e = CENTRE_KEEP^(2s): the taper towards a dry neighbour then spans the same part of a cell at
    every s (e = 0.32 at s = 2, nearly linear; 0.1 at 4; 0.01 at 8)."""
    return CENTRE_KEEP ** (2 * s)


def _up_factor(c, s: int, t: int):
    """Per-cell factors (..., n, y, x) >= 0 -> HR grid: bilinear in log(c + e), e = factor_offset(s), i.e.
    geometric between cell centres, minus e (0 stays 0, 1 stays 1), repeated in time (see 'smooth')."""
    e = factor_offset(s)
    logs = torch.log(c.clamp_min(0) + e)
    return (upsample_space(logs, s, "bilinear").exp() - e).clamp_min(0).repeat_interleave(t, dim=-3)


def _along_lr(short, lr0, s: int, t: int):
    """HR field (..., n*t, Y, X) whose cell means are `short` (..., n, y, x), shaped like the bilinear
    upsampling of the LR field lr0 (uniform in a cell where that shape is all dry)."""
    one = torch.ones((), dtype=short.dtype, device=short.device)
    shape = _up(lr0, s, t)
    shape_mass = coarsen(shape, s, t)
    shaped = shape_mass > DRY_MASS
    per_mass = repeat_blocks(short / torch.where(shaped, shape_mass, one), s, t)
    return torch.where(repeat_blocks(shaped, s, t), shape * per_mass, repeat_blocks(short, s, t))


def conserve(x, lr, s: int, t: int, fn: MassFunction, scale: str = "image", mode: str = "multiplicative"):
    """x' with the LR mass of `lr` at `scale` (see the module docstring); physical units (mm)."""
    _check(x, lr, s, t, scale, mode)
    work = torch.promote_types(x.dtype, torch.float32)
    x = x.to(work)
    lr_shape = (*x.shape[:-3], *lr.shape[-3:])
    valid = torch.isfinite(lr).expand(lr_shape)
    weight = valid.to(work)
    zero = torch.zeros((), dtype=work, device=x.device)
    lr0 = torch.where(valid, lr.to(work).expand(lr_shape), zero)
    g = mass_function(x, fn)
    factor_capped = scale == "cell" and mode in ("multiplicative", *CELL_MODES)
    if mode == "smooth":
        g = g * _smooth_factor(g, lr0, valid, s, t)
    elif mode == "filled":
        g = _smooth_fill(g, lr0, valid, s, t)
    if mode in CELL_MODES:
        mode = "multiplicative"
    if mode == "softmax":
        peak = _region(torch.where(valid, _block_max(g, s, t), zero), scale, "max")
        g = torch.exp(g - repeat_blocks(peak, s, t).detach())
    target = _region(weight * lr0, scale)
    have = _region(weight * coarsen(g, s, t), scale)
    count = _region(weight, scale).clamp_min(1)
    if mode == "additive":
        out = g + repeat_blocks((target - have) / count, s, t)
    else:
        wet = have > DRY_MASS
        factor = target / torch.where(wet, have, torch.ones((), dtype=work, device=x.device))
        if factor_capped:
            short = torch.where(wet & (factor > FACTOR_CAP), target - FACTOR_CAP * have, zero)
            scaled = g * repeat_blocks(factor.clamp(max=FACTOR_CAP), s, t) + _along_lr(short, lr0, s, t)
        else:
            scaled = g * repeat_blocks(factor, s, t)
        out = torch.where(repeat_blocks(wet, s, t), scaled, repeat_blocks(target / count, s, t))
    return torch.where(repeat_blocks(valid, s, t), out, x)
