"""The per-pixel residual scale (hpcsr.models.residual_scale): features, the non-negative fit, the
model's loss and samples with it, and exports from before it."""

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import nnls

from hpcsr.diffusion.noise_levels import NoiseLevels
from hpcsr.export import Export, ExportError, recipe_to_dict
from hpcsr.factors import recipe
from hpcsr.models import build_model
from hpcsr.models.config import ModelConfig
from hpcsr.models.inputs import prepare_lr
from hpcsr.models.residual_scale import FLOOR, NonNegativeFit, abs_to_sigma, cell_average, features, scale_field

TINY = ModelConfig.tiny()


def test_features_by_hand():
    """wet = relu(mean - dry); edge = |grad mean| (central differences inside); change = mean of
    |lr(j) - lr(target)| over the neighbouring frames, 0 where either frame is missing."""
    mean = torch.zeros(1, 1, 4, 4)
    mean[0, 0, :, 2:] = 2.0  # a wet right half: dry = -1 below every value
    lr_up = torch.zeros(1, 3, 4, 4)
    lr_up[0, 0] = 1.0  # frame before the target differs by 1 everywhere
    lr_up[0, 2] = 3.0  # frame after by 3
    valid = torch.ones(1, 3, 4, 4)
    valid[0, 2, 0, 0] = 0.0  # the later frame missing at one pixel
    f = features(lr_up, valid, mean, target=1, dry=-1.0)
    assert f.shape == (1, 1, 4, 4, 4)
    assert torch.equal(f[..., 0], torch.ones(1, 1, 4, 4))
    assert torch.equal(f[0, 0, :, :, 1], torch.tensor([[1.0, 1, 3, 3]] * 4))
    assert torch.equal(f[0, 0, :, :, 2], torch.tensor([[0.0, 1, 1, 0]] * 4))  # edge columns: one-sided
    change = torch.full((4, 4), 2.0)
    change[0, 0] = 0.5  # only the earlier neighbour there: (1 + 0) / 2
    assert torch.equal(f[0, 0, :, :, 3], change)


def test_cell_averaged_edge_by_hand():
    """cell = 4: the mean is averaged over 5 x 5 windows (pixels inside the field only) before its
    gradient, so a one-pixel spike spreads into a window-sized plateau with a soft rim, and a step
    edge into a ramp 5 pixels wide; cell = 1 is the pixel gradient."""
    spike = torch.zeros(1, 1, 9, 9)
    spike[0, 0, 4, 4] = 25.0
    smooth = cell_average(spike, 4)
    assert torch.equal(smooth[0, 0, 2:7, 2:7], torch.ones(5, 5))
    assert float(smooth.sum()) == pytest.approx(25.0) and float(smooth[0, 0, 1, 4]) == 0.0
    corner = torch.zeros(1, 1, 9, 9)
    corner[0, 0, 0, 0] = 9.0
    assert float(cell_average(corner, 4)[0, 0, 0, 0]) == pytest.approx(1.0)  # a 3 x 3 window at the corner
    step = torch.zeros(1, 1, 4, 12)
    step[..., 6:] = 5.0
    ramp = cell_average(step, 4)[0, 0, 0].tolist()
    assert ramp == pytest.approx([0, 0, 0, 0, 1, 2, 3, 4, 5, 5, 5, 5])
    lr_up, valid = torch.zeros(1, 2, 4, 12), torch.ones(1, 2, 4, 12)
    edge = features(lr_up, valid, step, target=1, dry=-1.0, cell=4)[0, 0, 0, :, 2].tolist()
    assert edge == pytest.approx([0, 0, 0, 0.5, 1, 1, 1, 1, 0.5, 0, 0, 0])
    assert torch.equal(features(lr_up, valid, step, 1, -1.0, cell=1), features(lr_up, valid, step, 1, -1.0))


def test_the_model_averages_the_edge_over_its_lr_cell_unless_told_per_pixel():
    mean, lr = torch.rand(2, 2, 8, 8), torch.rand(2, 4, 2, 2)
    lr_up, valid = prepare_lr(lr, 4, "bicubic")
    for edge, cell in (("cell", 4), ("pixel", 1)):
        model = build_model(dataclasses.replace(TINY, residual_edge=edge), recipe(4, 2), future_context=1)
        model.residual_coef.copy_(torch.tensor([0.0, 0.0, 1.0, 0.0]))
        expected = features(lr_up, valid, mean, model.target, 0.0, cell)[..., 2]
        torch.testing.assert_close(model.residual_sigma(lr_up, valid, mean), expected.clamp_min(FLOOR))
    with pytest.raises(ValueError, match="residual_edge='both' must be 'pixel' or 'cell'"):
        dataclasses.replace(TINY, residual_edge="both")


