"""The conditional-mean network: LR frames on the HR grid -> the t HR frames of the target block.

A UNet whose encoder runs on every LR frame (frames folded into the batch, shared weights), with,
at each level, per-pixel temporal multi-head self-attention across the frames (frame-time
embeddings, any number of frames) and, where the level's window is > 1, w x w windowed spatial
self-attention. The decoder starts from the target frame's features only (its skips too, which
the temporal attention has already mixed with the other frames). One output head is applied once
per output frame, FiLM-conditioned on the frame's time (k + 0.5) / t inside the block, and adds
to a start made of the interpolated LR frames (the net learns the correction to it): the target
frame for every step (`mean_skip` 'hold', the author's), or linear in time between the target frame
and its neighbour on the step's side (`mean_skip` 'linear', as the evaluation's bicubic + linear
baseline: the previous frame for the first half of the block, the next one, when the model is given
future frames, for the second half; a missing neighbour holds the target frame), or the same along
the rain's motion (`mean_skip` 'motion', `hpcsr.motion.target_steps`): the motion is measured over
the whole field, beyond the patch or tile, so that start is computed outside the network (by the
patch loader and the sampler) and given to it; at t = 1 all three are the target frame. 'auto' is
resolved by training from the data's step (`hpcsr.models.config.resolve_mean_skip`) and exports
record the result; a network built with 'auto' itself takes a given start, else the linear one.
The frames the start is made of are the network's upsampled input unless `start_frames` are given:
the same LR frames interpolated in another space (`model.start_unit`, hpcsr.models.start_space).
"""

from __future__ import annotations

import torch
from torch import nn

from hpcsr.models.attention import TemporalAttention, WindowAttention
from hpcsr.models.blocks import Downsample, ResBlock, Upsample, crop, make_norm, norm_groups, pad_to_multiple
from hpcsr.models.config import ModelConfig
from hpcsr.models.embeddings import HR_FRAME, LR_FRAME, FrameEmbedding, PixelEmbedding, context_times, output_times


def frame_inputs(channels: list[torch.Tensor], static, frames: int) -> torch.Tensor:
    """Stack per-frame fields (each (B, F, H, W)) and the static fields (B, S, H, W), repeated on
    every frame, into (B*F, C, H, W)."""
    parts = [c[:, :, None] for c in channels]
    if static is not None:
        B, S, H, W = static.shape
        parts.append(static[:, None].expand(B, frames, S, H, W).to(channels[0].dtype))
    x = torch.cat(parts, dim=2)
    return x.reshape(-1, *x.shape[2:])


def linear_in_time(lr_up: torch.Tensor, lr_valid: torch.Tensor, t: int, target: int) -> torch.Tensor:
    """(B, F, H, W) upsampled LR frames and validity -> (B, t, H, W): HR step k sits at (k + 0.5) / t
    - 0.5 blocks from the target frame's centre, interpolated linearly with the neighbouring frame on
    its side where that frame is given and valid, the target frame elsewhere."""
    held = lr_up[:, target]
    steps = []
    for k in range(t):
        position = (k + 0.5) / t - 0.5
        neighbour = target + (1 if position > 0 else -1)
        if position == 0 or not 0 <= neighbour < lr_up.shape[1]:
            steps.append(held)
            continue
        weight = abs(position) * lr_valid[:, neighbour]
        steps.append(held + weight * (lr_up[:, neighbour] - held))
    return torch.stack(steps, dim=1)


class EncoderLevel(nn.Module):
    def __init__(self, cfg: ModelConfig, level: int, emb_dim=None, with_context=False):
        super().__init__()
        width, window = cfg.widths[level], cfg.windows[level]
        self.blocks = nn.ModuleList(ResBlock(width, width, emb_dim, cfg.norm) for _ in range(cfg.blocks_per_level))
        self.temporal = TemporalAttention(width, cfg.heads, cfg.emb_dim, with_context)
        self.spatial = WindowAttention(width, cfg.heads, window, norm_groups(width), cfg.norm) if window > 1 else None
        self.down = Downsample(width, cfg.widths[level + 1], cfg.downsample) if level + 1 < cfg.levels else None


