"""Temporal blocks of a factor pair and the cut of the time axis into windows of work.

A block of t HR steps starts where (start - epoch - phase) is a multiple of t steps (a fixed phase:
00 UTC by default, so t = 3 blocks cover 00-03, 03-06, ... UTC) and exists only when all its t steps
are present in the HR store, so no block spans a gap. `coarsen` then averages exactly those steps.
"""

from __future__ import annotations

import numpy as np


def block_starts(time_s: np.ndarray, step_s: int, t: int, phase_s: int = 0) -> np.ndarray:
    """Indices i into `time_s` (end times of HR steps, strictly increasing on the step grid) where an
    aligned block of t consecutive steps starts."""
    time_s = np.asarray(time_s, np.int64)
    n = len(time_s)
    if n < t:
        return np.zeros(0, np.int64)
    start = time_s - step_s
    aligned = (start - phase_s) % (t * step_s) == 0
    i = np.flatnonzero(aligned[: n - t + 1])
    complete = time_s[i + t - 1] - time_s[i] == (t - 1) * step_s
    return i[complete].astype(np.int64)


def window_cuts(n_steps: int, starts_by_t: dict[int, np.ndarray], target: int) -> list[tuple[int, int]]:
    """Split 0..n_steps into consecutive windows of about `target` steps such that no block (start
    index from `starts_by_t[t]`, length t) crosses a window boundary."""
    inside = np.zeros(n_steps + 1, bool)  # inside[c]: a block contains both c-1 and c
    for t, starts in starts_by_t.items():
        for j in range(1, t):
            inside[starts + j] = True
    cuts = np.flatnonzero(~inside)
    cuts = cuts[(cuts > 0) & (cuts < n_steps)]
    windows, pos = [], 0
    while pos < n_steps:
        ahead = cuts[(cuts > pos) & (cuts <= pos + target)]
        if ahead.size:
            end = int(ahead[-1])
        else:
            later = cuts[cuts > pos]
            end = int(later[0]) if later.size else n_steps
        windows.append((pos, end))
        pos = end
    return windows


def split_among(n_items: int, n_ranks: int, rank: int) -> tuple[int, int]:
    """Contiguous share [lo, hi) of n_items for `rank` (balanced to within one item)."""
    return n_items * rank // n_ranks, n_items * (rank + 1) // n_ranks
