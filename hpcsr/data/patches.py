"""Spatiotemporal training patches from one factor pair's shard.

An item is the input/target pair of one super-resolution problem, normalised:
    'lr': (L + F, P/s, P/s)  LR frames of consecutive blocks i-L+1 .. i+F (F future frames, 0 by default)
    'hr': (t, P, P)          the t HR frames under block i
    'start': (t, P, P)       with PatchSpec.motion_start: the mean network's start along the motion
with NaN where data are missing. Patch corners lie on the LR grid (multiples of s inside the
shard's HR window) where the fraction of radar coverage (the HR store's valid mask) is at least
`min_valid`; all blocks of the window lie in the requested split and follow each other with no gap.

Item numbers map to patches deterministically (`PatchDataset.locate`), so a sampler only has to
hand out numbers: numbers 0..n-1 of the stream visit the n windows of the split once each in a
seeded random order (an "epoch"), each at a random corner (both drawn once per epoch). A drawn
patch whose HR frames have fewer valid pixels than `min_valid` (a partly missing hour) is redrawn,
deterministically. With `wet_bias` > 0 a patch is also redrawn, at random but deterministically, with
a probability that falls with the wet fraction of its target LR frame (`keep_probability`): with
85-95 % dry pixels, most uniformly drawn patches teach nothing; selecting on the LR input alone
keeps p(hr | lr) unchanged, so no importance weights are needed.
With `augment`, each item is also turned by one of the 8 symmetries of the square (rotations by
multiples of 90 degrees, with or without a transpose), the same for its LR and HR frames and drawn
deterministically from the item number: coarsening over square cells commutes with them, so every
pair (lr, hr) stays a valid example, and a day of radar with one storm direction becomes eight.
HDF5 files are opened on first use in each process, so DataLoader workers get their own handles.
uint16 HR stores are decoded and normalised in one gather through a 65536-entry code table
(`Normaliser.code_table`); `benchmarks/loader.py` measures the read path.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hpcsr.data.normalise import Normaliser
from hpcsr.data.store import SPLIT_CODES, Shard, decode
from hpcsr.models.start_space import StartSpace
from hpcsr.motion import field_start, halo_cells, velocity
from hpcsr.symmetry import dihedral

MAX_REDRAWS = 64  # draws tried per item before giving up on finding enough valid HR pixels
WET_FLOOR = 0.1  # wet_bias: the smallest keep probability (dry patches still teach that dry stays dry)
DRY_MM = 0.0  # wet_bias: an LR value above this many mm counts as wet


@dataclass(frozen=True)
class PatchSpec:
    """Geometry of one item: context L, future frames F, HR patch side P (multiple of s); with
    `motion_start` the item also carries the mean network's 'motion' start (model.mean_skip, t > 1),
    upsampled with `upsample` as the networks' input, in log1p(mm / `start_unit`) when that is set
    (model.start_unit, hpcsr.models.start_space)."""

    context: int
    patch: int
    future: int = 0
    motion_start: bool = False
    upsample: str = "bicubic"
    start_unit: float | None = None

    def __post_init__(self):
        if self.context < 1 or self.future < 0 or self.patch < 1:
            raise ValueError(
                f"patch spec context={self.context} (>= 1), future={self.future} (>= 0), "
                f"patch={self.patch} (>= 1) out of range"
            )


def valid_corners(valid_mask: np.ndarray, patch: int, s: int, min_valid: float) -> np.ndarray:
    """(K, 2) int64 top-left corners (y, x), multiples of s, of patch x patch windows inside `valid_mask`
    whose valid fraction is >= min_valid (an exact count with a summed-area table)."""
    if patch % s:
        raise ValueError(f"patch={patch} must be a multiple of s={s}")
    Y, X = valid_mask.shape
    if patch > Y or patch > X:
        raise ValueError(
            f"patch={patch} is larger than the HR grid {Y} x {X}: set factor.patch to at most {min(Y, X) // s * s}"
        )
    area = np.zeros((Y + 1, X + 1), np.int64)
    area[1:, 1:] = np.cumsum(np.cumsum(valid_mask.astype(np.int64), axis=0), axis=1)
    ys = np.arange(0, Y - patch + 1, s)
    xs = np.arange(0, X - patch + 1, s)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    count = area[yy + patch, xx + patch] - area[yy, xx + patch] - area[yy + patch, xx] + area[yy, xx]
    ok = count >= np.ceil(min_valid * patch * patch - 1e-9)
    return np.stack([yy[ok], xx[ok]], axis=1).astype(np.int64)


def split_windows(shard: Shard, spec: PatchSpec, split: str) -> np.ndarray:
    """Target blocks i whose whole window i-L+1 .. i+F is consecutive and inside `split`."""
    targets = shard.context_windows(spec.context, spec.future, split)
    code = SPLIT_CODES[split]
    offsets = np.arange(-spec.context + 1, spec.future + 1)
    inside = (shard.split[targets[:, None] + offsets[None, :]] == code).all(axis=1)
    return targets[inside]


def _stream_key(name: str) -> int:
    return zlib.crc32(name.encode())


class PatchDataset(Dataset):
    """Map-style dataset over item numbers 0.. (unbounded: numbers past one epoch start the next).

    shard_path: the pair's shard; split: 'train', 'val' or 'test'; stream: name that, with `seed`,
    fixes the order and corners (the validation set is items 0..n-1 of its own stream).
    """

    def __init__(
        self,
        shard_path,
        spec: PatchSpec,
        split: str,
        normaliser: Normaliser,
        seed: int,
        min_valid: float = 1.0,
        stream: str | None = None,
        wet_bias: float = 0.0,
        augment: bool = False,
    ):
        if not 0.0 <= wet_bias <= 1.0:
            raise ValueError(
                f"wet_bias={wet_bias} must be in [0, 1] (0: off; the LR wet fraction of a fully kept patch)"
            )
        self.wet_bias = float(wet_bias)
        self.augment = bool(augment)
        self.shard_path = Path(shard_path)
        self.spec, self.split, self.normaliser, self.seed = spec, split, normaliser, int(seed)
        self.min_valid = float(min_valid)
        self.stream = _stream_key(stream or split)
        shard = Shard(self.shard_path)
        self.pair = shard.pair
        s = self.pair.s
        if spec.patch % s:
            raise ValueError(f"patch={spec.patch} must be a multiple of s={s} (shard {self.shard_path})")
        self.windows = split_windows(shard, spec, split)
        if len(self.windows) == 0:
            raise ValueError(
                f"split {split!r} of {self.shard_path} has no window of {spec.context} consecutive LR blocks "
                f"(+{spec.future} future): give more data, a shorter context"
                + (", data.future_context=0" if spec.future else "")
                + " or other split bounds"
            )
        store = shard.hr_store()
        y0, y1, x0, x1 = shard.hr_window
        self.corners = valid_corners(store.valid_mask[y0:y1, x0:x1], spec.patch, s, self.min_valid)
        if len(self.corners) == 0:
            raise ValueError(
                f"no {spec.patch} x {spec.patch} patch of {self.shard_path} has a valid fraction >= "
                f"{self.min_valid}: lower data.min_valid or factor.patch"
            )
        store.close()
        shard.close()
        self._z_dry = float(normaliser.forward(np.full(1, DRY_MM, np.float32))[0]) + 1e-6
        self._shard = self._store = self._hr_table = None
        self._velocity = {}  # LR frame j of the shard -> motion (vy, vx) from frame j to j + 1
        self._start_space = None if spec.start_unit is None else StartSpace(normaliser, spec.start_unit)

    def __len__(self) -> int:
        """Items in one epoch (one visit of every window); the dataset accepts any item number >= 0."""
        return len(self.windows)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_shard"] = state["_store"] = state["_hr_table"] = None
        state["_velocity"] = {}
        return state

    def _open(self):
        if self._shard is None:
            self._shard = Shard(self.shard_path)
            self._store = self._shard.hr_store()
            if self._store.units_per_mm:
                self._hr_table = self.normaliser.code_table(self._store.units_per_mm, int(self._store.fill_value))
        return self._shard, self._store

    @functools.lru_cache(maxsize=4)
    def _epoch_draws(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(window order, corner index) of the epoch's items."""
        rng = np.random.default_rng([self.seed, self.stream, 0, epoch])
        n = len(self.windows)
        return rng.permutation(n), rng.integers(len(self.corners), size=n)

    def locate(self, item: int, attempt: int = 0) -> tuple[int, int, int]:
        """(target block i, corner y, corner x) of item number `item` at redraw `attempt`."""
        if item < 0:
            raise IndexError(f"item {item} must be >= 0")
        if attempt == 0:
            order, corner = self._epoch_draws(item // len(self.windows))
            k = item % len(self.windows)
            window, (y, x) = self.windows[order[k]], self.corners[corner[k]]
        else:
            rng = np.random.default_rng([self.seed, self.stream, 1, item, attempt])
            window = self.windows[rng.integers(len(self.windows))]
            y, x = self.corners[rng.integers(len(self.corners))]
        return int(window), int(y), int(x)

    def _read_lr_and_raw_hr(self, i: int, y: int, x: int) -> tuple[np.ndarray, np.ndarray]:
        """LR frames in mm and the stored (encoded) HR values for target block i at HR corner (y, x)."""
        shard, store = self._open()
        s, P = self.pair.s, self.spec.patch
        lr = shard.lr[
            i - self.spec.context + 1 : i + self.spec.future + 1, y // s : (y + P) // s, x // s : (x + P) // s
        ]
        return lr, shard.read_hr_block_raw(store, i, slice(y, y + P), slice(x, x + P))

    def read(self, i: int, y: int, x: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw (lr, hr) in mm for target block i at HR corner (y, x)."""
        lr, raw = self._read_lr_and_raw_hr(i, y, x)
        return lr, decode(raw, self._store.units_per_mm, self._store.fill_value)

    def read_normalised(self, i: int, y: int, x: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`read` then the normaliser: (lr, hr) float32 tensors, NaN missing."""
        lr, raw = self._read_lr_and_raw_hr(i, y, x)
        if self._hr_table is None:
            hr = self.normaliser.forward(decode(raw, self._store.units_per_mm, self._store.fill_value))
        else:
            hr = np.take(self._hr_table, raw)
        return torch.from_numpy(self.normaliser.forward(lr)), torch.from_numpy(hr)

    def motion_start(self, i: int, y: int, x: int) -> torch.Tensor:
        """The mean network's 'motion' start (t, P, P), normalised, of target block i at HR corner
        (y, x): the motion measured on the shard's whole LR frames (as the sampler measures it on the
        whole input), the start computed on the patch plus `halo_cells` of LR around it (so it equals
        the start of the whole field cut to the patch) and cut to the patch."""
        shard, _ = self._open()
        s, t, P = self.pair.s, self.pair.t, self.spec.patch
        first, target = i - self.spec.context + 1, self.spec.context - 1
        velocities = {}
        for j in (i - 1, i):  # the frame pairs around the target inside the item's window
            if first <= j and j + 1 <= i + self.spec.future:
                if j not in self._velocity:
                    a, b = (self.normaliser.forward(shard.lr[k]) for k in (j, j + 1))
                    self._velocity[j] = velocity(a, b, s, t)
                velocities[j - first] = self._velocity[j]
        h = halo_cells(velocities, s, t)
        ny, nx = shard.lr.shape[1:]
        y0, x0 = max(y // s - h, 0), max(x // s - h, 0)
        y1, x1 = min((y + P) // s + h, ny), min((x + P) // s + h, nx)
        lr = self.normaliser.forward(shard.lr[first : i + self.spec.future + 1, y0:y1, x0:x1])
        start = field_start(torch.from_numpy(lr), s, t, target, self.spec.upsample, velocities, self._start_space)
        return start[:, y - y0 * s : y - y0 * s + P, x - x0 * s : x - x0 * s + P].contiguous()

    def keep_probability(self, lr: torch.Tensor) -> float:
        """With wet_bias w > 0: the probability of keeping a drawn patch, min(1, max(WET_FLOOR, f / w))
        with f the wet fraction of its target LR frame. It depends on the LR input only, so p(hr | lr),
        what the networks learn, is unchanged: the draw only spends more steps where it rains."""
        if self.wet_bias <= 0:
            return 1.0
        target = lr[self.spec.context - 1]
        wet = float((target > self._z_dry).float().mean())
        return min(1.0, max(WET_FLOOR, wet / self.wet_bias))

    def __getitem__(self, item: int) -> dict:
        item = int(item)
        found = None
        for attempt in range(MAX_REDRAWS):
            i, y, x = self.locate(item, attempt)
            lr, hr = self.read_normalised(i, y, x)
            if 1.0 - np.count_nonzero(np.isnan(hr.numpy())) / hr.numel() < self.min_valid - 1e-9:
                continue
            found = (i, y, x, lr, hr)
            keep = self.keep_probability(lr)
            if keep >= 1.0 or np.random.default_rng([self.seed, self.stream, 2, item, attempt]).random() < keep:
                break
        if found is None:
            raise RuntimeError(
                f"item {item} of split {self.split!r} ({self.shard_path}): {MAX_REDRAWS} draws found no patch "
                f"with a valid HR fraction >= {self.min_valid}; the split is mostly missing data: "
                "lower data.min_valid or check the data"
            )
        i, y, x, lr, hr = found  # the last valid draw when none was kept (a dry split under wet_bias)
        item_fields = {"lr": lr, "hr": hr}
        if self.spec.motion_start:
            item_fields["start"] = self.motion_start(i, y, x)
        if self.augment:
            item_fields = {k: dihedral(z, self.symmetry(item)) for k, z in item_fields.items()}
        return {**item_fields, "where": torch.from_numpy(np.array([i, y, x], np.int64))}

    def symmetry(self, item: int) -> int:
        """Which of the 8 symmetries item `item` gets (0: none), fixed by seed, stream and item."""
        return int(np.random.default_rng([self.seed, self.stream, 3, item]).integers(8))

    def close(self) -> None:
        if self._shard is not None:
            self._store.close()
            self._shard.close()
        self._shard = self._store = self._hr_table = None
