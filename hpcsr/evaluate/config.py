"""Schema of the `evaluate` config section: what `hpcsr.evaluate.run.run_evaluation` reads, how it
scores, and where it writes. `python -m hpcsr.evaluate` (`hpcsr evaluate`) translates its flags
into this config (each flag --a-b is the key a_b); the launcher's evaluate stage takes the section
from the Hydra tree and sets the input and output keys itself (INPUT_KEYS).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

from hpcsr.evaluate.baselines import NAMES as BASELINES
from hpcsr.evaluate.evaluation import DEFAULT_QUANTILES, DEFAULT_SCALES, DEFAULT_THRESHOLDS
from hpcsr.evaluate.inputs import MEAN_VARIABLE

# the keys that name the files scored and the folder written (the launcher sets them per pair)
INPUT_KEYS = ("truth", "ensemble", "lr", "mean", "out", "pairs")
WINDOWS = ("hann", "none")


@dataclass
class EvaluateConfig:
    """One evaluation: inputs, scores and the report folder (or a grid report from `pairs` alone)."""

    truth: typing.Optional[str] = None  # HR truth netCDF, precip(time, y, x) in mm per HR step
    ensemble: typing.Optional[str] = None  # HR ensemble netCDF, precip with dims member, time, y, x (any order)
    lr: typing.Optional[str] = None  # LR input netCDF, one step per block (None: the coarsened truth)
    mean: typing.Optional[str] = None  # mean-network prediction netCDF (None: precip_mean in the ensemble file)
    out: typing.Optional[str] = None  # output folder (replaced whole)
    pairs: tuple[str, ...] = ()  # metrics.json of other factor pairs for the grid figure
    s: typing.Optional[int] = None  # spatial factor (None: the ensemble's factor_pair attribute or the LR grid)
    t: typing.Optional[int] = None  # temporal factor (None: as s)
    variable: str = "precip"  # precipitation variable name in every file
    mean_variable: str = MEAN_VARIABLE  # variable name of the mean prediction
    baselines: tuple[str, ...] = ("nearest", "bicubic")  # among nearest, bicubic, motion (along the motion), mean
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS  # FSS thresholds, mm per HR step
    scales: tuple[int, ...] = DEFAULT_SCALES  # FSS neighbourhood sizes, odd HR pixels
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES  # quantile levels for errors
    tile_cells: typing.Optional[int] = None  # tile side in LR cells for the tile mass error (None: from the file)
    wet_mm: typing.Optional[float] = None  # wet threshold, mm per HR step (None: 0.1 mm/h over the HR step)
    time_chunk: typing.Optional[int] = None  # HR steps read per chunk (None: about 8M ensemble values)
    seed: int = 0  # seed of the rank-histogram tie breaking
    window: str = "hann"  # taper before the power spectrum: hann or none
    progress: bool = True  # progress bar

    def __post_init__(self):
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"baseline {unknown[0]!r} unknown: use some of {', '.join(BASELINES)}")
        if self.window not in WINDOWS:
            raise ValueError(f"window={self.window!r} unknown: use one of {', '.join(WINDOWS)}")
