"""Comephore as Meteo-France distributes it: monthly `H_COMEPHORE_YYYYMM.tar` archives (or folders)
of hourly `YYYYMMDDHH_RR.gtif` rasters, uint16 tenths of mm, 65535 = missing (no nodata tag),
stamped with the end of the hour in UTC (DESIGN.md section 4).
Every input left out is recorded with a kind: a raster whose name does not parse ('bad-name'), an
archive damaged part way ('damaged-archive', with the hours of its month after the last member read
counted as lost when the archive has Meteo-France's H_COMEPHORE_YYYYMM.tar name).

Archives are read in place: tarfile lists the members once, then each raster's bytes are read at
its offset (no extraction to disk). Companion rasters (`_ERR`, `_QUALIF`, any `_<KIND>.gtif`) and
other members are ignored (companions counted in the log). The grid and CRS come from each file's GeoKeys.
"""

from __future__ import annotations

import calendar
import logging
import os
import re
import tarfile
from dataclasses import dataclass

import numpy as np

from preprocessing.geotiff import GeoTags, GeoTiffError, read_geotiff

log = logging.getLogger(__name__)

MISSING = 65535  # Comephore's missing-value code (the files carry no nodata tag)
UNITS_PER_MM = 10  # stored values are tenths of mm
RAIN_KIND = "RR"  # the hourly accumulation raster; other kinds are companions
MEMBER_RE = re.compile(r"(?:^|/)(\d{4})(\d{2})(\d{2})(\d{2})_([A-Za-z0-9]+)\.gtif$")

# Facts of the distributed 1 km grid, for the writer of Comephore-format files (the reader takes
# everything from the files themselves).
FULL_SHAPE = (1536, 1536)
FULL_UPPER_LEFT = (-619652.074, -3526818.338)
PIXEL_M = 1000.0
_GEOKEYS = (
    (1024, 1),
    (1025, 1),
    (1026, "unnamed"),
    (2048, 4326),
    (2049, "WGS 84"),
    (2054, 9102),
    (2057, 6378137.0),
    (2059, 298.257223563),
    (3072, 32767),
    (3074, 32767),
    (3075, 15),
    (3076, 9001),
    (3081, 45.0),
    (3082, 0.0),
    (3083, 0.0),
    (3092, 1.0),
    (3095, 0.0),
)


def comephore_geotags(row0: int = 0, col0: int = 0) -> GeoTags:
    """GeoTIFF tags of a window whose upper-left cell is (row0, col0) of the 1536 x 1536 grid."""
    x = FULL_UPPER_LEFT[0] + col0 * PIXEL_M
    y = FULL_UPPER_LEFT[1] - row0 * PIXEL_M
    return GeoTags((PIXEL_M, PIXEL_M, 0.0), (0.0, 0.0, 0.0, x, y, 0.0), _GEOKEYS)


def stamp_seconds(year: int, month: int, day: int, hour: int) -> int:
    """Seconds since 1970-01-01 UTC of a YYYYMMDDHH stamp (hour 00 is the end of the previous day)."""
    return calendar.timegm((year, month, day, hour, 0, 0))


def member_name(end_s: int, kind: str = RAIN_KIND) -> str:
    """`YYYYMMDDHH_<KIND>.gtif` for a step ending at `end_s` seconds since the epoch."""
    return np.datetime64(end_s, "s").astype(object).strftime("%Y%m%d%H") + f"_{kind}.gtif"


