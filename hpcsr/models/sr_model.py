"""SRModel: the mean network, the residual denoiser and the noise schedule of one factor pair,
with the training losses and the sampler entry point. All tensors are in normalised units.
The diffusion runs on (hr - mean) / sigma with sigma the residual's scale: one global standard
deviation or a per-pixel field (`residual_sigma`, hpcsr.models.residual_scale); at dry HR pixels
model.dry_offset units lower (`diffused_residual`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hpcsr.diffusion import (
    NoiseSchedule,
    check_sampler,
    draw,
    output_from_v,
    v_from_output,
    v_from_x0_eps,
)
from hpcsr.diffusion.noise_levels import NoiseLevels
from hpcsr.factors import Recipe
from hpcsr.models import residual_scale
from hpcsr.models.blocks import crop
from hpcsr.models.config import ModelConfig
from hpcsr.models.denoiser import Denoiser
from hpcsr.models.inputs import check_hr_like, check_lr, check_static, prepare_lr
from hpcsr.models.mean_net import MeanNet
from hpcsr.models.start_space import StartSpace
from hpcsr.symmetry import SYMMETRIES, check_symmetries, self_ensemble

DRY_TOLERANCE = 1e-6  # normalised units: HR values this close above the normalised 0 mm count as dry


def check_window(window, shape) -> None:
    """A (top, left, h, w) window must lie inside a field of `shape` (H, W) and be non-empty."""
    top, left, h, w = (int(v) for v in window)
    H, W = shape
    if not (0 <= top and 0 <= left and h > 0 and w > 0 and top + h <= H and left + w <= W):
        raise ValueError(f"window {tuple(window)} (top, left, h, w) must lie inside the {H} x {W} field")


def masked_mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of (pred - target)^2 over the valid entries (0 when none is valid); float32."""
    zero = torch.zeros((), device=pred.device)
    diff = torch.where(valid, pred.float() - torch.where(valid, target.float(), zero), zero)
    return diff.pow(2).sum() / valid.sum().clamp_min(1)


