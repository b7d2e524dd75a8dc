"""Train/val/test splits by time range, the same for every factor pair of a dataset.

By default the span from the start of the first HR step to the end of the last is cut by fractions
(0.8, 0.1, 0.1), each boundary rounded to the nearest 00 UTC for spans of 10 days or more, else to
the nearest multiple of 6 h (so blocks with t in 1, 2, 3, 6 never straddle it). Explicit boundaries
can be given instead. A block lies in a split only if it lies entirely inside it; blocks crossing a
boundary belong to none (code -1), so no HR hour is shared between splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpcsr.data.store import NO_SPLIT, SPLIT_CODES

DAY_S = 86400
SIX_HOURS_S = 6 * 3600


@dataclass(frozen=True)
class SplitSpec:
    """How to cut the time span into train, val and test."""

    fractions: tuple = (0.8, 0.1, 0.1)  # shares of the time span (train, val, test), summing to 1
    bounds: tuple | None = None  # or two ISO times (train < b1 <= val < b2 <= test), e.g. ('2020-10-01', '2020-11-15')

    def __post_init__(self):
        if self.bounds is not None:
            if len(self.bounds) != 2:
                raise ValueError(f"split bounds {self.bounds} must be two times: end of train, end of val")
            b1, b2 = (_seconds(b) for b in self.bounds)
            if not b1 < b2:
                raise ValueError(f"split bounds {self.bounds} must increase")
            return
        if len(self.fractions) != 3 or any(f < 0 for f in self.fractions) or abs(sum(self.fractions) - 1) > 1e-9:
            raise ValueError(f"split fractions {self.fractions} must be three non-negative shares summing to 1")

    def ranges(self, first_start_s: int, last_end_s: int) -> dict[str, tuple[int, int]]:
        """{name: (start, end)} in seconds covering [first_start_s, last_end_s]."""
        if self.bounds is not None:
            b1, b2 = (_seconds(b) for b in self.bounds)
        else:
            span = last_end_s - first_start_s
            unit = DAY_S if span >= 10 * DAY_S else SIX_HOURS_S
            f_train, f_val, _ = self.fractions

            def rounded(x: float) -> int:
                return int(round(x / unit)) * unit

            b1 = min(max(rounded(first_start_s + f_train * span), first_start_s), last_end_s)
            b2 = min(max(rounded(first_start_s + (f_train + f_val) * span), b1), last_end_s)
        lo, hi = min(first_start_s, b1), max(last_end_s, b2)
        return {"train": (lo, b1), "val": (b1, b2), "test": (b2, hi)}


def _seconds(text) -> int:
    try:
        return int(np.datetime64(str(text), "s").astype(np.int64))
    except ValueError as exc:
        raise ValueError(f"split bound {text!r} is not an ISO time like 2020-10-01 or 2020-10-01T06:00") from exc


def split_codes(block_start_s: np.ndarray, block_end_s: np.ndarray, ranges: dict) -> np.ndarray:
    """int8 split code per block (0 train, 1 val, 2 test, -1 crossing a boundary)."""
    codes = np.full(len(block_start_s), NO_SPLIT, np.int8)
    for name, (a, b) in ranges.items():
        codes[(block_start_s >= a) & (block_end_s <= b)] = SPLIT_CODES[name]
    return codes
