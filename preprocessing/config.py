"""Schema of the `preprocess` config section (configs/preprocess/default.yaml): what the launcher's
preprocess stage and `hpcsr-preprocess all` do, from the raw source to the HR store and the shards.

Each key is the `hpcsr-preprocess all` flag of the same name (--split-fractions is split_fractions;
the synthetic source's --days, --size, ... are synthetic.days, synthetic.size, ...). hpcsr keeps the
section as a plain mapping (it never imports this package); `from_mapping` builds and checks it, for
the stage's plan-time check and for the stage itself. A bad value raises ConfigError naming its key.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path

from hpcsr.config import ConfigError, build
from preprocessing import comephore
from preprocessing.ingest import IngestConfig
from preprocessing.layout import Encoding, StoreLayout, compression_kwargs
from preprocessing.quality import DEFAULT_CAP_MM_PER_HOUR
from preprocessing.shards import ShardConfig
from preprocessing.splits import SplitSpec
from preprocessing.synth import SynthConfig

# where the raw data comes from; 'store': an HR store made before, so only the shards are built
SOURCES = ("synthetic", "comephore", "netcdf", "store")
RAW_DIR = "raw"  # the synthetic archives' default folder under the output folder


@dataclass(frozen=True)
class SyntheticConfig:
    """The synthetic source: Comephore-format monthly archives made by preprocessing.synth."""

    out: typing.Optional[str] = None  # folder of the archives (None: <output folder>/raw, <data_dir>/raw in a launch)
    start: str = SynthConfig.start  # first day (UTC)
    days: int = SynthConfig.days  # days of hourly rasters
    size: int = SynthConfig.size  # grid side in 1 km pixels, up to 1536
    seed: int = SynthConfig.seed  # random seed
    coverage: float = SynthConfig.coverage  # fraction of the grid with data
    missing_hours: int = SynthConfig.missing_hours  # hours left out, as gaps

    def synth_config(self) -> SynthConfig:
        return SynthConfig(
            start=self.start,
            days=self.days,
            size=self.size,
            seed=self.seed,
            coverage=self.coverage,
            missing_hours=self.missing_hours,
        )


@dataclass(frozen=True)
class PreprocessConfig:
    """One preprocessing run: source, ingest settings, shard settings and the storage layout."""

    source: str = "synthetic"  # one of SOURCES
    inputs: tuple[
        str, ...
    ] = ()  # comephore: archives or folders; netcdf: files; store: the HR store (default <out>/hr.h5)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)  # source=synthetic: what to generate
    cadence: int = IngestConfig.cadence_minutes  # HR step in minutes; finer netCDF steps are summed
    source_interval: typing.Optional[int] = None  # netCDF accumulation minutes if the files lack interval_minutes
    aggregate_pixels: int = IngestConfig.aggregate_pixels  # netCDF: k x k source pixels -> one (mean)
    cap: float = DEFAULT_CAP_MM_PER_HOUR  # plausibility cap in mm/h; higher rates are masked
    dequantise: float = 0.0  # netCDF: the source's rounding step in mm per source step, smoothed away (0: off)
    on_bad_input: str = IngestConfig.on_bad_input  # unreadable frame: skip (a gap, with a warning) or fail
    encoding: typing.Optional[str] = None  # 'uint16/<units per mm>' or 'float32' (None: by source)
    unit_frames: int = IngestConfig.unit_frames  # frames per unit of ingest work
    chunk: int = StoreLayout.chunk  # spatial chunk side in pixels
    compression: str = StoreLayout.compression  # HDF5 compression of the store and the shards
    min_valid: float = ShardConfig.min_valid  # minimum valid fraction of a block for its LR value
    phase_minutes: int = ShardConfig.phase_minutes  # time blocks start at 00 UTC + this
    split_fractions: tuple[float, ...] = SplitSpec.fractions  # train, val, test shares of the time span
    split_bounds: typing.Optional[tuple[str, str]] = (
        None  # end of train, end of val as ISO times (instead of fractions)
    )
    wet_threshold: float = ShardConfig.wet_threshold  # mm per step below which a value is dry
    window_frames: int = ShardConfig.window_frames  # HR steps read at once per rank

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ConfigError(f"preprocess.source={self.source!r} is not allowed: choose one of {', '.join(SOURCES)}")
        if self.source in ("comephore", "netcdf") and not self.inputs:
            raise ConfigError(
                f"preprocess.source={self.source} needs its files: preprocess.inputs=[PATH, ...] "
                f"({'H_COMEPHORE_YYYYMM.tar archives or folders' if self.source == 'comephore' else 'CF netCDF files'})"
            )
        if self.source == "synthetic" and self.inputs:
            raise ConfigError(
                f"preprocess.inputs={list(self.inputs)} with preprocess.source=synthetic: the archives are "
                "generated (into preprocess.synthetic.out); set preprocess.source=comephore or netcdf to read files"
            )
        if self.source == "store" and len(self.inputs) > 1:
            raise ConfigError(f"preprocess.inputs={list(self.inputs)} with preprocess.source=store: give one HR store")
        try:
            self.synthetic.synth_config()
        except ValueError as err:
            raise ConfigError(f"preprocess.synthetic.{err}") from None
        if self.cadence < 1 or (self.source == "comephore" and self.cadence != 60):
            raise ConfigError(f"preprocess.cadence={self.cadence}: minutes >= 1, and 60 for Comephore (hourly)")
        if self.aggregate_pixels < 1 or (self.source != "netcdf" and self.aggregate_pixels != 1):
            raise ConfigError(
                f"preprocess.aggregate_pixels={self.aggregate_pixels}: >= 1, and 1 unless preprocess.source=netcdf "
                "(Comephore's 1 km grid is stored as it is)"
            )
        if self.source_interval is not None and self.source_interval < 1:
            raise ConfigError(f"preprocess.source_interval={self.source_interval} must be >= 1 minute (or null)")
        if not self.cap > 0:
            raise ConfigError(f"preprocess.cap={self.cap} must be > 0 mm/h")
        if not self.dequantise >= 0 or (self.dequantise and self.source != "netcdf"):
            raise ConfigError(
                f"preprocess.dequantise={self.dequantise}: >= 0 mm, and 0 unless preprocess.source=netcdf"
            )
        if self.on_bad_input not in ("skip", "fail"):
            raise ConfigError(f"preprocess.on_bad_input={self.on_bad_input!r} is not allowed: choose skip or fail")
        if self.encoding is not None:
            try:
                encoding = Encoding.parse(self.encoding)
            except ValueError as err:
                raise ConfigError(f"preprocess.{err}") from None
            if self.source in ("synthetic", "comephore") and encoding != Encoding("uint16", comephore.UNITS_PER_MM):
                raise ConfigError(
                    f"preprocess.encoding={self.encoding!r}: Comephore's tenths of mm are stored as uint16/10 "
                    "(lossless); leave it null"
                )
        if self.unit_frames < 1:
            raise ConfigError(f"preprocess.unit_frames={self.unit_frames} must be >= 1")
        if not 8 <= self.chunk <= 4096:
            raise ConfigError(f"preprocess.chunk={self.chunk} must be in 8..4096 pixels")
        try:
            compression_kwargs(self.compression)
        except ValueError as err:
            raise ConfigError(f"preprocess.{err}") from None
        if not 0.0 < self.min_valid <= 1.0:
            raise ConfigError(f"preprocess.min_valid={self.min_valid} must be in (0, 1]")
        try:
            self.splits
        except ValueError as err:
            key = "split_bounds" if self.split_bounds is not None else "split_fractions"
            raise ConfigError(f"preprocess.{key}: {err}") from None
        if self.wet_threshold < 0:
            raise ConfigError(f"preprocess.wet_threshold={self.wet_threshold} must be >= 0 mm")
        if self.window_frames < 6:
            raise ConfigError(f"preprocess.window_frames={self.window_frames} must be >= 6")

    @property
    def layout(self) -> StoreLayout:
        return StoreLayout(self.chunk, self.compression)

    @property
    def splits(self) -> SplitSpec:
        if self.split_bounds is not None:
            return SplitSpec(bounds=self.split_bounds)
        return SplitSpec(fractions=self.split_fractions)

    def synthetic_dir(self, out) -> Path:
        """Where the synthetic archives go: synthetic.out, else <out>/raw."""
        return Path(self.synthetic.out) if self.synthetic.out else Path(out) / RAW_DIR

    def ingest_config(self, inputs: tuple[str, ...]) -> IngestConfig:
        """The ingest step's settings for these inputs (Comephore for source synthetic or comephore)."""
        netcdf = self.source == "netcdf"
        return IngestConfig(
            comephore=() if netcdf else tuple(inputs),
            netcdf=tuple(inputs) if netcdf else (),
            cadence_minutes=self.cadence,
            source_interval=self.source_interval,
            aggregate_pixels=self.aggregate_pixels,
            cap_mm_per_hour=self.cap,
            dequantise_mm=self.dequantise,
            on_bad_input=self.on_bad_input,
            encoding=self.encoding,
            layout=self.layout,
            unit_frames=self.unit_frames,
        )

    def shard_config(self, pairs) -> ShardConfig:
        """The shard step's settings for these factor pairs."""
        return ShardConfig(
            pairs=tuple(pairs),
            min_valid=self.min_valid,
            phase_minutes=self.phase_minutes,
            splits=self.splits,
            wet_threshold=self.wet_threshold,
            layout=self.layout,
            window_frames=self.window_frames,
        )


def from_mapping(data) -> PreprocessConfig:
    """The `preprocess` section of a composed configuration (a plain mapping), checked."""
    return build(PreprocessConfig, data, "preprocess")
