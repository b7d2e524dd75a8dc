"""Ingest: source frames -> per-unit part files -> the HR store `hr.h5`.

Work is cut into units (one day of one archive, folder or netCDF file), each written by one rank as
`parts/hr/<unit>.h5` under a temporary name and renamed when complete; a rerun skips every unit
whose part exists with the same key (input identity and settings). Rank 0 then assembles `hr.h5`
by copying the parts' compressed chunks in time order, so the store does not depend on how many
ranks made the parts. A frame that cannot be read is skipped with a warning and becomes a gap (or
stops the run with `on_bad_input='fail'`); a frame whose grid differs from the others stops the
run; frames with no valid value are dropped and recorded.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from hpcsr.artifacts import code_version
from hpcsr.atomic import AtomicPath
from hpcsr.data.store import FORMAT_VERSION, HR_FILE, HR_FORMAT
from preprocessing import comephore, netcdf
from preprocessing.geotiff import GeoTiffError, Grid
from preprocessing.layout import Encoding, StoreLayout
from preprocessing.manifest import Manifest, text_hash
from preprocessing.parts import OnePartOpen
from preprocessing.provenance import input_record
from preprocessing.quality import DEFAULT_CAP_MM_PER_HOUR, cap_amount, clean_coded

log = logging.getLogger(__name__)

PARTS_DIR = os.path.join("parts", "hr")
QC_NAMES = ("missing_source", "negative", "over_cap")


class BadInputError(ValueError):
    """An input frame could not be used and `on_bad_input` is 'fail'."""


@dataclass(frozen=True)
class IngestConfig:
    """Settings of the ingest step (every key is also a CLI option of `hpcsr-preprocess ingest`)."""

    comephore: tuple = ()  # Comephore archives (H_COMEPHORE_YYYYMM.tar) or folders of .gtif/.tar
    netcdf: tuple = ()  # CF netCDF files with precip(time, y, x)
    cadence_minutes: int = 60  # HR step; netCDF steps are summed up to it
    source_interval: int | None = None  # netCDF accumulation interval when the files lack the attribute
    aggregate_pixels: int = 1  # netCDF: k x k source pixels averaged into one stored pixel (500 m -> 1 km: 2)
    cap_mm_per_hour: float = DEFAULT_CAP_MM_PER_HOUR  # plausibility cap on rates (higher values are masked)
    dequantise_mm: float = (
        0.0  # netCDF: the source's rounding step, mm per source step (preprocessing.dequantise); 0: off
    )
    on_bad_input: str = "skip"  # 'skip': unreadable frames become gaps, with a warning; 'fail': stop
    encoding: str | None = None  # None: uint16/10 for Comephore, float32 for netCDF; or 'uint16/<n>', 'float32'
    layout: StoreLayout = field(default_factory=StoreLayout)  # chunking and compression
    unit_frames: int = 24  # frames per unit of work (one day at 60 min)

    def __post_init__(self):
        if bool(self.comephore) == bool(self.netcdf):
            raise ValueError(
                "give either Comephore inputs (--comephore) or netCDF inputs (--netcdf), not both or neither: "
                "one HR store holds one dataset on one grid"
            )
        if self.on_bad_input not in ("skip", "fail"):
            raise ValueError(f"on_bad_input={self.on_bad_input!r}: use 'skip' or 'fail'")
        if self.comephore and self.cadence_minutes != 60:
            raise ValueError(
                f"cadence {self.cadence_minutes} min with Comephore input: Comephore is hourly, use --cadence 60"
            )
        if self.aggregate_pixels < 1:
            raise ValueError(f"aggregate_pixels={self.aggregate_pixels} must be >= 1")
        if self.comephore and self.aggregate_pixels != 1:
            raise ValueError(
                f"aggregate_pixels={self.aggregate_pixels} with Comephore input: its 1 km grid is stored as it is "
                "(aggregation applies to netCDF inputs)"
            )
        if self.cadence_minutes < 1 or self.unit_frames < 1:
            raise ValueError(f"cadence_minutes={self.cadence_minutes} and unit_frames={self.unit_frames} must be >= 1")
        cap_amount(self.cap_mm_per_hour, 60)
        enc = self.store_encoding()
        if not self.dequantise_mm >= 0:
            raise ValueError(f"dequantise_mm={self.dequantise_mm} must be >= 0 mm (0: off)")
        if self.dequantise_mm and (self.comephore or enc.dtype != "float32"):
            raise ValueError(
                f"dequantise_mm={self.dequantise_mm} needs netCDF input stored as float32 (a uint16 store "
                "would round the dequantised amounts again)"
            )

    @property
    def source_kind(self) -> str:
        return "comephore" if self.comephore else "netcdf"

    def store_encoding(self) -> Encoding:
        if self.encoding is not None:
            enc = Encoding.parse(self.encoding)
            if self.comephore and enc != Encoding("uint16", comephore.UNITS_PER_MM):
                raise ValueError(
                    f"encoding {self.encoding} for Comephore: its tenths of mm are stored as uint16/10 (lossless)"
                )
            return enc
        return Encoding("uint16", comephore.UNITS_PER_MM) if self.comephore else Encoding("float32")

    def record(self) -> dict:
        d = asdict(self)
        d["layout"] = asdict(self.layout)
        return d


@dataclass(frozen=True)
class Unit:
    """One part of the work: consecutive frames of one input container."""

    uid: str  # part file stem
    container: str  # archive, folder or netCDF file
    frames: tuple  # FrameRefs (Comephore) or (first, stop) output-step range (netCDF)
    n_frames: int
    key: str  # changes whenever the input or the settings change

    @property
    def part(self) -> str:
        return os.path.join(PARTS_DIR, f"{self.uid}.h5")


def _day_label(end_s: int, cadence_s: int) -> str:
    return np.datetime64(int(end_s - cadence_s), "s").astype(object).strftime("%Y%m%d")


def plan_units(cfg: IngestConfig) -> tuple[list[Unit], list[dict], dict]:
    """Units of work, records of skipped inputs, and netCDF plans by path (rank 0 runs this)."""
    settings = (
        cfg.cadence_minutes,
        cfg.aggregate_pixels,
        cfg.cap_mm_per_hour,
        cfg.dequantise_mm,
        cfg.store_encoding().dtype,
        cfg.store_encoding().units_per_mm,
        asdict(cfg.layout),
        FORMAT_VERSION,
    )
    units, plans = [], {}
    cadence_s = cfg.cadence_minutes * 60
    if cfg.comephore:
        refs, skipped = comephore.list_frames(cfg.comephore)
        groups: dict[tuple, list] = {}
        for ref in refs:
            groups.setdefault((ref.container, _day_label(ref.time, cadence_s)), []).append(ref)
        for (container, day), members in groups.items():
            for j in range(0, len(members), cfg.unit_frames):
                chunk = tuple(members[j : j + cfg.unit_frames])
                uid = f"{Path(container).name}__{day}_{j // cfg.unit_frames}"
                key = text_hash(
                    comephore.container_fingerprint(container), [(r.member, r.offset, r.size) for r in chunk], settings
                )
                units.append(Unit(uid, container, chunk, len(chunk), key))
    else:
        skipped = []
        for path in cfg.netcdf:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"netCDF input {path} does not exist")
            plan, skips = netcdf.plan_file(str(path), cfg.cadence_minutes, cfg.source_interval, cfg.aggregate_pixels)
            plans[str(path)] = plan
            skipped += skips
            for first in range(0, len(plan.out_times), cfg.unit_frames):
                stop = min(first + cfg.unit_frames, len(plan.out_times))
                key = text_hash(comephore.container_fingerprint(path), first, stop, cfg.source_interval, settings)
                units.append(Unit(f"{Path(path).stem}__{first:06d}", str(path), (first, stop), stop - first, key))
    units.sort(key=lambda u: u.uid)
    return units, skipped, plans


def _part_complete(out: Path, unit: Unit) -> bool:
    path = out / unit.part
    if not path.exists():
        return False
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("key") == unit.key
    except OSError:
        return False


def _frames_comephore(unit: Unit, cfg: IngestConfig, skipped: list):
    limit = cap_amount(cfg.cap_mm_per_hour, 60)
    for ref in unit.frames:
        try:
            raw, grid = comephore.read_frame(ref)
        except (GeoTiffError, OSError) as exc:
            reason = str(exc)
            if cfg.on_bad_input == "fail":
                raise BadInputError(
                    f"{ref.label}: {reason}; rerun with --on-bad-input skip to record it as a gap"
                ) from exc
            log.warning("skipping %s: %s (recorded as a gap)", ref.label, reason)
            skipped.append(
                {"input": ref.container, "member": ref.member, "time": ref.time, "kind": "unreadable", "reason": reason}
            )
            continue
        raw, qc, valid = clean_coded(raw, comephore.MISSING, comephore.UNITS_PER_MM, limit)
        yield ref.time, raw, valid, grid, qc, ref.label


def _frames_netcdf(unit: Unit, cfg: IngestConfig, plan, enc: Encoding):
    first, stop = unit.frames
    for end, mm, qc in netcdf.read_steps(plan, first, stop, cfg.cap_mm_per_hour, cfg.dequantise_mm):
        label = f"{plan.path} step ending {np.datetime64(end, 's')}"
        stored = enc.encode_mm(mm, label)
        valid = ~np.isnan(stored) if enc.dtype == "float32" else stored != enc.fill
        yield end, stored, valid, plan.grid, qc, label


def _grid_attrs(grid: Grid) -> str:
    return json.dumps(
        {
            "width": grid.width,
            "height": grid.height,
            "x0": grid.x0,
            "y0": grid.y0,
            "dx": grid.dx,
            "dy": grid.dy,
            "crs_proj4": grid.crs_proj4,
            "crs_wkt": grid.crs_wkt,
            "geokeys": {str(k): v for k, v in grid.geokeys.items()},
        }
    )


def _grid_from_attrs(text: str) -> Grid:
    d = json.loads(text)
    geokeys = {int(k): v for k, v in d.pop("geokeys").items()}
    return Grid(geokeys=geokeys, **d)


def write_unit(out: Path, unit: Unit, cfg: IngestConfig, plan=None, progress=None) -> dict:
    """Read one unit's frames and write its part file atomically. Returns a small summary."""
    enc = cfg.store_encoding()
    skipped: list[dict] = []
    frames = _frames_comephore(unit, cfg, skipped) if cfg.comephore else _frames_netcdf(unit, cfg, plan, enc)
    t0 = time.perf_counter()
    n_read = 0
    with AtomicPath(out / unit.part) as tmp:
        with h5py.File(tmp, "w") as f:
            ds = grid0 = label0 = valid_any = None
            times, qcs, valid = [], [], []
            for end, stored, ok, grid, qc, label in frames:
                n_read += 1
                if progress is not None:
                    progress.update(1)
                if grid0 is None:
                    grid0, label0 = grid, label
                    ds = cfg.layout.create(f, "precip", (0, grid.height, grid.width), stored.dtype, enc.fill)
                    valid_any = np.zeros((grid.height, grid.width), bool)
                elif not grid.same_as(grid0):
                    raise ValueError(
                        f"grid changes inside the dataset: {label} has {grid.describe()} but {label0} has "
                        f"{grid0.describe()}: give inputs on one grid (one HR store per grid)"
                    )
                n_valid = int(np.count_nonzero(ok))
                if n_valid == 0:
                    skipped.append(
                        {
                            "input": unit.container,
                            "member": label,
                            "time": int(end),
                            "kind": "all-missing",
                            "reason": "all values missing",
                        }
                    )
                    continue
                valid_any |= ok
                ds.resize(len(times) + 1, axis=0)
                ds[len(times)] = stored
                times.append(end)
                qcs.append([qc.missing_source, qc.negative, qc.over_cap])
                valid.append(n_valid)
            f.attrs["key"] = unit.key
            f.attrs["skipped"] = json.dumps(skipped)
            f.attrs["grid"] = _grid_attrs(grid0) if grid0 is not None else ""
            f.create_dataset("time", data=np.asarray(times, np.int64))
            f.create_dataset("qc", data=np.asarray(qcs, np.int64).reshape(-1, 3))
            f.create_dataset("valid_count", data=np.asarray(valid, np.int64))
            if valid_any is not None:
                f.create_dataset("valid_any", data=valid_any.astype(np.uint8))
    return {
        "unit": unit.uid,
        "frames": n_read,
        "kept": len(times),
        "skipped": len(skipped),
        "seconds": time.perf_counter() - t0,
    }


