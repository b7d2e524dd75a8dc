"""Synthetic Comephore-format months: the embedded default data, so the pipeline runs with no download.

Each hour is a Gaussian random field with a power-law spectrum (|F(k)|^2 ~ k^-beta), evolved in
Fourier space as an AR(1) process whose memory grows with wavelength (small cells live about an
hour, synoptic structures a day) and advected by a slowly turning wind (a phase shift per step).
Rain falls where the field exceeds a threshold set by a slowly varying "weather regime", so the wet
fraction of the whole canvas (below) wanders around about 12 % (85-90 % of pixels dry; a small grid
sees dry days and wet ones as weather passes), and intensities grow exponentially
above the threshold (a heavy, lognormal-like tail). Values are quantised to tenths of mm, pixels
outside a smooth coverage region are 65535, and each hour is written as a `YYYYMMDDHH_RR.gtif` with
Comephore's tags and GeoKeys into monthly `H_COMEPHORE_YYYYMM.tar` archives. Deterministic per seed.
The field evolves on a periodic canvas of at least OUTER_SCALE_KM (512 km) a side, of which the
grid is the centre, so a small grid is a window on weather larger than itself (see OUTER_SCALE_KM).
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.special import ndtri
from tqdm import tqdm

from hpcsr.atomic import AtomicPath, write_json_atomic
from preprocessing import comephore
from preprocessing.geotiff import write_geotiff

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthConfig:
    """Settings of the synthetic generator (all deterministic given `seed`)."""

    start: str = "2020-01-01"  # first day (UTC); the first hour ends at 01:00
    days: int = 3  # number of days of hourly rasters
    size: int = 200  # side of the square grid in 1 km pixels (1536 = the full Comephore grid)
    seed: int = 0  # random seed
    coverage: float = 0.85  # fraction of the grid with radar coverage (the rest is 65535)
    missing_hours: int = 0  # number of hours left out of the archives (become gaps)
    wet_fraction: float = 0.12  # mean fraction of covered pixels with rain
    spectral_slope: float = 3.0  # beta in |F(k)|^2 ~ k^-beta of the underlying field
    speed_kmh: float = 25.0  # mean advection speed

    def __post_init__(self):
        if not 16 <= self.size <= comephore.FULL_SHAPE[0]:
            raise ValueError(f"size={self.size} must be in 16..{comephore.FULL_SHAPE[0]} pixels")
        if self.days < 1:
            raise ValueError(f"days={self.days} must be >= 1")
        if not 0.05 <= self.coverage <= 1.0:
            raise ValueError(f"coverage={self.coverage} must be in [0.05, 1]")
        if not 0.0 < self.wet_fraction < 0.5:
            raise ValueError(f"wet_fraction={self.wet_fraction} must be in (0, 0.5)")
        if not 0 <= self.missing_hours < 24 * self.days:
            raise ValueError(f"missing_hours={self.missing_hours} must be in 0..{24 * self.days - 1}")
        try:
            np.datetime64(self.start, "D")
        except ValueError:
            raise ValueError(f"start={self.start!r} is not a day like 2020-01-01") from None


# km: the canvas side the rain field evolves on (periodic), whatever the grid's size. Weather's
# structures reach hundreds of km; a field as large as a small grid has none larger than the grid and
# advects its rain round and round it. Measured on hourly rain in 4 km x 2 h blocks (the demo's s4_t2):
# the share of a block's mass in its wettest hour, median, and the share of wet pixels in wet blocks
# were 1.0 / 0.56 on the demo's 80 km grid with the field on the grid, 0.83 / 0.82 on a 512 km canvas
# (four seeds x 6 days); real radar summed to hours: 0.67-0.98 / 0.73-0.97 (Comephore 0.72 / 0.97,
# KNMI, BoM, MeteoSwiss, OPERA in ../shared/data).
OUTER_SCALE_KM = 512


def _wavenumbers(n_y: int, n_x: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ky = np.fft.fftfreq(n_y).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(n_x).astype(np.float32)[None, :]
    return ky, kx, np.sqrt(ky * ky + kx * kx)


class RainField:
    """The evolving spectral state; `step()` returns the next hour in mm (float32, NaN outside).

    The field lives on a periodic canvas of at least OUTER_SCALE_KM a side, and the grid is its
    centre: the weather's largest structures and the distance the rain travels before it comes
    round again do not shrink with the grid."""

    def __init__(self, cfg: SynthConfig, rng: np.random.Generator):
        n = max(cfg.size, OUTER_SCALE_KM)
        self.cfg, self.rng, self.shape = cfg, rng, (cfg.size, cfg.size)
        self.canvas = (n, n)
        self.ky, self.kx, k = _wavenumbers(n, n)
        k_floor = 1.0 / n
        self.amplitude = np.maximum(k, k_floor) ** (-cfg.spectral_slope / 2)
        self.amplitude[0, 0] = 0.0
        wavelength_km = 1.0 / np.maximum(k, k_floor)  # 1 km pixels
        lifetime_h = np.clip(2.5 * (wavelength_km / 10.0) ** 0.7, 0.5, 48.0)
        self.phi = np.exp(-1.0 / lifetime_h).astype(np.float32)
        self.innovation = np.sqrt(1.0 - self.phi**2).astype(np.float32)
        self.state = self._white()
        angle = rng.uniform(0, 2 * np.pi)
        self.wind = cfg.speed_kmh * np.array([np.sin(angle), np.cos(angle)])  # (u_y, u_x) px per hour
        self.regime = rng.standard_normal()
        self.mask = self._coverage_mask()

    def _white(self, k: np.ndarray | None = None) -> np.ndarray:
        """Complex white noise on the rfft grid of wavenumbers `k` (default: the canvas's)."""
        shape = (self.ky.shape[0], self.kx.shape[1]) if k is None else k.shape
        re = self.rng.standard_normal(shape, dtype=np.float32)
        im = self.rng.standard_normal(shape, dtype=np.float32)
        return (re + 1j * im).astype(np.complex64)

    def _coverage_mask(self) -> np.ndarray:
        n = self.shape[0]
        ky, kx, k = _wavenumbers(n, n)
        smooth = np.fft.irfft2(self._white(k) * np.maximum(k, 1.0 / n) ** -2.5 * (k < 8.0 / n), s=self.shape)
        smooth = (smooth - smooth.mean()) / (smooth.std() + 1e-12)
        yy, xx = np.mgrid[0:n, 0:n] / (n - 1) - 0.5
        score = smooth * 0.35 - 4.0 * (yy**2 + xx**2)
        if self.cfg.coverage >= 1.0:
            return np.ones(self.shape, bool)
        return score >= np.quantile(score, 1.0 - self.cfg.coverage)

    def step(self) -> np.ndarray:
        cfg, rng = self.cfg, self.rng
        turn = rng.normal(0.0, 0.08)
        c, s = np.cos(turn), np.sin(turn)
        self.wind = np.array([c * self.wind[0] - s * self.wind[1], s * self.wind[0] + c * self.wind[1]])
        self.wind *= np.exp(0.05 * rng.standard_normal() - 0.05 * np.log(np.hypot(*self.wind) / cfg.speed_kmh))
        shift = np.exp(-2j * np.pi * (self.ky * self.wind[0] + self.kx * self.wind[1])).astype(np.complex64)
        self.state = self.phi * shift * self.state + self.innovation * self._white()
        field = np.fft.irfft2(self.state * self.amplitude, s=self.canvas)
        field = (field - field.mean()) / (field.std() + 1e-12)
        first = (self.canvas[0] - self.shape[0]) // 2
        field = field[first : first + self.shape[0], first : first + self.shape[1]]
        rho = np.exp(-1.0 / 24.0)
        self.regime = rho * self.regime + np.sqrt(1 - rho * rho) * rng.standard_normal()
        wet = np.clip(cfg.wet_fraction * np.exp(0.9 * self.regime - 0.405), 0.003, 0.45)
        threshold = ndtri(1.0 - wet)
        excess = np.maximum(field - threshold, 0.0)
        rain = (np.expm1(1.15 * excess) * 1.2).astype(np.float32)
        rain[~self.mask] = np.nan
        return rain


def quantise(rain_mm: np.ndarray) -> np.ndarray:
    """mm (NaN = missing) -> uint16 tenths of mm with 65535 for missing, as Comephore stores it."""
    raw = np.rint(np.nan_to_num(rain_mm, nan=0.0) * comephore.UNITS_PER_MM)
    raw = np.minimum(raw, comephore.MISSING - 1).astype(np.uint16)
    raw[np.isnan(rain_mm)] = comephore.MISSING
    return raw


def _hour_ends(cfg: SynthConfig) -> np.ndarray:
    first = np.datetime64(cfg.start, "D").astype("datetime64[s]").astype(np.int64) + 3600
    return first + 3600 * np.arange(24 * cfg.days, dtype=np.int64)


def _month_of(end_s: int) -> tuple[int, int]:
    d = np.datetime64(int(end_s), "s").astype(object)
    return d.year, d.month


def synthesize(out_dir, cfg: SynthConfig = SynthConfig(), progress: bool = True) -> list[Path]:
    """Write the archives of `cfg` into `out_dir`; returns their paths. A rerun with the same
    settings finds `synth.json` and the archives and does nothing."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ends = _hour_ends(cfg)
    months = sorted({_month_of(e) for e in ends})
    paths = [out / comephore.archive_name(y, m) for y, m in months]
    record = out / "synth.json"
    wanted = {"config": asdict(cfg), "archives": [p.name for p in paths]}
    if record.exists() and all(p.exists() for p in paths):
        if json.loads(record.read_text()) == wanted:
            log.info("synthetic data in %s already complete (%s)", out, record)
            return paths
    rng = np.random.default_rng(cfg.seed)
    dropped = set(rng.choice(len(ends), size=cfg.missing_hours, replace=False).tolist()) if cfg.missing_hours else set()
    field = RainField(cfg, rng)
    offset = (comephore.FULL_SHAPE[0] - cfg.size) // 2
    geotags = comephore.comephore_geotags(row0=offset, col0=offset)
    bar = tqdm(total=len(ends), unit="frame", desc="synth", disable=not progress)
    index = 0
    for (year, month), path in zip(months, paths):
        with AtomicPath(path) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            while index < len(ends) and _month_of(ends[index]) == (year, month):
                raw = quantise(field.step())
                if index not in dropped:
                    _add_raster(tar, int(ends[index]), raw, geotags)
                index += 1
                bar.update(1)
    bar.close()
    write_json_atomic(record, wanted)
    return paths


def _add_raster(tar: tarfile.TarFile, end_s: int, raw: np.ndarray, geotags) -> None:
    buf = io.BytesIO()
    stamp = np.datetime64(end_s, "s").astype(object)
    write_geotiff(
        buf,
        raw,
        geotags,
        description=comephore.RAIN_KIND,
        datetime=stamp.strftime("%Y:%m:%d %H:%M:%S"),
        software="COMEPHORE",
        artist="METEO FRANCE",
    )
    info = tarfile.TarInfo(comephore.member_name(end_s))
    info.size, info.mtime, info.mode = buf.tell(), end_s, 0o644
    buf.seek(0)
    tar.addfile(info, buf)
