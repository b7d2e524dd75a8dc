"""The patch dataset over a real shard written by the preprocessing writer."""

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from hpcsr.coarsen import coarsen
from hpcsr.data.normalise import Normaliser
from hpcsr.data.patches import PatchDataset, PatchSpec, split_windows, valid_corners
from hpcsr.data.sampler import SamplesSeenSampler
from hpcsr.data.store import SPLIT_CODES, Shard
from hpcsr.motion import field_start
from hpcsr.symmetry import dihedral

SPEC = PatchSpec(context=2, patch=24)


@pytest.fixture(scope="module")
def shard_path(train_dataset):
    return train_dataset / "shards" / "s4_t3.h5"


@pytest.fixture(scope="module")
def normaliser(shard_path):
    with Shard(shard_path) as shard:
        return Normaliser.from_stats(shard.stats, "log1p")


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    patch_blocks=st.integers(1, 4),
    s=st.sampled_from([1, 2, 3]),
    min_valid=st.sampled_from([0.5, 0.9, 1.0]),
)
def test_valid_corners_match_brute_force(seed, patch_blocks, s, min_valid):
    rng = np.random.default_rng(seed)
    mask = rng.random((13, 11)) < 0.8
    patch = patch_blocks * s
    if patch > 11:
        return
    got = {tuple(c) for c in valid_corners(mask, patch, s, min_valid)}
    want = {
        (y, x)
        for y in range(0, 13 - patch + 1, s)
        for x in range(0, 11 - patch + 1, s)
        if mask[y : y + patch, x : x + patch].mean() >= min_valid
    }
    assert got == want


def test_windows_are_consecutive_and_inside_their_split(shard_path):
    with Shard(shard_path) as shard:
        block_s = shard.pair.t * shard.interval_minutes * 60
        for split, spec in (("train", PatchSpec(context=3, patch=24, future=1)), ("val", SPEC)):
            windows = split_windows(shard, spec, split)
            assert len(windows)
            for i in windows:
                blocks = np.arange(i - spec.context + 1, i + spec.future + 1)
                assert (shard.split[blocks] == SPLIT_CODES[split]).all()
                assert (np.diff(shard.time_s[blocks]) == block_s).all()
        # the 2 missing hours make gaps that no window crosses
        gaps = np.flatnonzero(np.diff(shard.time_s) != block_s)
        assert len(gaps) >= 1


def test_items_are_deterministic_and_epochs_cover_every_window(shard_path, normaliser):
    a = PatchDataset(shard_path, SPEC, "train", normaliser, seed=5)
    b = PatchDataset(shard_path, SPEC, "train", normaliser, seed=5)
    c = PatchDataset(shard_path, SPEC, "train", normaliser, seed=6)
    n = len(a)
    for item in (0, 3, n + 1):
        x, y = a[item], b[item]
        assert torch.equal(x["where"], y["where"]) and torch.equal(x["hr"].nan_to_num(-9), y["hr"].nan_to_num(-9))
    for epoch in (0, 1):
        targets = sorted(a.locate(k)[0] for k in range(epoch * n, (epoch + 1) * n))
        assert targets == sorted(a.windows.tolist())
    assert [a.locate(k) for k in range(n)] != [c.locate(k) for k in range(n)]
    item = a[2]
    assert item["lr"].shape == (2, 6, 6) and item["hr"].shape == (3, 24, 24)
    assert item["lr"].dtype == torch.float32


def test_lr_target_frame_is_the_coarsened_hr_patch(shard_path, normaliser):
    """Science identity: the last context LR frame is coarsen(HR patch, s, t) - LR and HR are the
    same place and time, and the normalised item is the normaliser applied to them."""
    ds = PatchDataset(shard_path, SPEC, "train", normaliser, seed=1)
    with Shard(shard_path) as shard:
        s, t, min_valid = shard.pair.s, shard.pair.t, shard.min_valid
    for item in range(6):
        i, y, x = ds.locate(item)
        lr, hr = ds.read(i, y, x)
        np.testing.assert_allclose(coarsen(hr, s, t, min_valid=min_valid)[0], lr[-1], rtol=1e-5, atol=1e-6)
        got = ds[item]
        if torch.equal(got["where"], torch.tensor([i, y, x])):
            np.testing.assert_allclose(got["hr"].numpy(), normaliser.forward(hr), rtol=1e-6)


def test_workers_open_their_own_files_and_match_the_main_process(shard_path, normaliser):
    ds = PatchDataset(shard_path, SPEC, "train", normaliser, seed=2)
    ds[0]  # opens the files in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._shard is None and clone._store is None
    batches = []
    for workers in (0, 2):
        loader = DataLoader(ds, batch_sampler=SamplesSeenSampler(3, 0, 1, 0, micro_batches=4), num_workers=workers)
        batches.append([b["hr"].nan_to_num(-9) for b in loader])
    assert all(torch.equal(p, q) for p, q in zip(*batches))


