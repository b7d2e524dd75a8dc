"""Diffusion maths: x0/eps/v conversions, schedules against hand values, and both samplers on a
Gaussian toy problem whose optimal denoiser is known in closed form."""

import math

import pytest
import torch

from hpcsr.diffusion import (
    NoiseSchedule,
    ddim_sample,
    ddpm_sample,
    dpmpp_2m_sample,
    draw,
    eps_from_v,
    make_betas,
    output_from_v,
    sampling_steps,
    v_from_output,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_v,
)
from hpcsr.factors import recipe


def test_conversions_invert_exactly():
    g = torch.Generator().manual_seed(0)
    alphabar = torch.rand(64, 1, generator=g, dtype=torch.float64) * 0.98 + 0.01
    a, sigma = alphabar.sqrt(), (1 - alphabar).sqrt()
    x0 = torch.randn(64, 7, generator=g, dtype=torch.float64)
    eps = torch.randn(64, 7, generator=g, dtype=torch.float64)
    x_n = a * x0 + sigma * eps
    v = v_from_x0_eps(x0, eps, a, sigma)
    torch.testing.assert_close(x0_from_v(x_n, v, a, sigma), x0, rtol=0, atol=1e-13)
    torch.testing.assert_close(eps_from_v(x_n, v, a, sigma), eps, rtol=0, atol=1e-13)
    torch.testing.assert_close(x0_from_eps(x_n, eps, a, sigma), x0, rtol=0, atol=1e-12)
    # v is the rotation of (x0, eps) by the noise angle: it keeps the norm
    torch.testing.assert_close(v.pow(2) + x_n.pow(2), x0.pow(2) + eps.pow(2), rtol=0, atol=1e-12)


def test_preconditioned_output_is_edm_written_for_the_vp_chain():
    """G -> v -> G round trip; sigma_data 1 leaves v untouched; for sigma_data 0.5 the x0 that G
    gives is EDM's c_skip x_ve - c_out G (G: EDM's F with v's sign; VE noise level s = sigma / a, x_ve = x / a), checked on
    one hand-computed item (alphabar 0.64: a 0.8, sigma 0.6, s 0.75; c_skip 0.25 / 0.8125,
    c_out 0.375 / sqrt(0.8125))."""
    g = torch.Generator().manual_seed(1)
    alphabar = torch.rand(32, 1, generator=g, dtype=torch.float64) * 0.98 + 0.01
    a, sigma = alphabar.sqrt(), (1 - alphabar).sqrt()
    x_n, out = (
        torch.randn(32, 5, generator=g, dtype=torch.float64),
        torch.randn(32, 5, generator=g, dtype=torch.float64),
    )
    assert v_from_output(x_n, out, a, sigma) is out and output_from_v(x_n, out, a, sigma) is out
    for sigma_data in (0.5, 0.2):
        v = v_from_output(x_n, out, a, sigma, sigma_data)
        torch.testing.assert_close(output_from_v(x_n, v, a, sigma, sigma_data), out, rtol=0, atol=1e-12)
        s = sigma / a
        c_skip = sigma_data**2 / (s * s + sigma_data**2)
        c_out = s * sigma_data / (s * s + sigma_data**2).sqrt()
        torch.testing.assert_close(x0_from_v(x_n, v, a, sigma), c_skip * x_n / a - c_out * out, rtol=0, atol=1e-12)
    a, sigma, x, out = (torch.tensor([[v]], dtype=torch.float64) for v in (0.8, 0.6, 2.0, -1.0))
    x0 = x0_from_v(x, v_from_output(x, out, a, sigma, 0.5), a, sigma)
    assert x0.item() == pytest.approx(0.25 / 0.8125 * 2.0 / 0.8 + 0.375 / math.sqrt(0.8125), abs=1e-12)


@pytest.mark.parametrize(
    "beta_end,quoted,digits", [(0.01, 0.079, 2), (0.015, 0.023, 2), (0.02, 0.006, 1), (0.035, 1e-4, 1)]
)
def test_linear_schedule_end_signal(beta_end, quoted, digits):
    """sqrt(alphabar_T) against the hand series ln alphabar_T = -sum(beta + beta^2/2 + beta^3/3),
    and against the values DESIGN.md section 3 quotes (to 1 or 2 significant digits)."""
    sched = NoiseSchedule("linear", 1000, 1e-4, beta_end)
    betas = [1e-4 + (beta_end - 1e-4) * i / 999 for i in range(1000)]
    hand = math.exp(-sum(b + b * b / 2 + b**3 / 3 for b in betas) / 2)
    got = float(sched.sqrt_alphabar[-1])
    assert got == pytest.approx(hand, rel=2e-4)
    assert abs(got - quoted) <= 0.5 * 10 ** (math.floor(math.log10(quoted)) - digits + 1)


