"""An ensemble scored against the HR store it super-resolves (the launcher's evaluate stage and
`hpcsr demo`): the truth is cut from the HR store at the ensemble's times and cells and written as
CF netCDF (what run_evaluation's `truth` reads); the LR is the perfect-model coarsening of that
truth, which is exactly what the shards hold.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import xarray as xr

from hpcsr import cf
from hpcsr.atomic import AtomicPath
from hpcsr.data.store import HRStore
from hpcsr.evaluate.config import EvaluateConfig
from hpcsr.evaluate.run import EvaluationResult, run_evaluation


def newer(path: Path, *than: Path) -> bool:
    """`path` exists and was written after every file of `than`."""
    return path.is_file() and all(path.stat().st_mtime >= p.stat().st_mtime for p in than)


def _index(wanted: np.ndarray, have: np.ndarray, what: str) -> np.ndarray:
    """Positions of the `wanted` coordinate values in `have` (cell centres, to a millimetre)."""
    lookup = {round(float(v), 3): i for i, v in enumerate(have)}
    try:
        return np.array([lookup[round(float(v), 3)] for v in wanted])
    except KeyError as err:
        raise ValueError(
            f"ensemble {what} coordinate {err.args[0]} is not a cell of the HR store: the ensemble was "
            "made from other data; delete it and sample again"
        ) from None


def _frame(store: HRStore, time_s: int) -> int | None:
    """The store's frame ending at `time_s`, None for a gap in the record (its truth is missing: NaN)."""
    try:
        return store.index_of(time_s)
    except KeyError:
        return None


def write_truth(ensemble: Path, hr_store: Path, out: Path) -> Path:
    """The HR store's values at the ensemble's (time, y, x) as precip(time, y, x) netCDF (NaN where
    the store has no frame; atomic; kept when newer than both)."""
    if newer(out, ensemble, hr_store):
        return out
    with xr.open_dataset(ensemble) as ens:
        times = ens["time"].values.astype("datetime64[s]").astype(np.int64)
        y, x = ens["y"].values, ens["x"].values
        y_attrs, x_attrs = dict(ens["y"].attrs), dict(ens["x"].attrs)
        grid_mapping = dict(ens["crs"].attrs) if "crs" in ens.variables else {}
    with HRStore(hr_store) as store:
        rows, cols = _index(y, store.y, "y"), _index(x, store.x, "x")
        r0, c0 = rows.min(), cols.min()
        window = (slice(r0, rows.max() + 1), slice(c0, cols.max() + 1))
        gap = np.full((window[0].stop - r0, window[1].stop - c0), np.nan, np.float32)
        frames = [_frame(store, int(s)) for s in times]
        values = np.stack([gap if f is None else store.read(f, f + 1, *window)[0] for f in frames])
        values = values[:, rows - r0][:, :, cols - c0]
        interval = store.interval_minutes
    ds = cf.precip_dataset(
        values,
        times,
        y,
        x,
        y_attrs,
        x_attrs,
        grid_mapping,
        interval,
        f"HR precipitation accumulated over {interval} min (truth)",
        cf.global_attrs(
            f"HR precipitation truth under the ensemble {ensemble.name}",
            f"HR store {hr_store}",
            f"hpcsr: truth cut at the cells and times of {ensemble}",
        ),
    )
    with AtomicPath(out) as tmp:
        ds.to_netcdf(tmp, encoding=cf.ENCODING)
    return out


def evaluate_against_store(
    cfg: EvaluateConfig, ensemble: Path, hr_store: Path, out_dir: Path, truth: Path
) -> EvaluationResult:
    """run_evaluation of `ensemble` against its truth from `hr_store` (written to `truth`, outside
    `out_dir`, which the report replaces whole), with cfg's settings. The FSS thresholds are those
    of cfg the truth reaches (a short test period of a small domain may have no 5 mm hour; with no
    event on either side the FSS is undefined), at least the first."""
    truth = write_truth(Path(ensemble), Path(hr_store), Path(truth))
    with xr.open_dataset(truth) as tru:
        wettest = float(tru["precip"].max())
    thresholds = tuple(q for q in cfg.thresholds if q < wettest) or tuple(cfg.thresholds[:1])
    return run_evaluation(
        dataclasses.replace(cfg, truth=str(truth), ensemble=str(ensemble), out=str(out_dir), thresholds=thresholds)
    )
