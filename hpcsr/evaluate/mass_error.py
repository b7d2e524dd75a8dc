"""Mass error of an HR forecast against its LR input, at cell scale and at tile scale.

The forecast is coarsened with `hpcsr.coarsen.coarsen`, the operator that made the LR data, so a
forecast that conserves mass exactly (e.g. the LR block-repeated back onto the HR grid, or the
truth in a perfect-model setting) has zero error by construction. Values are mm per HR step, as LR.

- cell scale: each s x s x t block against its LR value;
- tile scale: blocks of `tile_cells` x `tile_cells` LR cells (the whole frame when None) summed per
  LR step, i.e. the mass a tile-level ('image') conservation transform enforces.
Cells where the LR value or any of the block's HR values is missing are left out of both sides.

The scale an ensemble claims to conserve is in its attributes (`mass_scale`, `mass_region_cells`,
as `hpcsr sample` writes them); `claimed_scale` names the score that measures it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpcsr.coarsen import coarsen


@dataclass
class MassSums:
    """Running sums from which the mass-error scores are formed (mm per HR step, summed over cells)."""

    cell_abs: float = 0.0  # sum |coarsen(x) - lr| over valid cells (and members)
    cell_signed: float = 0.0  # sum (coarsen(x) - lr)
    tile_abs: float = 0.0  # sum over tiles of |sum over the tile's valid cells of (coarsen(x) - lr)|
    lr_total: float = 0.0  # sum of lr over the same cells (and members)
    cells: int = 0  # number of valid (cell, member) pairs

    def add(self, other: "MassSums") -> None:
        for name in ("cell_abs", "cell_signed", "tile_abs", "lr_total", "cells"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def scores(self) -> dict:
        """cell_mae (mm per HR step), cell_relative and tile_relative (|error| / LR mass), bias_relative."""
        nan = float("nan")
        rel = (lambda v: v / self.lr_total) if self.lr_total > 0 else (lambda v: nan)
        return {
            "cell_mae": self.cell_abs / self.cells if self.cells else nan,
            "cell_relative": rel(self.cell_abs),
            "tile_relative": rel(self.tile_abs),
            "bias_relative": rel(self.cell_signed),
            "cells": self.cells,
        }


def mass_error_sums(forecast: np.ndarray, lr: np.ndarray, s: int, t: int, tile_cells: int | None = None) -> MassSums:
    """Mass-error sums of `forecast` (members, T, Y, X) against `lr` (T/t, Y/s, X/s)."""
    forecast = np.asarray(forecast, dtype=np.float64)
    lr = np.asarray(lr, dtype=np.float64)
    if forecast.ndim != 4:
        raise ValueError(f"forecast must be (members, time, y, x), got shape {forecast.shape}")
    blocks = coarsen(forecast, s, t)  # float64 keeps a block-repeated field exact
    if blocks.shape[1:] != lr.shape:
        raise ValueError(f"forecast coarsens to {blocks.shape[1:]} but LR is {lr.shape}: check s={s}, t={t}")
    valid = np.isfinite(blocks) & np.isfinite(lr)
    diff = np.where(valid, blocks - lr, 0.0)
    ny, nx = lr.shape[-2:]
    ty, tx = (ny, nx) if tile_cells is None else (tile_cells, tile_cells)
    if ny % ty or nx % tx:
        raise ValueError(
            f"LR grid {ny} x {nx} is not divisible into tiles of {tile_cells} cells: pick a divisor or None"
        )
    tiles = diff.reshape(*diff.shape[:-2], ny // ty, ty, nx // tx, tx).sum(axis=(-3, -1))
    return MassSums(
        cell_abs=float(np.abs(diff).sum()),
        cell_signed=float(diff.sum()),
        tile_abs=float(np.abs(tiles).sum()),
        lr_total=float(np.where(valid, lr, 0.0).sum()),
        cells=int(valid.sum()),
    )


def claimed_scale(attrs: dict) -> dict | None:
    """What the ensemble's mass transform claims to conserve, from its attributes: {'scale' (words),
    'score' (the key of `MassSums.scores()` that measures it), 'tile_cells' (the tile side in LR cells
    that score needs, None: the whole frame)}; None when it claims nothing ('none' or no attribute)."""
    scale = attrs.get("mass_scale")
    if scale == "cell":
        return {"scale": "cell", "score": "cell_relative", "tile_cells": None}
    if scale == "frame":
        return {"scale": "frame", "score": "tile_relative", "tile_cells": None}
    if scale == "image":
        region = int(attrs.get("mass_region_cells", 0)) or None
        words = f"image: regions of {region} x {region} LR cells" if region else "image: domain total"
        return {"scale": words, "score": "tile_relative", "tile_cells": region}
    return None


def claimed_error(claim: dict | None, tile_cells: int | None, scores: dict) -> dict:
    """The relative mass error at the claimed scale, from `scores` (`MassSums.scores()` of an
    evaluation with tiles of `tile_cells`): {'scale', 'score', 'relative_error', 'note'}; the error
    is None when nothing is claimed or the evaluation's tiles are not the claimed ones."""
    if claim is None:
        return {
            "scale": "none",
            "score": None,
            "relative_error": None,
            "note": "the ensemble claims no mass conservation (mass_scale 'none' or absent)",
        }
    out = {"scale": claim["scale"], "score": claim["score"], "relative_error": scores[claim["score"]], "note": ""}
    if claim["score"] == "tile_relative" and claim["tile_cells"] != tile_cells:
        out["relative_error"] = None
        scored = f"tiles of {tile_cells} x {tile_cells} LR cells" if tile_cells else "the whole frame"
        fix = (
            f"--tile-cells {claim['tile_cells']} (it must divide the LR grid)"
            if claim["tile_cells"]
            else "no --tile-cells"
        )
        out["note"] = f"the mass error was scored over {scored}, the claim is {claim['scale']}: evaluate with {fix}"
    return out
