"""Pixel sizes in metres from a grid's coordinate units, and the level the networks are told.

Exports record their training grid's HR pixel in its coordinate units (`Shard.data_grid`); inputs
carry theirs (CF `units` of x / y). Both are compared in metres when the units are lengths
(hpcsr.sampling.checks), and with model.pixel_input the networks are told the HR pixel size as
log2 of its side in km (1 km: 0, 500 m: -1, 2 km: 1; hpcsr.models.embeddings.PixelEmbedding).
"""

from __future__ import annotations

import math

METRES = {
    "m": 1.0,
    "metre": 1.0,
    "metres": 1.0,
    "meter": 1.0,
    "meters": 1.0,
    "km": 1000.0,
    "kilometre": 1000.0,
    "kilometres": 1000.0,
    "kilometer": 1000.0,
    "kilometers": 1000.0,
}


def in_metres(size: float, units: str | None) -> float | None:
    """`size` in metres, or None when `units` is not a length (degrees) or absent."""
    factor = METRES.get(str(units).strip().lower()) if units else None
    return None if factor is None else size * factor


def grid_level(grid: dict, where: str) -> float:
    """`pixel_level` of a training grid as shards and exports record it (`Shard.data_grid`)."""
    return pixel_level(grid["hr_pixel"], grid["units"], where)


def pixel_level(sizes, units: str | None, where: str) -> float:
    """log2 of the pixel side in km from its (x, y) sizes in `units`: the mean of both axes' levels.
    Refused (ValueError naming `where`) when the units are not lengths or a size is not positive."""
    levels = []
    for size in sizes:
        metres = in_metres(float(size), units)
        if metres is None or not metres > 0 or not math.isfinite(metres):
            raise ValueError(
                f"{where}: pixel size {size} {units!r} is not a length in metres or km, and model.pixel_input "
                "tells the networks the pixel size in km: use a grid in projected coordinates (m or km)"
            )
        levels.append(math.log2(metres / 1000.0))
    return sum(levels) / len(levels)