def _gaps(times: np.ndarray, step_s: int) -> np.ndarray:
    """(G, 2) runs of missing step end times between the first and last frame."""
    d = np.diff(times)
    at = np.flatnonzero(d > step_s)
    return np.stack([times[at] + step_s, times[at + 1] - step_s], axis=1) if at.size else np.zeros((0, 2), np.int64)


def assemble(
    out: Path, units: list[Unit], cfg: IngestConfig, listing_skipped: list[dict], provenance: dict, plans: dict
) -> Path:
    """Merge the parts of all units into `out/hr.h5` (atomic). Chunks are copied, not recompressed."""
    enc = cfg.store_encoding()
    step_s = cfg.cadence_minutes * 60
    with OnePartOpen(out / u.part for u in units) as parts:
        index, skipped, grid0, label0 = [], list(listing_skipped), None, None
        for p, u in enumerate(units):
            f = parts[p]
            skipped += json.loads(f.attrs["skipped"])
            if not f.attrs["grid"]:
                continue
            grid = _grid_from_attrs(f.attrs["grid"])
            if grid0 is None:
                grid0, label0 = grid, u.container
            elif not grid.same_as(grid0):
                raise ValueError(
                    f"grid changes inside the dataset: {u.container} has {grid.describe()} but {label0} has "
                    f"{grid0.describe()}: give inputs on one grid (one HR store per grid)"
                )
            index += [(int(t), p, i) for i, t in enumerate(f["time"][()])]
        if not index:  # checked before anything is replaced: a failed rerun leaves the last store as it was
            raise ValueError(
                "no usable frame in the inputs (all unreadable or all missing): see the warnings above; "
                f"{out / HR_FILE} was left as it was"
            )
        index.sort()
        times = np.asarray([t for t, _, _ in index], np.int64)
        dup = np.flatnonzero(np.diff(times) == 0)
        if dup.size:
            t, a, _ = index[dup[0]]
            b = index[dup[0] + 1][1]
            raise ValueError(
                f"the step ending {np.datetime64(t, 's')} is in both {units[a].container} and "
                f"{units[b].container}: remove the overlap"
            )
        off = times % step_s
        if np.any(off):
            bad = times[np.flatnonzero(off)[0]]
            raise ValueError(
                f"step ending {np.datetime64(int(bad), 's')} is not on the {cfg.cadence_minutes}-min grid: "
                "check --cadence or the file's time axis"
            )
        shape = (len(times), grid0.height, grid0.width)
        dtype = np.uint16 if enc.dtype == "uint16" else np.float32
        with AtomicPath(out / HR_FILE) as tmp, h5py.File(tmp, "w") as f:
            ds = cfg.layout.create(f, "precip", shape, dtype, enc.fill)
            cy, cx = ds.chunks[1:]
            offsets = [(y, x) for y in range(0, shape[1], cy) for x in range(0, shape[2], cx)]
            qc = np.zeros((len(times), 3), np.int64)
            valid = np.zeros(len(times), np.int64)
            part_qc = [parts[p]["qc"][()] for p in range(len(parts))]
            part_valid = [parts[p]["valid_count"][()] for p in range(len(parts))]
            for k, (_, p, i) in enumerate(tqdm(index, desc="assemble hr.h5", unit="frame", disable=None)):
                src = parts[p]["precip"]
                for y, x in offsets:
                    mask, data = src.id.read_direct_chunk((i, y, x))
                    ds.id.write_direct_chunk((k, y, x), data, mask)
                qc[k] = part_qc[p][i]
                valid[k] = part_valid[p][i]
            valid_any = np.zeros((shape[1], shape[2]), bool)
            for p in range(len(parts)):
                if "valid_any" in parts[p]:
                    valid_any |= parts[p]["valid_any"][()].astype(bool)
            f.create_dataset("time", data=times).attrs["units"] = "seconds since 1970-01-01 00:00:00 UTC, end of step"
            f.create_dataset("x", data=grid0.x)
            f.create_dataset("y", data=grid0.y)
            f.create_dataset("valid_mask", data=valid_any.astype(np.uint8))
            f.create_dataset("frame_valid_fraction", data=(valid / (shape[1] * shape[2])).astype(np.float32))
            f.create_dataset("gaps", data=_gaps(times, step_s).astype(np.int64))
            for j, name in enumerate(QC_NAMES):
                f.create_dataset(f"qc/{name}", data=qc[:, j])
            first_plan = next(iter(plans.values()), None)
            x_units, y_units = ("m", "m") if cfg.comephore else (first_plan.x_units, first_plan.y_units)
            attrs = {
                "format": HR_FORMAT,
                "format_version": FORMAT_VERSION,
                "interval_minutes": cfg.cadence_minutes,
                "units": "mm",
                "source_kind": cfg.source_kind,
                "crs_proj4": grid0.crs_proj4,
                "crs_wkt": grid0.crs_wkt,
                "transform": np.asarray(grid0.transform, np.float64),
                "x_units": x_units,
                "y_units": y_units,
                "encoding": enc.dtype,
                "units_per_mm": enc.units_per_mm,
                "fill_value": enc.fill,
                "cap_mm_per_hour": float(cfg.cap_mm_per_hour),
                "dequantise_mm": float(cfg.dequantise_mm),
                "geokeys": json.dumps({str(k): v for k, v in grid0.geokeys.items()}),
                "skipped": json.dumps(sorted(skipped, key=lambda r: (r["time"] or 0, r["input"], r["member"]))),
                "provenance": json.dumps(provenance, sort_keys=True),
            }
            f.attrs.update(attrs)
        by_kind = skipped_by_kind(skipped)
        lost = sum(int(r.get("hours_lost") or 0) for r in skipped)
        log.info(
            "hr.h5: %d frames of %d x %d from %s to %s, %d gap(s)%s; masked %d negative and %d implausible "
            "(> %g mm/h) values; %d values missing in the source; skipped: %s (attribute 'skipped')",
            shape[0],
            shape[1],
            shape[2],
            np.datetime64(int(times[0]), "s"),
            np.datetime64(int(times[-1]), "s"),
            len(_gaps(times, step_s)),
            f" and {lost} hour(s) lost at the end of damaged archives" if lost else "",
            qc[:, 1].sum(),
            qc[:, 2].sum(),
            cfg.cap_mm_per_hour,
            qc[:, 0].sum(),
            ", ".join(f"{n} {kind}" for kind, n in by_kind.items()) or "nothing",
        )
    return out / HR_FILE


