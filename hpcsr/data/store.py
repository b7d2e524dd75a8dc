"""Readers of the preprocessing output: the HR store (`<out>/hr.h5`) and the per-factor LR shards
(`<out>/shards/s{s}_t{t}.h5`). This docstring is the reference of the on-disk layout; the writer
(package `preprocessing`) imports the names below, so both sides agree by construction.

The datasets are blosc-compressed: read them through this module (or `import hdf5plugin` first when
using h5py directly). Times are int64 seconds since 1970-01-01 00:00 UTC and mark the END of an accumulation interval.
Precipitation is in mm accumulated over one HR step (`interval_minutes`); NaN (or the fill code)
means missing.

HR store `hr.h5` (format "hpcsr-hr-store", version 1)
----------------------------------------------------
attrs   format, format_version, interval_minutes (int), units ("mm"), source_kind ("comephore" or
        "netcdf"), crs_proj4, crs_wkt, transform (x0, dx, 0, y0, 0, dy: outer corner of the grid,
        dy < 0 for north-up), x_units, y_units, encoding ("uint16" or "float32"), units_per_mm (int:
        10 for Comephore's tenths; 0 for float32), fill_value, cap_mm_per_hour, geokeys (JSON, GeoTIFF
        sources), skipped (JSON list of {input, member, time, reason} for inputs that could not be
        used), provenance (JSON: inputs, code version, config)
precip  (T, Y, X) uint16 or float32, chunks (1, cy, cx), blosc/lzf/gzip compressed. uint16 decodes
        as value / units_per_mm mm with fill_value (65535) = missing; float32 is mm, NaN = missing.
        Lossless with respect to the source's quantisation (Comephore: tenths of mm).
time    (T,) int64 seconds, strictly increasing; only frames that exist (a gap is simply absent).
x, y    (X,), (Y,) float64 cell centres in CRS units.
valid_mask  (Y, X) uint8: 1 where at least one frame has data (radar coverage).
frame_valid_fraction  (T,) float32: fraction of valid pixels per frame.
gaps    (G, 2) int64: runs of missing steps between the first and last frame, each as (end time of the
        first missing step, end time of the last missing step).
qc/missing_source, qc/negative, qc/over_cap  (T,) int64: values missing in the source, negative
        values and values above the plausibility cap; the last two were masked (set missing).

Shard `shards/s{s}_t{t}.h5` (format "hpcsr-lr-shard", version 1)
---------------------------------------------------------------
attrs   format, format_version, s, t, pair ("s10_t3"), interval_minutes (HR step), min_valid,
        phase_minutes (time blocks start where (start - epoch - phase) is a multiple of t steps: a
        fixed phase, 00 UTC by default), hr_store (path of hr.h5 relative to the shard's folder),
        hr_store_sha256, hr_window (y0, y1, x0, x1: HR rows/cols covered; the bottom/right remainder
        of a grid not divisible by s is cropped), lr_transform (GDAL order, LR cell corners),
        crs_proj4, crs_wkt, splits (JSON {name: [start, end)} in seconds), provenance (JSON).
lr      (N, (y1-y0)/s, (x1-x0)/s) float32: coarsen(HR, s, t, min_valid) of block i, i.e. the mean
        over its t HR steps and s x s pixels, in mm per HR step; NaN = missing. Chunks (1, cy, cx).
time    (N,) int64: end of each LR block (= end of its last HR step).
hr_start (N,) int64: index in hr.h5 `time` of the block's first HR step; the block's HR frames are
        precip[hr_start : hr_start + t, y0:y1, x0:x1]. Blocks never straddle a gap.
split   (N,) int8: 0 train, 1 val, 2 test, -1 none (block crosses a split boundary).
stats   group, attrs computed on the train split only: hr_mean, hr_std, hr_log1p_mean, hr_log1p_std,
        hr_max, lr_mean, lr_std, lr_log1p_mean, lr_log1p_std, lr_max, dry_fraction (HR values below
        wet_threshold mm), wet_threshold, count_hr, count_lr, quantiles_exact (bool); datasets
        quantile_levels (Q,), hr_quantiles (Q,), hr_wet_quantiles (Q,) (values >= wet_threshold),
        lr_quantiles (Q,), lr_wet_quantiles (Q,). HR quantiles of uint16 stores are exact; float
        quantiles (LR, float32 stores) are centres of bins 0.001 wide in log1p(mm). hr_histogram_mm,
        hr_histogram_counts: the occupied bins of the HR histogram (the code's value, or the bin
        centre) and their counts, from which `Normaliser.from_stats` takes the moments of any
        transform (absent in shards written before; `Shard.hr_histogram` then returns None).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from hpcsr.artifacts import HR_FILE, SHARD_DIR, file_sha256, shard_name  # noqa: F401 (the layout; preprocessing imports it here)
from hpcsr.factors import FactorPair

# Use hdf5plugin's own blosc filter even when another is visible: importing netCDF4 sets
# HDF5_PLUGIN_PATH to its plugins, built against netCDF4's private HDF5 copy, and h5py cannot create
# datasets through those (its child processes inherit the variable too).
hdf5plugin.register(("blosc",), force=True)

HR_FORMAT = "hpcsr-hr-store"
SHARD_FORMAT = "hpcsr-lr-shard"
FORMAT_VERSION = 1
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
NO_SPLIT = -1


def store_units(path) -> tuple[str, str]:
    """x/y coordinate units recorded in an HR store (metres when absent or unreadable)."""
    try:
        with h5py.File(path, "r") as f:
            units = [f.attrs.get(k, "m") for k in ("x_units", "y_units")]
    except OSError:
        return "m", "m"
    return tuple(_attr_str(u) for u in units)


def decode(stored: np.ndarray, units_per_mm: int, fill_value) -> np.ndarray:
    """Stored HR values -> float32 mm with NaN for missing (the one decoding rule): uint16 codes
    are code / units_per_mm (as float32 division) and fill_value is NaN; float32 is mm already."""
    if units_per_mm:
        out = stored.astype(np.float32)
        np.divide(out, np.float32(units_per_mm), out=out)
        np.copyto(out, np.float32(np.nan), where=stored == fill_value)
        return out
    return np.asarray(stored, dtype=np.float32)


def _seconds_to_datetime(seconds) -> np.ndarray:
    return np.asarray(seconds, dtype=np.int64).astype("datetime64[s]")


def _attr_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _LazyFile:
    """An h5py file opened on first use in each process, so objects can be sent to DataLoader
    workers (each worker reopens its own handle). Dataset handles are cached: creating an h5py
    Dataset object costs more than reading a small patch."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} does not exist: run `hpcsr-preprocess` first (see README)")
        self._file = None
        self._pid = None
        self._datasets = {}

    @property
    def file(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
            self._datasets = {}
        return self._file

    def dataset(self, name: str) -> h5py.Dataset:
        f = self.file
        if name not in self._datasets:
            self._datasets[name] = f[name]
        return self._datasets[name]

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._datasets = None, {}

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.path, self._file, self._pid, self._datasets = state["path"], None, None, {}

    def check_format(self, expected: str) -> None:
        fmt = _attr_str(self.file.attrs.get("format", ""))
        version = int(self.file.attrs.get("format_version", 0))
        if fmt != expected or version != FORMAT_VERSION:
            raise ValueError(
                f"{self.path} is '{fmt}' version {version}, not '{expected}' version "
                f"{FORMAT_VERSION}: rerun `hpcsr-preprocess` to rebuild it"
            )


class HRStore:
    """The HR precipitation of one dataset. `read` returns float32 mm with NaN for missing."""

    def __init__(self, path):
        self._f = _LazyFile(path)
        self._f.check_format(HR_FORMAT)
        f = self._f.file
        a = f.attrs
        self.path = self._f.path
        self.time_s = f["time"][()]
        self.times = _seconds_to_datetime(self.time_s)
        self.shape = tuple(f["precip"].shape)
        self.interval_minutes = int(a["interval_minutes"])
        self.units_per_mm = int(a["units_per_mm"])
        self.fill_value = a["fill_value"]
        self.encoding = _attr_str(a["encoding"])
        self.crs_wkt = _attr_str(a["crs_wkt"])
        self.crs_proj4 = _attr_str(a["crs_proj4"])
        self.transform = tuple(float(v) for v in a["transform"])
        self.x = f["x"][()]
        self.y = f["y"][()]
        self.valid_mask = f["valid_mask"][()].astype(bool)
        self.frame_valid_fraction = f["frame_valid_fraction"][()]
        self.gaps = _seconds_to_datetime(f["gaps"][()])
        self.provenance = json.loads(_attr_str(a["provenance"]))
        self.skipped = json.loads(_attr_str(a["skipped"]))

    @property
    def precip(self) -> h5py.Dataset:
        """The raw stored dataset (encoded); prefer `read`."""
        return self._f.dataset("precip")

    def read_raw(self, t0: int, t1: int, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
        return self.precip[t0:t1, ys, xs]

    def read(self, t0: int, t1: int, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
        """Frames t0..t1-1 (indices into `times`) of rows `ys` and columns `xs`, float32 mm, NaN missing."""
        return decode(self.read_raw(t0, t1, ys, xs), self.units_per_mm, self.fill_value)

    def index_of(self, when) -> int:
        """Index of the frame ending at `when` (datetime64 or seconds); KeyError if absent."""
        s = int(np.datetime64(when, "s").astype(np.int64)) if not isinstance(when, (int, np.integer)) else int(when)
        i = int(np.searchsorted(self.time_s, s))
        if i == len(self.time_s) or self.time_s[i] != s:
            raise KeyError(f"no frame ends at {_seconds_to_datetime(s)} in {self.path}")
        return i

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Shard:
    """LR sequence of one factor pair plus everything needed to pair it with its HR frames."""

    def __init__(self, path):
        self._f = _LazyFile(path)
        self._f.check_format(SHARD_FORMAT)
        f = self._f.file
        a = f.attrs
        self.path = self._f.path
        self.pair = FactorPair(int(a["s"]), int(a["t"]))
        self.interval_minutes = int(a["interval_minutes"])
        self.min_valid = float(a["min_valid"])
        self.phase_minutes = int(a["phase_minutes"])
        self.hr_window = tuple(int(v) for v in a["hr_window"])
        self.lr_transform = tuple(float(v) for v in a["lr_transform"])
        self.crs_wkt = _attr_str(a["crs_wkt"])
        self.crs_proj4 = _attr_str(a["crs_proj4"])
        self.hr_store_path = (self.path.parent / _attr_str(a["hr_store"])).resolve()
        self.hr_store_sha256 = _attr_str(a["hr_store_sha256"])
        self.time_s = f["time"][()]
        self.times = _seconds_to_datetime(self.time_s)
        self.hr_start = f["hr_start"][()]
        self.split = f["split"][()]
        self.splits = {
            k: (_seconds_to_datetime(v[0]), _seconds_to_datetime(v[1]))
            for k, v in json.loads(_attr_str(a["splits"])).items()
        }
        self.provenance = json.loads(_attr_str(a["provenance"]))
        self.stats = self._read_stats(f["stats"])

    @staticmethod
    def _read_stats(g: h5py.Group) -> dict:
        stats = {k: (bool(v) if isinstance(v, np.bool_) else float(v)) for k, v in g.attrs.items()}
        levels = g["quantile_levels"][()]
        for name in ("hr_quantiles", "hr_wet_quantiles", "lr_quantiles", "lr_wet_quantiles"):
            stats[name] = {float(q): float(v) for q, v in zip(levels, g[name][()])}
        return stats

    def hr_histogram(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(mm value, count) of the occupied bins of the train split's HR histogram, or None for a
        shard written before it was stored."""
        g = self._f.file["stats"]
        if "hr_histogram_counts" not in g:
            return None
        return g["hr_histogram_mm"][()], g["hr_histogram_counts"][()]

    @property
    def lr(self) -> h5py.Dataset:
        """(N, Y/s, X/s) float32 mm per HR step, NaN missing."""
        return self._f.dataset("lr")

    def __len__(self) -> int:
        return len(self.time_s)

    def data_grid(self) -> dict:
        """The grid the shard's data lie on, as exports record it (`data_grid`): HR step in minutes,
        HR pixel (x, y; LR cell side / s, positive) and the coordinate units of its HR store."""
        return {
            "interval_minutes": self.interval_minutes,
            "units": store_units(self.hr_store_path)[0],
            "hr_pixel": [abs(self.lr_transform[1]) / self.pair.s, abs(self.lr_transform[5]) / self.pair.s],
        }

    def indices(self, split: str) -> np.ndarray:
        """Block indices of one split ('train', 'val', 'test')."""
        if split not in SPLIT_CODES:
            raise ValueError(f"split {split!r} unknown: use one of {sorted(SPLIT_CODES)}")
        return np.flatnonzero(self.split == SPLIT_CODES[split])

    def context_windows(self, context: int, future: int = 0, split: str | None = None) -> np.ndarray:
        """Indices i whose blocks i-context+1 .. i+future are consecutive in time (no gap), so that
        lr[i-context+1 : i+future+1] is a valid input sequence for super-resolving block i;
        restricted to targets i in `split` when given."""
        if context < 1 or future < 0:
            raise ValueError(f"context={context} must be >= 1 and future={future} >= 0")
        step = self.pair.t * self.interval_minutes * 60
        n = len(self.time_s)
        consecutive = np.diff(self.time_s) == step  # between i and i+1
        run = np.concatenate([[0], np.cumsum(~consecutive)])  # run id per block
        i = np.arange(context - 1, n - future)
        ok = run[i - context + 1] == run[i + future]
        out = i[ok]
        if split is not None:
            out = out[self.split[out] == SPLIT_CODES[split]]
        return out

    def hr_store(self, verify: bool = False) -> HRStore:
        """The HR store this shard was made from. Its time axis is checked against `hr_start`;
        `verify=True` also compares the file's sha256 with the recorded one (reads the whole file)."""
        if not self.hr_store_path.is_file():
            raise FileNotFoundError(
                f"HR store {self.hr_store_path} of shard {self.path} is missing: "
                "keep hr.h5 next to shards/ or rerun `hpcsr-preprocess`"
            )
        if verify:
            digest = file_sha256(self.hr_store_path)
            if digest != self.hr_store_sha256:
                raise ValueError(
                    f"{self.hr_store_path} changed since shard {self.path} was made "
                    f"(sha256 {digest[:12]} != {self.hr_store_sha256[:12]}): rerun `hpcsr-preprocess shards`"
                )
        store = HRStore(self.hr_store_path)
        last = self.hr_start + self.pair.t - 1
        if len(self) and (last.max() >= len(store.time_s) or not np.array_equal(store.time_s[last], self.time_s)):
            raise ValueError(
                f"shard {self.path} does not match HR store {self.hr_store_path} (time axes differ): "
                "rerun `hpcsr-preprocess shards`"
            )
        return store

    def read_hr_block(self, store: HRStore, i: int, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
        """The t HR frames under LR block i, rows/cols relative to `hr_window`, float32 mm."""
        return decode(self.read_hr_block_raw(store, i, ys, xs), store.units_per_mm, store.fill_value)

    def read_hr_block_raw(self, store: HRStore, i: int, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
        """As `read_hr_block`, but the stored (encoded) values."""
        y0, y1, x0, x1 = self.hr_window
        ys, xs = _offset(ys, y0, y1), _offset(xs, x0, x1)
        h = int(self.hr_start[i])
        return store.read_raw(h, h + self.pair.t, ys, xs)

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _offset(sl: slice, lo: int, hi: int) -> slice:
    """A slice relative to the window [lo, hi) -> absolute slice (step 1 only)."""
    start, stop, step = sl.indices(hi - lo)
    if step != 1:
        raise ValueError(f"slice {sl} must have step 1")
    return slice(lo + start, lo + stop)
