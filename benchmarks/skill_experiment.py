"""Skill on real data: does the trained model beat bicubic on radar data it never saw? One command:

    .venv/bin/python benchmarks/skill_experiment.py            # defaults: ~15 min per 2 pairs on 2 cores
    .venv/bin/python benchmarks/skill_experiment.py --quick    # the whole path in minutes (no verdict)

1. Train on the Australian BoM Rainfields3 day of ../shared/data/bom_c10_20201031.nc (512 x 512 px
   of 500 m, 144 steps of 10 min, a thunderstorm day) through `hpcsr-preprocess ingest --cadence 10`
   and `shards`; train split 00-09 UTC, validation 09-12 UTC (the rain falls 01-11 UTC).
   The product rounds every amount to a multiple of 0.05 mm, which makes its light rain 4-15 x
   rougher at the pixel scale than the evaluation radar's (KNMI rounds to 0.01 mm); the denoiser
   learned the steps as texture. --dequantise-train 0.05 ingests it with `--dequantise 0.05`
   (preprocessing.dequantise: the smoothest field inside each wet pixel's rounding bin). Measured
   from scratch (s42, seed 0): the (4,2) members' power over the truth's 1.24-2.14 -> 0.84-1.42, but
   at (4,1) the members lose half their power at every scale (0.97-1.30 -> 0.47-0.58), spread/skill
   0.821 -> 0.596, rank ends 1.07 / 1.03 -> 2.13 / 2.07 x flat, CRPS / bicubic MAE 0.658 -> 0.692:
   not the default (docs/SKILL_LOG.md).
   --train-pixels sets the training data's pixel sizes, the first one's shard with its validation
   split (the mean stage's validation and the spread calibration), each further size's train split
   joining it as data.extra_shards. 1 is BoM at 500 m; 2 aggregated to 1 km (`--aggregate-pixels 2`),
   the evaluation radars' pixel. With several sizes each is drawn equally often (data.mix shards).
   The default since s58 is 2,1: BoM at 1 km with its validation split, its 500 m train split beside
   it. Measured from scratch on two seeds against 1 (s58, docs/SKILL_LOG.md): CRPS / bicubic MAE at
   (4,1) / (4,2) / (8,2) 0.660 / 0.527 / 0.569 -> 0.661 / 0.527 / 0.559 (seed 0) and 0.658 / 0.552 /
   0.573 -> 0.663 / 0.525 / 0.565 (seed 1); the t = 2 members' power 0.53-0.75 / 0.47-0.93 -> 0.73-1.10
   / 0.77-1.47 (seed 0); criteria missed 8 -> 5 and 8 -> 7. Telling the networks each patch's pixel
   size as well (--set model.pixel_input=true) lowers the CRPS by another 0.3-1.3 % at every pair but
   gives the (8,2) members 1.54-1.76 x the truth's power (three runs): not the default. Before s58
   the sizes were mixed in proportion to their distinct patches (1,2: the 1 km patches about one draw
   in five). Measured so from scratch on two training seeds
   (session s40), 1,2 against 1, at (4,1) / (4,2) / (8,2): CRPS / bicubic MAE 0.660 / 0.545 / 0.568
   against 0.658 / 0.552 / 0.580 (seed 0) and 0.669 / 0.538 / 0.572 against 0.662 / 0.539 / 0.574
   (seed 1); mean network 0.889 / 0.795 / 0.841 against 0.884 / 0.800 / 0.877 and 0.893 / 0.831 /
   0.863 against 0.886 / 0.846 / 0.837 x bicubic's RMSE; members' power at (8,2) up to 2.75 / 2.52 x
   the truth's against 2.39 / 2.03. Within a retraining's spread everywhere but the (8,2) members'
   excess power, worse on both seeds: not the default. Again in s46, when the t = 2 members lacked
   power instead: (8,2) gains (CRPS 0.574 -> 0.566, power 0.49-1.02 -> 0.61-0.97), (4,2) does not
   (0.51-0.62), (4,1) loses its spectrum (1.40-1.73) and the mean network's tile seams (1.103):
   still not the default (docs/SKILL_LOG.md).
   2 alone, against 1 (session s26, same settings otherwise): it does
   not help: spread/skill 1.42 / 0.99 / 1.38 at (4,1) / (4,2) / (8,2) (500 m: 1.18 / 1.10 / 1.40),
   members' power 2.2-5.5 x the truth's at 2-8 px (500 m: 0.54-2.8 x), mean network 0.91 / 0.92 /
   1.41 x bicubic's RMSE (500 m: 0.92 / 0.92 / 1.10): a quarter of the pixels is a quarter of the
   training data, and the mean network then learns nothing on BoM's own validation patches. Again in
   s39 at (4,2) / (8,2): the mean network gains (0.766 / 0.816 x bicubic's RMSE, 500 m: 0.800 / 0.877),
   the ensembles do not (spread/skill 1.22 / 1.43, members' power at 2 px .. the cell up to 2.4 / 4.5 x
   the truth's; 500 m: 1.01 / 0.92, 2.1 / 2.4).
   --train-extra others also trains on every step of the other networks that reach the 10-min cadence
   (MeteoSwiss' three days when evaluating on KNMI; data.extra_shards, mixed in proportion to their
   distinct patches). Measured (session s27, the crop as one sampling tile as then): it does not help
   the mean network (0.93 / 0.95 / 1.15 x bicubic's RMSE at (4,1) / (4,2) / (8,2), BoM alone 0.92 /
   0.92 / 1.10); CRPS / bicubic MAE 0.693 / 0.692 / 0.670 (BoM alone 0.693 / 0.648 / 0.728).
2. Evaluate on another radar network, never seen in training (--eval): by default KNMI, the
   Netherlands, 2010-08-26 (../shared/data/knmi_20100826.nc, 1 km, 5-min steps summed to the same
   10-min cadence by `ingest --cadence 10`); --eval mch takes MeteoSwiss 2016-07-11 instead. MeteoSwiss
   was the default until benchmarks/radar_spectra.py showed that its AQC product carries 4-7x less
   power at 2-4 px (relative to 8 px) than every other product in ../shared/data, Comephore, KNMI and
   BoM included, with a notch near 3 px (a smoothed product): a truth without the small scales
   cannot judge the members' small scales (criterion 4). Sampling a whole radar domain with a
   10-member ensemble takes hours on 2 CPU cores, so the evaluation is cropped to the wettest
   --crop x --crop window that radar covers at every step (stride 32 px) and, in it, the wettest
   run of --steps consecutive steps; both chosen from the truth's rain amount alone, before any
   model runs, and written as CF netCDF. The LR input is the perfect-model coarsening of that truth
   (`hpcsr sample --hr CROP --coarsen`). The held-out radars' pixel is 1 km, the default training
   data's main shard too (BoM at 1 km); with --train-pixels 1 (BoM at 500 m first) the sampler would
   refuse another grid than the training data's unless told (--allow-other-grid, passed then: the
   experiment asks whether what was learned per pixel transfers; per pixel, BoM at 500 m and at 1 km
   have the same small-scale power within 10 %, radar_spectra.md).
3. Pairs (4, 1), (4, 2) and (8, 2) by default: 4 km and 8 km LR grids to 1 km, without and with
   temporal super-resolution (10 -> 20 min blocks). (2, 1) is not the default because these radar
   products are smooth at two pixels: on the MeteoSwiss crop, bicubic's RMSE at (2, 1) is 0.027 mm, 5 % of the
   field's standard deviation, so there is almost nothing left to learn (--pairs 2x1,4x1,4x2 runs it).
   For t > 1 the model also sees the next LR block (data.future_context's default), because the bicubic
   baseline interpolates linearly in time between neighbouring blocks and so uses it too.
4. Per pair: `hpcsr train` stage mean then stage diffusion (one process each, 1 thread; pairs in
   parallel; the diffusion stage ends by fitting its spread gain on --val-patches BoM validation
   patches, hpcsr.train.calibration: 128, since 32 left the fit to the seed's draw of patches, see
   there), `hpcsr sample` (--members members, every other setting the defaults a
   user gets: blended tiles of the training patch's side, the sampler and its steps, the recipe's mass
   transform, the export's spread gain), `python -m hpcsr.evaluate`
   (baselines nearest, bicubic + linear in time, mean network).
5. Criteria per pair, each with its value, target and met / NOT met (JSON `criteria`, a table per
   criterion in the .md; the targets are the constants below):
   1. ensemble fair CRPS <= 0.6 x bicubic MAE;
   2. spread/skill in 0.8 .. 1.2; each end of the rank histogram <= 1.3 x a flat histogram's share,
      and neither end more than 1.5 x the other;
   3. mean-network RMSE <= 0.85 x bicubic RMSE, below bicubic with the same per-cell mass transform
      (like with like: the model's outputs conserve each LR cell's mass, plain bicubic does not) and
      below the mean network before training (bicubic of the log1p-normalised LR + cell mass: what
      the training itself added);
   4. the members' spectral ratio to the truth within 1/1.5 .. 1.5 at every wavelength from 2 px to
      the LR cell, and their wet fraction within 15 % of the truth's;
   5. seam ratio (LR-cell edges against inside cells) of the ensemble and of the mean network <= 1.10;
      when the crop was sampled in several tiles, their tile seam ratio (the sampling tiles' edges
      against the other LR-cell edges) over the truth's at the same pairs <= 1.10 as well. Over the
      truth's because the tile edges are few (at (8,2) every other cell edge of the 128 px crop: 7
      rows and 7 columns), so the rain's own placement moves the raw ratio: on the committed crop the
      truth scores 1.044 and bicubic, which has no tiles, 1.090; the truth scores 0.80-1.25 on the
      same crop under other tilings (s59, docs/SKILL_LOG.md);
   6. relative mass error at the scale the ensemble's attributes claim <= 1e-5 (the cell-scale
      error is reported beside it).
   Plus the untrained/trained comparison on the training radar's validation patches, to tell a
   failure to learn from a failure to transfer to another radar.

Mass transform: the recipe's default since issue 13 is the identity matched per LR cell with a smooth
factor field (`hpcsr.mass`, mode 'smooth') for members; the mean network's output gets mode 'filled'
(since s42), and so do the references it is compared with (criterion 3). The author's f(x) = sqrt(x) - 0.01 over the whole tile
(factor.mass_preset=author) multiplied bicubic's RMSE by 3.2 at (4, 1), 1.3 at (4, 2) and 11 at (2, 1)
on the MeteoSwiss crop; each pair's `references` in the JSON give every variant's effect on bicubic.

Writes --out (JSON, the benchmark result contract of benchmarks/common.py), a markdown table
beside it (.md) and each pair's evaluation report (report.md/html, metrics.json, figures incl. the
rank histogram) under the folder of the same name. Runs, samples and logs live in --work under
names that carry their settings, so a rerun reuses finished training runs and ensembles.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, figure, log, run_logged, write_result  # noqa: E402

from hpcsr.evaluate.criteria import shown as value_text  # noqa: E402
from hpcsr.evaluate.metrics import rank_ends  # noqa: E402

DATA = REPO.parent / "shared" / "data"
TRAIN_FILE = "bom_c10_20201031.nc"
BOM_ROUNDING_MM = 0.05  # every positive amount in TRAIN_FILE is a multiple of it (mm per 10 min)
# held-out networks (--eval); KNMI is the default because the MeteoSwiss AQC product lacks the small
# scales the spectral criterion judges (benchmarks/radar_spectra.py: ~10x less power at 2-3 px)
EVAL_FILES = {"knmi": "knmi_20100826.nc", "mch": "mch_aqc_20160711.nc"}
# more radar networks whose every step joins the training data with --train-extra (data.extra_shards):
# those of ../shared/data that reach the 10-min cadence (OPERA's 15-min and Comephore's hourly steps do
# not) with a run of consecutive steps longer than (4, 1)'s 10-block context (MeteoNet's 12 steps with a
# gap are not)
EXTRA_TRAIN = {
    "mch": ("mch_aqc_20150515.nc", "mch_aqc_20160711.nc", "mch_aqc_20170131.nc"),
    "knmi": ("knmi_20100826.nc",),
}
SPLIT = "2020-10-31T09:00,2020-10-31T12:00"  # end of train, end of validation (BoM)
CADENCE_MIN = 10
PREPROCESS = [sys.executable, "-m", "preprocessing.cli"]  # the preprocessing CLI, as a command
COPIED = (
    "report.md",
    "report.html",
    "metrics.json",
    "panels.png",
    "spectra.png",
    "rank_histogram.png",
    "qq.png",
    "fss.png",
)  # what of each evaluation folder goes to the results folder
# --quick: the full path with seconds of training and a small crop; its numbers are no verdict
QUICK = {"mean_steps": 10, "diffusion_steps": 10, "warmup": 2, "val_every": 5, "val_patches": 8, "crop": 64, "steps": 8}
# criteria targets (docstring, point 5)
CRPS_TO_BICUBIC_MAE = 0.6  # 1. ensemble fair CRPS at most this times bicubic's MAE
SPREAD_SKILL = (0.8, 1.2)  # 2. spread/skill range
RANK_END_TO_FLAT = 1.3  # 2. each rank-histogram end at most this times a flat histogram's share
RANK_END_BALANCE = 1.5  # 2. neither rank-histogram end more than this times the other
MEAN_RMSE_TO_BICUBIC = 0.85  # 3. mean-network RMSE at most this times bicubic's
SPECTRAL_RATIO_FACTOR = 1.5  # 4. members' power within this factor of the truth's, wavelengths 2 px .. s px
WET_FRACTION_TOLERANCE = 0.15  # 4. members' wet fraction within this share of the truth's
SEAM_RATIO_MAX = 1.10  # 5. seam ratios of the ensemble and the mean network
MASS_ERROR_MAX = 1e-5  # 6. relative mass error at the scale the ensemble claims
CRITERIA = {
    1: "Ensemble fair CRPS against bicubic MAE",
    2: "Calibration: spread/skill and rank histogram",
    3: "Mean-network RMSE against bicubic, bicubic with the same cell mass transform, the untrained network",
    4: "Members' power spectrum (wavelengths 2 px .. LR cell) and wet fraction against the truth",
    5: "Seam ratios: LR-cell edges against the field inside (sampling-tile edges: over the truth's)",
    6: "Relative mass error at the scale the ensemble claims",
}
# the references of criterion 3, with the sampler's mass transform of the mean (identity per LR cell, filled)
SAME_MASS = "bicubic + identity per LR cell, filled (like with like)"
UNTRAINED = "mean network before training + identity per LR cell, filled"
# what a start that follows the rain's motion gives (hpcsr.motion), with the same mass transform
MOTION = "bicubic + motion-compensated in time + identity per LR cell, filled"
TRAIN_KEYS = (
    "widths",
    "patch",
    "batch",
    "lr",
    "warmup",
    "mean_steps",
    "diffusion_steps",
    "val_every",
    "val_patches",
    "seed",
    "train_pixels",
    "train_extra",
    "dequantise_train",
    "set",
    "defaults",
)  # defaults: hash of the default config tree, so a changed default trains anew
SAMPLE_KEYS = ("members", "crop", "eval", "steps", "block", "tile")  # block: the crop starts a block of this many steps


def run_name(a, p: argparse.ArgumentParser) -> str:
    """'default run', or the training and sampling options given that differ from their defaults."""
    defaults = vars(p.parse_args([]))
    given = [
        f"--{key.replace('_', '-')} {item}"
        for key, value in vars(a).items()
        if key in (*TRAIN_KEYS, *SAMPLE_KEYS) and key in defaults and value != defaults[key]
        for item in (value if isinstance(value, list) else [value])  # an appended option: once per value
    ]
    return f"run with {' '.join(given)}" if given else "default run"


def tag(a, keys) -> str:
    return hashlib.sha256(json.dumps([vars(a)[k] for k in keys]).encode()).hexdigest()[:8]


def preprocess_train(work: Path, pairs: list[str], pixels: int, dequantise: float = 0.0) -> Path:
    """HR store + shards of the training day, `pixels` x `pixels` source pixels averaged into one,
    each source step dequantised with step `dequantise` mm when > 0 (`hpcsr-preprocess ingest --dequantise`)."""
    name = ("train" if pixels == 1 else f"train_px{pixels}") + (f"_dq{dequantise:g}" if dequantise else "")
    train = work / "data" / name
    ingest = ["ingest", "--out", str(train), "--netcdf", str(DATA / TRAIN_FILE), "--cadence", str(CADENCE_MIN)]
    ingest += ["--dequantise", str(dequantise)] if dequantise else []
    run_logged(
        PREPROCESS + ingest + ["--aggregate-pixels", str(pixels), "--quiet"],
        work / "logs" / f"ingest_{name}.log",
        2,
    )
    run_logged(
        PREPROCESS + ["shards", "--out", str(train), "--pairs", ",".join(pairs), "--split-bounds", SPLIT, "--quiet"],
        work / "logs" / f"shards_{name}.log",
        2,
    )
    return train


def preprocess_eval(work: Path, eval_file: str) -> Path:
    """HR store of the evaluation day, at the training data's cadence."""
    held_out = work / "data" / f"eval_{Path(eval_file).stem}"
    ingest = ["ingest", "--out", str(held_out), "--netcdf", str(DATA / eval_file), "--cadence", str(CADENCE_MIN)]
    run_logged(
        [*PREPROCESS, *ingest, "--quiet"],
        work / "logs" / f"ingest_{held_out.name}.log",
        2,
    )
    return held_out / "hr.h5"