class DecoderLevel(nn.Module):
    def __init__(self, cfg: ModelConfig, level: int, emb_dim=None):
        super().__init__()
        width = cfg.widths[level]
        self.up = Upsample(cfg.widths[level + 1], width)
        self.block = ResBlock(2 * width, width, emb_dim, cfg.norm)


class MeanNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        width = cfg.widths[0]
        self.stem = nn.Conv2d(2 + cfg.static_channels, width, 3, padding=1)
        self.frame_emb = FrameEmbedding(cfg.emb_dim)
        self.pixel_emb = PixelEmbedding(cfg.emb_dim) if cfg.pixel_input else None
        self.encoder = nn.ModuleList(EncoderLevel(cfg, i) for i in range(cfg.levels))
        self.decoder = nn.ModuleList(DecoderLevel(cfg, i) for i in range(cfg.levels - 1))
        self.head = ResBlock(width, width, cfg.emb_dim, cfg.norm)
        self.out = nn.Sequential(make_norm(width, cfg.norm), nn.SiLU(), nn.Conv2d(width, 1, 3, padding=1))
        self.drop_correction_()  # the untrained network returns its start

    @torch.no_grad()
    def drop_correction_(self) -> MeanNet:
        """Zero the output layer, as at initialisation: the network then returns its start exactly."""
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        return self

    @property
    def grid(self) -> int:
        """Side of the UNet's coarsest blocks in pixels: the field is padded to a multiple of it."""
        return 2 ** (self.cfg.levels - 1)

    def forward(self, lr_up, lr_valid, static, t: int, target: int, start=None, start_frames=None, pixel=None):
        """lr_up, lr_valid (B, F, H, W) on the HR grid; static (B, S, H, W) or None -> (B, t, H, W).
        `pixel` (B,): the HR pixel size, log2 of km, with model.pixel_input (the output head's condition).
        `start` (B, t, H, W): the motion-compensated start, needed with mean_skip 'motion' at t > 1.
        `start_frames` (B, F, H, W): what a hold or linear start is made of (default lr_up)."""
        B, H, W = lr_up.shape[0], *lr_up.shape[2:]
        if self.cfg.motion_start(t):
            if start is None or tuple(start.shape) != (B, t, H, W):
                got = None if start is None else tuple(start.shape)
                raise ValueError(
                    f"model.mean_skip 'motion' needs the start along the motion, shape {(B, t, H, W)}, got {got}: "
                    "give start= (hpcsr.motion.field_start over the whole field, cut to the patch or tile)"
                )
        elif start is not None and not (self.cfg.mean_skip == "auto" and t > 1):
            raise ValueError(f"a start was given but model.mean_skip is {self.cfg.mean_skip!r} (t={t}): drop it")
        B, frames = lr_up.shape[:2]
        x = frame_inputs([lr_up, lr_valid], static, frames).to(self.stem.weight.dtype)  # bf16 when the model is
        x, window = pad_to_multiple(x, self.grid)
        h = self.stem(x)
        emb = self.frame_emb(context_times(frames, target, x.device), LR_FRAME)
        skips = []
        for level in self.encoder:
            for block in level.blocks:
                h = block(h)
            h = level.temporal(h.view(B, frames, *h.shape[1:]), emb).flatten(0, 1)
            if level.spatial is not None:
                h = level.spatial(h)
            skips.append(h.view(B, frames, *h.shape[1:])[:, target])
            if level.down is not None:
                h = level.down(h)
        d = skips[-1]
        for i in reversed(range(len(self.decoder))):
            level = self.decoder[i]
            d = level.block(torch.cat([level.up(d), skips[i]], dim=1))
        d = d[:, None].expand(B, t, *d.shape[1:]).flatten(0, 1)
        out_emb = self.frame_emb(output_times(t, x.device), HR_FRAME).repeat(B, 1)
        if self.pixel_emb is not None:
            out_emb = out_emb + self.pixel_emb(pixel).repeat_interleave(t, dim=0)
        y = self.out(self.head(d, out_emb)).view(B, t, *d.shape[2:])
        if start is None:
            frames_up = lr_up if start_frames is None else start_frames
            start = (
                linear_in_time(frames_up, lr_valid, t, target)
                if self.cfg.mean_skip != "hold"
                else frames_up[:, target, None]
            )
        return crop(y, window) + start
