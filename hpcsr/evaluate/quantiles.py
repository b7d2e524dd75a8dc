"""Exact upper quantiles of a stream of values while keeping only the largest few.

High quantiles (0.99 .. 0.9999) of a full-domain ensemble need the whole distribution in
principle, but only the values above the lowest requested level matter. `UpperTail` keeps the
largest ceil((1 - lowest_level) * capacity) + 2 values seen, which is enough for numpy's default
('linear') quantile of every level >= lowest_level, for any count up to `capacity`.
"""

from __future__ import annotations

import math

import numpy as np


class UpperTail:
    """Streaming exact quantiles at levels >= `lowest_level` of at most `capacity` values."""

    def __init__(self, capacity: int, lowest_level: float):
        if not 0.0 <= lowest_level < 1.0:
            raise ValueError(f"lowest quantile level {lowest_level} must be in [0, 1)")
        self.lowest_level = lowest_level
        self.capacity = int(capacity)
        self.keep = min(self.capacity, math.ceil((1.0 - lowest_level) * self.capacity) + 2)
        self.count = 0
        self.top = np.empty(0, dtype=np.float32)

    def add(self, values: np.ndarray) -> None:
        """Add finite values (any shape)."""
        values = np.asarray(values, dtype=np.float32).ravel()
        self.count += values.size
        if self.count > self.capacity:
            raise ValueError(f"{self.count} values added to an UpperTail sized for {self.capacity}: raise capacity")
        merged = np.concatenate([self.top, values])
        if merged.size > self.keep:
            merged = np.partition(merged, merged.size - self.keep)[-self.keep :]
        self.top = merged

    def quantile(self, level: float) -> float:
        """Quantile at `level` (numpy 'linear' definition); NaN when no value was added."""
        if level < self.lowest_level:
            raise ValueError(f"level {level} is below the lowest level kept ({self.lowest_level})")
        n = self.count
        if n == 0:
            return float("nan")
        top = np.sort(self.top).astype(np.float64)
        position = (n - 1) * level
        below = math.floor(position)
        offset = n - top.size  # index in the full sorted stream of top[0]
        lo = top[below - offset]
        hi = top[min(below + 1, n - 1) - offset]
        return float(lo + (position - below) * (hi - lo))
