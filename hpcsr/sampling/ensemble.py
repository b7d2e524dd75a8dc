"""Super-resolution of an LR sequence into an HR ensemble over the full domain.

For every target LR block n (time tau) the model sees the L + F LR frames at tau + (j - L + 1) *
block for j = 0..L+F-1 (L = recipe context, F = the export's future frames); frames absent from
the input are all-NaN, and NaN cells are masked by the networks (never propagated). Per target:

1. mean: the mean network on every tile (batched), tiles overlapping by half their side
   (`overlap`, tiles.mean_overlap), blended into the domain (tiles.py); with model.mean_skip
   'motion' its start along the rain's motion is computed over the whole domain. With
   `mean_symmetries` 8 each tile's mean is the network's self-ensemble over the 8 symmetries of the
   square (hpcsr.symmetry), not the default: measured on KNMI (s45's exports, s49), RMSE -1.2 / +0.1
   / -0.2 % at (4, 1) / (4, 2) / (8, 2) and the (4, 1) ensemble's fair CRPS -1.8 %, but the mean's
   LR-cell seam ratio rises at every pair (1.091 / 1.060 / 1.080 -> 1.098 / 1.080 / 1.100: a
   smoother inside of the cells, the same steps at their edges), for 8 x the mean's cost;
2. ensemble members: the residual diffusion runs over the WHOLE domain at once (the tiles'
   conditions are kept up to `condition_cache_mb`, re-encoded at each step beyond it). At every sampler
   step the state is cut into the overlapping tiles, the denoiser predicts v on each (tiles
   batched, conditioned on the tile's LR and the blended mean), and the v tiles are blended back
   with windows of the same kind (as CorrDiff's patch-based sampling). `residual_overlap` sets the
   denoiser's overlap (by default ~1/4 tile, tiles.default_overlap, narrower than the mean's half):
   a narrower overlap gives more weight to the outputs near a tile's edge, where the denoiser lacks context, which adds
   small-scale power and shows the tile edges. Measured on KNMI at (4, 2)
   (benchmarks/skill_experiment.py, s45's exports): 4 / 8 (default) / 16 px, members' power at 2 px
   .. the LR cell 0.62-0.99 / 0.51-0.79 / 0.48-0.74 x the truth's, their tile seam ratio at both
   tilings' edges 1.20 / 1.07 / 1.02, fair CRPS 0.530 / 0.531 / 0.533 x bicubic's MAE. The blend
   itself costs no power: each overlap cut at its middle instead (every pixel from the one tile
   it lies deepest in) gave 0.50-0.81, and the cut showed (seams 1.11). The domain is one consistent field
   at every step: no seams and no drop of ensemble spread in the overlaps, which independent
   tiles averaged afterwards would give.
3. output = mean + sigma * residual widened by the spread gain g and taken to mm (hpcsr.spread: in mm
   relu(M + g (X - M)), M and X the mean's and the member's rain), sigma the residual's scale (one
   number, or with model.residual_norm 'local' a field computed once per target over the whole domain
   from the blended mean and the LR: hpcsr.models.residual_scale), g the export's gain fitted on its
   validation patches (`spread_gain`, hpcsr.train.calibration, in the space it records), then the mass transform
   (hpcsr.mass.conserve with the recipe's mass function) over the full domain at the chosen scale:
   'cell' each s x s x t block (exact per LR cell), 'frame' the whole domain of the target block,
   'image' the author's patch scale, 'none' skips it (the export's recipe chooses: 'cell' unless trained
   otherwise; at 'cell' the default mode is 'smooth', a factor field continuous across cell edges, so
   no seams at the LR grid). 'cell' and 'frame' match masses exactly
   (float32 rounding). 'image' by default transforms each overlapping sampling tile on its own
   (as the author transforms each patch), blends the tiles with the sampling windows, then
   rescales the domain to its exact LR total: no seams, tile masses conserved to within the
   blending (the evaluation's tile mass error measures it). With `mass_region` R it instead
   partitions the domain into R x R LR-cell regions matched exactly; a mass function other than
   the identity then changes level from region to region, which shows as seams.
4. masking: HR pixels under a NaN target LR cell are NaN (counted); with context='strict' also those
   under a cell that is NaN in any context frame. The mean (precip_mean) gets steps 3-4 as well, its
   mass transform in `mean_mass_mode` (default: 'filled' where members get 'smooth', hpcsr.mass: an
   estimate may carry light rain where members are dry, and it shows fewer cell edges).

Reproducibility: the noise of member m at target time tau comes from its own generator, seeded by
SeedSequence(seed, spawn_key=(m, tau)); it does not depend on the batch size, on the number of
ranks, on which other times or members are sampled, only on the device type (CPU vs CUDA random
streams) and on the tiling (tile, overlap, residual_overlap), which shapes the field.

Work split: units (target, member) of a chunk of targets go round-robin to the ranks; each rank
samples one unit at a time and rank 0 gathers (gloo, CPU tensors) and writes the members of every
round as they come, so no process holds more than `world` members (plus the chunk's means): a
full-domain ensemble never has to fit in memory.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

from hpcsr.coarsen import repeat_blocks
from hpcsr.diffusion import check_eta, check_sampler, draw
from hpcsr.factors import MassFunction
from hpcsr.mass import CELL_MODES, SCALES, conserve, default_mode, estimate_mode
from hpcsr.models.inputs import prepare_lr
from hpcsr.motion import field_start
from hpcsr.sampling.checks import input_pixel_level
from hpcsr.sampling.inputs import LRSequence
from hpcsr.sampling.tiles import WINDOWS, Blender, TileLayout, default_overlap, mean_overlap
from hpcsr.spread import DEFAULT_SPACE, LEGACY_SPACE, check_space, widened_mm
from hpcsr.symmetry import check_symmetries

log = logging.getLogger(__name__)

MASS_SCALES = SCALES + ("none",)
CONTEXT_POLICIES = ("mask", "strict")


@dataclass
class SampleConfig:
    """How to sample; every field is recorded in the output's attributes."""

    members: int = 10  # ensemble members
    sampler: str = "dpmpp2m_ddim"  # 'dpmpp2m_ddim' / 'dpmpp2m' / 'ddim' (fast, `steps` steps) or 'ddpm' (every step)
    steps: int = 10  # sampler steps (ignored by 'ddpm'); DPM-Solver++(2M) is accurate at 10 (benchmarks/sample.py)
    eta: float = 0.0  # DDIM noise (0 deterministic given the start noise, 1 ancestral)
    seed: int = 0  # base seed of the per-(member, time) generators
    mass: str | None = (
        None  # mass-transform scale: image, frame, cell or none (None: the export's recipe, cell by default)
    )
    mass_mode: str | None = (
        None  # mass-transform mode (see hpcsr.mass; None: smooth at cell scale, else multiplicative)
    )
    mean_mass_mode: str | None = None  # the mean's mode (None: 'filled' beside members' 'smooth', else the same)
    mass_region: int | None = None  # image scale: exact regions of this side in LR cells (None: blended sampling tiles)
    tile: int | None = None  # HR tile side, multiple of s (None: the recipe's patch)
    overlap: int | None = None  # HR overlap of the mean network's tiles, multiple of s (None: half the tile)
    residual_overlap: int | None = None  # the denoiser's (None: ~1/4 tile, >= 2 LR cells, <= half the tile)
    window: str = "cosine"  # blending window: cosine (raised cosine ramps) or uniform (plain average)
    batch: int = 16  # tiles per network forward
    context: str = "mask"  # missing context frames/cells: 'mask' (the networks mask them) or 'strict' (output NaN)
    time_chunk: int | None = None  # target blocks gathered and written at once (None: enough to feed every rank twice)
    condition_cache_mb: float = (
        1024.0  # denoiser conditions kept per target (MB); tiles beyond are re-encoded each step
    )
    spread_gain: float | None = None  # residual gain (None: the export's calibrated gain for this sampler, else 1)
    mean_symmetries: int = 1  # 8: the mean network's estimate averaged over the 8 symmetries of the square

    def __post_init__(self):
        if isinstance(self.members, bool) or not isinstance(self.members, int) or self.members < 1:
            raise ValueError(f"members={self.members!r} must be a positive integer")
        check_sampler(self.sampler)
        check_eta(self.sampler, self.eta)
        if self.mass is not None and self.mass not in MASS_SCALES:
            raise ValueError(f"mass scale {self.mass!r} unknown: use one of {', '.join(MASS_SCALES)}")
        if self.context not in CONTEXT_POLICIES:
            raise ValueError(f"context policy {self.context!r} unknown: use one of {', '.join(CONTEXT_POLICIES)}")
        if self.window not in WINDOWS:
            raise ValueError(f"blend window {self.window!r} unknown: use one of {', '.join(WINDOWS)}")
        if self.batch < 1:
            raise ValueError(f"batch={self.batch} must be >= 1 tile per forward")
        if self.seed < 0:
            raise ValueError(f"seed={self.seed} must be >= 0")
        if self.mass_region is not None and self.mass_region < 1:
            raise ValueError(f"mass_region={self.mass_region} must be >= 1 LR cell")
        if self.time_chunk is not None and self.time_chunk < 1:
            raise ValueError(f"time_chunk={self.time_chunk} must be >= 1 target block")
        if not self.condition_cache_mb >= 0:
            raise ValueError(f"condition_cache_mb={self.condition_cache_mb} must be >= 0 (0: re-encode every step)")
        check_symmetries(self.mean_symmetries)
        if self.spread_gain is not None and not (0 < self.spread_gain < math.inf):
            raise ValueError(f"spread_gain={self.spread_gain} must be a positive number (1: the residual as sampled)")


