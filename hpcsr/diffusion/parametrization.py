"""Conversions between the clean signal x0, the noise eps and the velocity v at one noise level.

With a = sqrt(alphabar), sigma = sqrt(1 - alphabar) (so a^2 + sigma^2 = 1):
    x_n = a x0 + sigma eps,   v = a eps - sigma x0,
    x0 = a x_n - sigma v,     eps = sigma x_n + a v,     x0 = (x_n - sigma eps) / a.
`a` and `sigma` broadcast against the data (pass them shaped (N, 1, ...)).
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
