"""Embeddings of scalars: diffusion steps and frame times (sinusoidal), the HR pixel size (learned).

Frame times are measured in LR blocks relative to the start of the block being super-resolved
(the target block spans [0, 1)): LR context frame j of a window whose target is frame `target`
sits at (j - target) + 0.5, HR output frame k of t at (k + 0.5) / t. The same numbers mean the
same thing for every factor pair and every context length L, so no weight depends on (s, t, L).
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Periods (in LR blocks) of the frame-time features: resolve 1/t of a block up to ~2 days of context.
TIME_PERIODS = (0.25, 64.0)
# Periods (in steps) of the diffusion-step features: the usual transformer range.
STEP_PERIODS = (2 * math.pi, 2 * math.pi * 10_000)
LR_FRAME, HR_FRAME = 0, 1


def fourier_features(x: torch.Tensor, dim: int, periods: tuple[float, float]) -> torch.Tensor:
    """[sin(2 pi x / p_i), cos(2 pi x / p_i)] for dim/2 periods p_i geometric in `periods`: (...,) -> (..., dim)."""
    half = dim // 2
    lo, hi = periods
    freqs = 2 * math.pi / torch.logspace(math.log10(lo), math.log10(hi), half, device=x.device, dtype=torch.float32)
    angles = x.float()[..., None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def context_times(frames: int, target: int, device=None) -> torch.Tensor:
    """Centre times of `frames` LR frames whose frame `target` is super-resolved, in LR blocks."""
    return torch.arange(frames, device=device, dtype=torch.float32) - target + 0.5


def output_times(t: int, device=None) -> torch.Tensor:
    """Centre times (k + 0.5) / t of the t HR frames inside the target block."""
    return (torch.arange(t, device=device, dtype=torch.float32) + 0.5) / t


class FrameEmbedding(nn.Module):
    """Embedding of a frame from its time (in LR blocks) and kind (LR context or HR output frame)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.kind = nn.Parameter(torch.randn(2, dim))  # a direct parameter: gathered with this module under ZeRO-3
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, times: torch.Tensor, kind: int) -> torch.Tensor:
        feats = fourier_features(times, self.dim, TIME_PERIODS).to(self.kind.dtype) + self.kind[kind]
        return self.mlp(feats)


class StepEmbedding(nn.Module):
    """Embedding of the diffusion step n (an integer tensor (B,))."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, steps: torch.Tensor) -> torch.Tensor:
        return self.mlp(fourier_features(steps, self.dim, STEP_PERIODS).to(self.mlp[0].weight.dtype))


class PixelEmbedding(nn.Module):
    """Embedding of the HR pixel size, given as log2 of its side in km (1 km: 0, 500 m: -1), per item
    (B,) (model.pixel_input). Rain that moves a given speed crosses twice as many pixels per step at
    500 m as at 1 km, and a patch of the same pixels covers a quarter of the area: a network trained on
    several pixel sizes learns what differs, and is told which one it samples."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(1, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, level: torch.Tensor) -> torch.Tensor:
        return self.mlp(level.reshape(-1, 1).to(self.mlp[0].weight.dtype))