def unit_generator(seed: int, member: int, time_s: int, device) -> torch.Generator:
    """The noise generator of one member at one target time (see the module docstring)."""
    state = np.random.SeedSequence(seed, spawn_key=(member, int(time_s) % 2**64)).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & (2**63 - 1))


def target_times(seq: LRSequence, time_range=None) -> np.ndarray:
    """Target block end times: a regular axis from the first to the last input block, restricted to
    blocks whose HR steps all lie in `time_range` (start, end) of HR step end times (inclusive)."""
    block = seq.block_s
    off = (seq.times - seq.times[0]) % block
    if off.any():
        bad = seq.times[np.flatnonzero(off)[0]].astype("datetime64[s]")
        raise ValueError(
            f"LR block time {bad} is off the regular {block // 60} min block axis that starts at "
            f"{seq.times[0].astype('datetime64[s]')}: LR times must be block ends, t={seq.pair.t} HR steps apart"
        )
    times = np.arange(seq.times[0], seq.times[-1] + 1, block, dtype=np.int64)
    if time_range is not None:
        start, end = (int(np.datetime64(v, "s").astype(np.int64)) for v in time_range)
        first_step = times - (seq.pair.t - 1) * seq.hr_step_s
        times = times[(first_step >= start) & (times <= end)]
        if len(times) == 0:
            raise ValueError(
                f"no LR block lies inside --time-range {time_range[0]} .. {time_range[1]}: the input covers "
                f"{(seq.times[0] - seq.block_s + seq.hr_step_s).astype('datetime64[s]')} .. "
                f"{seq.times[-1].astype('datetime64[s]')}"
            )
    return times


