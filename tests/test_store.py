"""hpcsr.data.store, the reader side of the preprocessing layout, on real files."""

import pickle

import h5py
import numpy as np
import pytest

from hpcsr.data.store import HRStore, Shard, decode
from hpcsr.factors import FactorPair


def test_decode_rule():
    codes = np.array([0, 1, 358, 65534, 65535], np.uint16)
    out = decode(codes, 10, 65535)
    assert out.dtype == np.float32
    # the float32 nearest to code / 10 (what the netCDF conversion of the real files holds)
    np.testing.assert_array_equal(out[:4], (np.array([0, 1, 358, 65534], np.float64) / 10).astype(np.float32))
    assert out[2] == np.float32(35.8) and np.isnan(out[4])
    floats = np.array([0.5, np.nan], np.float32)
    np.testing.assert_array_equal(decode(floats, 0, np.nan), floats)


def test_hr_store_api(small_dataset):
    store = HRStore(small_dataset["out"] / "hr.h5")
    T, Y, X = store.shape
    assert store.times.dtype == np.dtype("datetime64[s]") and len(store.times) == T
    assert store.interval_minutes == 60 and store.valid_mask.shape == (Y, X) and store.valid_mask.dtype == bool
    assert len(store.x) == X and len(store.y) == Y and store.y[0] > store.y[-1]
    assert store.x[1] - store.x[0] == store.transform[1] == 1000.0
    assert "+proj=stere" in store.crs_proj4 and "Polar Stereographic" in store.crs_wkt
    patch = store.read(3, 6, slice(10, 30), slice(40, 70))
    assert patch.shape == (3, 20, 30) and patch.dtype == np.float32
    raw = store.read_raw(3, 6, slice(10, 30), slice(40, 70))
    np.testing.assert_array_equal(np.isnan(patch), raw == 65535)
    # the coverage mask is where any frame has data
    assert np.array_equal(store.valid_mask, ~np.all(np.isnan(store.read(0, T)), axis=0))
    assert store.index_of(store.times[5]) == 5
    with pytest.raises(KeyError, match="no frame ends at"):
        store.index_of(np.datetime64("1999-01-01T00:00"))


def test_shard_api(small_dataset):
    shard = Shard(small_dataset["out"] / "shards" / "s10_t3.h5")
    assert shard.pair == FactorPair(10, 3) and shard.lr.dtype == np.float32
    assert shard.lr.shape == (len(shard), 10, 10)
    assert set(shard.splits) == {"train", "val", "test"}
    for key in ("hr_mean", "hr_std", "lr_mean", "lr_std", "dry_fraction", "hr_quantiles"):
        assert key in shard.stats
    assert 0.8 < shard.stats["dry_fraction"] < 0.97
    store = shard.hr_store()
    assert isinstance(store, HRStore)
    assert np.all(store.times[shard.hr_start + 2] == shard.times)


def test_context_windows_skip_gaps(small_dataset):
    shard = Shard(small_dataset["out"] / "shards" / "s10_t1.h5")
    step = np.timedelta64(3600, "s")
    assert np.any(np.diff(shard.times) != step)  # the dataset has gaps
    for L, future in ((5, 0), (3, 1)):
        got = shard.context_windows(L, future)
        expected = [
            i
            for i in range(L - 1, len(shard) - future)
            if np.all(np.diff(shard.times[i - L + 1 : i + future + 1]) == step)
        ]
        np.testing.assert_array_equal(got, expected)
    val = shard.context_windows(5, split="val")
    assert np.all(shard.split[val] == 1) and len(val) > 0


def test_objects_survive_pickling_for_loader_workers(small_dataset):
    shard = Shard(small_dataset["out"] / "shards" / "s25_t6.h5")
    first = shard.lr[0]
    clone = pickle.loads(pickle.dumps(shard))
    np.testing.assert_array_equal(clone.lr[0], first)
    store = pickle.loads(pickle.dumps(shard.hr_store()))
    assert store.read(0, 1).shape == (1, 100, 100)


def test_wrong_files_are_refused_with_the_fix(tmp_path, small_dataset):
    with pytest.raises(FileNotFoundError, match="run `hpcsr-preprocess` first"):
        HRStore(tmp_path / "hr.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(ValueError, match="not 'hpcsr-hr-store' version 1: rerun `hpcsr-preprocess`"):
        HRStore(tmp_path / "other.h5")
    with pytest.raises(ValueError, match="not 'hpcsr-lr-shard'"):
        Shard(small_dataset["out"] / "hr.h5")
