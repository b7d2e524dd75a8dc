"""Attention layers: bf16-autocast safe, no data-dependent control flow.

- `TemporalAttention`: per-pixel multi-head attention across frames. Queries are the frames of x
  (B, F, C, H, W); keys/values are the same frames plus, optionally, context frames
  (B, L, C, H, W) (self-attention in the mean network, self + cross attention to the LR context
  in the denoiser). Frame-time embeddings tell the frames apart, so any F and L work. Through
  torch.nn.functional.scaled_dot_product_attention (fused kernels on GPUs).
- `WindowAttention`: each pixel attends to its w x w neighbourhood (sliding window, edges
  replicated), (N, C, H, W) -> (N, C, H, W); works for any H, W. Computed from w * w shifted
  copies of the keys and values, with pixels as the contiguous dimension.
Both are residual (x + attention) with a zero-initialised output projection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hpcsr.models.blocks import make_norm


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, F, C, H, W) -> (B, H*W, F, C)."""
    B, Fr, C, H, W = x.shape
    return x.permute(0, 3, 4, 1, 2).reshape(B, H * W, Fr, C)


class TemporalAttention(nn.Module):
    def __init__(self, dim: int, heads: int, emb_dim: int, with_context: bool = False):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.pos = nn.Linear(emb_dim, dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        if with_context:
            self.ctx_norm = nn.LayerNorm(dim)
            self.ctx_pos = nn.Linear(emb_dim, dim)

    def forward(self, x, x_emb, context=None, context_emb=None):
        """x (B, F, C, H, W), x_emb (F, E) or (B, F, E); context (B, L, C, H, W), context_emb (L, E) or (B, L, E)."""
        B, Fr, C, H, W = x.shape
        d = C // self.heads
        pos = self.pos(x_emb)
        h = self.norm(_tokens(x)) + (pos[:, None] if pos.dim() == 3 else pos)
        q = self.q(h)
        source = h
        if context is not None:
            cpos = self.ctx_pos(context_emb)
            c = self.ctx_norm(_tokens(context)) + (cpos[:, None] if cpos.dim() == 3 else cpos)
            source = torch.cat([h, c], dim=2)
        k, v = self.kv(source).chunk(2, dim=-1)
        S = source.shape[2]
        q = q.reshape(B * H * W, Fr, self.heads, d).transpose(1, 2)
        k = k.reshape(B * H * W, S, self.heads, d).transpose(1, 2)
        v = v.reshape(B * H * W, S, self.heads, d).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, H, W, Fr, C)
        return x + self.out(o).permute(0, 3, 4, 1, 2)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, groups: int, norm: str = "group"):
        super().__init__()
        self.heads, self.window = heads, window
        self.norm = nn.GroupNorm(groups, dim) if norm == "group" else make_norm(dim, norm)
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.out = nn.Conv2d(dim, dim, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        """Scores and outputs as sums of the w * w shifted copies of the (edge-replicated) keys and
        values, pixels contiguous, instead of gathering every pixel's neighbourhood into one SDPA
        call of w * w keys: on CPU the windows' cost in a training step fell from +128 % to +36 % of
        the step without them (benchmarks/model_step.py, the author's size, s50)."""
        N, C, H, W = x.shape
        heads, d, w, p = self.heads, C // self.heads, self.window, self.window // 2
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=1)
        k, v = (F.pad(z, (p, p, p, p), mode="replicate").view(N, heads, d, H + 2 * p, W + 2 * p) for z in (k, v))
        q = q.view(N, heads, d, H, W) * d**-0.5
        shifts = [(i, j) for i in range(w) for j in range(w)]  # row-major over the window
        scores = torch.stack([(q * k[..., i : i + H, j : j + W]).sum(2) for i, j in shifts], dim=2)
        weights = scores.float().softmax(dim=2).to(v.dtype)  # (N, heads, w * w, H, W)
        o = sum(weights[:, :, n, None] * v[..., i : i + H, j : j + W] for n, (i, j) in enumerate(shifts))
        return x + self.out(o.reshape(N, C, H, W))