@dataclass(frozen=True)
class FrameRef:
    """Where one hourly raster lives: a tar archive member (byte offset and size) or a loose file."""

    time: int  # seconds since 1970-01-01 UTC, end of the hour
    container: str  # the archive or the folder
    member: str  # member name in the archive, or file name in the folder
    offset: int  # byte offset of the raster in the container file (0 for loose files)
    size: int  # raster size in bytes

    @property
    def label(self) -> str:
        """`archive:member` or `folder/file`, for messages."""
        if os.path.isdir(self.container):
            return os.path.join(self.container, self.member)
        return f"{self.container}:{self.member}"

    def read_bytes(self) -> bytes:
        if os.path.isdir(self.container):
            with open(os.path.join(self.container, self.member), "rb") as fh:
                data = fh.read()
        else:
            with open(self.container, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(self.size)
        if len(data) != self.size:
            raise GeoTiffError(f"truncated: {len(data)} of {self.size} bytes present")
        return data


def _parse_member(name: str):
    m = MEMBER_RE.search(name)
    if not m:
        return None
    year, month, day, hour, kind = m.groups()
    try:
        stamp = stamp_seconds(int(year), int(month), int(day), int(hour))
    except (ValueError, OverflowError):
        return None
    if not (1 <= int(month) <= 12 and 1 <= int(day) <= 31 and 0 <= int(hour) <= 23):
        return None
    return stamp, kind


RASTER_SUFFIXES = (".gtif", ".tif", ".tiff")
ARCHIVE_RE = re.compile(r"H_COMEPHORE_(\d{4})(\d{2})\.tar$")


def _note_bad_name(container: str, name: str, skipped: list) -> None:
    """A raster whose name is not YYYYMMDDHH_<KIND>.gtif is left out, with a warning and a record;
    other files (a README, checksums) are left out silently."""
    if name.lower().endswith(RASTER_SUFFIXES):
        log.warning("skipping %s:%s: not named YYYYMMDDHH_<KIND>.gtif, so its hour is unknown", container, name)
        skipped.append(
            {
                "input": container,
                "member": name,
                "time": None,
                "kind": "bad-name",
                "reason": "raster name is not YYYYMMDDHH_<KIND>.gtif",
            }
        )


def _hours_lost(path: str, last_read: int | None) -> int:
    """Hours of a monthly archive's month after the last member read (0 if the name gives no month)."""
    m = ARCHIVE_RE.search(os.path.basename(path))
    if not m:
        return 0
    year, month = int(m.group(1)), int(m.group(2))
    days = calendar.monthrange(year, month)[1]
    first = stamp_seconds(year, month, 1, 1)  # end of the month's first hour
    last = first + (days * 24 - 1) * 3600
    return (last - last_read) // 3600 if last_read is not None else days * 24


def _list_archive(path: str, skipped: list) -> list[FrameRef]:
    refs = []
    try:
        with tarfile.open(path, "r:") as tar:
            while True:
                try:
                    member = tar.next()
                except (tarfile.ReadError, EOFError) as exc:
                    last = refs[-1].member if refs else "the start"
                    lost = _hours_lost(path, refs[-1].time if refs else None)
                    log.warning(
                        "archive %s is damaged after %s (%s): later members are lost%s",
                        path,
                        last,
                        exc,
                        f" ({lost} hour(s) of its month)" if lost else "",
                    )
                    skipped.append(
                        {
                            "input": path,
                            "member": "",
                            "time": None,
                            "kind": "damaged-archive",
                            "reason": f"archive damaged after {last}: {exc}",
                            "hours_lost": lost,
                        }
                    )
                    break
                if member is None:
                    break
                if not member.isfile():
                    continue
                parsed = _parse_member(member.name)
                if parsed is None:
                    _note_bad_name(path, member.name, skipped)
                    continue
                if parsed[1] != RAIN_KIND:
                    continue
                refs.append(FrameRef(parsed[0], path, member.name, member.offset_data, member.size))
    except tarfile.ReadError as exc:
        raise ValueError(
            f"{path} is not a readable uncompressed tar archive ({exc}); "
            "Comephore archives are plain .tar files: check the download"
        ) from exc
    return refs


def _list_folder(path: str, skipped: list) -> list[FrameRef]:
    refs = []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_file() and entry.name.endswith(".tar"):
            refs += _list_archive(entry.path, skipped)
            continue
        parsed = _parse_member(entry.name) if entry.is_file() else None
        if parsed is None and entry.is_file():
            _note_bad_name(path, entry.name, skipped)
        if parsed is None or parsed[1] != RAIN_KIND:
            continue
        refs.append(FrameRef(parsed[0], path, entry.name, 0, entry.stat().st_size))
    return refs


def list_frames(paths) -> tuple[list[FrameRef], list[dict]]:
    """All hourly RR rasters in the given archives and folders, sorted by time, plus records of
    what was skipped. Two rasters with the same stamp are an error naming both."""
    refs, skipped = [], []
    for p in paths:
        p = str(p)
        if os.path.isdir(p):
            refs += _list_folder(p, skipped)
        elif os.path.isfile(p):
            refs += _list_archive(p, skipped)
        else:
            raise FileNotFoundError(
                f"Comephore input {p} does not exist: give H_COMEPHORE_YYYYMM.tar archives or folders of .gtif"
            )
    refs.sort(key=lambda r: (r.time, r.container, r.member))
    for a, b in zip(refs, refs[1:]):
        if a.time == b.time:
            raise ValueError(f"two rasters for the same hour: {a.label} and {b.label}: remove one of them")
    if not refs:
        raise ValueError(f"no YYYYMMDDHH_RR.gtif raster found in {', '.join(map(str, paths))}")
    return refs, skipped


def read_frame(ref: FrameRef):
    """(raw uint16 tenths of mm, Grid) of one raster; GeoTiffError names what is wrong."""
    data, grid, _ = read_geotiff(ref.read_bytes())
    if data.dtype != np.uint16:
        raise GeoTiffError(f"pixel type {data.dtype} is not uint16 tenths of mm")
    return data, grid


def container_fingerprint(path: str) -> str:
    """Identity of an input for resuming: path, size and modification time."""
    st = os.stat(path)
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def archive_name(year: int, month: int) -> str:
    """Meteo-France's name of the monthly archive."""
    return f"H_COMEPHORE_{year:04d}{month:02d}.tar"