def pixel_sizes(text: str) -> list[int]:
    """--train-pixels as distinct averaging sizes, the first the main one (1 or 2 each)."""
    sizes = [int(x) for x in text.split(",") if x.strip()]
    if not sizes or any(x not in (1, 2) for x in sizes) or len(set(sizes)) != len(sizes):
        raise SystemExit(f"--train-pixels {text!r}: distinct sizes of 1 and 2, comma-separated, e.g. 1,2")
    return sizes


def extra_networks(choice: str, eval_name: str) -> list[str]:
    """--train-extra as network names of EXTRA_TRAIN: 'none', 'others' (every one but the evaluation
    network) or a comma-separated list, which must not hold the evaluation network."""
    if choice == "none":
        return []
    if choice == "others":
        return [n for n in EXTRA_TRAIN if n != eval_name]
    names = [n.strip() for n in choice.split(",") if n.strip()]
    unknown = [n for n in names if n not in EXTRA_TRAIN]
    if unknown:
        raise SystemExit(f"--train-extra: unknown network(s) {unknown}; known: {', '.join(EXTRA_TRAIN)}")
    if eval_name in names:
        raise SystemExit(f"--train-extra {eval_name}: the evaluation network cannot also be training data")
    return names


def preprocess_extra(work: Path, pairs: list[str], networks: list[str]) -> list[Path]:
    """HR store + shards (every step in the train split) of each file of the extra training networks."""
    folders = []
    for name in (f for n in networks for f in EXTRA_TRAIN[n]):
        folder = work / "data" / f"extra_{Path(name).stem}"
        ingest = ["ingest", "--out", str(folder), "--netcdf", str(DATA / name), "--cadence", str(CADENCE_MIN)]
        run_logged(PREPROCESS + ingest + ["--quiet"], work / "logs" / f"ingest_{folder.name}.log", 2)
        shards = ["shards", "--out", str(folder), "--pairs", ",".join(pairs), "--split-fractions", "1,0,0"]
        run_logged(PREPROCESS + shards + ["--quiet"], work / "logs" / f"shards_{folder.name}.log", 2)
        folders.append(folder)
    return folders


