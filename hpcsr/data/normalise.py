"""Normalisation of precipitation (mm per HR step) to the units the networks see, and back.

One transform serves LR and HR alike: an LR value is the mean of HR values (mm per HR step), so
both live on the same scale and the HR statistics of the train split apply to both.

- 'log1p': z = (log1p(mm / u) - m) / sd, with m, sd the mean and standard deviation of
  log1p(HR mm / u) over the train split. Compresses the heavy tail above u mm per HR step and is
  linear below it. u = 1 (the default) takes m, sd from the shard stats `hr_log1p_mean`,
  `hr_log1p_std`; another u from the train split's HR histogram (`Shard.hr_histogram`: exact for
  uint16 stores, bin centres 0.1 % apart for float ones). u sets where residual noise is relative
  (above u) or absolute (below): log1p of 10-min amounts, mostly below 1 mm, is nearly linear.
- 'scale': z = mm / sd, with sd the standard deviation of HR mm (`hr_std`); no shift, so zero
  rain stays exactly zero.

NaN (missing) stays NaN both ways. `inverse` can return slightly negative mm for z below the
transform of 0; the sampler applies relu in physical units.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from hpcsr.data.store import decode

KINDS = ("log1p", "scale")
TORCH_MIN_SIZE = 4096  # numpy arrays at least this large are normalised by torch kernels
# stats keys each kind reads: (shift key or None, scale key)
_KEYS = {"log1p": ("hr_log1p_mean", "hr_log1p_std"), "scale": (None, "hr_std")}


@dataclass(frozen=True)
class Normaliser:
    """z = (g(mm) - shift) / scale with g = log1p(mm / unit) ('log1p') or identity ('scale')."""

    kind: str
    shift: float
    scale: float
    unit: float = 1.0  # 'log1p': mm per HR step where the log bends (1: the plain log1p)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"normalisation kind {self.kind!r} unknown: use one of {', '.join(KINDS)}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(
                f"normalisation scale={self.scale} must be a positive finite number: the train split "
                "statistics are degenerate (all values equal?); check the shard's stats"
            )
        if not math.isfinite(self.shift):
            raise ValueError(f"normalisation shift={self.shift} must be finite")
        if not (math.isfinite(self.unit) and self.unit > 0) or (self.kind == "scale" and self.unit != 1.0):
            raise ValueError(f"normalisation unit={self.unit} must be a positive number (and 1 for 'scale')")

    @classmethod
    def from_stats(cls, stats: dict, kind: str = "log1p", unit: float = 1.0, histogram=None) -> "Normaliser":
        """From a shard's train-split statistics (`Shard.stats`); a log1p `unit` other than 1 takes
        its moments from the HR histogram (`Shard.hr_histogram()`: mm values, counts)."""
        if kind not in KINDS:
            raise ValueError(f"normalisation kind {kind!r} unknown: use one of {', '.join(KINDS)}")
        if kind == "log1p" and unit != 1.0:
            if histogram is None:
                raise KeyError(
                    f"normalisation log1p with unit {unit} needs the HR histogram, which this shard does not "
                    "store (written before it was added): rebuild the shard with `hpcsr-preprocess shards`"
                )
            values, counts = (np.asarray(a, np.float64) for a in histogram)
            g = np.log1p(values / unit)
            mean = float(np.dot(counts, g) / counts.sum())
            std = math.sqrt(max(float(np.dot(counts, (g - mean) ** 2) / counts.sum()), 0.0))
            return cls(kind, mean, std, float(unit))
        shift_key, scale_key = _KEYS[kind]
        missing = [k for k in (shift_key, scale_key) if k is not None and k not in stats]
        if missing:
            raise KeyError(
                f"normalisation {kind!r} needs stats {missing} that the shard does not have "
                f"(it has {sorted(stats)}): rebuild the shard with `hpcsr-preprocess`"
            )
        return cls(kind, float(stats[shift_key]) if shift_key else 0.0, float(stats[scale_key]))

    @classmethod
    def from_dict(cls, data: dict) -> "Normaliser":
        return cls(str(data["kind"]), float(data["shift"]), float(data["scale"]), float(data.get("unit", 1.0)))

    def to_dict(self) -> dict:
        return asdict(self)

    def forward(self, mm):
        """mm (torch tensor or numpy array) -> normalised z, same type. Large arrays go through
        torch's vectorised log1p without a copy (~6x numpy's on float32); small ones stay in numpy,
        whose per-call cost is lower (benchmarks/loader.py)."""
        if isinstance(mm, np.ndarray):
            if mm.size >= TORCH_MIN_SIZE:
                return self.forward(torch.from_numpy(np.ascontiguousarray(mm))).numpy()
            g = np.log1p(mm if self.unit == 1.0 else mm / self.unit) if self.kind == "log1p" else mm
            return ((g - self.shift) / self.scale).astype(mm.dtype, copy=False)
        g = torch.log1p(mm if self.unit == 1.0 else mm / self.unit) if self.kind == "log1p" else mm
        return (g - self.shift) / self.scale

    def code_table(self, units_per_mm: int, fill_value: int) -> np.ndarray:
        """(65536,) float32 z of every uint16 code of an HR store (code / units_per_mm mm; NaN at
        fill_value): `table[codes]` decodes and normalises a patch in one gather, with the values
        `forward(decode(codes))` gives."""
        if units_per_mm < 1:
            raise ValueError(
                f"units_per_mm={units_per_mm}: a code table needs a uint16 store (float32 stores: forward)"
            )
        return self.forward(decode(np.arange(1 << 16, dtype=np.uint16), units_per_mm, fill_value))

    def inverse(self, z):
        """Normalised z -> mm (torch tensor or numpy array), differentiable for torch."""
        g = z * self.scale + self.shift
        if self.kind == "scale":
            return g
        mm = np.expm1(g) if isinstance(z, np.ndarray) else torch.expm1(g)
        return mm if self.unit == 1.0 else mm * self.unit