def _nbytes(cond) -> int:
    return sum(t.nbytes for t in (cond.constant, *cond.context, cond.context_emb))


class Conditions:
    """The denoiser's conditions of one target, one per network batch: computed once and kept while
    they fit in `budget_mb`, encoded again at each use beyond it. The context encoder's features of
    every tile of a large domain (about 8 MB per tile at the default size, 3.8 GB at 1536 x 1536) would
    otherwise grow with the domain; the budget bounds them, at the price of re-encoding the rest."""

    def __init__(self, sampler: "EnsembleSampler", lr_z: torch.Tensor, mean: torch.Tensor, budget_mb: float):
        self.sampler, self.lr_z, self.mean = sampler, lr_z, mean
        self.kept, used = [], 0
        for first, count in sampler.batches(sampler.residual_layout):
            cond = sampler.condition(lr_z, mean, first, count)
            used += _nbytes(cond)
            if used > budget_mb * 2**20:
                break
            self.kept.append(cond)

    def __getitem__(self, k: int):
        if k < len(self.kept):
            return self.kept[k]
        first, count = self.sampler.batches(self.sampler.residual_layout)[k]
        return self.sampler.condition(self.lr_z, self.mean, first, count)


def spread_space(export) -> str:
    """Where the spread gain widens the members (hpcsr.spread): the space the export's calibration was
    fitted in (an export calibrated before s38 names none: normalised), mm without a calibration."""
    fitted = export.metadata.get("spread_calibration")
    space = fitted.get("space", LEGACY_SPACE) if fitted else DEFAULT_SPACE
    check_space(space)  # an export naming another space is refused before any member is drawn
    return space