def test_non_negative_fit_matches_scipy_and_recovers_exact_coefficients():
    g = torch.Generator().manual_seed(0)
    f = torch.cat([torch.ones(500, 1), torch.rand(500, 3, generator=g)], dim=1).double()
    exact = torch.tensor([0.1, 0.0, 2.0, 0.5], dtype=torch.float64)
    fit = NonNegativeFit()
    fit.add(f[:200], f[:200] @ exact)  # streamed in two pieces
    fit.add(f[200:], f[200:] @ exact)
    torch.testing.assert_close(fit.solve(), exact, atol=1e-9, rtol=0)
    # a target that wants a negative coefficient: the constrained optimum, as scipy's NNLS finds it
    y = f @ torch.tensor([0.3, -1.0, 0.5, 0.2], dtype=torch.float64) + 0.01 * torch.randn(500, generator=g).double()
    fit = NonNegativeFit()
    fit.add(f, y)
    reference, _ = nnls(f.numpy(), y.numpy())
    np.testing.assert_allclose(fit.solve().numpy(), reference, atol=1e-9)
    assert torch.equal(NonNegativeFit().solve(), torch.zeros(4, dtype=torch.float64))


def test_measured_local_scale_follows_a_heteroscedastic_residual():
    """A residual whose size grows with the rain under it: the fit gives the wet feature the weight
    and a small intercept, so sigma is small where the mean is dry and large where it is wet."""
    model = build_model(TINY, recipe(4, 1)).eval()  # zero-initialised output layers: the mean is bicubic LR
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(4):
        lr = torch.randn(4, model.frames, 8, 8, generator=g).clamp_min(-1)  # dry = -1
        with torch.no_grad():
            mean = model.predict_mean(lr)
        wet = (mean - (-1.0)).clamp_min(0)
        batches.append((lr, mean + (0.02 + 0.5 * wet) * torch.randn(mean.shape, generator=g)))
    model.measure_residual_std(batches, dry=-1.0)
    coef = model.residual_coef
    assert coef[1] == pytest.approx(0.5, rel=0.1)  # the wet weight
    assert 0 <= coef[0] < 0.05 and float(model.residual_dry) == -1.0
    lr, hr = batches[0]
    lr_up, valid = prepare_lr(lr, 4, TINY.upsample)
    with torch.no_grad():
        mean = model.predict_mean(lr)
        sigma = model.residual_sigma(lr_up, valid, mean)
    dry, very_wet = mean < -0.9, mean > 1.0
    assert sigma[dry].mean() < 0.3 * sigma[very_wet].mean()
    assert float(sigma.min()) >= FLOOR * float(model.residual_std) - 1e-7


def test_diffusion_loss_and_samples_use_the_local_scale():
    """The v target is built on (hr - mean) / sigma(x), and samples are mean + sigma(x) * x0."""
    model = build_model(TINY, recipe(4, 1)).eval()
    with torch.no_grad():
        model.residual_coef.copy_(torch.tensor([0.2, 0.5, 0.1, 0.3]))
        model.residual_std.fill_(1.0)
    g = torch.Generator().manual_seed(2)
    lr = torch.randn(2, model.frames, 6, 6, generator=g)
    hr = torch.randn(2, 1, 24, 24, generator=g)
    mean = torch.randn(2, 1, 24, 24, generator=g)
    lr_up, valid = prepare_lr(lr, 4, TINY.upsample)
    sigma = model.residual_sigma(lr_up, valid, mean)
    assert sigma.shape == hr.shape and float(sigma.std()) > 0.05  # a field, not a number
    replay = torch.Generator().manual_seed(0)
    steps = NoiseLevels().draw(model.schedule, 2, replay)
    eps = torch.randn(hr.shape, generator=replay)
    a, s = model.schedule.coefficients(steps, 4)
    unit = (hr - mean) / sigma

    class Oracle(torch.nn.Module):
        def encode(self, *args):
            return None

        def forward(self, noisy, n, cond):
            torch.testing.assert_close(noisy, a * unit + s * eps)
            return a * eps - s * unit

    model.denoiser = Oracle()
    assert float(model.diffusion_loss(lr, hr, mean, generator=torch.Generator().manual_seed(0))) < 1e-10

    class Cond:
        def repeat(self, members):
            return None

    class One(torch.nn.Module):  # v for an x0 estimate of exactly 1 at every step
        def encode(self, *args):
            return Cond()

        def forward(self, noisy, n, cond):
            a_n, s_n = model.schedule.coefficients(n, noisy.dim())
            eps_hat = (noisy - a_n * 1.0) / s_n
            return a_n * eps_hat - s_n * torch.ones_like(noisy)

    model.denoiser = One()
    out = model.sample(lr, 3, "ddim", 2, mean=mean, generator=torch.Generator().manual_seed(0))
    for m in range(3):
        torch.testing.assert_close(out[:, m], mean + sigma, rtol=1e-4, atol=1e-4)


