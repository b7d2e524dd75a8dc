"""Motion between LR frames, interpolation in time along it (hpcsr.motion: the 'motion' baseline and
the mean network's 'motion' start, computed on a window with its halo as on the whole field)."""

import numpy as np
import pytest
import torch

from hpcsr.coarsen import coarsen
from hpcsr.evaluate import baselines as bl
from hpcsr.models.inputs import prepare_lr
from hpcsr.motion import (
    displacement,
    field_start,
    frame_velocities,
    halo_cells,
    motion_linear,
    target_steps,
    velocity,
    warp,
)


def _blob(shape, cy, cx, width=4.0, peak=5.0):
    y, x = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    return peak * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width**2))


@pytest.mark.parametrize("dy, dx", [(3, -5), (0, 7), (-6, 0)])
def test_displacement_finds_a_whole_pixel_shift(dy, dx):
    a = _blob((64, 80), 30, 40) + _blob((64, 80), 12, 20, width=3, peak=2)
    b = np.roll(a, (dy, dx), axis=(0, 1))
    got = displacement(a, b)
    assert got == pytest.approx((dy, dx), abs=0.05)


def test_displacement_finds_a_sub_pixel_shift_and_none_for_a_flat_frame():
    a, b = _blob((64, 64), 30, 30, width=5), _blob((64, 64), 32.5, 28.6, width=5)
    got = displacement(a, b)
    assert got == pytest.approx((2.5, -1.4), abs=0.3)
    assert displacement(np.zeros((16, 16)), b[:16, :16]) == (0.0, 0.0)
    assert displacement(a, a) == pytest.approx((0.0, 0.0), abs=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        displacement(a, a[:10])


def test_displacement_respects_max_shift():
    a = _blob((64, 64), 20, 20)
    b = _blob((64, 64), 20, 40)  # 20 px to the right
    assert displacement(a, b, max_shift=24)[1] == pytest.approx(20, abs=0.05)
    assert displacement(a, b)[1] <= 16  # default: a quarter of the smaller side
    assert abs(displacement(a, b, max_shift=5)[1]) <= 5


def test_warp_moves_content_by_whole_pixels_and_holds_edges():
    frame = np.arange(48, dtype=np.float32).reshape(6, 8)
    moved = warp(frame, 1, -2)
    np.testing.assert_allclose(moved[1:, :-2], frame[:-1, 2:], rtol=1e-6)  # content moved down 1, left 2
    np.testing.assert_allclose(moved[0, :-2], frame[0, 2:], rtol=1e-6)  # the first row held
    np.testing.assert_allclose(warp(frame, 0.5, 0)[2, 3], (frame[1, 3] + frame[2, 3]) / 2, rtol=1e-6)


def test_motion_linear_hand_computed_for_t2():
    # two LR frames (s = 1): step i = 1 of block 0 lies between centres c0 = 0.5 and c1 = 2.5 at w = 1/4,
    # the rain moved 4 px in t = 2 steps, so v = 2 px per step: frame 0 moved by 2 * 0.5 = 1 px and
    # frame 1 by 2 * (-1.5) = -3 px, blended 3/4 : 1/4.
    a = _blob((40, 40), 20, 14, width=3)
    b = _blob((40, 40), 20, 18, width=3)
    lr = np.stack([a, b]).astype(np.float32)
    out = motion_linear(lr, 1, 2)
    vy, vx = velocity(np.log1p(a), np.log1p(b), 1, 2)  # on log1p of the LR frames
    assert (vy, vx) == pytest.approx((0, 2), abs=0.05)  # the parabola peak: a few hundredths off
    expected = 0.75 * warp(lr[0], vy * 0.5, vx * 0.5) + 0.25 * warp(lr[1], vy * -1.5, vx * -1.5)
    np.testing.assert_allclose(out[1], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[0], lr[0])  # before the first centre: held
    np.testing.assert_allclose(out[1:3], motion_linear(lr, 1, 2, 1, 3), rtol=1e-6)  # any step range


def test_motion_beats_linear_in_time_on_a_moving_band_and_equals_it_when_still():
    s, t, n = 4, 2, 6
    steps = np.arange(n * t)
    hr = np.stack([_blob((64, 96), 32, 20 + 5 * i, width=5) for i in steps])  # 5 px per HR step
    lr = coarsen(hr, s, t)
    rmse = {name: np.sqrt(np.mean((bl.from_lr(name, lr, s, t) - hr)[2:-2] ** 2)) for name in ("bicubic", "motion")}
    assert rmse["motion"] < 0.5 * rmse["bicubic"]
    still = coarsen(np.stack([_blob((64, 96), 32, 40, width=5)] * (n * t)), s, t)
    np.testing.assert_allclose(bl.motion(still, s, t), bl.bicubic_linear(still, s, t), atol=1e-5)


def test_motion_baseline_masks_a_missing_block_and_refuses_unknown_names():
    lr = np.stack([_blob((8, 8), 4, 2 + i, width=2) for i in range(3)]).astype(np.float32)
    lr[1, 2, 3] = np.nan
    out = bl.motion(lr, 2, 2)
    missing = np.isnan(out)
    assert missing[2:4, 4:6, 6:8].all() and missing.sum() == 2 * 2 * 2
    assert np.isfinite(out[0]).all() and (out[np.isfinite(out)] >= 0).all()
    with pytest.raises(ValueError, match="not made from the LR alone"):
        bl.from_lr("mean", lr, 2, 2)
    with pytest.raises(ValueError, match="outside"):
        bl.motion(lr, 2, 2, 0, 7)


def test_target_steps_without_motion_is_the_linear_start():
    from hpcsr.models.mean_net import linear_in_time

    g = torch.Generator().manual_seed(0)
    up = torch.randn(4, 12, 16, generator=g)
    valid = (torch.rand(4, 12, 16, generator=g) > 0.2).float()
    for t, target in [(2, 1), (3, 2), (4, 1)]:
        still = {j: (0.0, 0.0) for j in range(3)}
        np.testing.assert_allclose(
            target_steps(up, valid, still, t, target), linear_in_time(up[None], valid[None], t, target)[0], atol=1e-6
        )


def test_field_start_on_a_window_with_its_halo_equals_the_whole_fields():
    """What the patch loader relies on: the start of a window reaching halo_cells beyond the patch,
    cut to the patch, is the whole field's start there (same velocities)."""
    s, t, target = 4, 3, 1
    y, x = np.mgrid[:24, :30].astype(np.float64)
    lr = torch.from_numpy(
        np.stack([np.sin(0.4 * y + 0.3 * x + k) + np.cos(0.25 * (y - 2 * k)) for k in range(3)]).astype(np.float32)
    )
    lr[0, 3, 4] = float("nan")
    velocities = {0: (2.5, -3.0), 1: (1.0, 4.2)}
    h = halo_cells(velocities, s, t)
    assert h == int(np.ceil((4.2 * 3 + 1) / 4)) + 2  # 6 cells
    whole = field_start(lr, s, t, target, velocities=velocities)
    y0, y1, x0, x1 = 8, 14, 10, 16  # the patch, in LR cells
    window = lr[:, y0 - h : y1 + h, max(x0 - h, 0) : x1 + h]
    part = field_start(window, s, t, target, velocities=velocities)
    oy, ox = h * s, (x0 - max(x0 - h, 0)) * s
    np.testing.assert_allclose(
        part[:, oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s],
        whole[:, y0 * s : y1 * s, x0 * s : x1 * s],
        atol=1e-5,
    )
    assert field_start(lr, s, t, target).shape == (t, 24 * s, 30 * s)  # velocities measured on lr itself


def test_without_a_future_frame_the_target_frame_is_carried_on_with_the_past_motion():
    """Nowcasting (no frame after the target): the steps after the target frame's centre are that
    frame moved on with the motion from the frame before; those before it blend as usual."""
    up = torch.from_numpy(np.stack([_blob((32, 40), 16, 10 + 6 * k, width=3) for k in range(2)]).astype(np.float32))
    valid = torch.ones_like(up)
    v = {0: (0.0, 2.0)}  # 6 px per block of t = 3 steps
    got = target_steps(up, valid, v, 3, 1)
    torch.testing.assert_close(got[2], warp(up[1], 0.0, 2.0 * 1))  # p = 1/3: one step on
    torch.testing.assert_close(got[1], up[1])  # the centre
    blend = (2 / 3) * warp(up[1], 0.0, -2.0) + (1 / 3) * warp(up[0], 0.0, 4.0)
    torch.testing.assert_close(got[0], blend, atol=1e-5, rtol=1e-5)


def test_a_wholly_missing_neighbour_frame_is_treated_as_no_frame():
    """The sampler marks a sequence's absent context frames as NaN: the first block's start must then
    be the one computed without that frame (the target frame carried on with the later motion), not
    the target frame held still because a NaN frame has no measurable motion."""
    s, t = 2, 2
    lr = torch.from_numpy(np.stack([_blob((16, 20), 8, 5 + 3 * k, width=2) for k in range(3)]).astype(np.float32))
    without = field_start(lr[1:], s, t, 0)
    missing = lr.clone()
    missing[0] = float("nan")
    torch.testing.assert_close(field_start(missing, s, t, 1), without)
    moved = frame_velocities(lr[1:], s, t, 0)[0]
    assert moved[1] > 0  # the blob moves along x, so carrying it on differs from holding it
    assert not torch.allclose(without[0], prepare_lr(lr[1:2][None], s, "bicubic")[0][0, 0])
    assert frame_velocities(missing, s, t, 1).keys() == {1}
