"""Storage choices shared by the HR store and the shards: value encoding, chunking, compression.

The defaults were chosen by measurement (one core, 24 synthetic 1536 x 1536 Comephore hours,
uint16 tenths; random (3, 100, 100) patch reads as the training loader does them):

    chunk        compression    ratio  write MB/s  full-frame read MB/s  patches/s
    (1,128,128)  none             1.0      585          1755               4425
    (1,128,128)  gzip:1          32.7      383           556               1902
    (1,128,128)  lzf             21.1      279           336               1067
    (1,128,128)  blosc-zstd:1    38.6      520-760      1100-1360          4000-4140
    (1,128,128)  blosc-lz4:5     21.3      760-780      1580-2100          4640-5130
    (1,64,64)    blosc-lz4:5     17.3      262           594               2609

so blosc (byte shuffle) with lz4 on (1, 128, 128) chunks: the fastest to write and to read, about
21x smaller than raw; blosc-zstd:1 is 1.8x smaller again for ~20 % fewer patches/s. Time chunks
are one frame so that parts written by different ranks merge by copying compressed chunks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import hdf5plugin
import numpy as np

import hpcsr.data.store  # noqa: F401  (registers hdf5plugin's blosc filter, see there)

COMPRESSIONS = "none, lzf, gzip:<1-9>, blosc-lz4:<0-9>, blosc-zstd:<0-9>"


def compression_kwargs(name: str) -> dict:
    """h5py create_dataset keywords for a compression name (see COMPRESSIONS)."""
    if name == "none":
        return {}
    if name == "lzf":
        return {"compression": "lzf", "shuffle": True}
    m = re.fullmatch(r"gzip:([1-9])", name)
    if m:
        return {"compression": "gzip", "compression_opts": int(m.group(1)), "shuffle": True}
    m = re.fullmatch(r"blosc-(lz4|zstd):([0-9])", name)
    if m:
        return dict(hdf5plugin.Blosc(cname=m.group(1), clevel=int(m.group(2)), shuffle=hdf5plugin.Blosc.SHUFFLE))
    raise ValueError(f"compression {name!r} unknown: use one of {COMPRESSIONS}")


@dataclass(frozen=True)
class StoreLayout:
    """Chunking and compression of the (time, y, x) datasets. Time chunks are one frame, so parts
    written by different ranks are merged by copying compressed chunks unchanged."""

    chunk: int = 128  # spatial chunk side (pixels)
    compression: str = "blosc-lz4:5"  # one of COMPRESSIONS

    def __post_init__(self):
        if not 8 <= self.chunk <= 4096:
            raise ValueError(f"chunk={self.chunk} must be in 8..4096 pixels")
        compression_kwargs(self.compression)

    def create(self, group, name: str, shape: tuple, dtype, fill):
        """Create a (T, Y, X) dataset of this layout in `group` (T may be 0 for a growing dataset)."""
        _, ny, nx = shape
        return group.create_dataset(
            name,
            shape=shape,
            dtype=dtype,
            chunks=(1, min(self.chunk, ny), min(self.chunk, nx)),
            fillvalue=fill,
            maxshape=(None, ny, nx),
            **compression_kwargs(self.compression),
        )


@dataclass(frozen=True)
class Encoding:
    """How HR mm are stored: 'uint16' integers of 1/units_per_mm mm with 65535 missing, or 'float32'
    mm with NaN missing. Decoding is `hpcsr.data.store.decode`."""

    dtype: str
    units_per_mm: int = 0

    def __post_init__(self):
        if self.dtype == "uint16" and self.units_per_mm < 1:
            raise ValueError("uint16 encoding needs units_per_mm >= 1 (10: tenths of mm)")
        if self.dtype not in ("uint16", "float32"):
            raise ValueError(f"encoding {self.dtype!r} unknown: use 'uint16' or 'float32'")

    @property
    def fill(self):
        return np.uint16(65535) if self.dtype == "uint16" else np.float32(np.nan)

    @classmethod
    def parse(cls, text: str) -> "Encoding":
        """'float32' or 'uint16/<units per mm>' (e.g. 'uint16/100' for hundredths of mm)."""
        m = re.fullmatch(r"uint16/(\d+)", text)
        if m:
            return cls("uint16", int(m.group(1)))
        if text == "float32":
            return cls("float32")
        raise ValueError(f"encoding {text!r} unknown: use 'float32' or 'uint16/<units per mm>' (e.g. uint16/100)")

    def encode_mm(self, mm: np.ndarray, label: str) -> np.ndarray:
        """float32 mm (NaN missing) -> stored values; a uint16 encoding that would lose information
        raises, naming the frame and the value."""
        if self.dtype == "float32":
            return mm.astype(np.float32, copy=False)
        scaled = mm * np.float32(self.units_per_mm)
        codes = np.rint(np.nan_to_num(scaled, nan=0.0))
        finite = ~np.isnan(mm)
        if codes.max(initial=0) >= 65535:
            raise ValueError(
                f"{label}: {np.nanmax(mm)} mm does not fit uint16/{self.units_per_mm}: use --encoding float32"
            )
        back = codes.astype(np.float32) / np.float32(self.units_per_mm)
        bad = finite & (back != mm)
        if bad.any():
            value = mm[bad][0]
            raise ValueError(
                f"{label}: value {value!r} mm is not a multiple of 1/{self.units_per_mm} mm, "
                "so uint16 storage would change it: use --encoding float32 (lossless)"
            )
        out = codes.astype(np.uint16)
        out[~finite] = 65535
        return out