def wettest_window(precip: np.ndarray, side: int, name: str, stride: int = 32) -> tuple[int, int]:
    """(row, col) of the side x side window, corners on a `stride` grid, with no missing value at any
    step and the largest total rain; precip (T, Y, X) mm, NaN missing."""
    T, Y, X = precip.shape
    if side > min(Y, X):
        raise SystemExit(f"--crop {side} is larger than the evaluation grid {Y} x {X}: use at most {min(Y, X)}")
    missing = np.isnan(precip).any(axis=0)
    total = np.nansum(precip, axis=0)
    best = None
    for r in range(0, Y - side + 1, stride):
        for c in range(0, X - side + 1, stride):
            if missing[r : r + side, c : c + side].any():
                continue
            rain = float(total[r : r + side, c : c + side].sum())
            if best is None or rain > best[0]:
                best = (rain, r, c)
    if best is None:
        raise SystemExit(f"no {side} x {side} window of {name} is covered at every step: use a smaller --crop")
    return best[1], best[2]


def wettest_steps(precip: np.ndarray, steps: int, aligned: np.ndarray) -> int:
    """First index of the `steps` consecutive steps with the most rain among the starts where
    `aligned` is true (0 when there are fewer steps)."""
    if steps >= len(precip):
        return int(np.argmax(aligned)) if aligned.any() else 0
    totals = np.convolve(precip.sum(axis=(1, 2)), np.ones(steps), mode="valid")
    return int(np.argmax(np.where(aligned[: len(totals)], totals, -np.inf)))