def spread_gain(export, cfg: SampleConfig, steps: int) -> tuple[float, str]:
    """The residual gain and where it comes from: cfg.spread_gain when set, else the export's
    calibrated gain (hpcsr.train.calibration) when it was measured with this sampler, steps and eta,
    else 1 (said in the log: a gain measured with another sampler does not carry over). Either is
    applied in the export's `spread_space`."""
    if cfg.spread_gain is not None:
        return float(cfg.spread_gain), "sample.spread_gain"
    fitted = export.metadata.get("spread_calibration")
    if not fitted:
        return 1.0, "none (the export has no spread calibration)"
    same = cfg.sampler == fitted["sampler"] and (cfg.sampler == "ddpm" or steps == fitted["steps"])
    if not (same and math.isclose(cfg.eta, fitted["eta"])):
        log.warning(
            "export %s calibrated its spread gain %.3g with sampler %s, %d steps, eta %g; this run samples "
            "with %s, %d steps, eta %g: gain 1 (set sample.spread_gain to choose one)",
            export.path,
            fitted["gain"],
            fitted["sampler"],
            fitted["steps"],
            fitted["eta"],
            cfg.sampler,
            steps,
            cfg.eta,
        )
        return 1.0, f"none (calibrated for {fitted['sampler']}, {fitted['steps']} steps, eta {fitted['eta']:g})"
    return float(fitted["gain"]), "export calibration on its validation patches"