def test_impossible_requests_say_what_to_change(shard_path, normaliser):
    with pytest.raises(ValueError, match="data.min_valid"):
        PatchDataset(shard_path, PatchSpec(context=2, patch=48), "train", normaliser, seed=0, min_valid=1.0)
    with pytest.raises(ValueError, match="shorter context"):
        PatchDataset(shard_path, PatchSpec(context=12, patch=24), "val", normaliser, seed=0)
    with pytest.raises(ValueError, match="multiple of s=4"):
        PatchDataset(shard_path, PatchSpec(context=2, patch=26), "train", normaliser, seed=0)


def test_wet_bias_draws_wetter_patches_from_the_lr_alone(shard_path, normaliser):
    """wet_bias keeps a patch with probability min(1, max(0.1, LR wet fraction / wet_bias)): the kept
    patches are wetter than uniform draws, deterministic, and still fully valid."""
    uniform = PatchDataset(shard_path, SPEC, "train", normaliser, seed=3)
    biased = PatchDataset(shard_path, SPEC, "train", normaliser, seed=3, wet_bias=0.5)
    dry = float(normaliser.forward(np.zeros(1, np.float32))[0])

    def wet_fraction(ds, n=40):
        return np.mean([float((ds[i]["lr"][SPEC.context - 1] > dry + 1e-6).float().mean()) for i in range(n)])

    assert wet_fraction(biased) > wet_fraction(uniform) + 0.05
    for i in (0, 7, 19):
        a, b = biased[i], biased[i]
        assert torch.equal(a["where"], b["where"]) and not torch.isnan(a["hr"]).any()
    lr = torch.full((SPEC.context, 6, 6), dry)
    assert biased.keep_probability(lr) == pytest.approx(0.1)
    lr[SPEC.context - 1, :3] = dry + 1.0  # half of the target frame wet
    assert biased.keep_probability(lr) == pytest.approx(1.0)
    lr[SPEC.context - 1, :] = dry
    lr[SPEC.context - 1, 0, :3] = dry + 1.0  # 3 of 36 cells wet
    assert biased.keep_probability(lr) == pytest.approx((3 / 36) / 0.5)
    assert uniform.keep_probability(lr) == 1.0
    with pytest.raises(ValueError, match="wet_bias=1.5 must be in"):
        PatchDataset(shard_path, SPEC, "train", normaliser, seed=3, wet_bias=1.5)


def test_augmented_items_stay_valid_pairs(shard_path, normaliser):
    """Augmentation turns LR and HR alike: the target LR frame is still coarsen(HR) of the turned
    item (coarsening over square cells commutes with the symmetries), the draws are the plain
    dataset's, and the symmetry of an item is fixed by seed and item (resume is bitwise)."""
    plain = PatchDataset(shard_path, SPEC, "train", normaliser, seed=1)
    aug = PatchDataset(shard_path, SPEC, "train", normaliser, seed=1, augment=True)
    with Shard(shard_path) as shard:
        s, t = shard.pair.s, shard.pair.t
    seen = set()
    for item in range(24):
        a, p = aug[item], plain[item]
        k = aug.symmetry(item)
        seen.add(k)
        assert torch.equal(a["where"], p["where"])
        assert torch.equal(a["hr"], dihedral(p["hr"], k)) and torch.equal(a["lr"], dihedral(p["lr"], k))
        hr_mm = normaliser.inverse(a["hr"]).numpy()
        lr_mm = normaliser.inverse(a["lr"][SPEC.context - 1]).numpy()
        np.testing.assert_allclose(coarsen(hr_mm, s, t)[0], lr_mm, rtol=1e-4, atol=1e-5)
        assert torch.equal(
            PatchDataset(shard_path, SPEC, "train", normaliser, seed=1, augment=True)[item]["hr"], a["hr"]
        )
    assert len(seen) >= 5  # 24 draws of 8 symmetries


def test_motion_start_is_the_whole_fields_start_cut_to_the_patch(shard_path, normaliser):
    """With PatchSpec.motion_start an item carries the mean network's 'motion' start: the motion
    measured on the shard's whole LR frames, the start computed on the patch's window with its halo,
    equal to the start of the whole field cut to the patch; augmentation turns it with the HR."""
    spec = PatchSpec(context=2, patch=24, future=1, motion_start=True)
    data = PatchDataset(shard_path, spec, "train", normaliser, seed=3)
    aug = PatchDataset(shard_path, spec, "train", normaliser, seed=3, augment=True)
    assert "start" not in PatchDataset(shard_path, SPEC, "train", normaliser, seed=3)[0]
    with Shard(shard_path) as shard:
        s, t = shard.pair.s, shard.pair.t
        for item in range(6):
            got = data[item]
            i, y, x = got["where"].tolist()
            lr = torch.from_numpy(normaliser.forward(shard.lr[i - 1 : i + 2]))
            whole = field_start(lr, s, t, 1)  # its velocities measured on these whole frames
            np.testing.assert_allclose(got["start"], whole[:, y : y + 24, x : x + 24], atol=1e-5)
            assert torch.equal(aug[item]["start"], dihedral(got["start"], aug.symmetry(item)))
    assert max(max(abs(vy), abs(vx)) for vy, vx in data._velocity.values()) > 0.5  # the storm moves