def test_global_and_local_models_differ_only_in_the_scale(tmp_path):
    """residual_norm='global' keeps the old rule; the state dict of either mode loads in the other
    (the buffers exist in both), and each mode's sigma is what it says."""
    local = build_model(TINY, recipe(4, 1))
    glob = build_model(dataclasses.replace(TINY, residual_norm="global"), recipe(4, 1))
    glob.load_state_dict(local.state_dict(), strict=True)
    lr = torch.zeros(1, local.frames, 6, 6)
    lr_up, valid = prepare_lr(lr, 4, TINY.upsample)
    mean = torch.zeros(1, 1, 24, 24)
    assert glob.residual_sigma(lr_up, valid, mean).dim() == 0
    assert local.residual_sigma(lr_up, valid, mean).shape == mean.shape
    with pytest.raises(ValueError, match="residual_norm='both' must be 'global' or 'local'"):
        dataclasses.replace(TINY, residual_norm="both")


@pytest.mark.parametrize("f", list(itertools.product([0.0, 1.0], repeat=3)))
def test_scale_field_never_below_the_floor(f):
    coef = torch.tensor([0.0, 1.0, 0.0, 0.0])
    feats = torch.tensor([[1.0, *f]])
    sigma = scale_field(coef, feats, torch.tensor(0.25))
    assert float(sigma) == max(f[0], 0.25)
    assert float(abs_to_sigma(torch.tensor(-2.0))) == pytest.approx(2.0 * np.sqrt(np.pi / 2))


def test_an_export_from_before_the_local_scale_loads_as_global(tmp_path):
    """Exports written before residual_norm existed have neither the key nor the two buffers: they
    load with the global scale they were trained with."""
    model = build_model(dataclasses.replace(TINY, residual_norm="global"), recipe(4, 1))
    old_weights = {k: v for k, v in model.state_dict().items() if k not in ("residual_coef", "residual_dry")}
    newer = ("residual_norm", "residual_edge", "mean_skip")
    old_model = {k: v for k, v in dataclasses.asdict(TINY).items() if k not in newer}
    metadata = {"model": old_model, "recipe": recipe_to_dict(recipe(4, 1)), "future_context": 0}
    loaded = Export(tmp_path / "model.pt", old_weights, metadata).build_model()
    assert loaded.cfg.residual_norm == "global"
    assert loaded.cfg.residual_edge == "pixel" and loaded.cfg.mean_skip == "hold"  # as they were trained
    new = {**metadata, "model": dataclasses.asdict(TINY)}
    with pytest.raises(ExportError, match="missing residual_coef"):  # a local export without them is damaged
        Export(tmp_path / "model.pt", old_weights, new).build_model()


def test_dry_pixels_sit_dry_offset_units_below_in_the_diffused_residual():
    """model.dry_offset d: at HR pixels at the normalised 0 mm the denoiser's target is (hr - mean) /
    sigma - d, elsewhere (hr - mean) / sigma; missing pixels stay 0; d = 0 is the plain residual.
    The diffusion loss is built on that target (an oracle denoiser that knows it scores 0)."""
    g = torch.Generator().manual_seed(3)
    lr = torch.randn(2, recipe(4, 1).context, 6, 6, generator=g)
    dry_value = -0.7
    hr = dry_value + 0.01 + torch.rand(2, 1, 24, 24, generator=g)  # wet: above the normalised 0 mm
    hr[:, :, :12] = dry_value  # the top half dry
    hr[0, 0, 20, 20] = float("nan")  # missing
    mean = torch.randn(2, 1, 24, 24, generator=g)
    valid = torch.isfinite(hr)
    plain, offset = (build_model(dataclasses.replace(TINY, dry_offset=d), recipe(4, 1)).eval() for d in (0.0, 0.5))
    for model in (plain, offset):
        with torch.no_grad():
            model.residual_coef.copy_(torch.tensor([0.2, 0.5, 0.1, 0.3]))
            model.residual_dry.fill_(dry_value)
    lr_up, lr_valid = prepare_lr(lr, 4, TINY.upsample)
    sigma = offset.residual_sigma(lr_up, lr_valid, mean)
    unit = torch.where(valid, hr - mean, torch.zeros(())) / sigma
    torch.testing.assert_close(plain.diffused_residual(hr, mean, sigma, valid), unit)
    shifted = offset.diffused_residual(hr, mean, sigma, valid)
    torch.testing.assert_close(shifted[:, :, :12], unit[:, :, :12] - 0.5)
    torch.testing.assert_close(shifted[:, :, 12:], unit[:, :, 12:])
    assert float(shifted[0, 0, 20, 20]) == 0.0

    replay = torch.Generator().manual_seed(0)
    steps = NoiseLevels().draw(offset.schedule, 2, replay)
    eps = torch.randn(hr.shape, generator=replay)
    a, s = offset.schedule.coefficients(steps, 4)

    class Oracle(torch.nn.Module):
        def encode(self, *args):
            return None

        def forward(self, noisy, n, cond):
            return a * eps - s * shifted

    offset.denoiser = Oracle()
    assert float(offset.diffusion_loss(lr, hr, mean, generator=torch.Generator().manual_seed(0))) < 1e-10


def test_dry_offset_must_be_a_finite_non_negative_number():
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"model.dry_offset=.* must be a finite number >= 0"):
            dataclasses.replace(TINY, dry_offset=bad)
