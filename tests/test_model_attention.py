"""The attention layers against naive per-pixel reference computations (explicit loops over
pixels and heads), so every reshape and permute inside the SDPA calls is checked."""

import torch

from hpcsr.models.attention import TemporalAttention, WindowAttention


def randomised(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


def heads_attention(q, k, v, heads):
    """q (Q, C), k, v (S, C) -> (Q, C): softmax(q k^T / sqrt(d)) v per head, by hand."""
    d = q.shape[-1] // heads
    out = []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        weights = torch.softmax(q[:, sl] @ k[:, sl].T / d**0.5, dim=-1)
        out.append(weights @ v[:, sl])
    return torch.cat(out, dim=-1)


def test_window_attention_matches_a_naive_neighbourhood_loop():
    torch.manual_seed(0)
    N, C, H, W, heads, w = 2, 8, 5, 6, 2, 3
    layer = randomised(WindowAttention(C, heads, w, groups=2)).double()
    x = torch.randn(N, C, H, W, dtype=torch.float64)
    got = layer(x)
    q, k, v = layer.qkv(layer.norm(x)).chunk(3, dim=1)
    expected = torch.empty_like(x)
    for n in range(N):
        for i in range(H):
            for j in range(W):
                # neighbours with edge replication, row-major over the window
                idx = [
                    (min(max(i + di, 0), H - 1), min(max(j + dj, 0), W - 1)) for di in (-1, 0, 1) for dj in (-1, 0, 1)
                ]
                keys = torch.stack([k[n, :, a, b] for a, b in idx])
                values = torch.stack([v[n, :, a, b] for a, b in idx])
                o = heads_attention(q[n, :, i, j][None], keys, values, heads)[0]
                expected[n, :, i, j] = o
    expected = x + layer.out(expected)
    torch.testing.assert_close(got, expected)


def test_temporal_attention_with_context_matches_a_naive_per_pixel_loop():
    torch.manual_seed(1)
    B, F, L, C, H, W, heads, E = 2, 3, 4, 8, 3, 2, 2, 6
    layer = randomised(TemporalAttention(C, heads, E, with_context=True)).double()
    x = torch.randn(B, F, C, H, W, dtype=torch.float64)
    ctx = torch.randn(B, L, C, H, W, dtype=torch.float64)
    x_emb = torch.randn(B, F, E, dtype=torch.float64)  # per item (denoiser: step + frame time)
    c_emb = torch.randn(L, E, dtype=torch.float64)  # shared (LR frame times)
    got = layer(x, x_emb, ctx, c_emb)
    expected = x.clone()
    for b in range(B):
        for i in range(H):
            for j in range(W):
                h = layer.norm(x[b, :, :, i, j]) + layer.pos(x_emb[b])
                c = layer.ctx_norm(ctx[b, :, :, i, j]) + layer.ctx_pos(c_emb)
                k, v = layer.kv(torch.cat([h, c])).chunk(2, dim=-1)
                expected[b, :, :, i, j] += layer.out(heads_attention(layer.q(h), k, v, heads))
    torch.testing.assert_close(got, expected)


def test_temporal_self_attention_is_equivariant_to_frame_order():
    """Frames are told apart only by their embeddings: permuting frames and embeddings together
    permutes the output (so any number of frames works and nothing is tied to a frame slot)."""
    torch.manual_seed(2)
    layer = randomised(TemporalAttention(8, 2, 6)).double()
    x = torch.randn(1, 5, 8, 3, 3, dtype=torch.float64)
    emb = torch.randn(5, 6, dtype=torch.float64)
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(layer(x, emb)[:, perm], layer(x[:, perm], emb[perm]))
