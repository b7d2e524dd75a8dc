"""Convolutional building blocks shared by the mean network, the denoiser and the context encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("group", "pixel")  # model.norm
DOWNSAMPLES = ("strided", "pool")  # model.downsample


def norm_groups(channels: int) -> int:
    """Largest of 8, 4, 2, 1 groups that divides `channels` (GroupNorm)."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class PixelNorm(nn.Module):
    """Normalisation over the channels of each pixel, with a per-channel scale and shift (a LayerNorm
    per pixel). Unlike GroupNorm, whose statistics span the whole field, it does not depend on the
    field's size or on distant pixels, so a network gives the same output on a tile as on a domain."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        y = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def make_norm(channels: int, kind: str = "group") -> nn.Module:
    """The normalisation layer of model.norm: 'group' (GroupNorm over the whole field, the author's)
    or 'pixel' (`PixelNorm`)."""
    if kind == "group":
        return nn.GroupNorm(norm_groups(channels), channels)
    if kind == "pixel":
        return PixelNorm(channels)
    raise ValueError(f"normalisation {kind!r} unknown: use one of {', '.join(NORMS)}")


class ResBlock(nn.Module):
    """Norm-SiLU-conv twice with a residual path; with `emb_dim`, FiLM (scale, shift) from an
    embedding (N, E) modulates the second half. `norm`: see `make_norm`."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int | None = None, norm: str = "group"):
        super().__init__()
        self.norm1 = make_norm(in_ch, norm)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = make_norm(out_ch, norm)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * out_ch) if emb_dim else None
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, emb=None):
        h = self.norm2(self.conv1(F.silu(self.norm1(x))))
        if self.film is not None:
            scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class Downsample(nn.Module):
    """Halve the field, model.downsample: 'pool' (the mean of each 2 x 2 block, then a 3 x 3
    convolution: aligned with the 2 x 2 blocks `Upsample` makes, and alike at every border) or
    'strided' (a 3 x 3 convolution at stride 2: its outputs centre on the even pixels, so its windows
    reach past the top and left borders and never past the bottom and right ones, and `Upsample`'s
    blocks sit half a pixel off them)."""

    def __init__(self, in_ch: int, out_ch: int, kind: str = "pool"):
        super().__init__()
        if kind not in DOWNSAMPLES:
            raise ValueError(f"downsampling {kind!r} unknown: use one of {', '.join(DOWNSAMPLES)}")
        self.pool = kind == "pool"
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=1 if self.pool else 2, padding=1)

    def forward(self, x):
        return self.conv(F.avg_pool2d(x, 2) if self.pool else x)


class Upsample(nn.Module):
    """Double the field: each pixel repeated over a 2 x 2 block, then a 3 x 3 convolution."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def pad_to_multiple(x: torch.Tensor, multiple: int):
    """Replicate-pad the last two dims of x (N, C, H, W) evenly up to multiples of `multiple`; returns
    the padded tensor and the (top, left, H, W) window that `crop` cuts back out."""
    H, W = x.shape[-2:]
    ph, pw = -H % multiple, -W % multiple
    if ph == 0 and pw == 0:
        return x, (0, 0, H, W)
    top, left = ph // 2, pw // 2
    return F.pad(x, (left, pw - left, top, ph - top), mode="replicate"), (top, left, H, W)


def crop(x: torch.Tensor, window) -> torch.Tensor:
    top, left, H, W = window
    return x[..., top : top + H, left : left + W]
