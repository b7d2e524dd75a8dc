"""Residual diffusion: noise schedules, the v-parametrisation and the DDPM / DDIM samplers.

Conventions (Ho et al. 2020; Salimans & Ho 2022 for v): step n in 0..N-1, a_n = sqrt(alphabar_n),
sigma_n = sqrt(1 - alphabar_n), x_n = a_n x0 + sigma_n eps, v = a_n eps - sigma_n x0.
"""

from hpcsr.diffusion.parametrization import (
    eps_from_v,
    output_from_v,
    v_from_output,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_v,
)
from hpcsr.diffusion.samplers import (
    SAMPLERS,
    check_eta,
    check_sampler,
    ddim_sample,
    ddpm_sample,
    dpmpp_2m_sample,
    draw,
    sampling_steps,
)
from hpcsr.diffusion.schedule import NoiseSchedule, make_betas

__all__ = [
    "NoiseSchedule",
    "make_betas",
    "v_from_x0_eps",
    "x0_from_v",
    "eps_from_v",
    "x0_from_eps",
    "v_from_output",
    "output_from_v",
    "ddpm_sample",
    "ddim_sample",
    "dpmpp_2m_sample",
    "draw",
    "check_eta",
    "check_sampler",
    "SAMPLERS",
    "sampling_steps",
]
