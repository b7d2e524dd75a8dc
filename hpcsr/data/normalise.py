"""Normalisation of precipitation (mm per HR step) to the units the networks see, and back.

One transform serves LR and HR alike: an LR value is the mean of HR values (mm per HR step), so
both live on the same scale and the HR statistics of the train split apply to both.

- 'log1p': z = (log1p(mm) - m) / sd, with m, sd the mean and standard deviation of log1p(HR mm)
  over the train split (shard stats `hr_log1p_mean`, `hr_log1p_std`). Compresses the heavy tail.
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
    """z = (g(mm) - shift) / scale with g = log1p ('log1p') or identity ('scale')."""

    kind: str
    shift: float
    scale: float

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

    @classmethod
    def from_stats(cls, stats: dict, kind: str = "log1p") -> "Normaliser":
        """From a shard's train-split statistics (`Shard.stats`)."""
        if kind not in KINDS:
            raise ValueError(f"normalisation kind {kind!r} unknown: use one of {', '.join(KINDS)}")
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
        return cls(str(data["kind"]), float(data["shift"]), float(data["scale"]))

    def to_dict(self) -> dict:
        return asdict(self)

    def forward(self, mm):
        """mm (torch tensor or numpy array) -> normalised z, same type. Large arrays go through
        torch's vectorised log1p without a copy (~6x numpy's on float32); small ones stay in numpy,
        whose per-call cost is lower (benchmarks/loader.py)."""
        if isinstance(mm, np.ndarray):
            if mm.size >= TORCH_MIN_SIZE:
                return self.forward(torch.from_numpy(np.ascontiguousarray(mm))).numpy()
            g = np.log1p(mm) if self.kind == "log1p" else mm
            return ((g - self.shift) / self.scale).astype(mm.dtype, copy=False)
        g = torch.log1p(mm) if self.kind == "log1p" else mm
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
        return np.expm1(g) if isinstance(z, np.ndarray) else torch.expm1(g)