def test_linear_schedule_hand_values():
    betas = make_betas("linear", 5, 0.1, 0.5)
    torch.testing.assert_close(betas, torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5], dtype=torch.float64))
    sched = NoiseSchedule("linear", 5, 0.1, 0.5)
    expected = torch.tensor([0.9, 0.9 * 0.8, 0.9 * 0.8 * 0.7, 0.9 * 0.8 * 0.7 * 0.6, 0.9 * 0.8 * 0.7 * 0.6 * 0.5])
    torch.testing.assert_close(sched.alphabar, expected)


def test_posterior_matches_gaussian_conjugacy():
    """q(x_{n-1} | x_n, x0) from the product of N(x_{n-1}; a_{n-1} x0, 1-ab_{n-1}) and
    N(x_n; sqrt(alpha_n) x_{n-1}, beta_n): precision = 1/(1-ab_{n-1}) + alpha_n/beta_n."""
    sched = NoiseSchedule("linear", 1000, 1e-4, 0.02)
    betas = make_betas("linear", 1000, 1e-4, 0.02)
    ab = torch.cumprod(1 - betas, 0)
    for n in (1, 10, 500, 999):
        prec = 1 / (1 - ab[n - 1]) + (1 - betas[n]) / betas[n]
        var = 1 / prec
        c0 = var * ab[n - 1].sqrt() / (1 - ab[n - 1])
        cn = var * (1 - betas[n]).sqrt() / betas[n]
        assert float(sched.posterior_var[n]) == pytest.approx(float(var), rel=1e-5)
        assert float(sched.posterior_c0[n]) == pytest.approx(float(c0), rel=1e-5)
        assert float(sched.posterior_cn[n]) == pytest.approx(float(cn), rel=1e-5)
    assert float(sched.posterior_c0[0]) == pytest.approx(1.0) and float(sched.posterior_var[0]) == 0.0


def test_other_schedules():
    cos = make_betas("cosine", 1000, 1e-4, 0.02)
    ab = torch.cumprod(1 - cos, 0)
    assert bool((cos > 0).all()) and bool((cos <= 0.999).all())
    assert float(ab[0]) > 0.9999 and float(ab[-1]) < 1e-4
    sig = make_betas("sigmoid", 1000, 1e-4, 0.02)
    assert bool((sig.diff() > 0).all()) and 1e-4 < float(sig[0]) < 1e-3 and 0.0199 < float(sig[-1]) < 0.02


def test_bad_schedule_arguments_are_named():
    with pytest.raises(ValueError, match="'quadratic' unknown"):
        make_betas("quadratic", 10, 1e-4, 0.02)
    with pytest.raises(ValueError, match="beta_start=0.1 <= beta_end=0.02"):
        make_betas("linear", 10, 0.1, 0.02)


def test_schedule_stays_float32_and_out_of_the_state_dict():
    sched = NoiseSchedule("linear", 1000, 1e-4, 0.02)
    ref = sched.alphabar.clone()
    sched = sched.to(torch.bfloat16)
    assert sched.alphabar.dtype == torch.float32
    torch.testing.assert_close(sched.alphabar, ref)
    assert sched.state_dict() == {}


def test_sampling_steps():
    grid = sampling_steps(1000, 50)
    assert grid[0] == 999 and grid[-1] == 0 and len(grid) == 50 and grid == sorted(set(grid), reverse=True)
    assert grid[-2] < 5 and grid[1] > 900  # quadratic: dense at low noise
    lin = sampling_steps(1000, 4, "linear")
    assert lin == [999, 666, 333, 0]
    assert sampling_steps(10, 10) == list(range(9, -1, -1)) == sampling_steps(10, 10, "linear")
    assert sampling_steps(1000, 1) == [999]
    with pytest.raises(ValueError, match="steps=0 must be an integer in 1..1000"):
        sampling_steps(1000, 0)
    with pytest.raises(ValueError, match="spacing 'cubic' unknown"):
        sampling_steps(1000, 10, "cubic")


# ---- Gaussian toy problem: x0 ~ N(mu, std^2) per dimension, so E[x0 | x_n] = mu + k_n (x_n - a_n mu),
# k_n = a_n var / (a_n^2 var + sigma_n^2), and every sampler is an affine-Gaussian recursion whose
# output moments follow in closed form (computed below in float64, independently of the samplers).
MU = torch.tensor([0.0, 1.5, -2.0, 0.5], dtype=torch.float64)
STD = torch.tensor([1.0, 0.3, 2.0, 0.05], dtype=torch.float64)
BETA_END = recipe(10, 3).beta_end  # 0.02
N_STEPS = 1000


