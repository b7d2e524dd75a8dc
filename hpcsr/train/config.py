"""Schemas of the `train` and `deepspeed` config sections."""

from __future__ import annotations

import typing
from dataclasses import dataclass


@dataclass
class TrainConfig:
    stage: typing.Literal["mean", "diffusion", "joint"] = "mean"  # what is trained
    steps: int = 1000  # optimiser steps in total
    lr: float = 1e-4  # peak learning rate (AdamW)
    warmup_steps: int = 100  # linear warm-up, then cosine decay to 0
    weight_decay: float = 0.0  # AdamW weight decay
    checkpoint_every: int = 100  # steps between DeepSpeed checkpoints
    keep_checkpoints: int = 2  # complete checkpoints kept (older ones deleted)
    init_from: typing.Optional[str] = None  # run folder or export to initialise from (ignored on resume)

    def __post_init__(self):
        for key in ("steps", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, key) < 1:
                raise ValueError(f"train.{key}={getattr(self, key)} must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"train.lr={self.lr} must be > 0")


@dataclass
class DeepSpeedConfig:
    zero_stage: typing.Literal[0, 1, 2, 3] = 1  # ZeRO stage
    precision: typing.Literal["fp32", "bf16"] = "fp32"  # training precision
    gradient_accumulation: int = 1  # micro-batches per optimiser step
    gradient_clipping: float = 1.0  # max global gradient norm (0: off)
