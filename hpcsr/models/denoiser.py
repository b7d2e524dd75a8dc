"""The residual denoiser: predicts v for the noisy residual (hr - mean) of the t HR frames.

A UNet run on every output frame (frames folded into the batch, shared weights). Each frame's
input is [noisy residual frame k, mean frame k, interpolated target LR frame, its validity,
static fields]. Every residual block is FiLM-conditioned on the diffusion step plus the frame's
time (k + 0.5) / t. At each encoder level, per-pixel temporal attention lets the t output frames
attend to each other and, as cross-attention, to a trainable encoder of the L LR frames (frame-
time embeddings, any L); windowed spatial attention where the level's window is > 1.

`encode(...)` computes everything that does not change between diffusion steps (the context
encoder's features, the constant input channels) once; samplers call `forward` per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hpcsr.models.blocks import Downsample, ResBlock, crop, make_norm, pad_to_multiple
from hpcsr.models.config import ModelConfig
from hpcsr.models.embeddings import (
    HR_FRAME,
    LR_FRAME,
    FrameEmbedding,
    PixelEmbedding,
    StepEmbedding,
    context_times,
    output_times,
)
from hpcsr.models.mean_net import DecoderLevel, EncoderLevel, frame_inputs


class ContextEncoder(nn.Module):
    """Convolutional pyramid over each LR frame: features (B*L, width_i, H_i, W_i) at every level."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.stem = nn.Conv2d(2 + cfg.static_channels, cfg.widths[0], 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(w, w, norm=cfg.norm) for w in cfg.widths)
        self.downs = nn.ModuleList(
            Downsample(cfg.widths[i], cfg.widths[i + 1], cfg.downsample) for i in range(cfg.levels - 1)
        )

    def forward(self, x):
        h = self.stem(x)
        feats = []
        for i, block in enumerate(self.blocks):
            h = block(h)
            feats.append(h)
            if i < len(self.downs):
                h = self.downs[i](h)
        return feats


@dataclass
class Condition:
    """What the denoiser sees besides the noisy residual, prepared once per LR input."""

    constant: torch.Tensor  # (B, t, C, H, W) per-frame constant input channels (unpadded)
    context: list  # per level (B, L, width_i, H_i, W_i) context-encoder features (padded grid)
    context_emb: torch.Tensor  # (L, E) LR frame-time embeddings
    pixel_emb: torch.Tensor | None = None  # (B, E) the HR pixel size's embedding (model.pixel_input)

    def repeat(self, members: int) -> "Condition":
        """Each batch item repeated `members` times in a row (ensemble members)."""
        if members == 1:
            return self
        rep = lambda x: x.repeat_interleave(members, dim=0)  # noqa: E731
        pixel = None if self.pixel_emb is None else rep(self.pixel_emb)
        return Condition(rep(self.constant), [rep(c) for c in self.context], self.context_emb, pixel)


class Denoiser(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        width, E = cfg.widths[0], cfg.emb_dim
        self.multiple = 2 ** (cfg.levels - 1)
        self.stem = nn.Conv2d(4 + cfg.static_channels, width, 3, padding=1)
        self.step_emb = StepEmbedding(E)
        self.frame_emb = FrameEmbedding(E)
        self.pixel_emb = PixelEmbedding(E) if cfg.pixel_input else None
        self.context_encoder = ContextEncoder(cfg)
        self.encoder = nn.ModuleList(EncoderLevel(cfg, i, E, with_context=True) for i in range(cfg.levels))
        self.decoder = nn.ModuleList(DecoderLevel(cfg, i, E) for i in range(cfg.levels - 1))
        self.out = nn.Sequential(make_norm(width, cfg.norm), nn.SiLU(), nn.Conv2d(width, 1, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def encode(self, lr_up, lr_valid, static, mean, target: int, pixel=None) -> Condition:
        """lr_up, lr_valid (B, F, H, W); static (B, S, H, W) or None; mean (B, t, H, W); pixel (B,):
        the HR pixel size, log2 of km, with model.pixel_input (added to every block's condition)."""
        B, frames = lr_up.shape[:2]
        t = mean.shape[1]
        dtype = self.stem.weight.dtype  # inputs follow the model's dtype (bf16 under DeepSpeed bf16)
        ctx, _ = pad_to_multiple(frame_inputs([lr_up, lr_valid], static, frames).to(dtype), self.multiple)
        context = [f.view(B, frames, *f.shape[1:]) for f in self.context_encoder(ctx)]
        target_up = lr_up[:, target, None].expand(B, t, *lr_up.shape[2:])
        target_valid = lr_valid[:, target, None].expand(B, t, *lr_up.shape[2:])
        constant = frame_inputs([mean.to(lr_up.dtype), target_up, target_valid], static, t).to(dtype)
        constant = constant.view(B, t, *constant.shape[1:])
        context_emb = self.frame_emb(context_times(frames, target, lr_up.device), LR_FRAME)
        pixel_emb = None if self.pixel_emb is None else self.pixel_emb(pixel)
        return Condition(constant, context, context_emb, pixel_emb)

    def forward(self, x_noisy, steps, cond: Condition):
        """x_noisy (B, t, H, W), steps (B,) integer diffusion steps -> v (B, t, H, W)."""
        B, t = x_noisy.shape[:2]
        x = torch.cat([x_noisy[:, :, None].to(cond.constant.dtype), cond.constant], dim=2).flatten(0, 1)
        x, window = pad_to_multiple(x, self.multiple)
        frame = self.frame_emb(output_times(t, x.device), HR_FRAME)  # (t, E)
        emb = self.step_emb(steps)[:, None] + frame  # (B, t, E)
        if cond.pixel_emb is not None:
            emb = emb + cond.pixel_emb[:, None]
        emb = emb.reshape(B * t, -1)
        h = self.stem(x)
        skips = []
        for level, context in zip(self.encoder, cond.context):
            for block in level.blocks:
                h = block(h, emb)
            h = level.temporal(h.view(B, t, *h.shape[1:]), emb.view(B, t, -1), context, cond.context_emb).flatten(0, 1)
            if level.spatial is not None:
                h = level.spatial(h)
            skips.append(h)
            if level.down is not None:
                h = level.down(h)
        d = skips[-1]
        for i in reversed(range(len(self.decoder))):
            level = self.decoder[i]
            d = level.block(torch.cat([level.up(d), skips[i]], dim=1), emb)
        return crop(self.out(d).view(B, t, *d.shape[2:]), window)
