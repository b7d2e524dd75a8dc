"""Refusals before sampling: an input on another grid or cadence than the training data's, and an
input with no value at all. Both are checked before the model runs, so a mistake costs seconds.

The export records its training data's grid (`data_grid` in its metadata: HR step, HR pixel size
and the coordinate units, `Shard.data_grid` of the shard it was trained on). An LR input whose HR step or HR pixel
differs (LR cell side / s, more than 1 % apart) was made for another factor pair or from another
product: the model would run, but on scales it never learned. `allow_other_grid` samples anyway
(logged), for deliberate transfers such as the skill experiment's 500 m training radar applied to
a 1 km one.
"""

from __future__ import annotations

import logging

import numpy as np

from hpcsr.pixel_size import in_metres, pixel_level

log = logging.getLogger(__name__)

RTOL = 0.01


def _pixel(centres: np.ndarray) -> float | None:
    steps = np.abs(np.diff(np.asarray(centres, np.float64)))
    return float(np.median(steps)) if steps.size else None


def input_pixel_level(seq) -> float:
    """The input's HR pixel size as the networks are told it (model.pixel_input): log2 of km."""
    sizes = [_pixel(centres) for centres in (seq.x_hr, seq.y_hr)]
    where = f"input {seq.source.get('path', '?')}"
    if any(size is None for size in sizes):
        raise ValueError(f"{where}: one HR pixel along x or y gives no pixel size to tell the networks")
    return pixel_level(sizes, seq.x_attrs.get("units"), where)


def grid_mismatches(grid: dict, seq) -> list[str]:
    """What differs between the training grid `grid` and the input `seq` (LRSequence), in words."""
    found = []
    step_min = seq.hr_step_s / 60
    if abs(step_min - grid["interval_minutes"]) > 1e-9:
        found.append(f"HR step {step_min:g} min in the input, {grid['interval_minutes']} min in the training data")
    units = seq.x_attrs.get("units")
    for axis, centres, trained in (("x", seq.x_hr, grid["hr_pixel"][0]), ("y", seq.y_hr, grid["hr_pixel"][1])):
        here = _pixel(centres)
        if here is None:
            continue
        a, b = in_metres(here, units), in_metres(trained, grid["units"])
        if a is None or b is None:  # not lengths (degrees) or absent: compare as given unless both differ
            if units and str(units) != str(grid["units"]):
                continue
            a, b = here, trained
        if abs(a - b) > RTOL * b:
            found.append(
                f"HR pixel {here:g} {units} along {axis} in the input (LR cell / s), "
                f"{trained:g} {grid['units']} in the training data"
            )
    return found


def check_grid(export, seq, allow_other_grid: bool = False) -> None:
    """Refuse (ValueError naming both) an input whose HR step or pixel differs from the export's
    training data; with allow_other_grid, log the difference and go on."""
    grid = export.metadata.get("data_grid")
    if grid is None:
        log.warning(
            "export %s does not record its training grid (written before it did): the input's grid and "
            "step are not checked against it",
            export.path,
        )
        return
    found = grid_mismatches(grid, seq)
    if not found:
        return
    what = "; ".join(found)
    if allow_other_grid:
        log.warning(
            "input %s differs from the training data of %s (%s): sampling anyway (--allow-other-grid)",
            seq.source.get("path", "?"),
            export.path,
            what,
        )
        return
    raise ValueError(
        f"input {seq.source.get('path', '?')} does not match the training data of export {export.path}: "
        f"{what}. An input made for another factor pair or from another product would be sampled on "
        f"scales the model never learned: give an input on the training grid, or pass "
        f"--allow-other-grid to sample anyway"
    )


def check_has_data(seq, targets: np.ndarray) -> None:
    """Refuse an input whose LR blocks for `targets` are all missing, before any model runs. Reads
    block by block and stops at the first finite value (cheap when the input has data)."""
    wanted = np.flatnonzero(np.isin(seq.times, targets))
    for start in range(0, len(wanted), 64):
        if np.isfinite(seq.read(wanted[start : start + 64])).any():
            return
    raise ValueError(
        f"input {seq.source.get('path', '?')} has no value in the {len(targets)} LR block(s) to sample "
        "(all missing): check the file, its fill value or --time-range"
    )
