"""Noise schedules and the module that holds the per-step coefficients of one schedule.

`make_betas('linear', N, beta_start, beta_end)` is the DDPM schedule used by the paper, with
beta_end from `recipe(s, t)`: with N = 1000, sqrt(alphabar_N) is about 0.079 at beta_end 0.01 and
0.006 at 0.02, i.e. small factors keep more signal at the end of the chain. 'sigmoid' spans the
same beta range along a sigmoid; 'cosine' (Nichol & Dhariwal 2021) ignores the beta range.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SCHEDULES = ("linear", "cosine", "sigmoid")


def make_betas(kind: str, steps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """beta_n for n = 0..steps-1 in float64."""
    if kind not in SCHEDULES:
        raise ValueError(f"noise schedule {kind!r} unknown: use one of {', '.join(SCHEDULES)}")
    if steps < 1:
        raise ValueError(f"diffusion steps={steps} must be >= 1")
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start={beta_start} <= beta_end={beta_end} < 1")
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    if kind == "sigmoid":
        return beta_start + (beta_end - beta_start) * torch.sigmoid(torch.linspace(-6, 6, steps, dtype=torch.float64))
    offset = 0.008
    grid = torch.arange(steps + 1, dtype=torch.float64) / steps
    alphabar = torch.cos((grid + offset) / (1 + offset) * math.pi / 2) ** 2
    return (1 - alphabar[1:] / alphabar[:-1]).clamp(max=0.999)


class NoiseSchedule(nn.Module):
    """Per-step coefficients of one schedule as float32 buffers (computed in float64).

    The buffers are not saved in the state dict (the schedule is rebuilt from the recipe, so a
    checkpoint moves between factor pairs untouched) and stay float32 when the module is cast to
    bf16/fp16 (a cast would ruin 1 - alphabar near 1e-4).
    """

    def __init__(self, kind: str = "linear", steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        super().__init__()
        self.kind, self.steps, self.beta_start, self.beta_end = kind, steps, beta_start, beta_end
        self._build(torch.device("cpu"))

    def _build(self, device):
        betas = make_betas(self.kind, self.steps, self.beta_start, self.beta_end)
        alphabar = torch.cumprod(1 - betas, 0)
        alphabar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphabar[:-1]])
        tables = {
            "betas": betas,
            "alphabar": alphabar,
            "alphabar_prev": alphabar_prev,
            "sqrt_alphabar": alphabar.sqrt(),
            "sqrt_one_minus_alphabar": (1 - alphabar).sqrt(),
            # posterior q(x_{n-1} | x_n, x0): mean = c0 x0 + cn x_n, variance beta_tilde
            "posterior_c0": betas * alphabar_prev.sqrt() / (1 - alphabar),
            "posterior_cn": (1 - betas).sqrt() * (1 - alphabar_prev) / (1 - alphabar),
            "posterior_var": betas * (1 - alphabar_prev) / (1 - alphabar),
        }
        for name, value in tables.items():
            self.register_buffer(name, value.to(device=device, dtype=torch.float32), persistent=False)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._build(self.betas.device)  # keep float32 whatever dtype the rest of the model takes
        return self

    def coefficients(self, n: torch.Tensor, ndim: int):
        """(a_n, sigma_n) gathered for integer steps n (N,), shaped (N, 1, ..., 1) with `ndim` dims."""
        shape = (-1,) + (1,) * (ndim - 1)
        return self.sqrt_alphabar[n].view(shape), self.sqrt_one_minus_alphabar[n].view(shape)

    def add_noise(self, x0, n, eps):
        """x_n = a_n x0 + sigma_n eps."""
        a, sigma = self.coefficients(n, x0.dim())
        return a * x0 + sigma * eps

    def extra_repr(self) -> str:
        return f"kind={self.kind}, steps={self.steps}, beta_start={self.beta_start:g}, beta_end={self.beta_end:g}"
