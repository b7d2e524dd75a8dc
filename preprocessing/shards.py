"""Per-factor LR shards from the HR store: `shards/s{s}_t{t}.h5` (layout in `hpcsr.data.store`).

The HR time axis is cut into windows that no block of any requested pair crosses; each rank takes a
contiguous run of windows, reads each window once and, for every pair, coarsens its blocks with
`hpcsr.coarsen.coarsen` (the one definition of LR), accumulates train-split statistics and appends
the LR frames to its part file `parts/shards/<pair>/<first>-<last>.h5` (atomic). One rank per pair
then merges the parts by copying compressed chunks, reduces the statistics (order-independent, see
`preprocessing.stats`) and renames the finished shard into place, so the result is the same for
any number of ranks. A shard that is in the manifest with the same key (HR store checksum and
settings) is skipped on a rerun; so is every part that is complete.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from hpcsr.artifacts import code_version, file_sha256
from hpcsr.atomic import AtomicPath
from hpcsr.coarsen import coarsen
from hpcsr.data.store import FORMAT_VERSION, HR_FILE, SHARD_DIR, SHARD_FORMAT, SPLIT_CODES, HRStore, decode, shard_name
from hpcsr.factors import FactorPair
from preprocessing import stats as st
from preprocessing.blocks import block_starts, split_among, window_cuts
from preprocessing.layout import StoreLayout
from preprocessing.manifest import Manifest, text_hash
from preprocessing.parts import OnePartOpen
from preprocessing.splits import SplitSpec, split_codes

log = logging.getLogger(__name__)

PARTS_DIR = os.path.join("parts", "shards")
STRIP_PIXELS = 64  # rows per coarsen call (a multiple of s near this): cache-sized pieces, same result


@dataclass(frozen=True)
class ShardConfig:
    """Settings of the shard step (every key is also a CLI option of `hpcsr-preprocess shards`)."""

    pairs: tuple  # FactorPairs to build
    min_valid: float = 1.0  # minimum valid fraction of an s x s x t block for its LR value (else NaN)
    phase_minutes: int = 0  # time blocks start at multiples of t steps after 00 UTC + this phase
    splits: SplitSpec = field(default_factory=SplitSpec)  # train/val/test time ranges
    wet_threshold: float = 0.1  # mm per HR step; HR values below are "dry" in the statistics
    layout: StoreLayout = field(default_factory=StoreLayout)  # LR chunking and compression
    window_frames: int = 12  # HR steps read at once per rank (memory ~ window x Y x X x 2 bytes for uint16 stores, 4 for float32); work is split by windows

    def __post_init__(self):
        if not self.pairs:
            raise ValueError("no factor pair given: use --pairs 10x3,2x1 or --grid paper")
        object.__setattr__(self, "pairs", tuple(sorted({FactorPair.parse(p) for p in self.pairs})))
        if not 0.0 < self.min_valid <= 1.0:
            raise ValueError(f"min_valid={self.min_valid} must be in (0, 1]")
        if self.window_frames < 6:
            raise ValueError(f"window_frames={self.window_frames} must be >= 6")

    def record(self) -> dict:
        return {
            "pairs": [p.name for p in self.pairs],
            "min_valid": self.min_valid,
            "phase_minutes": self.phase_minutes,
            "splits": asdict(self.splits),
            "wet_threshold": self.wet_threshold,
            "layout": asdict(self.layout),
        }


@dataclass
class PairPlan:
    """Everything about one pair's shard that follows from the HR store's time axis and grid."""

    pair: FactorPair
    starts: np.ndarray  # HR index of each block's first step
    end_s: np.ndarray  # end time of each block
    split: np.ndarray  # split code of each block
    hr_window: tuple  # (y0, y1, x0, x1)
    key: str

    @property
    def rel(self) -> str:
        return os.path.join(SHARD_DIR, shard_name(self.pair))

    @property
    def lr_shape(self) -> tuple:
        y0, y1, x0, x1 = self.hr_window
        s = self.pair.s
        return ((y1 - y0) // s, (x1 - x0) // s)


def warn_empty_splits(name: str, split: np.ndarray, ranges: dict, first_s: int, last_s: int, splits: SplitSpec) -> None:
    """A warning for each split that gets no block although it was asked for (bounds outside the
    data, a range shorter than a block); a zero fraction asks for none."""
    asked = (
        set(SPLIT_CODES)
        if splits.bounds is not None
        else {label for label, share in zip(SPLIT_CODES, splits.fractions) if share > 0}
    )
    for label, code in SPLIT_CODES.items():
        lo, hi = ranges[label]
        if label in asked and not np.any(split == code):
            log.warning(
                "%s: split %r holds no block: its range %s .. %s does not hold a whole block of the data "
                "(%s .. %s); check --split-bounds / --split-fractions",
                name,
                label,
                np.datetime64(int(lo), "s"),
                np.datetime64(int(hi), "s"),
                np.datetime64(first_s, "s"),
                np.datetime64(last_s, "s"),
            )


def plan_pairs(store: HRStore, cfg: ShardConfig, hr_sha: str) -> tuple[list[PairPlan], dict]:
    step_s = store.interval_minutes * 60
    first_start = int(store.time_s[0]) - step_s
    ranges = cfg.splits.ranges(first_start, int(store.time_s[-1]))
    plans = []
    _, ny, nx = store.shape
    for pair in cfg.pairs:
        s, t = pair.s, pair.t
        if ny < s or nx < s:
            raise ValueError(f"grid {ny} x {nx} is smaller than s={s}: drop {pair.name} from the pairs")
        y1, x1 = ny - ny % s, nx - nx % s
        if (y1, x1) != (ny, nx):
            log.info(
                "%s: grid %d x %d is not divisible by s=%d: using rows 0..%d and columns 0..%d "
                "(the last %d rows and %d columns are cropped)",
                pair.name,
                ny,
                nx,
                s,
                y1,
                x1,
                ny - y1,
                nx - x1,
            )
        starts = block_starts(store.time_s, step_s, t, cfg.phase_minutes * 60)
        if starts.size == 0:
            raise ValueError(
                f"{pair.name}: no complete block of {t} steps aligned to 00 UTC + {cfg.phase_minutes} min "
                f"in the HR store: check the data's time stamps or --phase-minutes"
            )
        end_s = store.time_s[starts + t - 1]
        split = split_codes(end_s - t * step_s, end_s, ranges)
        warn_empty_splits(pair.name, split, ranges, first_start, int(store.time_s[-1]), cfg.splits)
        key = text_hash(hr_sha, pair.name, cfg.record(), FORMAT_VERSION)
        plans.append(PairPlan(pair, starts, end_s, split, (0, y1, 0, x1), key))
    return plans, ranges


def _strip_rows(s: int) -> int:
    return s * max(1, round(STRIP_PIXELS / s))


def coarsen_blocks(mm: np.ndarray, s: int, t: int, min_valid: float) -> np.ndarray:
    """coarsen(mm, s, t, min_valid) computed over horizontal strips of rows (a multiple of s), which
    keeps the work in cache. Each LR value depends only on its own block, so this is one call on the
    whole array up to float32 rounding (numpy's summation order depends on array shapes). The strips
    depend only on the window, never on the number of ranks, so outputs stay byte-identical."""
    n, ny, nx = mm.shape
    out = np.empty((n // t, ny // s, nx // s), np.float32)
    rows = _strip_rows(s)
    for y in range(0, ny, rows):
        out[:, y // s : (y + rows) // s] = coarsen(mm[:, y : y + rows], s, t, min_valid)
    return out


class _PartWriter:
    """One rank's part of one pair: LR frames plus train-split statistic pieces."""

    def __init__(self, path: Path, key: str, plan: PairPlan, first_block: int, layout: StoreLayout):
        self.path, self.key, self.plan, self.first_block = path, key, plan, first_block
        self._target = AtomicPath(path)
        # A part is written once, front to back, in whole LR frames, and read back only by the merge
        # (chunk by chunk): no chunk cache, and the newest format's chunk index for a growing
        # dataset. With the defaults each writer held about 8 MB of cached chunks and a B-tree
        # whose nodes piled up in memory as the part grew (+10 MB for a month of 1536 x 1536 at
        # s=1, measured); the format of a part is private to preprocessing.
        self.f = h5py.File(self._target.tmp, "w", libver="latest", rdcc_nbytes=0)
        self.lr = layout.create(self.f, "lr", (0, *plan.lr_shape), np.float32, np.float32(np.nan))
        self.hr_hist = self.lr_hist = None
        self.hr_rows, self.lr_rows = [], []

    def append(self, lr: np.ndarray) -> None:
        n = self.lr.shape[0]
        self.lr.resize(n + len(lr), axis=0)
        self.lr[n:] = lr

    def close(self) -> None:
        f = self.f
        f.attrs["key"] = self.key
        f.attrs["first_block"] = self.first_block
        for name, hist in (("hr_hist", self.hr_hist), ("lr_hist", self.lr_hist)):
            f.create_dataset(name, data=hist if hist is not None else np.zeros(0, np.int64))
        for name, rows in (("hr_rows", self.hr_rows), ("lr_rows", self.lr_rows)):
            f.create_dataset(name, data=np.asarray(rows, np.float64).reshape(-1, len(st.MOMENT_FIELDS)))
        f.close()
        self._target.commit()

    def abort(self) -> None:
        self.f.close()
        self._target.discard()


def _part_complete(path: Path, key: str) -> bool:
    if not path.exists():
        return False
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("key") == key
    except OSError:
        return False


def compute_parts(
    out: Path,
    store: HRStore,
    plans: list[PairPlan],
    windows: list[tuple[int, int]],
    lo: int,
    hi: int,
    cfg: ShardConfig,
    progress,
) -> dict:
    """Process windows lo..hi-1 for every plan; returns ({pair name: part path relative to out}
    (empty when this rank has no window), {stage: seconds})."""
    parts, writers = {}, {}
    if lo >= hi:
        return parts, {}
    a_hr, b_hr = windows[lo][0], windows[hi - 1][1]
    for plan in plans:
        rel = os.path.join(PARTS_DIR, plan.pair.name, f"{a_hr:08d}-{b_hr:08d}.h5")
        key = text_hash(plan.key, a_hr, b_hr)
        parts[plan.pair.name] = rel
        if not _part_complete(out / rel, key):
            first = int(np.searchsorted(plan.starts, a_hr))
            writers[plan.pair.name] = _PartWriter(out / rel, key, plan, first, cfg.layout)
    if not writers:
        return parts, {}
    active = [p for p in plans if p.pair.name in writers]
    coded = bool(store.units_per_mm)
    clock = dict.fromkeys(("read", "coarsen", "statistics", "write"), 0.0)
    _, ny, nx = store.shape
    rows = _common_strip_rows(active)
    longest = max(b - a for a, b in windows[lo:hi])
    raw_buf = np.empty((longest, ny, nx), store.precip.dtype)  # reused by every window
    _small_metadata_cache(store.precip.file)
    try:
        for a, b in windows[lo:hi]:
            t0 = time.perf_counter()
            raw = raw_buf[: b - a]
            store.precip.read_direct(raw, np.s_[a:b], np.s_[0 : b - a])
            clock["read"] += time.perf_counter() - t0
            blocks = [_WindowBlocks(plan, a, b) for plan in active]
            for y in range(0, ny, rows):
                t0 = time.perf_counter()
                part = raw[:, y : y + rows]
                mm = decode(part, store.units_per_mm, store.fill_value)  # cache-sized, reused by malloc
                t1 = time.perf_counter()
                for wb in blocks:
                    wb.coarsen_rows(mm, y, cfg.min_valid)
                clock["read"] += t1 - t0
                clock["coarsen"] += time.perf_counter() - t1
            frame_hist = functools.lru_cache(maxsize=None)(
                lambda k, raw=raw: st.code_histogram(raw[k], store.fill_value)
            )
            for wb in blocks:
                if wb.sel.size == 0:
                    continue
                w = writers[wb.plan.pair.name]
                t0 = time.perf_counter()
                w.append(wb.lr)
                t1 = time.perf_counter()
                train = wb.plan.split[wb.sel] == 0
                if train.any():
                    _add_statistics(w, wb.plan, a, raw, wb.lr, wb.sel, train, coded, frame_hist, store, cfg)
                clock["write"] += t1 - t0
                clock["statistics"] += time.perf_counter() - t1
            if progress is not None:
                progress.update(b - a)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    t0 = time.perf_counter()
    for w in writers.values():
        w.close()
    clock["write"] += time.perf_counter() - t0
    return parts, clock


METADATA_CACHE_BYTES = 256 * 1024


def _small_metadata_cache(f: h5py.File, nbytes: int = METADATA_CACHE_BYTES) -> None:
    """Bound HDF5's metadata cache of a file read front to back (the HR store): its chunk index
    (B-tree) nodes take about 6 times their nominal size in memory, so the default cache (2 MB,
    adaptive up to 32 MB) filled with 12+ MB of nodes over the first two weeks of frames; reading in
    time order only needs the current path through the tree."""
    config = f.id.get_mdc_config()
    config.set_initial_size = True
    config.initial_size = config.min_size = config.max_size = nbytes
    f.id.set_mdc_config(config)


def _common_strip_rows(plans: list[PairPlan]) -> int:
    """Rows of HR decoded at once: a multiple of every pair's s, so each strip holds whole blocks of
    every pair and is decoded once for all of them while it is in cache."""
    step = math.lcm(*(p.pair.s for p in plans))
    return step * max(1, round(STRIP_PIXELS / step))


class _WindowBlocks:
    """The blocks of one pair that start in the HR window a..b-1 and their LR values, filled strip by strip."""

    def __init__(self, plan: PairPlan, a: int, b: int):
        self.plan, self.a = plan, a
        self.sel = np.flatnonzero((plan.starts >= a) & (plan.starts < b))
        self.lr = np.empty((self.sel.size, *plan.lr_shape), np.float32)
        # runs of back-to-back blocks are coarsened in one call
        breaks = np.flatnonzero(np.diff(plan.starts[self.sel]) != plan.pair.t) + 1
        self.runs = np.split(np.arange(self.sel.size), breaks) if self.sel.size else []

    def coarsen_rows(self, mm: np.ndarray, y: int, min_valid: float) -> None:
        """Coarsen the HR rows y.. held in `mm` (frames a.., all columns) into the LR rows they cover
        (strips start at row 0, as every pair's hr_window does)."""
        s, t = self.plan.pair.s, self.plan.pair.t
        _, y1, x0, x1 = self.plan.hr_window
        n_rows = min(y + mm.shape[1], y1) - y
        if n_rows <= 0:
            return
        for run in self.runs:
            h0 = int(self.plan.starts[self.sel[run[0]]]) - self.a
            hr = mm[h0 : h0 + t * run.size, :n_rows, x0:x1]
            self.lr[run[0] : run[-1] + 1, y // s : (y + n_rows) // s] = coarsen_blocks(hr, s, t, min_valid)


def _add_statistics(
    w: _PartWriter,
    plan: PairPlan,
    a: int,
    raw,
    lr,
    sel,
    train,
    coded: bool,
    frame_hist,
    store: HRStore,
    cfg: ShardConfig,
):
    """Add the HR frames under the train blocks `sel[train]` and their LR values to the statistics."""
    t = plan.pair.t
    y0, y1, x0, x1 = plan.hr_window
    frames = (plan.starts[sel[train]][:, None] + np.arange(t)[None, :]).ravel() - a
    for k in frames:
        if coded:
            h = frame_hist(k)
            if y1 < raw.shape[1]:
                h = h - st.code_histogram(raw[k, y1:, :], store.fill_value)
            if x1 < raw.shape[2]:
                h = h - st.code_histogram(raw[k, :y1, x1:], store.fill_value)
            w.hr_hist = st.add_hist(w.hr_hist, h)
        else:
            row, h = st.float_pieces(raw[k, y0:y1, x0:x1], cfg.wet_threshold)  # float stores hold mm
            w.hr_rows.append(row)
            w.hr_hist = st.add_hist(w.hr_hist, h)
    for block in lr[train]:
        row, h = st.float_pieces(block, cfg.wet_threshold)
        w.lr_rows.append(row)
        w.lr_hist = st.add_hist(w.lr_hist, h)


def merge_pair(
    out: Path,
    plan: PairPlan,
    part_rels: list[str],
    store: HRStore,
    hr_path: Path,
    hr_sha: str,
    ranges: dict,
    cfg: ShardConfig,
) -> dict:
    """Merge the parts of one pair into its shard (atomic); returns {rel, key, sha256}."""
    with OnePartOpen(out / rel for rel in part_rels) as parts:
        hr_hist = lr_hist = None
        hr_rows, lr_rows = [], []
        for j in range(len(parts)):
            p = parts[j]
            if len(p["hr_hist"]):
                hr_hist = st.add_hist(hr_hist, p["hr_hist"][()])
            if len(p["lr_hist"]):
                lr_hist = st.add_hist(lr_hist, p["lr_hist"][()])
            hr_rows.append(p["hr_rows"][()])
            lr_rows.append(p["lr_rows"][()])
        coded = bool(store.units_per_mm)
        # code histogram bins take the values the reader returns (decode), so statistics describe them exactly;
        # the fill code's bin is empty
        codes = np.arange(65536, dtype=np.uint16)
        hr_values = (
            np.nan_to_num(decode(codes, store.units_per_mm, store.fill_value).astype(np.float64))
            if coded
            else st.log_bin_values(len(hr_hist) if hr_hist is not None else 1)
        )
        hr_scalars, hr_arrays = st.summarise(
            hr_hist, None if coded else np.concatenate(hr_rows), hr_values, cfg.wet_threshold, "hr"
        )
        lr_scalars, lr_arrays = st.summarise(
            lr_hist,
            np.concatenate(lr_rows),
            st.log_bin_values(len(lr_hist) if lr_hist is not None else 1),
            cfg.wet_threshold,
            "lr",
        )
        n = len(plan.starts)
        ly, lx = plan.lr_shape
        s = plan.pair.s
        x0, dx, _, y0, _, dy = store.transform
        with AtomicPath(out / plan.rel) as tmp, h5py.File(tmp, "w") as f:
            ds = cfg.layout.create(f, "lr", (n, ly, lx), np.float32, np.float32(np.nan))
            ds.attrs["units"] = "mm per HR step (mean over the s x s x t block)"
            cy, cx = ds.chunks[1:]
            offsets = [(y, x) for y in range(0, ly, cy) for x in range(0, lx, cx)]
            k = 0
            for j in range(len(parts)):
                p = parts[j]
                src = p["lr"]
                if int(p.attrs["first_block"]) != k and src.shape[0]:
                    raise RuntimeError(f"part {p.filename} starts at block {p.attrs['first_block']}, expected {k}")
                for i in range(src.shape[0]):
                    for y, x in offsets:
                        mask, data = src.id.read_direct_chunk((i, y, x))
                        ds.id.write_direct_chunk((k, y, x), data, mask)
                    k += 1
            if k != n:
                raise RuntimeError(
                    f"{plan.pair.name}: parts hold {k} blocks, expected {n}: remove {out / PARTS_DIR} and rerun"
                )
            f.create_dataset("time", data=plan.end_s.astype(np.int64))
            f.create_dataset("hr_start", data=plan.starts.astype(np.int64))
            f.create_dataset("split", data=plan.split)
            g = f.create_group("stats")
            dry = hr_scalars.pop("_hr_dry")
            lr_scalars.pop("_lr_dry")
            g.attrs.update(
                {
                    **hr_scalars,
                    **lr_scalars,
                    "dry_fraction": dry / hr_scalars["count_hr"],
                    "wet_threshold": cfg.wet_threshold,
                    "quantiles_exact": coded,
                }
            )
            g.create_dataset("quantile_levels", data=np.asarray(st.QUANTILE_LEVELS))
            for name, values in {**hr_arrays, **lr_arrays}.items():
                g.create_dataset(name, data=np.asarray(values, np.float64))
            filled = np.flatnonzero(hr_hist)  # the HR histogram's occupied bins: moments of any transform
            g.create_dataset("hr_histogram_counts", data=hr_hist[filled].astype(np.int64))
            g.create_dataset("hr_histogram_mm", data=hr_values[filled].astype(np.float64))
            f.attrs.update(
                {
                    "format": SHARD_FORMAT,
                    "format_version": FORMAT_VERSION,
                    "s": s,
                    "t": plan.pair.t,
                    "pair": plan.pair.name,
                    "interval_minutes": store.interval_minutes,
                    "min_valid": cfg.min_valid,
                    "phase_minutes": cfg.phase_minutes,
                    "hr_store": os.path.relpath(hr_path.resolve(), (out / plan.rel).parent.resolve()),
                    "hr_store_sha256": hr_sha,
                    "hr_window": np.asarray(plan.hr_window, np.int64),
                    "lr_transform": np.asarray((x0, dx * s, 0.0, y0, 0.0, dy * s), np.float64),
                    "crs_proj4": store.crs_proj4,
                    "crs_wkt": store.crs_wkt,
                    "splits": json.dumps(ranges, sort_keys=True),
                    "provenance": json.dumps(
                        {
                            "step": "shards",
                            "code_version": code_version(),
                            "config": cfg.record(),
                            "hr_store_provenance": store.provenance,
                        },
                        sort_keys=True,
                    ),
                }
            )
    return {"rel": plan.rel, "key": plan.key, "sha256": file_sha256(out / plan.rel)}


def make_shards(
    out_dir, cfg: ShardConfig, comm, progress: bool = True, store_path=None, timings: dict | None = None
) -> dict:
    """Build every shard of `cfg.pairs` from the HR store (default `<out_dir>/hr.h5`) into
    `<out_dir>/shards/` on all ranks; returns the manifest entries {rel: entry} of the shards.
    `timings`, when given, receives this rank's seconds by stage (read, coarsen, statistics, write,
    merge)."""
    out = Path(out_dir)
    hr_path = Path(store_path) if store_path else out / HR_FILE
    if not hr_path.is_file():
        raise FileNotFoundError(
            f"HR store {hr_path} does not exist: run `hpcsr-preprocess ingest --out {out} ...` first"
        )

    def hr_checksum():
        entry = Manifest(out).entries.get(HR_FILE)
        if entry and hr_path.resolve() == (out / HR_FILE).resolve() and entry["size"] == hr_path.stat().st_size:
            return entry["sha256"]
        return file_sha256(hr_path)

    hr_sha = comm.run_step("checking hr.h5", lambda: hr_checksum() if comm.rank == 0 else None)[0]
    store = HRStore(hr_path)
    plans, ranges = plan_pairs(store, cfg, hr_sha)
    done = comm.bcast(
        [p.pair.name for p in plans if Manifest(out).complete(p.rel, p.key, verify=False)] if comm.rank == 0 else None
    )
    todo = [p for p in plans if p.pair.name not in done]
    if comm.rank == 0:
        log.info(
            "shards: %d pairs (%s), %d already complete, %d HR steps, %d ranks",
            len(plans),
            ", ".join(p.pair.name for p in plans),
            len(done),
            store.shape[0],
            comm.size,
        )
    if todo:
        windows = window_cuts(store.shape[0], {p.pair.t: p.starts for p in todo}, cfg.window_frames)
        lo, hi = split_among(len(windows), comm.size, comm.rank)
        n_mine = sum(b - a for a, b in windows[lo:hi])
        bar = tqdm(
            total=n_mine, desc=f"shards rank {comm.rank}", unit="frame", disable=(not progress) or comm.rank != 0
        )
        t0 = time.perf_counter()
        results = comm.run_step("coarsening", compute_parts, out, store, todo, windows, lo, hi, cfg, bar)
        bar.close()
        elapsed = time.perf_counter() - t0
        all_parts = [parts for parts, _ in results]
        stages = ", ".join(f"{k} {v:.2f}" for k, v in results[comm.rank][1].items())
        log.info(
            "rank %d: %d HR frames x %d pairs in %.1f s (%.1f frames/s; seconds by stage: %s)",
            comm.rank,
            n_mine,
            len(todo),
            elapsed,
            n_mine / max(elapsed, 1e-9),
            stages or "none",
        )

        def merge_mine():
            return [
                merge_pair(
                    out,
                    plan,
                    [parts[plan.pair.name] for parts in all_parts if parts],
                    store,
                    hr_path,
                    hr_sha,
                    ranges,
                    cfg,
                )
                for j, plan in enumerate(todo)
                if j % comm.size == comm.rank
            ]

        t0 = time.perf_counter()
        merged = comm.run_step("merging shards", merge_mine)
        if timings is not None:
            timings.update(results[comm.rank][1], merge=time.perf_counter() - t0)

        def record():
            manifest = Manifest(out)
            for results in merged:
                for r in results:
                    manifest.record(r["rel"], r["key"], sha256=r["sha256"], save=False)
            manifest.save()  # once for all the shards, which are all complete by now
            return {p.rel: manifest.entries[p.rel] for p in plans}

        entries = comm.run_step("writing the manifest", lambda: record() if comm.rank == 0 else None)[0]
    else:
        entries = comm.bcast({p.rel: Manifest(out).entries[p.rel] for p in plans} if comm.rank == 0 else None)
    store.close()
    return entries