class SRModel(nn.Module):
    """lr (B, frames, Y/s, X/s) with frames = recipe.context + future_context: the L frames up to and
    including the target frame (index L-1), then `future_context` later frames. NaN marks missing
    LR values. hr and means are (B, t, Y, X); static fields, if configured, (B, S, Y, X).
    A `generator` must live on the device of the data (torch's rule for random draws)."""

    def __init__(self, cfg: ModelConfig, recipe: Recipe, future_context: int = 0, normaliser=None):
        super().__init__()
        if future_context < 0:
            raise ValueError(f"future_context={future_context} must be >= 0")
        self.cfg, self.recipe = cfg, recipe
        self.s, self.t = recipe.pair.s, recipe.pair.t
        self.target = recipe.context - 1
        self.future_context = future_context
        self.frames = recipe.context + future_context
        self.mean_net = MeanNet(cfg)
        # the space the mean's start is interpolated in (model.start_unit): it needs the data's
        # normalisation (`normaliser`, hpcsr.data.normalise) to go from the networks' units to mm
        unit = cfg.start_unit_mm
        self.start_space = StartSpace(normaliser, unit) if unit is not None and normaliser is not None else None
        self.denoiser = Denoiser(cfg)
        self.schedule = NoiseSchedule(cfg.schedule, cfg.diffusion_steps, recipe.beta_start, recipe.beta_end)
        # standard deviation of the residual hr - mean on training patches (normalised units), measured
        # when a diffusion stage starts (`measure_residual_std`): the diffusion runs on residual /
        # (residual_std * cfg.residual_scale), unit variance as the noise schedule assumes (CorrDiff).
        # A buffer, so checkpoints and exports carry it.
        self.register_buffer("residual_std", torch.ones((), dtype=torch.float32))
        # cfg.residual_norm 'local': the residual is divided by a per-pixel scale fitted at the same
        # time (hpcsr.models.residual_scale): its coefficients and the normalised value of 0 mm.
        self.register_buffer("residual_coef", torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("residual_dry", torch.zeros((), dtype=torch.float32))
        # model.pixel_input: the HR pixel size the networks are told, log2 of its side in km: a float for
        # every item, or a (B,) tensor per item (mixed shards). The trainer sets it to its shard's and per
        # training batch, the sampler to its input's (`pixel_levels` refuses to run without it).
        self.pixel_level = None

    def pixel_levels(self, batch: int, device) -> torch.Tensor | None:
        """`pixel_level` as (batch,) for the networks; None without model.pixel_input."""
        if not self.cfg.pixel_input:
            return None
        if self.pixel_level is None:
            raise ValueError(
                "model.pixel_input: the networks must be told the HR pixel size; set SRModel.pixel_level "
                "(log2 of the pixel side in km, hpcsr.pixel_size.pixel_level)"
            )
        level = torch.as_tensor(self.pixel_level, dtype=torch.float32, device=device).reshape(-1)
        if level.numel() == 1:
            return level.expand(batch)
        if level.numel() != batch:
            raise ValueError(f"pixel_level has {level.numel()} values for a batch of {batch} items")
        return level

    def _prepare(self, lr, static):
        check_lr(lr, self.frames, self.future_context)
        check_static(static, lr, self.s, self.cfg.static_channels)
        return prepare_lr(lr, self.s, self.cfg.upsample)

    def start_frames(self, lr, start=None):
        """The LR frames (B, F, Y, X) on the HR grid interpolated in the start's space, or None when
        the start is given (`start`) or made of the networks' input (model.start_unit 'network')."""
        if start is not None or self.cfg.start_unit_mm is None:
            return None
        if self.start_space is None:
            raise ValueError(
                f"model.start_unit={self.cfg.start_unit} interpolates the mean's start in log1p(mm / u) and "
                "needs the data's normalisation: build the model with build_model(..., normaliser=)"
            )
        return self.start_space.upsample(lr, self.s, self.cfg.upsample)

    def predict_mean(self, lr, static=None, start=None, symmetries: int = 1, window=None) -> torch.Tensor:
        """The conditional mean (B, t, Y, X); `start` (B, t, Y, X): the motion-compensated start
        (model.mean_skip 'motion' at t > 1, `hpcsr.motion.field_start`; None otherwise). With
        `symmetries` 8, for inference: the mean over the 8 symmetries of the square of the prediction
        for the turned input, turned back (`hpcsr.symmetry.self_ensemble`); 1: the network as it is.
        `window` (top, left, h, w) on the HR grid: the network runs on that part of the prepared
        inputs (and start, static) only and returns (B, t, h, w) (train.mean_grid_shift)."""
        check_symmetries(symmetries)
        if symmetries == SYMMETRIES:
            if window is not None:
                raise ValueError("a training window is not for the self-ensemble")
            return self_ensemble(self.predict_mean, lr, static, start)
        lr_up, lr_valid = self._prepare(lr, static)
        frames = self.start_frames(lr, start)
        if window is not None:
            check_window(window, lr_up.shape[-2:])
            lr_up, lr_valid = crop(lr_up, window), crop(lr_valid, window)
            static, start, frames = (None if x is None else crop(x, window) for x in (static, start, frames))
        pixel = self.pixel_levels(lr.shape[0], lr.device)
        return self.mean_net(lr_up, lr_valid, static, self.t, self.target, start, frames, pixel)

    @property
    def edge_cell(self) -> int:
        """The window (pixels) the residual scale's edge feature averages the mean over."""
        return self.s if self.cfg.residual_edge == "cell" else 1

    @property
    def residual_unit(self) -> torch.Tensor:
        """The global scale of the diffused residual in normalised units (float32 scalar)."""
        return self.residual_std.float() * self.cfg.residual_scale

    def residual_sigma(self, lr_up, lr_valid, mean) -> torch.Tensor:
        """What one unit of the diffused residual is in normalised units at each pixel, (B, t, Y, X)
        (or a scalar for cfg.residual_norm 'global'), from the prepared LR and the mean."""
        if self.cfg.residual_norm == "global":
            return self.residual_unit
        f = residual_scale.features(lr_up, lr_valid, mean, self.target, self.residual_dry.float(), self.edge_cell)
        floor = residual_scale.FLOOR * self.residual_std
        return self.cfg.residual_scale * residual_scale.scale_field(self.residual_coef, f, floor)

    @torch.no_grad()
    def measure_residual_std(self, batches, static=None, dry: float = 0.0) -> float:
        """Set `residual_std` to the standard deviation of hr - mean over the valid entries of the
        (lr, hr) training batches (the mean network's prediction); returns it. Kept at 1 when they
        hold fewer than two valid entries or no variation. With cfg.residual_norm 'local' also fits
        the per-pixel scale's coefficients (`dry`: the normalised value of 0 mm). Batches may carry a
        third item, the mean network's start (`predict_mean`)."""
        total = torch.zeros(3, dtype=torch.float64)  # count, sum, sum of squares
        fit = residual_scale.NonNegativeFit()
        for lr, hr, *start in batches:
            check_hr_like("hr", hr, lr, self.s, self.t)
            lr_up, lr_valid = self._prepare(lr, static)
            start = start[0] if start else None
            frames, pixel = self.start_frames(lr, start), self.pixel_levels(lr.shape[0], lr.device)
            mean = self.mean_net(lr_up, lr_valid, static, self.t, self.target, start, frames, pixel).float()
            valid = torch.isfinite(hr)
            residual = (hr.float() - mean)[valid]
            fit.add(
                residual_scale.features(lr_up, lr_valid, mean, self.target, dry, self.edge_cell)[valid],
                residual_scale.abs_to_sigma(residual),
            )
            residual = residual.double()
            total += torch.stack(
                [torch.tensor(float(residual.numel()), dtype=torch.float64), residual.sum(), residual.pow(2).sum()]
            )
        n, sum_, sq = total.tolist()
        value = math.sqrt(max(sq - sum_ * sum_ / n, 0.0) / (n - 1)) if n > 1 else 0.0
        self.residual_std.fill_(value if math.isfinite(value) and value > 1e-6 else 1.0)
        coef = fit.solve()
        if not (coef > 0).any():  # nothing learned (no variation): the global scale everywhere
            coef = torch.tensor([float(self.residual_std), 0.0, 0.0, 0.0], dtype=torch.float64)
        self.residual_coef.copy_(coef.float())
        self.residual_dry.fill_(dry)
        return float(self.residual_std)

    def v_from_output(self, x, n, out):
        """The v a denoiser output `out` stands for at steps n (N,), state x (N, ...) (model.sigma_data)."""
        a, sigma = self.schedule.coefficients(n, x.dim())
        return v_from_output(x, out.float(), a, sigma, self.cfg.sigma_data)

    def mean_loss(self, lr, hr, static=None, start=None) -> torch.Tensor:
        """MSE of the mean against hr (B, t, Y, X), NaN in hr left out."""
        check_hr_like("hr", hr, lr, self.s, self.t)
        return masked_mse(self.predict_mean(lr, static, start), hr, torch.isfinite(hr))

    def diffused_residual(self, hr, mean, sigma, valid) -> torch.Tensor:
        """What the denoiser learns to draw: (hr - mean) / sigma, 0 where hr is missing, and at dry HR
        pixels (hr at the normalised 0 mm, `residual_dry`) model.dry_offset units lower. Dry is then
        a level below the one that reaches 0 mm instead of at it, so the members' sampling error
        around it stays dry (the sampler's relu) instead of half of it turning into drizzle."""
        hr = hr.float()
        residual = torch.where(valid, hr - mean, torch.zeros((), device=hr.device)) / sigma
        if self.cfg.dry_offset > 0:
            dry = valid & (hr <= self.residual_dry.float() + DRY_TOLERANCE)
            residual = torch.where(dry, residual - self.cfg.dry_offset, residual)
        return residual

    def diffusion_loss(self, lr, hr, mean, generator=None, static=None, levels: NoiseLevels | None = None):
        """MSE of the denoiser's output (v, or EDM's preconditioned output when model.sigma_data is not
        1) on the residual (hr - mean) / residual_unit at a random step drawn by `levels` (default:
        uniform over the schedule, NoiseLevels()). `mean` is a constant here (detached): the mean
        network learns from `mean_loss` only."""
        check_hr_like("hr", hr, lr, self.s, self.t)
        check_hr_like("mean", mean, lr, self.s, self.t)
        lr_up, lr_valid = self._prepare(lr, static)
        mean = mean.detach().float()
        valid = torch.isfinite(hr)
        residual = self.diffused_residual(hr, mean, self.residual_sigma(lr_up, lr_valid, mean), valid)
        B = hr.shape[0]
        steps = (levels or NoiseLevels()).draw(self.schedule, B, generator, hr.device)
        eps = torch.randn(residual.shape, generator=generator, device=hr.device, dtype=torch.float32)
        a, sigma = self.schedule.coefficients(steps, residual.dim())
        noisy = a * residual + sigma * eps
        cond = self.denoiser.encode(lr_up, lr_valid, static, mean, self.target, self.pixel_levels(B, hr.device))
        target = output_from_v(noisy, v_from_x0_eps(residual, eps, a, sigma), a, sigma, self.cfg.sigma_data)
        return masked_mse(self.denoiser(noisy, steps, cond), target, valid)

    @torch.no_grad()
    def sample(
        self,
        lr,
        members: int,
        sampler: str = "ddim",
        steps: int = 50,
        eta: float = 0.0,
        generator=None,
        mean=None,
        static=None,
        start=None,
    ):
        """`members` samples per item: mean + residual, (B, members, t, Y, X), before
        denormalisation, relu and the mass transform. 'ddim' (`steps` steps, noise `eta`),
        'dpmpp2m' and 'dpmpp2m_ddim' (`steps` steps, deterministic, more accurate at few steps) are
        fast; 'ddpm' (the paper's) runs every step of the schedule (hpcsr.diffusion.samplers).
        `mean` (B, t, Y, X) skips the mean network; else `start` is its start (`predict_mean`)."""
        check_sampler(sampler)  # before any network runs
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise ValueError(f"members={members!r} must be a positive integer")
        lr_up, lr_valid = self._prepare(lr, static)
        pixel = self.pixel_levels(lr.shape[0], lr.device)
        if mean is None:
            frames = self.start_frames(lr, start)
            mean = self.mean_net(lr_up, lr_valid, static, self.t, self.target, start, frames, pixel)
        else:
            check_hr_like("mean", mean, lr, self.s, self.t)
        mean = mean.float()
        cond = self.denoiser.encode(lr_up, lr_valid, static, mean, self.target, pixel).repeat(members)
        B, t, Y, X = mean.shape
        shape = (B * members, t, Y, X)

        def predict_v(x, n):
            return self.v_from_output(x, n, self.denoiser(x, n, cond))

        residual = draw(sampler, predict_v, self.schedule, shape, steps, eta, generator, lr.device)
        sigma = self.residual_sigma(lr_up, lr_valid, mean)
        sigma = sigma[:, None] if sigma.dim() else sigma
        return mean[:, None] + sigma * residual.view(B, members, t, Y, X)


def build_model(cfg: ModelConfig, recipe: Recipe, future_context: int = 0, normaliser=None) -> SRModel:
    """The model of one factor pair: architecture from `cfg`, (s, t, L, beta range) from `recipe`;
    `normaliser` (hpcsr.data.normalise): the data's units, which a start_unit in mm needs."""
    return SRModel(cfg, recipe, future_context, normaliser)
