"""Scoring of the main job: each pair's ensemble (written by the launch's sample stage) against the
HR truth it super-resolves, through hpcsr.evaluate (metrics, baselines, plots, report), and the
report over the factor grid. The truth is cut from the HR store at the ensemble's times and cells
and written as CF netCDF (what `python -m hpcsr.evaluate --truth` reads); the LR is the perfect-model
coarsening of that truth, which is exactly what the shards hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hpcsr import cf
from hpcsr.atomic import AtomicPath


def _newer(path: Path, *than: Path) -> bool:
    return path.is_file() and all(path.stat().st_mtime >= p.stat().st_mtime for p in than)


def _index(wanted: np.ndarray, have: np.ndarray, what: str) -> np.ndarray:
    """Positions of the `wanted` coordinate values in `have` (cell centres, to a millimetre)."""
    lookup = {round(float(v), 3): i for i, v in enumerate(have)}
    try:
        return np.array([lookup[round(float(v), 3)] for v in wanted])
    except KeyError as err:
        raise ValueError(
            f"ensemble {what} coordinate {err.args[0]} is not a cell of the HR store: the ensemble was "
            "made from other data; delete it and rerun the demo"
        ) from None


def write_truth(ensemble: Path, hr_store: Path, out: Path) -> Path:
    """The HR store's values at the ensemble's (time, y, x) as precip(time, y, x) netCDF (atomic)."""
    import xarray as xr

    from hpcsr.data.store import HRStore

    if _newer(out, ensemble, hr_store):
        return out
    with xr.open_dataset(ensemble) as ens:
        times = ens["time"].values.astype("datetime64[s]").astype(np.int64)
        y, x = ens["y"].values, ens["x"].values
        y_attrs, x_attrs = dict(ens["y"].attrs), dict(ens["x"].attrs)
        grid_mapping = dict(ens["crs"].attrs) if "crs" in ens.variables else {}
    with HRStore(hr_store) as store:
        rows, cols = _index(y, store.y, "y"), _index(x, store.x, "x")
        frames = [store.index_of(int(s)) for s in times]
        r0, c0 = rows.min(), cols.min()
        values = np.stack(
            [store.read(f, f + 1, slice(r0, rows.max() + 1), slice(c0, cols.max() + 1))[0] for f in frames]
        )
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
            f"hpcsr demo: truth cut at the cells and times of {ensemble}",
        ),
    )
    with AtomicPath(out) as tmp:
        ds.to_netcdf(tmp, encoding=cf.ENCODING)
    return out


def evaluate_pair(ensemble: Path, hr_store: Path, out_dir: Path, progress: bool = True) -> dict:
    """metrics.json of one pair (reused when newer than its ensemble), with report.html and figures."""
    import xarray as xr

    from hpcsr.evaluate import DEFAULT_THRESHOLDS
    from hpcsr.evaluate.cli import build_parser
    from hpcsr.evaluate.cli import run as evaluate_cli

    metrics = out_dir / "metrics.json"
    if metrics.is_file() and _newer(out_dir / "report.html", ensemble):  # the report is written last
        return json.loads(metrics.read_text())
    # beside the pair's report folder, which evaluate replaces whole
    truth = write_truth(ensemble, hr_store, out_dir.parent / "truth" / f"{out_dir.name}.nc")
    with xr.open_dataset(truth) as tru:
        wettest = float(tru["precip"].max())
    # FSS thresholds the truth reaches (a short test period of a small domain may have no 5 mm hour;
    # with no event on either side the FSS is undefined)
    thresholds = [q for q in DEFAULT_THRESHOLDS if q < wettest] or list(DEFAULT_THRESHOLDS[:1])
    args = [
        "--truth",
        str(truth),
        "--ensemble",
        str(ensemble),
        "--out",
        str(out_dir),
        "--baselines",
        "nearest,bicubic,mean",
        "--scales",
        "1,5,15",
        "--thresholds",
        ",".join(f"{q:g}" for q in thresholds),
    ]
    if not progress:
        args.append("--quiet")
    evaluate_cli(build_parser().parse_args(args))
    return json.loads(metrics.read_text())


def grid_report(metric_files: list[Path], out_dir: Path) -> Path:
    """The report over the factor grid (metrics against (s, t)) from the pairs' metrics.json."""
    from hpcsr.evaluate.cli import build_parser
    from hpcsr.evaluate.cli import run as evaluate_cli

    evaluate_cli(build_parser().parse_args(["--pairs", *map(str, metric_files), "--out", str(out_dir)]))
    return out_dir / "report.html"
