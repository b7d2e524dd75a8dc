"""Reverse-process samplers driven by a v-predicting denoiser.

`predict_v(x_n, n) -> v` takes the current state (N, ...) and the integer step of every item (N,).
Both samplers start from x_{N-1} ~ N(0, I) and return the final x0 estimate, in float32.

- `ddpm_sample`: ancestral sampling through all N steps with the posterior variance beta_tilde
  (the paper's sampler).
- `ddim_sample`: Song et al. 2021 on a sub-sequence of `steps` steps ("trailing" spacing: it
  starts at step N-1); eta=0 is deterministic, eta=1 with steps=N is exactly the ancestral sampler.
"""

from __future__ import annotations

import torch

from hpcsr.diffusion.parametrization import eps_from_v, x0_from_v


def _noise(shape, generator, device):
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32)


def ddpm_sample(predict_v, schedule, shape, generator=None, device=None):
    """Ancestral DDPM sampling over all schedule.steps steps."""
    device = schedule.betas.device if device is None else device
    x = _noise(shape, generator, device)
    for step in range(schedule.steps - 1, -1, -1):
        n = torch.full((shape[0],), step, device=device, dtype=torch.long)
        a, sigma = schedule.coefficients(n, x.dim())
        x0 = x0_from_v(x, predict_v(x, n).float(), a, sigma)
        x = schedule.posterior_c0[step] * x0 + schedule.posterior_cn[step] * x
        if step > 0:
            x = x + schedule.posterior_var[step].sqrt() * _noise(shape, generator, device)
    return x


def ddim_timesteps(total: int, steps: int) -> list[int]:
    """`steps` distinct steps from total-1 down to 0 (evenly spaced, both ends included)."""
    if not 1 <= steps <= total:
        raise ValueError(f"sampler steps={steps} must be in 1..{total} (the schedule's length)")
    grid = torch.linspace(total - 1, 0, steps, dtype=torch.float64).round().long().tolist()
    return list(dict.fromkeys(grid))


def ddim_sample(predict_v, schedule, shape, steps=50, eta=0.0, generator=None, device=None):
    """DDIM over `steps` steps; eta in [0, 1] scales the injected noise (0: deterministic)."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"DDIM eta={eta} must be in [0, 1] (0 deterministic, 1 ancestral)")
    device = schedule.betas.device if device is None else device
    x = _noise(shape, generator, device)
    grid = ddim_timesteps(schedule.steps, steps)
    for i, step in enumerate(grid):
        n = torch.full((shape[0],), step, device=device, dtype=torch.long)
        a, sigma = schedule.coefficients(n, x.dim())
        v = predict_v(x, n).float()
        x0, eps = x0_from_v(x, v, a, sigma), eps_from_v(x, v, a, sigma)
        if i == len(grid) - 1:
            return x0
        ab, ab_prev = schedule.alphabar[step], schedule.alphabar[grid[i + 1]]
        noise_std = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
        x = ab_prev.sqrt() * x0 + (1 - ab_prev - noise_std**2).clamp_min(0).sqrt() * eps
        if eta > 0:
            x = x + noise_std * _noise(shape, generator, device)
    return x
