"""Normalisation: hand-computed values, round trips, NaN, and agreement with the shard statistics."""

import math

import numpy as np
import pytest
import torch

from hpcsr.data.normalise import Normaliser
from hpcsr.data.store import Shard


def test_hand_computed_values():
    log = Normaliser.from_stats({"hr_log1p_mean": 0.5, "hr_log1p_std": 2.0, "hr_std": 4.0}, "log1p")
    assert log.forward(torch.tensor([math.e - 1.0])).item() == pytest.approx(0.25)
    assert log.forward(torch.tensor([0.0])).item() == pytest.approx(-0.25)
    scale = Normaliser.from_stats({"hr_std": 4.0}, "scale")
    assert scale.forward(torch.tensor([3.0, 0.0])).tolist() == [0.75, 0.0]  # zero rain stays zero
    assert scale.inverse(torch.tensor([0.75])).item() == pytest.approx(3.0)


@pytest.mark.parametrize("kind", ["log1p", "scale"])
def test_round_trip_torch_and_numpy_keep_nan(kind):
    n = Normaliser.from_stats({"hr_log1p_mean": 0.1, "hr_log1p_std": 0.3, "hr_std": 0.7}, kind)
    mm = np.array([0.0, 0.1, 2.5, 40.0, np.nan], np.float32)
    z = n.forward(mm)
    assert z.dtype == np.float32 and np.isnan(z[-1])
    np.testing.assert_allclose(n.inverse(z)[:-1], mm[:-1], rtol=1e-5, atol=1e-6)
    zt = n.forward(torch.from_numpy(mm))
    np.testing.assert_allclose(zt.numpy(), z, rtol=1e-6)
    assert torch.isnan(n.inverse(zt)[-1])


def test_inverse_is_differentiable():
    n = Normaliser.from_stats({"hr_log1p_mean": 0.2, "hr_log1p_std": 0.5}, "log1p")
    z = torch.tensor([0.3, -1.0], dtype=torch.float64, requires_grad=True)
    n.inverse(z).sum().backward()
    # d/dz expm1(z*scale + shift) = scale * exp(z*scale + shift)
    expected = 0.5 * torch.exp(z.detach() * 0.5 + 0.2)
    torch.testing.assert_close(z.grad, expected)


def test_bad_stats_are_named():
    with pytest.raises(KeyError, match="hr_log1p_std"):
        Normaliser.from_stats({"hr_log1p_mean": 0.1}, "log1p")
    with pytest.raises(ValueError, match="scale=0.0"):
        Normaliser.from_stats({"hr_std": 0.0}, "scale")
    with pytest.raises(ValueError, match="'cube'"):
        Normaliser.from_stats({"hr_std": 1.0}, "cube")
    n = Normaliser("log1p", 0.1, 0.2)
    assert Normaliser.from_dict(n.to_dict()) == n


@pytest.mark.parametrize("unit", [1.0, 0.1])
def test_train_split_is_standardised(train_dataset, unit):
    """The shard's train-split statistics (unit 1) or HR histogram (another log unit), applied to
    the HR values under the train blocks, give mean 0 and standard deviation 1 in log1p space
    (preprocessing and training agree; the store is uint16, so the histogram is exact)."""
    with Shard(train_dataset / "shards" / "s4_t3.h5") as shard:
        store = shard.hr_store()
        steps = sorted({int(h) + k for h in shard.hr_start[shard.indices("train")] for k in range(shard.pair.t)})
        y0, y1, x0, x1 = shard.hr_window
        hr = np.stack([store.read(h, h + 1, slice(y0, y1), slice(x0, x1))[0] for h in steps])
        n = Normaliser.from_stats(shard.stats, "log1p", unit, shard.hr_histogram())
        z = n.forward(hr.astype(np.float64))
        store.close()
    z = z[np.isfinite(z)]
    assert n.unit == unit and z.size == shard.stats["count_hr"]
    assert abs(z.mean()) < 1e-9 and abs(z.std() - 1.0) < 1e-9


def test_log_unit_moves_the_bend():
    """log1p(mm / u): mm = u maps to ln 2 before standardising, the inverse returns the mm, a unit
    other than 1 without a histogram (an older shard) is refused by name, and exports from before
    the unit read as unit 1."""
    n = Normaliser("log1p", 0.0, 1.0, 0.1)
    assert float(n.forward(np.array([0.1]))[0]) == pytest.approx(math.log(2))
    mm = torch.tensor([0.0, 0.01, 0.5, 12.0], dtype=torch.float64)
    torch.testing.assert_close(n.inverse(n.forward(mm)), mm, rtol=1e-12, atol=1e-15)
    with pytest.raises(KeyError, match="needs the HR histogram"):
        Normaliser.from_stats({"hr_log1p_mean": 0.1, "hr_log1p_std": 1.0}, "log1p", 0.1)
    with pytest.raises(ValueError, match="unit=0.0"):
        Normaliser("log1p", 0.0, 1.0, 0.0)
    assert Normaliser.from_dict({"kind": "log1p", "shift": 0.2, "scale": 0.5}).unit == 1.0


@pytest.mark.parametrize("kind", ["log1p", "scale"])
def test_code_table_is_decode_then_forward_for_every_code(kind):
    """The loader's one-gather path (uint16 stores) gives the values of decode + forward."""
    from hpcsr.data.store import decode

    n = Normaliser.from_stats({"hr_log1p_mean": 0.3, "hr_log1p_std": 0.8, "hr_std": 1.7}, kind)
    table = n.code_table(10, 65535)
    codes = np.arange(1 << 16, dtype=np.uint16)
    want = n.forward(torch.from_numpy(decode(codes, 10, 65535))).numpy()
    assert table.dtype == np.float32 and np.isnan(table[65535]) and np.isfinite(table[:65535]).all()
    np.testing.assert_allclose(table[:65535], want[:65535], rtol=1e-6, atol=1e-7)
    assert table[0] == n.forward(np.zeros(1, np.float32))[0]  # dry is the transform of 0 mm
    with pytest.raises(ValueError, match="uint16 store"):
        n.code_table(0, 65535)


def test_numpy_and_torch_paths_agree_at_every_size():
    n = Normaliser("log1p", 0.2, 0.7)
    for size in (10, 4095, 4096, 30000):
        mm = np.random.default_rng(size).gamma(0.3, 2.0, size).astype(np.float32)
        np.testing.assert_allclose(n.forward(mm), n.forward(torch.from_numpy(mm)).numpy(), rtol=1e-6, atol=1e-6)