def skipped_by_kind(skipped: list[dict]) -> dict:
    """{kind: count} of skip records (records of older stores without a kind count as 'other')."""
    counts = {}
    for r in skipped:
        counts[r.get("kind", "other")] = counts.get(r.get("kind", "other"), 0) + 1
    return dict(sorted(counts.items()))


def share_of_units(units: list[Unit], n_ranks: int) -> list[list[Unit]]:
    """Units per rank, balanced by frame count (largest first to the least loaded rank), each
    rank's list in time order. Deterministic, so every rank computes the same assignment."""
    loads, shares = [0] * n_ranks, [[] for _ in range(n_ranks)]
    for u in sorted(units, key=lambda u: (-u.n_frames, u.uid)):
        r = loads.index(min(loads))
        shares[r].append(u)
        loads[r] += u.n_frames
    return [sorted(share, key=lambda u: u.uid) for share in shares]


def ingest(out_dir, cfg: IngestConfig, comm, progress: bool = True) -> dict:
    """Run the whole ingest on all ranks of `comm`; returns the manifest entry of hr.h5 (all ranks)."""
    out = Path(out_dir)
    planned = comm.run_step("planning the ingest", lambda: plan_units(cfg) if comm.rank == 0 else None)[0]
    units, listing_skipped, plans = planned
    key = text_hash([u.key for u in units], cfg.record())
    done_before = comm.bcast(Manifest(out).complete(HR_FILE, key, verify=False) if comm.rank == 0 else None)
    if done_before and comm.rank == 0:
        log.info("hr.h5 is complete for these inputs and settings: nothing to ingest")
    todo = [] if done_before else [u for u in units if not _part_complete(out, u)]
    mine = share_of_units(todo, comm.size)[comm.rank]
    if comm.rank == 0:
        log.info(
            "ingest: %d units (%d frames), %d already done, %d ranks",
            len(units),
            sum(u.n_frames for u in units),
            len(units) - len(todo),
            comm.size,
        )
    bar = tqdm(
        total=sum(u.n_frames for u in mine),
        desc=f"ingest rank {comm.rank}",
        unit="frame",
        disable=(not progress) or comm.rank != 0,
    )
    t0 = time.perf_counter()

    def work():
        return [write_unit(out, u, cfg, plans.get(u.container), bar) for u in mine]

    summaries = comm.run_step("reading inputs", work)
    bar.close()
    elapsed = time.perf_counter() - t0
    n_mine = sum(s["frames"] for s in summaries[comm.rank])
    if mine:
        log.info(
            "rank %d: %d frames in %.1f s (%.1f frames/s)", comm.rank, n_mine, elapsed, n_mine / max(elapsed, 1e-9)
        )

    def finish():
        manifest = Manifest(out)
        if done_before:
            return manifest.entries[HR_FILE]
        provenance = {
            "step": "ingest",
            "code_version": code_version(),
            "config": cfg.record(),
            "inputs": [input_record(p) for p in sorted({u.container for u in units})],
        }
        assemble(out, units, cfg, listing_skipped, provenance, plans)
        with h5py.File(out / HR_FILE, "r") as f:
            skipped = json.loads(f.attrs["skipped"])
        return manifest.record(
            HR_FILE,
            key,
            skipped=skipped_by_kind(skipped),
            hours_lost=sum(int(r.get("hours_lost") or 0) for r in skipped),
        )

    entry = comm.run_step("assembling hr.h5", lambda: finish() if comm.rank == 0 else None)[0]
    return entry