class EnsembleSampler:
    """Holds the model, the tiling and the settings; samples one target block at a time."""

    def __init__(self, export, seq: LRSequence, cfg: SampleConfig, device="cpu"):
        self.export, self.seq, self.cfg = export, seq, cfg
        self.device = torch.device(device)
        self.model = export.build_model().to(self.device)
        self.recipe = export.recipe
        if cfg.mass is None:  # the export's recipe says where its outputs match the LR mass
            self.cfg = cfg = replace(cfg, mass=self.recipe.mass_scale)
        if cfg.mass_mode is None:  # per cell, a factor field continuous across cell edges (no seams)
            self.cfg = cfg = replace(cfg, mass_mode=default_mode(cfg.mass))
        if cfg.mean_mass_mode is None:  # an estimate: fewer cell edges, light rain allowed where members are dry
            self.cfg = cfg = replace(cfg, mean_mass_mode=estimate_mode(cfg.mass_mode))
        for mode in (cfg.mass_mode, cfg.mean_mass_mode):
            if mode in CELL_MODES and cfg.mass != "cell":
                raise ValueError(f"mass mode {mode!r} works per LR cell: use mass scale 'cell', not {cfg.mass!r}")
        self.normaliser = export.normaliser
        self.s, self.t = self.recipe.pair.s, self.recipe.pair.t
        if self.model.cfg.static_channels:
            raise ValueError(
                f"export {export.path} needs {self.model.cfg.static_channels} static fields; hpcsr sample "
                "has no static input yet: use an export trained with model.static_channels=0"
            )
        if self.model.cfg.pixel_input:  # the networks are told the input's pixel size
            self.model.pixel_level = input_pixel_level(seq)
            log.info("model.pixel_input: told the HR pixel size 2^%.3f km", self.model.pixel_level)
        self.past = self.recipe.context
        self.frames = self.model.frames  # context + future frames
        tile = cfg.tile if cfg.tile is not None else self.recipe.patch
        overlap = cfg.overlap if cfg.overlap is not None else mean_overlap(tile, self.s)
        residual_overlap = cfg.residual_overlap if cfg.residual_overlap is not None else default_overlap(tile, self.s)
        ny, nx = seq.shape
        self.layout = TileLayout(self.s, ny, nx, tile, overlap, cfg.window)  # the mean network's tiles
        self.blender = Blender(self.layout, self.device)
        self.residual_layout = TileLayout(self.s, ny, nx, tile, residual_overlap, cfg.window)  # the denoiser's
        self.residual_blender = Blender(self.residual_layout, self.device)
        self.warn_off_patch_tiles()
        schedule = self.model.schedule
        self.steps = schedule.steps if cfg.sampler == "ddpm" else cfg.steps
        if not isinstance(self.steps, int) or not 1 <= self.steps <= schedule.steps:
            raise ValueError(f"steps={cfg.steps!r} must be an integer in 1..{schedule.steps} (the schedule's length)")
        self.gain, self.gain_source = spread_gain(export, cfg, self.steps)
        self.gain_space = spread_space(export)
        if "denoiser" not in export.metadata.get("trained", ["denoiser"]):
            log.warning(
                "export %s is stage %r: its denoiser was not trained, members are the mean plus untrained "
                "residuals; use the diffusion (or joint) stage's export",
                export.path,
                export.metadata.get("stage"),
            )

    def warn_off_patch_tiles(self) -> None:
        """A warning when the tiles the networks see differ from their training patch (`recipe.patch`)
        where the domain would allow patch-sized ones: GroupNorm takes its statistics over the whole
        tile, so another size changes what every pixel is normalised by (s47: the 128 px KNMI crop as one
        tile left the (4, 2) / (8, 2) ensembles 1.5-1.8 x too wide, fair CRPS 0.53 / 0.57 -> 0.64 / 0.69
        x bicubic's MAE), and a smaller tile also gives the networks less context than in training."""
        patch, side = self.recipe.patch, self.layout.tile
        rows, cols = (c * self.s for c in self.layout.cells)
        possible = tuple(min(patch, px) for px in self.layout.hr_shape)
        if side != patch and (rows, cols) != possible:
            log.warning(
                "sampling tiles of %d px, the export trained on %d px patches: the networks' GroupNorm statistics "
                "then span fields of another size than in training, which changes their output (on held-out radar "
                "a 4 x larger tile left the ensembles 1.5-1.8 x too wide); keep the default tile (the training "
                "patch) unless you have measured yours",
                side,
                patch,
            )

    # ------------------------------------------------------------------ inputs

    def context_frames(self, times: np.ndarray) -> tuple[np.ndarray, int]:
        """LR context (n, frames, ny, nx) in mm for target `times`, NaN where absent; and the number of
        absent context frames (not counting absent targets)."""
        seq = self.seq
        position = {int(v): i for i, v in enumerate(seq.times)}
        offsets = (np.arange(self.frames) - (self.past - 1)) * seq.block_s
        wanted = [[position.get(int(tau + o)) for o in offsets] for tau in times]
        needed = sorted({p for row in wanted for p in row if p is not None})
        read = dict(zip(needed, seq.read(np.asarray(needed, np.int64)))) if needed else {}
        out = np.full((len(times), self.frames, *seq.shape), np.nan, np.float32)
        absent = 0
        for n, row in enumerate(wanted):
            for j, p in enumerate(row):
                if p is not None:
                    out[n, j] = read[p]
                elif j != self.past - 1:
                    absent += 1
        return out, absent

    def tiles_of(self, field: torch.Tensor, first: int, count: int, hr: bool, layout=None) -> torch.Tensor:
        """Tiles first..first+count-1 of `layout` (default the mean's) of `field` (..., Y, X) or
        (..., ny, nx), stacked on a new dim 0."""
        layout = layout or self.layout
        slices = layout.hr_slices if hr else layout.lr_slices
        return torch.stack([field[(..., *slices(k))] for k in range(first, first + count)])

    def batches(self, layout=None):
        """(first tile, tile count) of every network batch over `layout` (default the mean's)."""
        K, b = len(layout or self.layout), self.cfg.batch
        return [(i, min(b, K - i)) for i in range(0, K, b)]

    # ------------------------------------------------------------------ networks

    @torch.no_grad()
    def mean_field(self, lr_z: torch.Tensor) -> torch.Tensor:
        """Blended mean (t, Y, X) in normalised units from one target's LR context (frames, ny, nx);
        with model.mean_skip 'motion' (t > 1) the start along the motion is computed over the whole
        domain first (its motion is the domain's, as in training the shard's) and cut like the LR."""
        out = torch.zeros(self.t, *self.layout.hr_shape, device=self.device)
        start = None
        if self.model.cfg.motion_start(self.t):
            start = field_start(
                lr_z, self.s, self.t, self.model.target, self.model.cfg.upsample, space=self.model.start_space
            )
        for first, count in self.batches():
            tiles = None if start is None else self.tiles_of(start, first, count, hr=True)
            self.blender.blend(
                self.model.predict_mean(
                    self.tiles_of(lr_z, first, count, hr=False), start=tiles, symmetries=self.cfg.mean_symmetries
                ),
                first,
                out,
            )
        return out

    @torch.no_grad()
    def condition(self, lr_z: torch.Tensor, mean: torch.Tensor, first: int, count: int):
        """The denoiser's condition of its tiles first..first+count-1 of one target."""
        layout = self.residual_layout
        lr_up, lr_valid = prepare_lr(self.tiles_of(lr_z, first, count, False, layout), self.s, self.model.cfg.upsample)
        pixel = self.model.pixel_levels(lr_up.shape[0], lr_up.device)
        return self.model.denoiser.encode(
            lr_up, lr_valid, None, self.tiles_of(mean, first, count, True, layout), self.model.target, pixel
        )

    def conditions(self, lr_z: torch.Tensor, mean: torch.Tensor) -> "Conditions":
        """The denoiser's per-tile conditions of one target, one per network batch."""
        return Conditions(self, lr_z, mean, self.cfg.condition_cache_mb)

    @torch.no_grad()
    def residual_sigma(self, lr_z: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """The residual's scale (t, Y, X) or scalar over the whole domain of one target, from its LR
        context (frames, ny, nx) and blended mean (t, Y, X): one field, so no seams between tiles."""
        lr_up, lr_valid = prepare_lr(lr_z[None], self.s, self.model.cfg.upsample)
        sigma = self.model.residual_sigma(lr_up, lr_valid, mean[None])
        return sigma[0] if sigma.dim() else sigma

    @torch.no_grad()
    def residual(self, conds: list, sigma: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One member's residual (t, Y, X) over the whole domain (tiled denoiser, blended outputs) times
        the residual's scale `sigma`."""
        model, cfg = self.model, self.cfg
        shape = (1, self.t, *self.layout.hr_shape)

        def predict_v(x, n):
            out = torch.zeros(shape[1:], device=self.device)
            for k, (first, count) in enumerate(self.batches(self.residual_layout)):
                cond = conds[k]
                tiles = self.tiles_of(x[0], first, count, True, self.residual_layout)
                self.residual_blender.blend(model.denoiser(tiles, n.expand(count), cond).float(), first, out)
            return model.v_from_output(x, n, out[None])  # linear in the output: blending commutes

        r = draw(cfg.sampler, predict_v, model.schedule, shape, self.steps, cfg.eta, generator, self.device)
        return sigma * r[0]

    # ------------------------------------------------------------------ physical output

    def mask(self, lr_mm: torch.Tensor) -> torch.Tensor:
        """HR mask (t, Y, X) of the pixels to set NaN for one target's context (frames, ny, nx) in mm."""
        bad = ~torch.isfinite(lr_mm[self.past - 1])
        if self.cfg.context == "strict":
            bad = bad | (~torch.isfinite(lr_mm)).any(dim=0)
        return repeat_blocks(bad[None], self.s, self.t)

    def mass_transform(self, x: torch.Tensor, lr: torch.Tensor, mode: str) -> torch.Tensor:
        """x (t, Y, X) mm with the mass of lr (1, ny, nx) at the configured scale, in `mode`."""
        cfg, s = self.cfg, self.s
        fn = self.recipe.mass
        if cfg.mass == "none":
            return x
        if cfg.mass != "image":
            return conserve(x, lr, s, self.t, fn, cfg.mass, mode)
        R = cfg.mass_region
        if R is None:
            out = torch.zeros_like(x)
            for first, count in self.batches():
                tiles = conserve(
                    self.tiles_of(x, first, count, hr=True),
                    self.tiles_of(lr, first, count, hr=False),
                    s,
                    self.t,
                    fn,
                    "image",
                    mode,
                )
                self.blender.blend(tiles, first, out)
            return conserve(out, lr, s, self.t, MassFunction(), "frame")  # a rescale by ~1: the exact domain total
        out = torch.empty_like(x)
        ny, nx = lr.shape[-2:]
        for r0 in range(0, ny, R):
            for c0 in range(0, nx, R):
                ys, xs = slice(r0 * s, min(r0 + R, ny) * s), slice(c0 * s, min(c0 + R, nx) * s)
                out[:, ys, xs] = conserve(x[:, ys, xs], lr[:, r0 : r0 + R, c0 : c0 + R], s, self.t, fn, "image", mode)
        return out

    def mean_mm(self, z: torch.Tensor, lr_mm: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The mean (normalised, t, Y, X) -> relu(mm) -> mass transform in the mean's mode -> NaN where masked."""
        return self.delivered(torch.relu(self.normaliser.inverse(z)), lr_mm, mask, self.cfg.mean_mass_mode)

    def member_mm(self, mean: torch.Tensor, residual: torch.Tensor, lr_mm: torch.Tensor, mask: torch.Tensor):
        """One member from the mean and its residual (normalised, t, Y, X): widened by the spread gain in
        its space (hpcsr.spread), relu(mm) -> mass transform -> NaN where masked."""
        member = widened_mm(mean, residual, self.gain, self.normaliser, self.gain_space)
        return self.delivered(member, lr_mm, mask, self.cfg.mass_mode)

    def delivered(self, mm: torch.Tensor, lr_mm: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
        mm = self.mass_transform(mm, lr_mm[self.past - 1][None], mode)
        return torch.where(mask, torch.full_like(mm, float("nan")), mm)

    # ------------------------------------------------------------------ settings record

    def attributes(self) -> dict:
        meta = self.export.metadata
        cfg = self.cfg
        fn = self.recipe.mass
        return {
            "factor_pair": self.recipe.pair.name,
            "factor_s": self.s,
            "factor_t": self.t,
            "model_export": str(self.export.path),
            "model_config_hash": meta.get("config_hash", ""),
            "model_stage": meta.get("stage", ""),
            "model_step": meta.get("step", -1),
            "model_lineage": meta.get("lineage", []),
            "model_config": meta.get("model", {}),
            "model_recipe": {
                **meta.get("recipe", {}),
                "mass": {"power": fn.power, "offset": fn.offset, "cap": str(fn.cap)},
            },
            "model_normalisation": {k: v for k, v in meta.get("normalisation", {}).items() if k != "stats"},
            "context_frames": self.recipe.context,
            "future_frames": self.frames - self.recipe.context,
            "sampler": cfg.sampler,
            "sampler_steps": self.steps,
            "eta": cfg.eta,
            "mean_symmetries": cfg.mean_symmetries,
            "spread_gain": self.gain,
            "spread_gain_source": self.gain_source,
            "spread_gain_space": self.gain_space,
            "seed": cfg.seed,
            "seed_rule": "member m at target block end tau: torch generator seeded from "
            "numpy SeedSequence(seed, spawn_key=(m, tau seconds since 1970))",
            "mass_scale": cfg.mass,
            "mass_mode": cfg.mass_mode,
            "mean_mass_mode": cfg.mean_mass_mode,
            "mass_function": fn.label,
            "mass_region_cells": (cfg.mass_region or 0) if cfg.mass == "image" else 0,
            "mass_image_rule": (
                "sampling tiles, blended, domain total exact"
                if cfg.mass_region is None
                else "exact partition in regions"
            )
            if cfg.mass == "image"
            else "",
            "tile": self.layout.tile,
            "overlap": self.layout.overlap,
            "residual_overlap": self.residual_layout.overlap,
            "blend_window": cfg.window,
            "tiles_per_frame": len(self.layout),
            "residual_tiles_per_frame": len(self.residual_layout),
            "context_policy": cfg.context,
            "config": asdict(cfg),
        }


def chunk_size(cfg: SampleConfig, world: int) -> int:
    return cfg.time_chunk or max(1, math.ceil(2 * world / cfg.members))


def _members(sampler: EnsembleSampler, block, units, lr_mm, lr_z, means, masks, bar):
    """Yield each member (t, Y, X) in mm of the (target index, member) `units`, in order, one at a time."""
    current = None  # (target index, its denoiser conditions, residual scale): members of one target follow each other
    for n, m in units:
        if masks[n].all():  # nothing to predict (target block missing): skip the sampler
            member = torch.full((sampler.t, *sampler.layout.hr_shape), float("nan"))
        else:
            if current is None or current[0] != n:
                current = (n, sampler.conditions(lr_z[n], means[n]), sampler.residual_sigma(lr_z[n], means[n]))
            gen = unit_generator(sampler.cfg.seed, m, int(block[n]), sampler.device)
            residual = sampler.residual(current[1], current[2], gen)
            member = sampler.member_mm(means[n], residual, lr_mm[n], masks[n]).cpu()
        bar.update(1)
        yield member


def _gather(member: torch.Tensor | None, shape: tuple, rank: int, world: int, group) -> list:
    """Rank 0 gets every rank's member of this round (NaN for a rank that had none left); others get []."""
    member = torch.full(shape, float("nan")) if member is None else member
    if world == 1:
        return [member]
    import torch.distributed as dist

    gathered = [torch.empty_like(member) for _ in range(world)] if rank == 0 else None
    dist.gather(member, gathered, dst=0, group=group)
    return gathered or []


def sample_sequence(
    sampler: EnsembleSampler,
    times: np.ndarray,
    writer=None,
    rank: int = 0,
    world: int = 1,
    group=None,
    progress: bool = True,
) -> dict:
    """Sample every (target, member) of `times`, split over `world` ranks; rank 0 writes each member
    as it comes and each chunk's mean through `writer` and gets the counts of masked values back (other ranks get {})."""
    t, M, past = sampler.t, sampler.cfg.members, sampler.past
    Y, X = sampler.layout.hr_shape
    chunk = chunk_size(sampler.cfg, world)
    starts = range(0, len(times), chunk)
    counts = dict.fromkeys(
        (
            "absent_target_blocks",
            "masked_target_cells",
            "targets_with_incomplete_context",
            "absent_context_frames",
            "masked_pixels_per_member",
        ),
        0,
    )
    counts = {"target_blocks": len(times), **counts}
    present = set(int(v) for v in sampler.seq.times)
    mine_total = sum(len(range(rank, len(times[c : c + chunk]) * M, world)) for c in starts)
    bar = tqdm(
        total=mine_total,
        desc="sampling" if world == 1 else "sampling (rank 0's share)",
        unit="member",
        disable=not progress or rank != 0,
    )
    for c in starts:
        block = times[c : c + chunk]
        lr_np, absent = sampler.context_frames(block)
        lr_mm = torch.from_numpy(lr_np).to(sampler.device)
        lr_z = sampler.normaliser.forward(lr_mm)
        units = [(n, m) for n in range(len(block)) for m in range(M)]
        mine = units[rank::world]
        needed = range(len(block)) if rank == 0 else sorted({n for n, _ in mine})
        means = {n: sampler.mean_field(lr_z[n]) for n in needed}
        masks = {n: sampler.mask(lr_mm[n]) for n in needed}
        members = _members(sampler, block, mine, lr_mm, lr_z, means, masks, bar)
        for first in range(0, len(units), world):  # one member per rank at a time: rank 0 writes them
            gathered = _gather(next(members, None), (t, Y, X), rank, world, group)
            for (n, m), member in zip(units[first : first + world], gathered):
                if writer is not None:
                    writer.write_member((c + n) * t, m, member.numpy())
        if rank != 0:
            continue
        mean = np.concatenate([sampler.mean_mm(means[n], lr_mm[n], masks[n]).cpu().numpy() for n in range(len(block))])
        masked = np.concatenate([masks[n].sum(dim=(-2, -1)).cpu().numpy() for n in range(len(block))]).astype(np.int32)
        if writer is not None:
            writer.write_mean(c * t, mean, masked)
        context = np.delete(lr_np, past - 1, axis=1)
        counts["absent_target_blocks"] += sum(int(v) not in present for v in block)
        counts["masked_target_cells"] += int(np.isnan(lr_np[:, past - 1]).sum())
        counts["targets_with_incomplete_context"] += int(np.isnan(context).any(axis=(1, 2, 3)).sum())
        counts["absent_context_frames"] += absent
        counts["masked_pixels_per_member"] += int(masked.sum())
    bar.close()
    return counts if rank == 0 else {}
