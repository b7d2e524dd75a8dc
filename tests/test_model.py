"""The SRModel at tiny size: forward + backward for every pair of the paper's grid, the wiring
(target frame, residual on the interpolated LR), NaN masking, transfer across pairs, bf16,
no host syncs, borders treated alike (model.downsample), and errors that name the bad values."""

import copy
import dataclasses

import pytest
import torch
from torch import nn

from hpcsr.coarsen import upsample_space
from hpcsr.diffusion.noise_levels import NoiseLevels
from hpcsr.export import recorded_model
from hpcsr.factors import PAPER_PAIRS, recipe
from hpcsr.models import ModelConfig, build_model

TINY = ModelConfig.tiny()


def patch_for(s: int) -> int:
    """Small HR patches, multiples of s: 2 x 2 LR cells for s >= 10, else 24 pixels."""
    return 2 * s if s >= 10 else 24


def batch(model, P, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    lr = torch.randn(B, model.frames, P // model.s, P // model.s, generator=g)
    hr = torch.randn(B, model.t, P, P, generator=g)
    return lr, hr


def randomise(model, seed=0):
    """Zero-initialised output layers make a fresh model trivial; give every weight a value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


@pytest.mark.slow  # the author-size network at every paper pair
@pytest.mark.parametrize("pair", PAPER_PAIRS, ids=str)
def test_forward_backward_every_paper_pair(pair):
    torch.manual_seed(0)
    r = recipe(pair.s, pair.t)
    model = randomise(build_model(TINY, r))
    P = patch_for(pair.s)
    lr, hr = batch(model, P)
    mean = model.predict_mean(lr)
    assert mean.shape == (2, pair.t, P, P)
    loss = model.mean_loss(lr, hr) + model.diffusion_loss(lr, hr, mean, generator=torch.Generator().manual_seed(1))
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
    assert any(float(p.grad.abs().sum()) > 0 for p in model.mean_net.parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in model.denoiser.context_encoder.parameters())


def test_fresh_mean_with_the_hold_start_is_the_interpolated_target_frame():
    """Output layers start at zero: with mean_skip 'hold' (the author's) the mean equals bicubic
    upsampling of the target frame (index L-1, also when future frames follow it) for each of the t
    output frames."""
    r = recipe(10, 3)
    model = build_model(dataclasses.replace(TINY, mean_skip="hold"), r, future_context=2)
    assert model.frames == 7 and model.target == 4
    lr = torch.rand(2, 7, 3, 3)
    mean = model.predict_mean(lr)
    expected = upsample_space(lr[:, 4], 10)[:, None].expand(2, 3, 30, 30)
    torch.testing.assert_close(mean, expected)


def test_linear_start_by_hand():
    """t = 4: the steps sit at -3/8, -1/8, +1/8, +3/8 blocks from the target frame's centre; a
    missing neighbour (validity 0) or one not given holds the target frame; t = 1 is the target."""
    from hpcsr.models.mean_net import linear_in_time

    frames = torch.tensor([10.0, 2.0, 6.0]).view(1, 3, 1, 1)
    valid = torch.ones_like(frames)
    got = linear_in_time(frames, valid, 4, 1).flatten().tolist()
    assert got == pytest.approx([2 + 3 / 8 * 8, 2 + 1 / 8 * 8, 2 + 1 / 8 * 4, 2 + 3 / 8 * 4])
    valid[0, 2] = 0
    assert linear_in_time(frames, valid, 4, 1).flatten().tolist() == pytest.approx([5, 3, 2, 2])
    assert linear_in_time(frames[:, :2], valid[:, :2], 2, 1).flatten().tolist() == pytest.approx([4, 2])
    assert linear_in_time(frames, valid, 1, 1).flatten().tolist() == [2.0]


def test_the_motion_start_is_given_to_the_mean_network_and_refused_where_it_does_not_belong():
    """mean_skip 'motion' at t > 1: the mean is the given start plus the network's correction (zero
    when fresh), for predict_mean, mean_loss, measure_residual_std and sample alike; without a start,
    with a wrongly shaped one, or with one given to another mean_skip, a clear error. At t = 1 the
    three starts are the target frame and none is needed."""
    from hpcsr.motion import field_start

    r = recipe(4, 2)
    model = build_model(dataclasses.replace(TINY, mean_skip="motion"), r, future_context=1)
    g = torch.Generator().manual_seed(5)
    lr = torch.rand(2, model.frames, 4, 4, generator=g)
    start = torch.stack([field_start(x, 4, 2, model.target) for x in lr])
    torch.testing.assert_close(model.predict_mean(lr, start=start), start)
    hr = torch.rand(2, 2, 16, 16, generator=g)
    torch.testing.assert_close(model.mean_loss(lr, hr, start=start), (start - hr).square().mean())
    assert model.measure_residual_std([(lr, hr, start)]) == pytest.approx(float((hr - start).std()), rel=1e-5)
    z = model.sample(lr, 2, "ddim", 2, generator=g, start=start)
    assert z.shape == (2, 2, 2, 16, 16) and torch.isfinite(z).all()
    with pytest.raises(ValueError, match="needs the start along the motion"):
        model.predict_mean(lr)
    with pytest.raises(ValueError, match="needs the start along the motion"):
        model.predict_mean(lr, start=start[:, :1])
    linear = build_model(dataclasses.replace(TINY, mean_skip="linear"), r, future_context=1)
    with pytest.raises(ValueError, match="a start was given but model.mean_skip is 'linear'"):
        linear.predict_mean(lr, start=start)
    at_one = build_model(dataclasses.replace(TINY, mean_skip="motion"), recipe(4, 1))
    lr1 = torch.rand(1, at_one.frames, 4, 4, generator=g)
    torch.testing.assert_close(at_one.predict_mean(lr1), upsample_space(lr1[:, -1], 4)[:, None])


def test_auto_start_is_motion_for_short_lr_steps_only():
    """model.mean_skip 'auto' resolves from t x the HR step (MOTION_MAX_LR_MINUTES = 30); an explicit
    choice is kept; a network built with 'auto' takes a given start, else the linear one."""
    from hpcsr.models.config import resolve_mean_skip
    from hpcsr.models.mean_net import linear_in_time

    assert [resolve_mean_skip("auto", t, m) for t, m in [(2, 10), (3, 10), (2, 15), (3, 15), (2, 60), (1, 10)]] == [
        "motion",
        "motion",
        "motion",
        "linear",
        "linear",
        "linear",
    ]
    assert resolve_mean_skip("hold", 2, 10) == "hold" and resolve_mean_skip("motion", 3, 60) == "motion"
    model = build_model(dataclasses.replace(TINY, mean_skip="auto"), recipe(4, 2), future_context=1)
    lr = torch.rand(1, model.frames, 4, 4)
    up, valid = model._prepare(lr, None)
    torch.testing.assert_close(model.predict_mean(lr), linear_in_time(up, valid, 2, model.target))
    start = torch.rand(1, 2, 16, 16)
    torch.testing.assert_close(model.predict_mean(lr, start=start), start)


@pytest.mark.parametrize("s,t", [(4, 2), (5, 3), (2, 1)])
def test_fresh_mean_with_the_linear_start_is_the_evaluation_baseline(s, t):
    """With one future frame, the untrained mean of block n is the evaluation's baseline (bicubic in
    space, linear in time: hpcsr.evaluate.baselines.bicubic_linear) for the HR steps under block n, in
    normalised units: training starts at the reference it is scored against."""
    from hpcsr.evaluate.baselines import bicubic_linear

    r = recipe(s, t)
    model = build_model(TINY, r, future_context=1)
    L = r.context
    g = torch.Generator().manual_seed(3)
    sequence = torch.rand(L + 3, 3, 3, generator=g)
    baseline = bicubic_linear(sequence.numpy(), s, t, clip_negative=False)
    for n in range(L - 1, L + 2):
        mean = model.predict_mean(sequence[n - L + 1 : n + 2][None])[0]
        torch.testing.assert_close(mean, torch.from_numpy(baseline[n * t : (n + 1) * t]), atol=1e-5, rtol=1e-5)


def test_a_window_runs_the_mean_network_on_that_part_of_the_field_only():
    """predict_mean's window (top, left, h, w) (train.mean_grid_shift) cuts the prepared inputs before
    the network: a fresh network (its start) returns the same window of its whole-field output; a
    trained one differs from its whole-field output there, since its pooling blocks then fall elsewhere
    and its statistics span the window; a window outside the field, or with the self-ensemble, is
    refused."""
    from hpcsr.models.blocks import crop

    fresh = build_model(TINY, recipe(4, 2))
    lr, _ = batch(fresh, 24)
    window = (2, 3, 20, 16)
    cut = fresh.predict_mean(lr, window=window)
    assert cut.shape == (*lr.shape[:1], 2, 20, 16)
    torch.testing.assert_close(cut, crop(fresh.predict_mean(lr), window), rtol=0, atol=1e-6)
    trained = randomise(build_model(TINY, recipe(4, 2)))
    whole = trained.predict_mean(lr)
    assert torch.equal(trained.predict_mean(lr, window=(0, 0, 24, 24)), whole)
    assert not torch.allclose(trained.predict_mean(lr, window=window), crop(whole, window), atol=1e-4)
    for bad in [(5, 0, 20, 20), (0, 0, 0, 8), (-1, 0, 8, 8)]:
        with pytest.raises(ValueError, match="must lie inside the 24 x 24 field"):
            trained.predict_mean(lr, window=bad)
    with pytest.raises(ValueError, match="not for the self-ensemble"):
        trained.predict_mean(lr, symmetries=8, window=window)


def test_every_lr_frame_influences_the_mean():
    model = randomise(build_model(TINY, recipe(10, 3))).eval()
    lr, _ = batch(model, 20)
    lr.requires_grad_(True)
    model.predict_mean(lr).sum().backward()
    per_frame = lr.grad.abs().sum((0, 2, 3))
    assert bool((per_frame > 0).all()), per_frame


def test_output_frames_differ_through_the_frame_time_conditioning():
    model = randomise(build_model(TINY, recipe(25, 6))).eval()
    lr, _ = batch(model, 50)
    with torch.no_grad():
        mean = model.predict_mean(lr)
    assert float((mean[:, 0] - mean[:, -1]).abs().max()) > 1e-3


@pytest.mark.parametrize("norm", ["pixel", "group"])
def test_pixel_norm_makes_a_tile_give_the_domain_s_output_away_from_its_edges(norm):
    """A 128 px field cut out of a 192 px one, 32 px (a multiple of the UNet's 4 px stride) from its
    corner: with model.norm=pixel the mean network and the denoiser return the same values beyond
    their receptive field from the cut (48 px); GroupNorm's statistics span the whole field, so its
    output changes everywhere with the field's size (what sampling in tiles of the training patch
    works around)."""
    model = randomise(build_model(dataclasses.replace(TINY, norm=norm), recipe(4, 2), 1)).eval()
    lr = torch.randn(1, model.frames, 48, 48, generator=torch.Generator().manual_seed(3))
    sub = lr[..., 8:40, 8:40]
    inner, offset = slice(48, 80), slice(32 + 48, 32 + 80)
    noisy = torch.randn(1, 2, 192, 192, generator=torch.Generator().manual_seed(4))
    steps = torch.tensor([500])
    with torch.no_grad():
        mean_big, mean_sub = model.predict_mean(lr), model.predict_mean(sub)
        lr_up, valid = model._prepare(lr, None)
        sub_up, sub_valid = model._prepare(sub, None)
        v_big = model.denoiser(noisy, steps, model.denoiser.encode(lr_up, valid, None, mean_big, model.target))
        cond = model.denoiser.encode(sub_up, sub_valid, None, mean_sub, model.target)
        v_sub = model.denoiser(noisy[..., 32:160, 32:160], steps, cond)
    mean_diff = (mean_big[..., offset, offset] - mean_sub[..., inner, inner]).abs().max()
    v_diff = (v_big[..., offset, offset] - v_sub[..., inner, inner]).abs().max()
    if norm == "pixel":
        assert mean_diff < 1e-4 and v_diff < 1e-4
    else:
        assert mean_diff > 1e-3 and v_diff > 1e-3


@pytest.mark.slow  # the author-size network
def test_non_power_of_two_and_rectangular_patches():
    """Patch sides need not divide by 2^(levels-1): padded inside, cropped back; samples keep the shape."""
    model = randomise(build_model(TINY, recipe(10, 3))).eval()
    lr = torch.randn(1, 5, 3, 5)  # 30 x 50 HR
    with torch.no_grad():
        mean = model.predict_mean(lr)
        out = model.sample(lr, members=2, steps=3, generator=torch.Generator().manual_seed(0))
    assert mean.shape == (1, 3, 30, 50) and out.shape == (1, 2, 3, 30, 50)
    assert bool(torch.isfinite(out).all())


@pytest.mark.slow  # the author-size network
def test_nan_in_lr_is_masked_not_propagated():
    model = randomise(build_model(TINY, recipe(10, 3)))
    lr, hr = batch(model, 40)
    lr[0, :, 1, 2] = float("nan")
    lr[1, 2] = float("nan")  # a whole missing frame
    mean = model.predict_mean(lr)
    assert bool(torch.isfinite(mean).all())
    loss = model.mean_loss(lr, hr) + model.diffusion_loss(lr, hr, mean)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())
    # a missing value is not a value: the validity channel tells it apart from a zero
    zeros = torch.nan_to_num(lr, nan=0.0)
    with torch.no_grad():
        assert not torch.allclose(model.predict_mean(lr), model.predict_mean(zeros))


def test_nan_in_hr_is_left_out_of_the_losses():
    model = randomise(build_model(TINY, recipe(10, 3)))
    lr, hr = batch(model, 20)
    hr_nan = hr.clone()
    hr_nan[0, 1, :5] = float("nan")
    valid = torch.isfinite(hr_nan)
    with torch.no_grad():
        mean = model.predict_mean(lr)
        expected = ((mean - hr)[valid] ** 2).mean()
        torch.testing.assert_close(model.mean_loss(lr, hr_nan), expected)
        assert torch.isfinite(model.diffusion_loss(lr, hr_nan, mean))
        all_missing = torch.full_like(hr, float("nan"))
        assert float(model.mean_loss(lr, all_missing)) == 0.0


def test_diffusion_loss_at_a_perfect_denoiser_is_zero():
    """With the denoiser replaced by the exact v for a known residual, the loss vanishes: the target
    and the noising follow the v-parametrisation."""
    model = build_model(TINY, recipe(10, 1))
    lr, hr = batch(model, 20, B=3)
    mean = torch.zeros_like(hr)
    replay = torch.Generator().manual_seed(0)  # the loss draws the steps (default levels), then the noise
    steps = NoiseLevels().draw(model.schedule, 3, replay)
    eps = torch.randn(hr.shape, generator=replay)
    a, sigma = model.schedule.coefficients(steps, 4)
    v_true = a * eps - sigma * hr

    class Oracle(torch.nn.Module):
        def encode(self, *args):
            return None

        def forward(self, noisy, n, cond):
            assert torch.equal(n, steps)
            torch.testing.assert_close(noisy, a * hr + sigma * eps)
            return v_true

    model.denoiser = Oracle()
    assert float(model.diffusion_loss(lr, hr, mean, generator=torch.Generator().manual_seed(0))) == 0.0


@pytest.mark.slow  # a network per pair and context
def test_state_dict_is_identical_in_shape_for_every_pair_and_context():
    """Transferable by design: a state dict of one pair loads strictly into any other pair's model,
    including another context length L."""
    source = randomise(build_model(TINY, recipe(10, 3)))
    state = source.state_dict()
    assert not any("schedule" in k for k in state)
    for pair in PAPER_PAIRS:
        r = recipe(pair.s, pair.t)
        for context in (r.context, r.context + 3):
            target = build_model(TINY, dataclasses.replace(r, context=context))
            target.load_state_dict(state, strict=True)
            lr, _ = batch(target, patch_for(pair.s))
            with torch.no_grad():
                assert bool(torch.isfinite(target.predict_mean(lr)).all())
            assert float(target.schedule.betas[-1]) == pytest.approx(r.beta_end)


@pytest.mark.slow  # full sampling loops
def test_sample_shapes_determinism_and_members():
    model = randomise(build_model(dataclasses.replace(TINY, diffusion_steps=20), recipe(10, 3))).eval()
    lr, _ = batch(model, 20)
    for sampler, steps in (("ddim", 4), ("dpmpp2m", 4), ("dpmpp2m_ddim", 4), ("ddpm", 50)):
        a = model.sample(lr, 3, sampler=sampler, steps=min(steps, 20), generator=torch.Generator().manual_seed(0))
        b = model.sample(lr, 3, sampler=sampler, steps=min(steps, 20), generator=torch.Generator().manual_seed(0))
        assert a.shape == (2, 3, 3, 20, 20) and bool(torch.isfinite(a).all())
        assert torch.equal(a, b)
        assert float((a[:, 0] - a[:, 1]).abs().max()) > 0  # members differ
    mean = torch.zeros(2, 3, 20, 20)
    c = model.sample(lr, 2, steps=2, mean=mean, generator=torch.Generator().manual_seed(0))
    d = model.sample(lr, 2, steps=2, mean=mean + 1, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(d - c, torch.ones_like(c))  # the mean conditions the denoiser too
    assert c.shape == (2, 2, 3, 20, 20)


def test_bf16_autocast_forward_backward_and_sampling():
    model = randomise(build_model(TINY, recipe(10, 3)))
    lr, hr = batch(model, 20)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mean = model.predict_mean(lr)
        loss = model.mean_loss(lr, hr) + model.diffusion_loss(lr, hr, mean)
        out = model.sample(lr, 2, steps=3)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    # a model cast to bf16 (DeepSpeed bf16) takes float32 inputs and keeps a float32 schedule
    half = randomise(build_model(TINY, recipe(10, 3))).to(torch.bfloat16)
    assert half.schedule.alphabar.dtype == torch.float32
    mean = half.predict_mean(lr)
    loss = half.mean_loss(lr, hr) + half.diffusion_loss(lr, hr, mean)
    loss.backward()
    assert torch.isfinite(loss) and half.mean_net.stem.weight.grad.dtype == torch.bfloat16
    assert bool(torch.isfinite(half.sample(lr, 2, steps=3)).all())


def test_host_sync_detector_catches_item(no_host_sync):
    with pytest.raises(pytest.fail.Exception, match="_local_scalar_dense"):
        with no_host_sync():
            torch.ones(2).sum().item()


def test_no_host_sync_in_forward_and_losses(no_host_sync):
    model = randomise(build_model(TINY, recipe(10, 3)))
    lr, hr = batch(model, 20)
    lr[0, 0, 0, 0] = float("nan")
    hr[0, 0, 0, 0] = float("nan")
    with no_host_sync():
        mean = model.predict_mean(lr)
        loss = model.mean_loss(lr, hr) + model.diffusion_loss(lr, hr, mean)
        loss.backward()
        model.sample(lr, 2, steps=2)


def test_static_channels():
    cfg = dataclasses.replace(TINY, static_channels=2)
    model = randomise(build_model(cfg, recipe(10, 3)))
    lr, hr = batch(model, 20)
    static = torch.randn(2, 2, 20, 20)
    mean = model.predict_mean(lr, static=static)
    (model.mean_loss(lr, hr, static=static) + model.diffusion_loss(lr, hr, mean, static=static)).backward()
    assert model.sample(lr, 1, steps=2, static=static).shape == (2, 1, 3, 20, 20)
    with pytest.raises(ValueError, match=r"static fields must have shape \(2, 2, 20, 20\).*got None"):
        model.predict_mean(lr)
    with pytest.raises(ValueError, match="model.static_channels=0"):
        build_model(TINY, recipe(10, 3)).predict_mean(lr, static=static)


def test_bad_inputs_name_the_values():
    model = build_model(TINY, recipe(10, 3))
    lr, hr = batch(model, 20)
    with pytest.raises(ValueError, match=r"lr has 4 frames but this model expects 5 \(recipe context L=5\)"):
        model.predict_mean(lr[:, :4])
    with pytest.raises(ValueError, match=r"lr must be \(batch, frames, Y/s, X/s\), got shape \(5, 2, 2\)"):
        model.predict_mean(lr[0])
    with pytest.raises(ValueError, match="hr has 2 frames but the factor pair has t=3"):
        model.mean_loss(lr, hr[:, :2])
    with pytest.raises(ValueError, match="hr patch side 25 is not divisible by s=10: use a patch of 20 or 30"):
        model.mean_loss(lr, torch.zeros(2, 3, 25, 25))
    with pytest.raises(ValueError, match=r"hr shape \(2, 3, 30, 30\) does not match lr \(2, 5, 2, 2\)"):
        model.mean_loss(lr, torch.zeros(2, 3, 30, 30))
    with pytest.raises(ValueError, match=r"mean shape \(1, 3, 20, 20\) does not match"):
        model.diffusion_loss(lr, hr, hr[:1])
    with pytest.raises(ValueError, match="sampler 'euler' unknown"):
        model.sample(lr, 2, sampler="euler")
    with pytest.raises(ValueError, match="members=0 must be a positive integer"):
        model.sample(lr, 0)
    with pytest.raises(ValueError, match="steps=2000 must be an integer in 1..1000"):
        model.sample(lr, 1, steps=2000)


def test_residual_std_is_measured_carried_and_scales_the_diffusion():
    """measure_residual_std sets the buffer to the std of hr - mean over all batches (as if pooled);
    the state dict carries it; with the global residual scale the v target and the samples use
    residual / (std * residual_scale) (the local scale: tests/test_residual_scale.py)."""
    glob = dataclasses.replace(TINY, residual_norm="global")
    model = randomise(build_model(glob, recipe(10, 1)))
    lr, hr = batch(model, 20, B=3)
    hr = 0.2 * hr
    with torch.no_grad():
        expected = float((hr - model.predict_mean(lr)).std())
    assert model.measure_residual_std([(lr[:2], hr[:2]), (lr[2:], hr[2:])]) == pytest.approx(expected, rel=1e-5)
    copy = build_model(dataclasses.replace(glob, residual_scale=2.0), recipe(10, 1))
    copy.load_state_dict(model.state_dict(), strict=True)
    assert float(copy.residual_std) == pytest.approx(expected, rel=1e-6)
    assert float(copy.residual_unit) == pytest.approx(2 * expected, rel=1e-6)

    mean = torch.zeros_like(hr)
    replay = torch.Generator().manual_seed(0)
    steps = NoiseLevels().draw(copy.schedule, 3, replay)
    eps = torch.randn(hr.shape, generator=replay)
    a, sigma = copy.schedule.coefficients(steps, 4)
    unit = hr / (2 * expected)

    class Oracle(torch.nn.Module):
        def encode(self, *args):
            return None

        def forward(self, noisy, n, cond):
            torch.testing.assert_close(noisy, a * unit + sigma * eps)
            return a * eps - sigma * unit

    copy.denoiser = Oracle()
    assert float(copy.diffusion_loss(lr, hr, mean, generator=torch.Generator().manual_seed(0))) < 1e-10
    # a flat residual (no variation) keeps the unit std instead of dividing by zero
    with torch.no_grad():
        flat = model.predict_mean(lr)
    assert model.measure_residual_std([(lr, flat)]) == 1.0


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("upsample", "cubic", "model.upsample='cubic' must be 'bicubic', 'bilinear' or 'nearest'"),
        ("schedule", "quadratic", "model.schedule='quadratic' must be 'linear', 'cosine' or 'sigmoid'"),
        ("mean_skip", "none", "model.mean_skip='none' must be 'auto', 'hold', 'linear' or 'motion'"),
        ("downsample", "max", "model.downsample='max' must be 'strided' or 'pool'"),
    ],
)
def test_a_model_config_built_in_code_refuses_a_value_outside_its_choices(key, value, message):
    """ModelConfig checks every choice field itself (one helper reads the Literal annotations), not
    only when hpcsr.config builds it: exports rebuild theirs from metadata."""
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TINY, **{key: value})


def mean_and_v(model, lr, noisy):
    """The mean network's output and the denoiser's v on it at one diffusion step."""
    with torch.no_grad():
        mean = model.predict_mean(lr)
        lr_up, valid = model._prepare(lr, None)
        cond = model.denoiser.encode(lr_up, valid, None, mean, model.target)
        return mean, model.denoiser(noisy, torch.tensor([500]), cond)


def mirrored(model):
    """A copy of `model` whose 3 x 3 kernels are mirrored top to bottom (1 x 1 ones are their own
    mirror; the window attention has no position terms)."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for m in twin.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                m.weight.copy_(m.weight.flip(-2))
    return twin


@pytest.mark.parametrize("downsample", ["pool", "strided"])
def test_pooled_downsampling_treats_the_top_and_bottom_borders_alike(downsample):
    """Mirror the field top to bottom and the kernels with it: the pooled UNet returns the mirrored
    mean and v (its 2 x 2 means line up with the upsampling's 2 x 2 blocks, and every border is padded
    alike); the stride-2 convolution samples the even rows, which the mirror turns into odd ones, so
    its output differs."""
    model = randomise(build_model(dataclasses.replace(TINY, downsample=downsample), recipe(4, 2), 1)).eval()
    g = torch.Generator().manual_seed(1)
    lr = torch.rand(1, model.frames, 12, 12, generator=g)
    noisy = torch.randn(1, 2, 48, 48, generator=g)
    mean, v = mean_and_v(model, lr, noisy)
    mean_m, v_m = mean_and_v(mirrored(model), lr.flip(-2), noisy.flip(-2))
    diff = max(float((mean_m.flip(-2) - mean).abs().max()), float((v_m.flip(-2) - v).abs().max()))
    if downsample == "pool":
        assert diff < 1e-5
    else:
        assert diff > 1e-3


def test_an_export_from_before_the_downsample_option_keeps_the_stride_2_convolution():
    """A model record without the key is rebuilt as it was trained, not with the new default; the
    state dict's shapes do not change with the option, so only the record tells them apart."""
    old = {k: v for k, v in dataclasses.asdict(TINY).items() if k != "downsample"}
    assert recorded_model(old)["downsample"] == "strided"
    assert TINY.downsample == "pool"
    shapes = {
        kind: {
            k: v.shape
            for k, v in build_model(dataclasses.replace(TINY, downsample=kind), recipe(4, 2)).state_dict().items()
        }
        for kind in ("pool", "strided")
    }
    assert shapes["pool"] == shapes["strided"]


def test_pixel_input_tells_both_networks_each_item_s_pixel_size():
    """model.pixel_input: without a pixel size the model refuses to run, naming the setting; each item
    gets the output of its own pixel size (a (B,) level is the per-item batch of two one-level runs),
    both networks depend on it, the ensemble's members share their item's, and the gradient reaches
    the embeddings. Without the option the networks have no such input (exports from before it)."""
    model = randomise(build_model(dataclasses.replace(TINY, pixel_input=True), recipe(4, 2), 1)).eval()
    lr, hr = batch(model, 24)
    with pytest.raises(ValueError, match="pixel_input"):
        model.predict_mean(lr)
    levels = torch.tensor([0.0, -1.0])
    gen = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    with torch.no_grad():
        runs = {}
        for level in (0.0, -1.0):
            model.pixel_level = level
            runs[level] = (model.predict_mean(lr), model.sample(lr, 3, "ddim", 2, generator=gen()))
        model.pixel_level = levels
        mean, members = model.predict_mean(lr), model.sample(lr, 3, "ddim", 2, generator=gen())
    assert (runs[0.0][0] - runs[-1.0][0]).abs().max() > 1e-4  # the mean network is told (float noise: 1e-6)
    assert torch.allclose(mean[0], runs[0.0][0][0], atol=1e-5) and torch.allclose(mean[1], runs[-1.0][0][1], atol=1e-5)
    residual = {k: v[1] - v[0][:, None] for k, v in runs.items()}
    assert (residual[0.0] - residual[-1.0]).abs().max() > 1e-4  # the denoiser is told
    assert torch.allclose(members[0], runs[0.0][1][0], atol=1e-4)
    assert torch.allclose(members[1], runs[-1.0][1][1], atol=1e-4)
    model.train()
    loss = model.mean_loss(lr, hr) + model.diffusion_loss(lr, hr, mean, generator=gen())
    loss.backward()
    for net in (model.mean_net, model.denoiser):
        assert float(sum(p.grad.abs().sum() for p in net.pixel_emb.parameters())) > 0
    model.pixel_level = torch.zeros(3)
    with pytest.raises(ValueError, match="3 values for a batch of 2"):
        model.predict_mean(lr)
    plain = build_model(TINY, recipe(4, 2), 1)
    assert plain.mean_net.pixel_emb is None and plain.denoiser.pixel_emb is None
    assert not any("pixel_emb" in k for k in plain.state_dict())