def optimal_v(schedule):
    mu, var = MU.float(), STD.float() ** 2

    def predict_v(x, n):
        a, sigma = schedule.coefficients(n, x.dim())
        x0 = mu + a * var / (a**2 * var + sigma**2) * (x - a * mu)
        return a * (x - a * x0) / sigma - sigma * x0

    return predict_v


def analytic_moments(sampler, steps=N_STEPS, eta=0.0):
    """Output (mean, variance) per dimension and, for deterministic samplers, the affine map
    x_out = gain * x_start + offset."""
    betas = make_betas("linear", N_STEPS, 1e-4, BETA_END)
    ab = torch.cumprod(1 - betas, 0)
    var = STD**2

    def posterior_mean(n):  # E[x0 | x_n] = k x_n + c
        a2 = ab[n]
        k = a2.sqrt() * var / (a2 * var + 1 - a2)
        return k, MU - k * a2.sqrt() * MU

    gain, offset, noise_var = torch.ones_like(MU), torch.zeros_like(MU), torch.zeros_like(MU)
    if sampler == "ddpm":
        for n in range(N_STEPS - 1, -1, -1):
            k, c = posterior_mean(n)
            ab_prev = ab[n - 1] if n > 0 else torch.tensor(1.0, dtype=torch.float64)
            c0 = betas[n] * ab_prev.sqrt() / (1 - ab[n])
            cn = (1 - betas[n]).sqrt() * (1 - ab_prev) / (1 - ab[n])
            A = c0 * k + cn
            gain, offset = A * gain, A * offset + c0 * c
            noise_var = A**2 * noise_var + betas[n] * (1 - ab_prev) / (1 - ab[n])
        return offset, gain**2 + noise_var, gain, offset
    grid = sampling_steps(N_STEPS, steps)
    lam = 0.5 * torch.log(ab / (1 - ab))
    prev = None
    for i, n in enumerate(grid):
        k, c = posterior_mean(n)
        x0_gain, x0_off = k * gain, k * offset + c
        x0_noise = k**2 * noise_var
        if i == len(grid) - 1:
            return x0_off, x0_gain**2 + x0_noise, x0_gain, x0_off
        m = grid[i + 1]
        a, sg, a_next, sg_next = ab[n].sqrt(), (1 - ab[n]).sqrt(), ab[m].sqrt(), (1 - ab[m]).sqrt()
        if sampler == "ddim":
            ns = eta * ((1 - ab[m]) / (1 - ab[n]) * (1 - ab[n] / ab[m])).sqrt()
            ce = (1 - ab[m] - ns**2).clamp_min(0).sqrt()
            A, B = ce / sg, a_next - ce * a / sg  # x_next = A x + B x0_hat + ns z
            gain, offset = A * gain + B * x0_gain, A * offset + B * x0_off
            noise_var = (A + B * k) ** 2 * noise_var + ns**2
        else:  # dpmpp2m(_ddim), deterministic: x0_eff from the last two x0 estimates (_ddim: while lambda < 0)
            h = lam[m] - lam[n]
            eg, eo = x0_gain, x0_off
            if prev is not None and (sampler == "dpmpp2m" or lam[n] < 0):
                q = 0.5 * h / (lam[n] - prev[2])
                eg, eo = (1 + q) * x0_gain - q * prev[0], (1 + q) * x0_off - q * prev[1]
            prev = (x0_gain, x0_off, lam[n])
            gain = sg_next / sg * gain - a_next * torch.expm1(-h) * eg
            offset = sg_next / sg * offset - a_next * torch.expm1(-h) * eo


def run_sampler(sampler, schedule, shape, seed, steps=N_STEPS, eta=0.0):
    g = torch.Generator().manual_seed(seed)
    predict_v = optimal_v(schedule)
    return draw(sampler, predict_v, schedule, shape, steps, eta, generator=g)


@pytest.mark.parametrize(
    "sampler,steps", [("ddim", 50), ("ddim", 7), ("dpmpp2m", 50), ("dpmpp2m", 20), ("dpmpp2m_ddim", 10)]
)
def test_deterministic_samplers_are_the_exact_affine_map(sampler, steps):
    sched = NoiseSchedule("linear", N_STEPS, 1e-4, BETA_END)
    shape = (256, 4)
    out = run_sampler(sampler, sched, shape, seed=2, steps=steps)
    start = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    _, _, gain, offset = analytic_moments(sampler, steps)
    torch.testing.assert_close(out, (gain * start + offset).float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "sampler,eta",
    [pytest.param("ddpm", 0.0, marks=pytest.mark.slow), ("ddim", 1.0)],  # ddpm: ~35 s on 2 busy cores
)
def test_stochastic_samplers_match_their_analytic_moments(sampler, eta):
    """20000 samples: tolerance 5 standard errors (mean: 5 sd/sqrt(n), variance: 5 sqrt(2/n))."""
    sched = NoiseSchedule("linear", N_STEPS, 1e-4, BETA_END)
    n = 20000
    x = run_sampler(sampler, sched, (n, 4), seed=1, steps=50, eta=eta).double()
    mean, var, _, _ = analytic_moments(sampler, 50, eta)
    assert bool(((x.mean(0) - mean).abs() <= 5 * var.sqrt() / n**0.5).all()), (x.mean(0), mean)
    assert bool(((x.var(0) / var - 1).abs() <= 5 * (2 / n) ** 0.5).all()), (x.var(0), var)


