"""Schemas of the `train` and `deepspeed` config sections."""

from __future__ import annotations

import typing
from dataclasses import dataclass

from hpcsr.diffusion.noise_levels import NoiseLevels


def grid_shift_conflict(stage: str, mm_weight: float) -> str | None:
    """Why train.mean_grid_shift cannot train `stage` with that mean loss mm weight (None: it can):
    its windows cut the patch, and the joint stage's diffusion term and the mm term's mass transform
    need the whole patch (hpcsr.train.objective). The diffusion stage ignores it."""
    if stage == "joint" or mm_weight > 0:
        return (
            "train.mean_grid_shift is for the mean stage without a mm term (train.mean_loss_mm_weight=0): "
            "the joint stage's diffusion term and the mm term's mass transform need the whole patch"
        )
    return None


@dataclass
class TrainConfig:
    """What is trained, for how long, and how progress is saved and reported."""

    stage: typing.Literal["mean", "diffusion", "joint"] = (
        "mean"  # mean net alone, denoiser on a frozen mean (CorrDiff), or both (author)
    )
    steps: int = 1000  # optimiser steps in total (skipped non-finite steps count)
    lr: float = 1e-4  # peak learning rate (AdamW)
    warmup_steps: int = 100  # linear warm-up from 0, then cosine decay
    min_lr_ratio: float = 0.0  # learning rate at the end of the cosine, as a fraction of lr
    weight_decay: float = 0.0  # AdamW weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW moment decay rates
    mean_loss_mm_weight: float = 0.0  # mean, joint: weight of the delivered field's MSE in mm (hpcsr.train.objective)
    noise_levels: typing.Literal["uniform", "lognormal"] = (
        "uniform"  # diffusion, joint: training noise levels (hpcsr.diffusion.noise_levels)
    )
    noise_log_mean: float = -0.5  # lognormal noise levels: mean of ln sigma (EDM's, for unit-variance data)
    noise_log_std: float = 1.2  # lognormal noise levels: standard deviation of ln sigma (EDM)
    ema_decay: float = 0.999  # EMA of the trained networks, exported in their place (every stage; 0: off)
    keep_better_start: bool = False  # mean stage: export the start if it validates better (hpcsr.train.mean_selection)
    mean_grid_shift: bool = False  # mean stage: each training forward runs on a window off the UNet's pooling grid
    calibration_members: int = 8  # diffusion, joint: members per validation patch for the spread gain (0: none)
    calibration_min_gain: float = 1.0  # smallest spread gain the fit may choose (1: it only widens; 0: free)
    calibration_space: typing.Literal["mm", "normalised"] = (
        "mm"  # where the spread gain widens each member about the mean network's rain (hpcsr.spread)
    )
    checkpoint_every: int = 100  # steps between DeepSpeed checkpoints (a signal or the end also saves)
    keep_checkpoints: int = 2  # complete checkpoints kept (older ones deleted)
    export_every: int = 0  # steps between milestone fp32 exports (0: only the final export)
    init_from: typing.Optional[str] = (
        None  # export (model.pt) or run stage folder to initialise from (ignored on resume)
    )
    mean_from: typing.Optional[str] = (
        None  # diffusion stage: the mean stage's export (None: <run_dir>/mean/export/model.pt)
    )
    log_every: int = 10  # steps between metric records (JSONL, CSV, TensorBoard)
    val_every: int = 100  # steps between validation losses on the fixed val patches (0: off)
    max_bad_steps: int = 5  # consecutive non-finite losses (each skipped) after which the run stops
    deterministic: bool = True  # torch deterministic algorithms (bitwise-reproducible resume on CPU)
    progress: bool = True  # progress bar on rank 0
    dist_timeout_s: float = 1800.0  # seconds a collective waits for the other ranks before failing

    @property
    def levels(self) -> NoiseLevels:
        return NoiseLevels(self.noise_levels, self.noise_log_mean, self.noise_log_std)

    def __post_init__(self):
        for key in ("steps", "checkpoint_every", "keep_checkpoints", "log_every", "max_bad_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"train.{key}={getattr(self, key)} must be >= 1")
        for key in ("warmup_steps", "export_every", "val_every"):
            if getattr(self, key) < 0:
                raise ValueError(f"train.{key}={getattr(self, key)} must be >= 0")
        if self.lr <= 0:
            raise ValueError(f"train.lr={self.lr} must be > 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"train.min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if self.weight_decay < 0:
            raise ValueError(f"train.weight_decay={self.weight_decay} must be >= 0")
        self.betas = tuple(self.betas)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"train.betas={list(self.betas)} must be two numbers in [0, 1)")
        if not (self.mean_loss_mm_weight >= 0 and self.mean_loss_mm_weight < float("inf")):
            raise ValueError(f"train.mean_loss_mm_weight={self.mean_loss_mm_weight} must be a finite number >= 0")
        self.levels  # building them raises on bad values
        if self.mean_grid_shift and (conflict := grid_shift_conflict(self.stage, self.mean_loss_mm_weight)):
            raise ValueError(conflict)
        if not 0.0 <= self.calibration_min_gain <= 2.0:
            raise ValueError(
                f"train.calibration_min_gain={self.calibration_min_gain} must be in [0, 2] (the gains searched)"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay={self.ema_decay} must be in [0, 1) (0: no EMA)")
        if self.calibration_members == 1 or self.calibration_members < 0:
            raise ValueError(
                f"train.calibration_members={self.calibration_members}: use 0 (no spread calibration) or >= 2 members"
            )
        if self.dist_timeout_s <= 0:
            raise ValueError(f"train.dist_timeout_s={self.dist_timeout_s} must be > 0")


@dataclass
class DeepSpeedConfig:
    """The DeepSpeed engine: ZeRO stage, precision, accumulation, clipping, activation checkpointing."""

    zero_stage: typing.Literal[1, 2, 3] = 1  # ZeRO stage: 1 optimizer states, 2 + gradients, 3 + parameters sharded
    precision: typing.Literal["fp32", "bf16"] = "fp32"  # training precision (bf16 keeps fp32 master weights)
    gradient_accumulation: int = 1  # micro-batches per optimiser step
    gradient_clipping: float = 1.0  # max global gradient norm (0: off)
    activation_checkpointing: bool = (
        False  # recompute the UNet blocks' activations in backward (less memory, ~30 % more compute)
    )
    param_persistence_threshold: int = 100000  # ZeRO-3: parameters with fewer elements stay whole on every rank
    bucket_size: int = (
        500000000  # elements per gradient reduce / allgather bucket (capped at the trainable parameter count)
    )

    def __post_init__(self):
        if self.gradient_accumulation < 1:
            raise ValueError(f"deepspeed.gradient_accumulation={self.gradient_accumulation} must be >= 1")
        if self.gradient_clipping < 0:
            raise ValueError(f"deepspeed.gradient_clipping={self.gradient_clipping} must be >= 0 (0: off)")
        if self.bucket_size < 1:
            raise ValueError(f"deepspeed.bucket_size={self.bucket_size} must be >= 1")
        if self.param_persistence_threshold < 0:
            raise ValueError(f"deepspeed.param_persistence_threshold={self.param_persistence_threshold} must be >= 0")
