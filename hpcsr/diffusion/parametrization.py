"""Conversions between the clean signal x0, the noise eps and the velocity v at one noise level.

With a = sqrt(alphabar), sigma = sqrt(1 - alphabar) (so a^2 + sigma^2 = 1):
    x_n = a x0 + sigma eps,   v = a eps - sigma x0,
    x0 = a x_n - sigma v,     eps = sigma x_n + a v,     x0 = (x_n - sigma eps) / a.
`a` and `sigma` broadcast against the data (pass them shaped (N, 1, ...)).

The denoiser's output G is v itself when the data's scale sigma_data is 1 (the default). For another
sigma_data it is EDM's preconditioned output (Karras et al. 2022, eq. 7 and table 1; G is EDM's F with
the sign of v) written for the variance-preserving chain: with the VE noise level s = sigma / a and
D = sigma^2 + sigma_data^2 a^2,
    x0 = c_skip x_n / a - c_out G,  c_skip = sigma_data^2 / (s^2 + sigma_data^2),
    c_out = s sigma_data / sqrt(s^2 + sigma_data^2)
    => v = (a x_n - x0) / sigma = a sigma (1 - sigma_data^2) / D x_n + sigma_data / sqrt(D) G.
A sigma_data below the data's standard deviation copies less of the noisy input into x0 (c_skip), so
the network need not cancel that noise pixel by pixel where the data's own variation is smaller than
the noise; measured on real radar, 0.5 multiplies the members' small-scale power instead (docs/SKILL_LOG.md), hence the default 1. The training loss is the MSE on G: EDM's weight 1 / c_out^2 on the x0 error, which is the
v error's MSE times D / sigma_data^2.
"""

from __future__ import annotations


def v_from_x0_eps(x0, eps, a, sigma):
    """The v-prediction target."""
    return a * eps - sigma * x0


def x0_from_v(x_n, v, a, sigma):
    return a * x_n - sigma * v


def eps_from_v(x_n, v, a, sigma):
    return sigma * x_n + a * v


def x0_from_eps(x_n, eps, a, sigma):
    """Divides by a: ill-conditioned where a -> 0 (pure noise); the samplers use x0_from_v."""
    return (x_n - sigma * eps) / a


def v_from_output(x_n, out, a, sigma, sigma_data: float = 1.0):
    """v from the denoiser's output G at data scale sigma_data (G is v when sigma_data is 1)."""
    if sigma_data == 1.0:
        return out
    d = sigma * sigma + sigma_data**2 * a * a
    return a * sigma * (1 - sigma_data**2) / d * x_n + sigma_data / d.sqrt() * out


def output_from_v(x_n, v, a, sigma, sigma_data: float = 1.0):
    """The denoiser output G that gives v (the inverse of v_from_output): its training target."""
    if sigma_data == 1.0:
        return v
    d = sigma * sigma + sigma_data**2 * a * a
    return (v - a * sigma * (1 - sigma_data**2) / d * x_n) * d.sqrt() / sigma_data