# (sampler, steps, eta): stated tolerance on |mean - mu| / std and |var / std^2 - 1| for the data
# dimensions with std >= 0.3 (the scale of the normalised residuals). Measured: DDPM-1000 loses
# 0.6-2.5 % of the variance, DDIM-50 (eta 0) 6-8 %, DDIM-50 (eta 1) 11-15 %, DPM-Solver++(2M)-50
# under 1 %, -20 under 7.5 %; mean errors are all below 0.013 std.
TOLERANCES = [
    ("ddpm", N_STEPS, 0.0, 0.02, 0.03),
    ("ddim", 50, 0.0, 0.02, 0.08),
    ("ddim", 50, 1.0, 0.02, 0.16),
    ("dpmpp2m", 50, 0.0, 0.02, 0.015),
    ("dpmpp2m", 20, 0.0, 0.02, 0.08),
    ("dpmpp2m_ddim", 50, 0.0, 0.02, 0.08),
]


def test_dpmpp2m_ddim_is_2m_while_noise_exceeds_signal_then_ddim():
    """Hand-checkable limits of the switch: at lambda_s = +inf every update is DPM-Solver++(2M), at
    -inf every one is DDIM (eta 0); the default switch at lambda 0 sits between them."""
    sched = NoiseSchedule("linear", N_STEPS, 1e-4, BETA_END)
    shape, predict_v = (64, 4), optimal_v(sched)

    def run(fn, **kw):
        return fn(predict_v, sched, shape, steps=10, generator=torch.Generator().manual_seed(3), **kw)

    plain, ddim = run(dpmpp_2m_sample), run(ddim_sample)
    torch.testing.assert_close(run(dpmpp_2m_sample, first_order_from=math.inf), plain)
    torch.testing.assert_close(run(dpmpp_2m_sample, first_order_from=-math.inf), ddim, rtol=1e-4, atol=1e-4)
    mixed = draw("dpmpp2m_ddim", predict_v, sched, shape, 10, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(mixed, run(dpmpp_2m_sample, first_order_from=0.0))
    assert not torch.allclose(mixed, plain) and not torch.allclose(mixed, ddim)
    with pytest.raises(ValueError, match="sampler 'euler' unknown"):
        draw("euler", predict_v, sched, shape, 10)


@pytest.mark.parametrize("sampler,steps,eta,mean_tol,var_tol", TOLERANCES)
def test_samplers_reproduce_the_gaussian_target(sampler, steps, eta, mean_tol, var_tol):
    mean, var, _, _ = analytic_moments(sampler, steps, eta)
    wide = STD >= 0.3
    assert float(((mean - MU).abs() / STD)[wide].max()) < mean_tol
    assert float((var / STD**2 - 1).abs()[wide].max()) < var_tol


def test_ddpm_empirical_moments_reach_the_target():
    """The paper's sampler, end to end on samples (not only through the analytic recursion)."""
    sched = NoiseSchedule("linear", N_STEPS, 1e-4, BETA_END)
    x = run_sampler("ddpm", sched, (20000, 4), seed=4).double()
    wide = STD >= 0.3
    assert float(((x.mean(0) - MU).abs() / STD)[wide].max()) < 0.04
    assert float((x.var(0) / STD**2 - 1).abs()[wide].max()) < 0.07


def test_ddim_eta1_with_all_steps_is_the_ancestral_sampler():
    sched = NoiseSchedule("linear", 200, 1e-4, 0.05)
    predict_v = optimal_v(sched)
    a = ddpm_sample(predict_v, sched, (64, 4), generator=torch.Generator().manual_seed(3))
    b = ddim_sample(predict_v, sched, (64, 4), steps=200, eta=1.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_bad_eta_is_named():
    sched = NoiseSchedule("linear", 100, 1e-4, 0.05)
    with pytest.raises(ValueError, match="eta=1.5"):
        ddim_sample(optimal_v(sched), sched, (8, 4), steps=10, eta=1.5)