def write_crop(store_path: Path, out: Path, side: int, steps: int, name: str, block: int = 1) -> dict:
    """The wettest covered side x side window of the HR store over its wettest `steps` consecutive steps,
    as CF netCDF precip(time, y, x) (atomic); its place. Both choices read the truth's rain alone. The
    first step starts a block of `block` steps counted from 00 UTC (the sampler's and the evaluation's
    time blocks), so every pair's blocks start with the crop and in-script references coarsen the
    same blocks as the evaluation."""
    import h5py

    from hpcsr import cf
    from hpcsr.atomic import AtomicPath
    from hpcsr.data.store import HRStore

    with HRStore(store_path) as store:
        full = store.read(0, len(store.time_s))
        r, c = wettest_window(full, side, name)
        values = full[:, r : r + side, c : c + side]
        step_s = 60 * store.interval_minutes
        starts = np.asarray(store.time_s, np.int64) - step_s  # start of each step
        first = wettest_steps(values, steps, (starts % (block * step_s)) == 0)
        values = values[first : first + steps]
        y, x = store.y[r : r + side], store.x[c : c + side]
        times = np.asarray(store.time_s, np.int64)[first : first + len(values)]
        crs, step = store.crs_wkt, store.interval_minutes
    with h5py.File(store_path, "r") as f:  # coordinate units of the store (metres when absent)
        units = {k: f.attrs.get(f"{k}_units", "m") for k in ("x", "y")}
    units = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in units.items()}
    source = f"{DATA / name} via hpcsr-preprocess ingest --cadence {step}"
    ds = cf.precip_dataset(
        values,
        times,
        y,
        x,
        {"units": units["y"]},
        {"units": units["x"]},
        {"crs_wkt": crs},
        step,
        f"precipitation accumulated over {step} min",
        cf.global_attrs(
            f"held-out radar crop for the skill experiment ({name})",
            source,
            "benchmarks/skill_experiment.py: wettest window of the held-out store",
            crop_rows_cols=f"{r}:{r + side}, {c}:{c + side}",
            crop_steps=f"{first}:{first + len(values)}",
        ),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with AtomicPath(out) as tmp:
        ds.to_netcdf(tmp, format="NETCDF4", encoding=cf.ENCODING)
    return {
        "rows": [r, r + side],
        "cols": [c, c + side],
        "steps": [first, first + len(times)],
        "wet_fraction": float(np.mean(values > 0.1)),
        "mean_mm": float(values.mean()),
        "max_mm": float(values.max()),
    }


def train_overrides(pair: str, a, data: Path, run_dir: Path, extra: list[Path]) -> list[str]:
    s, t = pair.split("x")
    shards = ",".join(str(folder / "shards" / f"s{s}_t{t}.h5") for folder in extra)
    # several pixel sizes of the training radar: each drawn equally often (docs/SKILL_LOG.md s58; telling
    # the networks each patch's size, --set model.pixel_input=true, is measured there and not the default)
    mix = ["data.mix=shards"] if len(pixel_sizes(a.train_pixels)) > 1 else []
    return [
        f"data.extra_shards=[{shards}]",
        *mix,
        "model=tiny",
        f"model.widths=[{a.widths}]",
        f"factor.s={s}",
        f"factor.t={t}",
        f"factor.patch={a.patch}",
        f"data_dir={data}",
        f"run_dir={run_dir}",
        f"seed={a.seed}",
        f"data.batch_size={a.batch}",
        f"data.val_patches={a.val_patches}",
        f"train.lr={a.lr}",
        f"train.warmup_steps={a.warmup}",
        f"train.val_every={a.val_every}",
        f"train.log_every={a.val_every}",
        "train.progress=false",
        *a.set,
    ]


def val_curve(run_dir: Path, stage: str) -> list:
    rows = [json.loads(line) for line in (run_dir / stage / "logs" / "metrics.jsonl").read_text().splitlines() if line]
    curve = {int(r["step"]): float(r["val_loss"]) for r in rows if r.get("kind") == "val"}
    return sorted(curve.items())


def untrained_start(export, lr):
    """The mean network's start (what it returns before training) on a whole LR sequence (N, y, x) in
    mm -> (N * t, y * s, x * s) mm: each block sees the frames its model would (the previous one, the
    target, `future_context` later ones), the sequence's ends missing; model.mean_skip 'motion' moves
    them along the motion of the whole crop, as the sampler does."""
    import torch

    from hpcsr.models.inputs import prepare_lr
    from hpcsr.models.mean_net import linear_in_time
    from hpcsr.models.start_space import StartSpace
    from hpcsr.motion import field_start

    norm, cfg, s, t = export.normaliser, export.model_config, export.pair.s, export.pair.t
    future, past = int(export.metadata.get("future_context", 0)), min(1, export.recipe.context - 1)
    unit = cfg.start_unit_mm  # model.start_unit: the space the start is interpolated in
    space = None if unit is None else StartSpace(norm, unit)
    z = norm.forward(lr)
    up = prepare_lr(z[None], s, cfg.upsample, space)[0][0]  # the crop is covered at every step: no NaN
    blocks = []
    for n in range(len(lr)):
        lo, hi = max(n - past, 0), min(n + future, len(lr) - 1)
        frames = up[lo : hi + 1][None]
        if cfg.motion_start(t):  # the sampler's: motion over the whole crop
            blocks.append(field_start(z[lo : hi + 1], s, t, n - lo, cfg.upsample, space=space))
        elif cfg.mean_skip == "linear":
            blocks.append(linear_in_time(frames, torch.ones_like(frames), t, n - lo)[0])
        else:
            blocks.append(frames[0, n - lo, None].expand(t, *frames.shape[2:]))
    return torch.relu(norm.inverse(torch.cat(blocks)))


def references(crop: Path, pair: str, export: Path) -> dict:
    """RMSE/MAE (mm) on the crop of reference fields made from the perfect-model LR alone:
    bicubic + linear in time (the evaluation's baseline) plain and after each mass transform (per LR
    block: the author's function over the whole crop = the author's preset with the crop as one tile;
    the author's function per LR cell; the identity per LR cell with a piecewise-constant factor; the
    identity per LR cell with the smooth factor field, the sampler's default for members; the same in
    mode 'filled', the sampler's default for the mean), and the mean network before training (its
    output layer starts at zero, so it returns its start: the bicubic upsampling of the target LR
    frame in the start's space (model.start_unit), linear in time to the neighbouring frames it is
    given when model.mean_skip is 'linear') with the sampler's transform of the mean, and bicubic interpolated in time along the
    rain's motion (`hpcsr.evaluate.baselines.motion`) with that transform."""
    import torch
    import xarray as xr

    from hpcsr.coarsen import coarsen
    from hpcsr.evaluate.baselines import bicubic_linear, motion
    from hpcsr.export import load_export
    from hpcsr.factors import MassFunction, recipe
    from hpcsr.mass import conserve, default_mode, estimate_mode

    s, t = map(int, pair.split("x"))
    mean_mode = estimate_mode(default_mode("cell"))
    with xr.open_dataset(crop) as ds:
        truth = ds["precip"].values.astype(np.float32)
    truth = truth[: truth.shape[0] // t * t]
    lr = torch.from_numpy(coarsen(truth, s, t))
    bicubic = torch.from_numpy(bicubic_linear(lr.numpy(), s, t))
    untrained = untrained_start(load_export(export), lr)
    sqrt_fn, identity = recipe(s, t, "author").mass, MassFunction(1.0, 0.0)

    def per_block(x, fn, scale, mode="multiplicative"):
        return torch.cat(
            [conserve(x[n * t : (n + 1) * t], lr[n : n + 1], s, t, fn, scale, mode) for n in range(len(lr))]
        )

    fields = {
        "bicubic": bicubic,
        f"bicubic + author's {sqrt_fn.label} over the crop": per_block(bicubic, sqrt_fn, "image"),
        f"bicubic + author's {sqrt_fn.label} per LR cell": per_block(bicubic, sqrt_fn, "cell"),
        "bicubic + identity per LR cell, piecewise-constant factor": per_block(bicubic, identity, "cell"),
        "bicubic + identity per LR cell, smooth factor (the members' transform)": per_block(
            bicubic, identity, "cell", "smooth"
        ),
        SAME_MASS: per_block(bicubic, identity, "cell", mean_mode),
        UNTRAINED: per_block(untrained, identity, "cell", mean_mode),
        MOTION: per_block(torch.from_numpy(motion(lr.numpy(), s, t)), identity, "cell", mean_mode),
    }
    return {
        name: {
            "rmse": float(np.sqrt(np.mean((x.numpy() - truth) ** 2))),
            "mae": float(np.mean(np.abs(x.numpy() - truth))),
        }
        for name, x in fields.items()
    }


def untrained_model(export):
    """The export's network with the mean net's output layer at zero, as it starts training."""
    model = export.build_model().eval()
    model.mean_net.drop_correction_()
    return model


def told_pixel(model, shard: Path):
    """`model`, told the HR pixel size of `shard`'s data when it takes one (model.pixel_input)."""
    if model.cfg.pixel_input:
        from hpcsr.data.store import Shard
        from hpcsr.pixel_size import grid_level

        with Shard(shard) as opened:
            model.pixel_level = grid_level(opened.data_grid(), str(shard))
    return model


def in_domain_check(run_dir: Path, shard: Path, patch: int, items: int = 128) -> dict:
    """RMSE (mm) on the TRAINING radar's validation split (BoM 09-12 UTC, fixed patches of the
    trainer's validation stream) of the mean network trained and before training, both with the
    identity cell mass transform in the sampler's mode for the mean: whether training helps where it was trained (compare with the
    evaluation crop to separate a training failure from a failure to transfer to another radar)."""
    import torch

    from hpcsr.data.patches import PatchDataset, PatchSpec
    from hpcsr.export import load_export
    from hpcsr.factors import MassFunction
    from hpcsr.mass import conserve, default_mode, estimate_mode
    from hpcsr.train.trainer import stacked

    export = load_export(run_dir / "mean")
    model, norm = export.build_model().eval(), export.normaliser
    L, s, t = export.recipe.context, export.recipe.pair.s, export.recipe.pair.t
    # the items carry the mean network's start when it takes one, as in training
    spec = PatchSpec(L, patch, model.frames - L, model.cfg.motion_start(t), model.cfg.upsample, model.cfg.start_unit_mm)
    data = PatchDataset(shard, spec, "val", norm, 0, 1.0, "val")
    lr, hr, *start = stacked([data[i] for i in range(items)])
    with torch.no_grad():
        trained = told_pixel(model, shard).predict_mean(lr, None, *start)
        untrained = told_pixel(untrained_model(export), shard).predict_mean(lr, None, *start)
    truth, lr_mm = norm.inverse(hr), norm.inverse(lr[:, L - 1 : L])

    def rmse(z):
        mode = estimate_mode(default_mode("cell"))
        x = conserve(torch.relu(norm.inverse(z)), lr_mm, s, t, MassFunction(1.0, 0.0), "cell", mode)
        return float(((x - truth) ** 2).mean().sqrt())

    return {
        "patches": items,
        "patch": patch,
        "trained_rmse": rmse(trained),
        "untrained_rmse": rmse(untrained),
        "wet_fraction": float((truth > 0.1).float().mean()),
    }


def describe_ranks(counts) -> str:
    """The rank histogram's shape in words: ends vs middle (dispersion), lowest vs highest (bias)."""
    f = np.asarray(counts, float)
    f = f / f.mean()  # 1 = the share of a flat histogram
    ends, middle = (f[0] + f[-1]) / 2, f[1:-1].mean()
    ratio = ends / middle
    if ratio > 1.2:
        shape = "U-shaped: under-dispersed (truth often outside the ensemble)"
    elif ratio < 0.8:
        shape = "dome-shaped: over-dispersed"
    elif ratio < 0.95:
        shape = "nearly flat, slightly dome-shaped (a little over-dispersed)"
    elif ratio > 1.05:
        shape = "nearly flat, slightly U-shaped (a little under-dispersed)"
    else:
        shape = "flat: calibrated spread"
    if f[0] > 1.5 * f[-1]:
        shape += "; truth most often below every member (members too wet)"
    elif f[-1] > 1.5 * f[0]:
        shape += "; truth most often above every member (members too dry)"
    return f"{shape} (lowest rank {f[0]:.2f}, middle {middle:.2f}, highest {f[-1]:.2f} x flat)"


def noted(entry: dict, why: str | None) -> dict:
    """The criterion with the reason its score is undefined, when it is."""
    return {**entry, "note": why} if entry["value"] is None and why else entry


def tile_seam_to_truth(forecast: float | None, truth: float | None, why: str | None) -> dict:
    """Criterion 5 at the sampling tiles: the forecast's tile seam ratio over the truth's at the same
    pairs (docstring, point 5); the note gives both raw ratios (and why they are undefined, if so)."""
    from hpcsr.evaluate.criteria import check, ratio, shown

    note = f"tile seam ratio {shown(forecast)} over the truth's {shown(truth)}"
    return {**check(ratio(forecast, truth), high=SEAM_RATIO_MAX), "note": note + (f": {why}" if why else "")}


def criteria(metrics: dict, bicubic_cell_mass_rmse: float, untrained_mean_rmse: float) -> dict:
    """The pair's criteria (docstring, point 5) from its metrics.json and the two RMSE references:
    {name: {'group' (1-6), 'value', 'target', 'met'} (+ 'note')}."""
    from hpcsr.evaluate.criteria import check, ratio

    f = metrics["forecasts"]
    ens, bic, mean = f["ensemble"], f["bicubic"], f["mean"]
    low_end, high_end = rank_ends(ens["rank_histogram"])
    spectral = ens.get("spectral_ratio") or {}
    claim = metrics.get("mass_claim") or {}
    undefined = metrics.get("undefined", {})
    groups = {
        1: {"crps_to_bicubic_mae": check(ratio(ens["crps"], bic["mae"]), high=CRPS_TO_BICUBIC_MAE)},
        2: {
            "spread_skill": check(ens["spread_skill_ratio"], low=SPREAD_SKILL[0], high=SPREAD_SKILL[1]),
            "rank_lowest_to_flat": check(low_end, high=RANK_END_TO_FLAT),
            "rank_highest_to_flat": check(high_end, high=RANK_END_TO_FLAT),
            "rank_end_balance": check(ratio(max(low_end, high_end), min(low_end, high_end)), high=RANK_END_BALANCE),
        },
        3: {
            "mean_rmse_to_bicubic": check(ratio(mean["rmse"], bic["rmse"]), high=MEAN_RMSE_TO_BICUBIC),
            "mean_rmse_to_bicubic_cell_mass": check(ratio(mean["rmse"], bicubic_cell_mass_rmse), high=1, strict=True),
            "mean_rmse_to_untrained": check(ratio(mean["rmse"], untrained_mean_rmse), high=1, strict=True),
        },
        4: {
            "spectral_ratio_min": noted(
                check(spectral.get("min"), low=1 / SPECTRAL_RATIO_FACTOR), undefined.get("spectral_ratio")
            ),
            "spectral_ratio_max": noted(
                check(spectral.get("max"), high=SPECTRAL_RATIO_FACTOR), undefined.get("spectral_ratio")
            ),
            "wet_fraction_ratio": check(
                ens["wet_fraction_ratio"], low=1 - WET_FRACTION_TOLERANCE, high=1 + WET_FRACTION_TOLERANCE
            ),
        },
        5: {
            **{
                f"{forecast}_seam_ratio": noted(
                    check(f[forecast].get("seam_ratio"), high=SEAM_RATIO_MAX), undefined.get("seam_ratio")
                )
                for forecast in ("ensemble", "mean")
            },
            **{
                f"{forecast}_tile_seam_to_truth": tile_seam_to_truth(
                    f[forecast].get("tile_seam_ratio"),
                    metrics["truth"].get("tile_seam_ratio"),
                    undefined.get("tile_seam_ratio"),
                )
                for forecast in ("ensemble", "mean")
                if "tile_seam_ratio" in ens
            },
        },
        6: {
            "mass_error_claimed_scale": {
                **check(claim.get("relative_error"), high=MASS_ERROR_MAX),
                "note": f"claimed scale: {claim.get('scale', 'unknown')}; cell-scale error "
                f"{value_text(ens['mass']['cell_relative'])}" + (f"; {claim['note']}" if claim.get("note") else ""),
            }
        },
    }
    return {name: {"group": n, **entry} for n, group in groups.items() for name, entry in group.items()}


def criteria_tables(rows: list[dict]) -> str:
    """A markdown table per criterion group: pair, measure, value, target, met / NOT met."""
    out = []
    for n, title in CRITERIA.items():
        lines = [f"### {n}. {title}\n", "| pair | measure | value | target | met | note |", "|---|---|---|---|---|---|"]
        for r in rows:
            for name, c in r["criteria"].items():
                if c["group"] == n:
                    verdict = "met" if c["met"] else "NOT met"
                    lines.append(
                        f"| {r['pair']} | {name} | {value_text(c['value'])} | {c['target']} | {verdict} "
                        f"| {c.get('note', '')} |"
                    )
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def shown(path: Path) -> str:
    """A path as the results quote it: relative to the repository when inside it."""
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


def one_pair(pair: str, a, data: Path, extra: list[Path], crop: Path, work: Path, results: Path) -> dict:
    import xarray as xr

    from hpcsr.atomic import write_bytes_atomic

    name = "s{}_t{}".format(*pair.split("x"))
    run_dir = work / "runs" / tag(a, TRAIN_KEYS) / name
    logs = work / "logs" / name
    timing = {}

    def step(label, cmd):
        started = time.monotonic()
        run_logged(cmd, logs / f"{label}.log", 1)
        timing[label] = round(time.monotonic() - started, 1)
        log(f"{name}: {label} done in {timing[label]:.0f} s")

    common = train_overrides(pair, a, data, run_dir, extra)
    for stage, steps in (("mean", a.mean_steps), ("diffusion", a.diffusion_steps)):
        log(f"{name}: training stage {stage}, {steps} steps (log {logs / stage}.log)")
        step(
            stage,
            [
                sys.executable,
                "-m",
                "hpcsr.train.cli",
                *common,
                f"train.stage={stage}",
                f"train.steps={steps}",
                f"train.checkpoint_every={steps}",
            ],
        )
    ensemble = work / "samples" / f"{tag(a, TRAIN_KEYS)}_{tag(a, SAMPLE_KEYS)}" / f"{name}.nc"
    if ensemble.is_file():
        log(f"{name}: reusing {ensemble}")
    else:
        log(f"{name}: sampling {a.members} members of the {a.crop} x {a.crop} crop")
        step(
            "sample",
            [
                sys.executable,
                "-m",
                "hpcsr.cli",
                "sample",
                "--export",
                str(run_dir / "diffusion"),
                "--hr",
                str(crop),
                "--coarsen",
                "--members",
                str(a.members),
                *(["--allow-other-grid"] if pixel_sizes(a.train_pixels)[0] == 1 else []),  # 500 m data, 1 km here
                *(["--tile", str(a.tile)] if a.tile else []),
                "--out",
                str(ensemble),
                "--quiet",
            ],
        )
    report = work / "evaluation" / a.eval / name
    with xr.open_dataset(crop) as ds:
        wettest = float(ds["precip"].max())
    thresholds = [q for q in (0.1, 1.0, 5.0) if q < wettest] or [0.1]  # FSS only at thresholds the truth reaches
    step(
        "evaluate",
        [
            sys.executable,
            "-m",
            "hpcsr.evaluate",
            "--truth",
            str(crop),
            "--ensemble",
            str(ensemble),
            "--baselines",
            "nearest,bicubic,mean",
            "--thresholds",
            ",".join(map(str, thresholds)),
            "--out",
            str(report),
            "--quiet",
        ],
    )
    metrics = json.loads((report / "metrics.json").read_text())
    copy = results / name
    copy.mkdir(parents=True, exist_ok=True)
    for file in COPIED:
        write_bytes_atomic(copy / file, (report / file).read_bytes())
    f = metrics["forecasts"]
    ens, bic, mean, near = f["ensemble"], f["bicubic"], f["mean"], f["nearest"]
    refs = references(crop, pair, run_dir / "mean")
    cell = refs[SAME_MASS]
    untrained = refs[UNTRAINED]
    in_domain = in_domain_check(run_dir, data / "shards" / f"{name}.h5", a.patch)
    checks = criteria(metrics, cell["rmse"], untrained["rmse"])
    return {
        "pair": name,
        "ensemble_crps": ens["crps"],
        "ensemble_rmse": ens["rmse"],
        "ensemble_mae": ens["mae"],
        "spread_skill": ens["spread_skill_ratio"],
        "rank_histogram": ens["rank_histogram"],
        "rank_histogram_shape": describe_ranks(ens["rank_histogram"]),
        "mean_rmse": mean["rmse"],
        "mean_mae": mean["mae"],
        "bicubic_rmse": bic["rmse"],
        "bicubic_mae": bic["mae"],
        "nearest_rmse": near["rmse"],
        "nearest_mae": near["mae"],
        "bicubic_cell_mass_rmse": cell["rmse"],
        "bicubic_cell_mass_mae": cell["mae"],
        "crps_beats_bicubic_mae": ens["crps"] < bic["mae"],
        "mean_rmse_beats_bicubic": mean["rmse"] < bic["rmse"],
        "crps_beats_bicubic_cell_mass_mae": ens["crps"] < cell["mae"],
        "mean_rmse_beats_bicubic_cell_mass": mean["rmse"] < cell["rmse"],
        "mean_rmse_beats_untrained": mean["rmse"] < untrained["rmse"],
        "lsd_db": {k: f[k]["lsd_db"] for k in ("ensemble", "mean", "bicubic", "nearest")},
        "untrained_mean_rmse": untrained["rmse"],
        "untrained_mean_mae": untrained["mae"],
        "references": refs,
        "training_radar_validation": in_domain,
        "validation_loss": {stage: val_curve(run_dir, stage) for stage in ("mean", "diffusion")},
        "spread_calibration": json.loads((run_dir / "diffusion" / "export" / "model.json").read_text()).get(
            "spread_calibration"
        ),
        "rank_histogram_png": shown(copy / "rank_histogram.png"),
        "report": shown(copy / "report.md"),
        "run_dir": str(run_dir),
        "ensemble_file": str(ensemble),
        "seconds": timing,
        "criteria": checks,
        "all_met": all(c["met"] for c in checks.values()),
    }


def interval(calibration: dict, at: str) -> str:
    """'[lo, hi]': the bootstrap interval of the spread/skill the calibration recorded at 'one' or 'gain'."""
    lo_hi = calibration.get(f"spread_skill_interval_at_{at}")
    return f"[{lo_hi[0]:.2f}, {lo_hi[1]:.2f}]" if lo_hi else ""


def markdown(rows: list[dict]) -> str:
    head = (
        "| pair | ensemble CRPS | bicubic MAE | CRPS < MAE | mean-net RMSE | bicubic RMSE | RMSE < bicubic | "
        "bicubic + cell mass RMSE / MAE | untrained mean net RMSE | nearest RMSE / MAE | ensemble RMSE | "
        "spread/skill |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['pair']} | {r['ensemble_crps']:.4f} | {r['bicubic_mae']:.4f} | {'yes' if r['crps_beats_bicubic_mae'] else 'NO'} "
        f"| {r['mean_rmse']:.4f} | {r['bicubic_rmse']:.4f} | {'yes' if r['mean_rmse_beats_bicubic'] else 'NO'} "
        f"| {r['bicubic_cell_mass_rmse']:.4f} / {r['bicubic_cell_mass_mae']:.4f} | {r['untrained_mean_rmse']:.4f} "
        f"| {r['nearest_rmse']:.4f} / {r['nearest_mae']:.4f} | {r['ensemble_rmse']:.4f} | {r['spread_skill']:.2f} |\n"
        for r in rows
    )
    domain = "".join(
        f"- {r['pair']} mean network on the training radar's validation patches (cell mass): RMSE "
        f"{r['training_radar_validation']['trained_rmse']:.4f} trained vs "
        f"{r['training_radar_validation']['untrained_rmse']:.4f} before training\n"
        for r in rows
    )
    gains = "".join(
        f"- {r['pair']} spread gain {c['gain']:.3g}, fitted on the training radar's validation patches "
        f"(free fit {c['free_gain']:.3g}, floor {c['min_gain']:g}, nearest point estimate "
        f"{c.get('point_gain', float('nan')):.3g}; fair CRPS {c['crps_at_one']:.4f} -> {c['crps_at_gain']:.4f} mm, "
        f"spread/skill {c['spread_skill_at_one']:.2f} {interval(c, 'one')} -> {c['spread_skill_at_gain']:.2f} "
        f"{interval(c, 'gain')} there)\n"
        for r in rows
        if (c := r["spread_calibration"])
    )
    motions = "".join(
        f"- {r['pair']} {MOTION}: RMSE {m['rmse']:.4f} ({m['rmse'] / r['bicubic_rmse']:.3f} x bicubic), "
        "(the mean network's start with model.mean_skip 'motion')\n"
        for r in rows
        if (m := r["references"].get(MOTION)) and r["pair"].split("_t")[1] != "1"
    )
    ranks = "".join(
        f"- {r['pair']} rank histogram ({r['rank_histogram_png']}): {r['rank_histogram_shape']}\n" for r in rows
    )
    met = "".join(f"- {r['pair']}: {'all criteria met' if r['all_met'] else 'NOT all criteria met'}\n" for r in rows)
    return (
        head
        + body
        + "\nAll values in mm per 10 min on the evaluation crop unless said otherwise.\n\n"
        + ranks
        + gains
        + domain
        + motions
        + "\n## Criteria\n\n"
        + met
        + "\n"
        + criteria_tables(rows)
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--work", default="/tmp/hpcsr_skill_experiment", help="data, runs, samples, logs (default %(default)s)"
    )
    p.add_argument(
        "--out",
        default=str(REPO / "benchmarks" / "results" / "skill_experiment.json"),
        help="result JSON; the .md table and the report folder go beside it (default %(default)s)",
    )
    p.add_argument("--pairs", default="4x1,4x2,8x2", help="factor pairs SxT, comma-separated (default %(default)s)")
    p.add_argument(
        "--mean-steps", type=int, default=400, help="optimiser steps of the mean stage (default %(default)s)"
    )
    p.add_argument(
        "--diffusion-steps",
        type=int,
        default=1200,
        help="steps of the diffusion stage; 600 before s43, when the denoiser was still learning (BoM validation "
        "loss at (4,2) 0.310 after 600 steps, 0.206 after 1200) (default %(default)s)",
    )
    p.add_argument("--widths", default="8,16,32", help="UNet widths per level, model.widths (default %(default)s)")
    p.add_argument(
        "--patch", type=int, default=32, help="HR training patch side, a multiple of 4 (default %(default)s)"
    )
    p.add_argument("--batch", type=int, default=8, help="patches per step (default %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of both stages (default %(default)s)")
    p.add_argument("--warmup", type=int, default=20, help="warm-up steps of both stages (default %(default)s)")
    p.add_argument("--val-every", type=int, default=50, help="steps between validation losses (default %(default)s)")
    p.add_argument(
        "--val-patches",
        type=int,
        default=128,
        help="fixed validation patches, of the mean stage's validation and the spread calibration (default %(default)s)",
    )
    p.add_argument(
        "--members", type=int, default=10, help="ensemble members, >= 10 for the fair CRPS (default %(default)s)"
    )
    p.add_argument(
        "--crop",
        type=int,
        default=128,
        help="side of the evaluation window, 1 km px, a multiple of 4 (default %(default)s)",
    )
    p.add_argument(
        "--tile",
        type=int,
        default=None,
        help="HR side of the sampling tiles (default: the sampler's, the training patch's side; before issue "
        "13's session s27 the whole crop was one tile, which the networks' whole-field GroupNorm statistics "
        "make worse)",
    )
    p.add_argument(
        "--eval",
        choices=sorted(EVAL_FILES),
        default="knmi",
        help="held-out radar network to evaluate on (default %(default)s)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=20,
        help="evaluate on the wettest run of this many consecutive 10-min steps of the window (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="training seed (default %(default)s)")
    p.add_argument(
        "--train-pixels",
        default="2,1",
        help="BoM 500 m pixels averaged per side into one training pixel, comma-separated: the first size's "
        "shard is the training data with its validation split, each further size's train split joins "
        "the training data (data.extra_shards, each size drawn equally often); 1 is 500 m, 2 the "
        "evaluation radars' 1 km (default %(default)s)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for both training stages, e.g. model.norm=pixel (repeatable; part of the run's tag)",
    )
    p.add_argument(
        "--dequantise-train",
        type=float,
        default=0.0,
        metavar="Q",
        help=f"dequantise the training radar, which rounds to multiples of Q mm ({BOM_ROUNDING_MM} for BoM), on "
        "ingest (hpcsr-preprocess ingest --dequantise); measured in s42, not the default (README 'Skill on real "
        "radar'); 0: off (default %(default)s)",
    )
    p.add_argument(
        "--train-extra",
        default="none",
        help="more radar networks whose every step joins the training data (data.extra_shards): 'none', "
        f"'others' (all of {', '.join(EXTRA_TRAIN)} but --eval's) or a comma list (default %(default)s)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="pairs worked on at once, one single-thread process each (default %(default)s)",
    )
    p.add_argument("--quick", action="store_true", help=f"the full path in minutes: {QUICK} (no verdict)")
    a = p.parse_args(argv)
    if a.quick:
        for key, value in QUICK.items():
            setattr(a, key, value)
    eval_file = EVAL_FILES[a.eval]
    networks = extra_networks(a.train_extra, a.eval)
    a.train_extra = ",".join(networks) or "none"  # resolved, so the training tag names the data
    extra_files = [f for n in networks for f in EXTRA_TRAIN[n]]
    missing = [f for f in (TRAIN_FILE, eval_file, *extra_files) if not (DATA / f).is_file()]
    if missing:
        print(
            f"skipped: {', '.join(missing)} absent from {DATA} (the shared real-data folder ../shared/data is needed)",
            file=sys.stderr,
        )
        return 2
    pairs = [x.strip() for x in a.pairs.split(",") if x.strip()]
    for pair in pairs:
        s = int(pair.split("x")[0])
        if a.patch % s or a.patch % 4 or a.crop % s or a.crop % 4:
            p.error(f"--patch {a.patch} and --crop {a.crop} must be multiples of 4 and of s={s} (pair {pair})")
    from hpcsr.config import compose

    a.defaults = compose(["model=tiny"]).hash()
    work, out = Path(a.work), Path(a.out)
    results = out.with_suffix("")
    started = time.monotonic()
    log(
        f"preprocessing {TRAIN_FILE} (training) and {eval_file} (evaluation) at {CADENCE_MIN}-min steps into {work / 'data'}"
    )
    sizes = pixel_sizes(a.train_pixels)
    a.train_pixels = ",".join(map(str, sizes))  # normalised, so the training tag names the data
    data, *more_sizes = [preprocess_train(work, pairs, pixels, a.dequantise_train) for pixels in sizes]
    eval_store = preprocess_eval(work, eval_file)
    extra = more_sizes + preprocess_extra(work, pairs, networks)
    if networks:
        log(f"extra training data (every step): {', '.join(extra_files)}")
    crop = work / "data" / f"eval_{a.eval}_crop{a.crop}_steps{a.steps}.nc"
    a.block = int(np.lcm.reduce([int(p.split("x")[1]) for p in pairs]))
    window = write_crop(eval_store, crop, a.crop, a.steps, eval_file, a.block)
    log(
        f"evaluation crop {crop}: rows {window['rows']}, cols {window['cols']} of {eval_file}, steps {window['steps']}, "
        f"wet fraction {window['wet_fraction']:.2f}"
    )
    with ThreadPoolExecutor(a.jobs) as pool:
        rows = list(pool.map(lambda pair: one_pair(pair, a, data, extra, crop, work, results), pairs))
    table = markdown(rows)
    print("\n" + table)
    figures = []
    for r in rows:
        figures.append(
            figure(
                f"{r['pair']} ensemble fair CRPS vs bicubic MAE",
                "mm per 10 min",
                [r["ensemble_crps"]],
                "bicubic + linear in time, MAE",
                [r["bicubic_mae"]],
                higher_is_better=False,
                target_ratio=1.0,
                pair=r["pair"],
            )
        )
        figures.append(
            figure(
                f"{r['pair']} mean-network RMSE vs bicubic RMSE",
                "mm per 10 min",
                [r["mean_rmse"]],
                "bicubic + linear in time, RMSE",
                [r["bicubic_rmse"]],
                higher_is_better=False,
                target_ratio=1.0,
                pair=r["pair"],
            )
        )
    meta = {
        "experiment": "skill on real data: train on one radar network, evaluate on another",
        "train_data": str(DATA / TRAIN_FILE),
        "extra_train_data": [str(DATA / f) for f in extra_files],
        "eval_data": str(DATA / eval_file),
        "cadence_minutes": CADENCE_MIN,
        "split_bounds": SPLIT,
        "eval_window": window,
        "settings": vars(a),
        "pairs": rows,
        "all_met": all(r["all_met"] for r in rows),
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    written = write_result(out, "skill_experiment", figures, a.quick, meta)
    from hpcsr.atomic import write_text_atomic

    title = f"# Skill on real data ({'quick run, no verdict' if a.quick else run_name(a, p)})\n\n"
    at = " and ".join({1: "500 m", 2: "1 km"}[x] for x in sizes)
    trained_on = ", ".join([f"{TRAIN_FILE} at {at}", *(f"{f} (every step)" for f in extra_files)])
    source = f"Trained on {trained_on}, evaluated on {eval_file} (rows {window['rows']}, cols {window['cols']}, steps {window['steps']}).\n\n"
    write_text_atomic(out.with_suffix(".md"), title + source + table)
    log(
        f"wrote {written}, {out.with_suffix('.md')} and the reports under {results}; all criteria met: {meta['all_met']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
