"""Value checks on source frames: missing, negative and implausible values are masked and counted.

A value is implausible when its rate over the step exceeds `cap_mm_per_hour` (amount > cap * step
minutes / 60): radar clutter such as the ~2000 mm per 15 min spikes of the OPERA composite in
`../shared/data/opera_france_20180824.nc`. World-record one-hour totals are about 300 mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_CAP_MM_PER_HOUR = 300.0


@dataclass
class FrameQC:
    """Counts for one frame (after any aggregation, summed over sub-steps)."""

    missing_source: int = 0  # values missing in the source (NaN or fill code)
    negative: int = 0  # negative values, masked
    over_cap: int = 0  # values above the plausibility cap, masked

    def __iadd__(self, other: "FrameQC") -> "FrameQC":
        self.missing_source += other.missing_source
        self.negative += other.negative
        self.over_cap += other.over_cap
        return self


def cap_amount(cap_mm_per_hour: float, interval_minutes: float) -> float:
    """Largest plausible amount (mm) over one step of `interval_minutes`."""
    if not cap_mm_per_hour > 0:
        raise ValueError(f"cap_mm_per_hour={cap_mm_per_hour} must be > 0 (default {DEFAULT_CAP_MM_PER_HOUR})")
    return cap_mm_per_hour * interval_minutes / 60.0


def clean_coded(
    raw: np.ndarray, missing_code: int, units_per_mm: int, limit_mm: float
) -> tuple[np.ndarray, FrameQC, np.ndarray]:
    """Integer-coded frame (e.g. Comephore tenths): values above `limit_mm` become `missing_code`.
    Returns the frame (a cleaned copy only when something was masked), its counts and its mask of
    valid values (not missing after cleaning)."""
    valid = raw != missing_code
    n_missing = raw.size - int(np.count_nonzero(valid))
    big = raw > limit_mm * units_per_mm  # includes the missing code when it is above the limit
    n_over = int(np.count_nonzero(big)) - (n_missing if missing_code > limit_mm * units_per_mm else 0)
    if n_over:
        raw = raw.copy()
        raw[big] = missing_code
        valid &= ~big
    return raw, FrameQC(missing_source=n_missing, over_cap=n_over), valid


def clean_mm(mm: np.ndarray, limit_mm: float) -> tuple[np.ndarray, FrameQC]:
    """Float frame in mm: negative values and values above `limit_mm` become NaN (in place)."""
    missing = np.isnan(mm)
    with np.errstate(invalid="ignore"):
        negative = mm < 0
        over = mm > limit_mm
    qc = FrameQC(int(missing.sum()), int(negative.sum()), int(over.sum()))
    if qc.negative or qc.over_cap:
        mm[negative | over] = np.nan
    return mm, qc
