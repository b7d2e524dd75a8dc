"""Attention layers, all through torch.nn.functional.scaled_dot_product_attention (fused kernels on
GPUs, bf16-autocast safe, no data-dependent control flow).

- `TemporalAttention`: per-pixel multi-head attention across frames. Queries are the frames of x
  (B, F, C, H, W); keys/values are the same frames plus, optionally, context frames
  (B, L, C, H, W) (self-attention in the mean network, self + cross attention to the LR context
  in the denoiser). Frame-time embeddings tell the frames apart, so any F and L work.
- `WindowAttention`: each pixel attends to its w x w neighbourhood (sliding window, edges
  replicated), (N, C, H, W) -> (N, C, H, W); works for any H, W.
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

    def _neighbours(self, z: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N*H*W, heads, w*w, C/heads): the w x w neighbourhood of every pixel."""
        N, C, H, W = z.shape
        w, p = self.window, self.window // 2
        patches = F.unfold(F.pad(z, (p, p, p, p), mode="replicate"), w)  # (N, C*w*w, H*W)
        patches = patches.view(N, self.heads, C // self.heads, w * w, H * W)
        return patches.permute(0, 4, 1, 3, 2).reshape(N * H * W, self.heads, w * w, C // self.heads)

    def forward(self, x):
        N, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=1)
        q = (
            q.reshape(N, self.heads, C // self.heads, H * W)
            .permute(0, 3, 1, 2)
            .reshape(N * H * W, self.heads, 1, C // self.heads)
        )
        o = F.scaled_dot_product_attention(q, self._neighbours(k), self._neighbours(v))
        o = o.reshape(N, H * W, C).transpose(1, 2).reshape(N, C, H, W)
        return x + self.out(o)
