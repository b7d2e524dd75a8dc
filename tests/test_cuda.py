"""CUDA checks, run by scripts/gpu_check.sh on a GPU machine (`pytest -m cuda`); skipped without a GPU.

- the SRModel's joint loss forward + backward under bf16 autocast on the GPU: finite, close to the
  fp32 loss of the same weights and batch on the CPU, gradients finite and close in direction;
- the attention layers through fused SDPA kernels (flash / memory-efficient) at realistic token
  counts (B*H*W sequences of L frames, far more than 65535): same output as the math kernel;
- the mass transform on the GPU: coarsen(x') equals the LR exactly (to float32 rounding) per cell,
  and per image region, and matches the CPU result.
"""

from __future__ import annotations

import math

import pytest
import torch

from hpcsr.coarsen import coarsen
from hpcsr.factors import MassFunction, recipe

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no CUDA GPU visible (torch.cuda.is_available() is False)"
    ),
]


def _model_and_batch(device, seed=0, batch=4, patch=40, pair=(5, 2)):
    from hpcsr.models import ModelConfig, build_model

    torch.manual_seed(seed)
    r = recipe(*pair)
    model = build_model(ModelConfig.tiny(), r).to(device)
    # non-zero output projections (they start at zero), so attention actually contributes
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("out.weight"):
                p.normal_(0, 0.05)
    g = torch.Generator().manual_seed(seed + 1)
    s, t = r.pair.s, r.pair.t
    lr = torch.randn(batch, r.context, patch // s, patch // s, generator=g)
    hr = torch.randn(batch, t, patch, patch, generator=g)
    return model, lr.to(device), hr.to(device)


def _joint_loss(model, lr, hr, device, autocast: bool):
    g = torch.Generator(device=device).manual_seed(123)
    ctx = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if autocast
        else torch.autocast(device.type, enabled=False)
    )
    with ctx:
        mean = model.predict_mean(lr)
        loss = model.mean_loss(lr, hr) + model.diffusion_loss(lr, hr, mean, generator=g)
    return loss


def test_bf16_autocast_forward_backward_matches_fp32():
    cuda = torch.device("cuda")
    model, lr, hr = _model_and_batch(cuda)
    loss_bf16 = _joint_loss(model, lr, hr, cuda, autocast=True)
    loss_bf16.backward()
    grads_bf16 = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    loss_fp32 = _joint_loss(model, lr, hr, cuda, autocast=False)
    loss_fp32.backward()
    grads_fp32 = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    assert loss_bf16.dtype == torch.float32  # masked_mse reduces in float32
    assert math.isfinite(loss_bf16.item()) and math.isfinite(loss_fp32.item())
    assert torch.isfinite(grads_bf16).all()
    # bf16 has 8 mantissa bits: the losses agree to a few percent, the gradients point the same way
    assert abs(loss_bf16.item() - loss_fp32.item()) <= 0.05 * abs(loss_fp32.item())
    cosine = torch.nn.functional.cosine_similarity(grads_bf16, grads_fp32, dim=0).item()
    assert cosine > 0.95, f"bf16 and fp32 gradients differ in direction (cosine {cosine:.3f})"


@pytest.fixture
def no_tf32():
    """cuDNN convolutions default to TF32 (10-bit mantissa) on Ampere and later: off for fp32 comparisons."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_gpu_fp32_mean_matches_cpu(no_tf32):
    model_gpu, lr, hr = _model_and_batch(torch.device("cuda"))
    model_cpu, lr_c, hr_c = _model_and_batch(torch.device("cpu"))
    with torch.no_grad():
        mean_gpu = model_gpu.predict_mean(lr).cpu()
        mean_cpu = model_cpu.predict_mean(lr_c)
    assert torch.allclose(mean_gpu, mean_cpu, rtol=1e-3, atol=1e-4), (mean_gpu - mean_cpu).abs().max()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_temporal_attention_fused_kernels_match_math(dtype):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from hpcsr.models.attention import TemporalAttention

    torch.manual_seed(0)
    cuda = torch.device("cuda")
    layer = TemporalAttention(dim=32, heads=4, emb_dim=16, with_context=True).to(cuda)
    torch.nn.init.normal_(layer.out.weight, 0, 0.1)
    B, F_, L, C, H, W = 8, 3, 5, 32, 100, 100  # 80,000 sequences x 4 heads: beyond one grid dimension
    x = torch.randn(B, F_, C, H, W, device=cuda)
    ctx = torch.randn(B, L, C, H, W, device=cuda)
    x_emb, c_emb = torch.randn(F_, 16, device=cuda), torch.randn(L, 16, device=cuda)
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype):
        with sdpa_kernel([SDPBackend.MATH]):
            ref = layer(x, x_emb, ctx, c_emb).float()
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
            fused = layer(x, x_emb, ctx, c_emb).float()
    assert torch.isfinite(fused).all()
    scale = ref.abs().max().item()
    assert (fused - ref).abs().max().item() <= 2e-2 * scale


def test_window_attention_in_bf16_on_gpu_matches_fp32_on_cpu():
    """The shifted-copy window attention (no SDPA call) under CUDA bf16 autocast against the same
    layer in fp32 on the CPU: the softmax runs in fp32, so only bf16 rounding separates them."""
    from hpcsr.models.attention import WindowAttention

    torch.manual_seed(0)
    layer = WindowAttention(dim=16, heads=4, window=3, groups=4)
    torch.nn.init.normal_(layer.out.weight, 0, 0.1)
    x = torch.randn(16, 16, 100, 100)
    with torch.no_grad():
        ref = layer(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = layer.cuda()(x.cuda()).float().cpu()
    assert torch.isfinite(got).all()
    assert (got - ref).abs().max().item() <= 2e-2 * ref.abs().max().item()


@pytest.mark.parametrize("scale", ["cell", "image", "frame"])
def test_mass_transform_exact_on_gpu(scale):
    from hpcsr.mass import conserve, region_totals

    s, t = 4, 3
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 5, t, 64, 64, generator=g) ** 3 * 20  # heavy-tailed mm
    lr = coarsen(torch.rand(2, 5, t, 64, 64, generator=g) * 5, s, t)  # (2, 5, 1, 16, 16)
    lr[0, 1, 0, 3, 4] = float("nan")  # a missing LR cell stays as it is
    fn = MassFunction(0.5, 0.01, math.inf)
    out_gpu = conserve(x.cuda(), lr.cuda(), s, t, fn, scale=scale)
    out_cpu = conserve(x, lr, s, t, fn, scale=scale)
    have, want = region_totals(out_gpu, lr.cuda(), s, t, scale)
    assert torch.allclose(have, want, rtol=1e-5, atol=1e-5)
    if scale == "cell":
        cells = coarsen(out_gpu, s, t)
        finite = torch.isfinite(lr.cuda())
        assert torch.allclose(cells[finite], lr.cuda()[finite], rtol=1e-5, atol=1e-6)
    assert torch.allclose(out_gpu.cpu(), out_cpu, rtol=1e-5, atol=1e-5)
