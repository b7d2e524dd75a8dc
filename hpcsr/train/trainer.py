"""The trainer of one stage, in named phases:

    setup      paths, data, model, then one of: resume (a complete checkpoint exists: it wins over
               every initial-weights option) | initialise (train.init_from, and for the diffusion
               stage the mean stage's export) | fresh start; then the DeepSpeed engine
    train      the step loop: micro-batches, a non-finite loss poisons the step so that ZeRO skips
               it, one all_reduce per step for the loss, the skip count and stop requests
    validate   loss on the fixed validation patches every train.val_every steps
    checkpoint collective save every train.checkpoint_every steps, at a stop request and at the end
    export     consolidated fp32 export at milestones and at the end

Run folder: <run_dir>/<stage>/{checkpoints/step_<N>/, export/model.pt, logs/}.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from hpcsr import exits
from hpcsr import export as exports
from hpcsr.artifacts import code_version, export_path, shard_path
from hpcsr.data.mixed import MixedPatches
from hpcsr.data.normalise import Normaliser
from hpcsr.data.patches import PatchDataset, PatchSpec
from hpcsr.data.sampler import SamplesSeenSampler
from hpcsr.data.store import Shard
from hpcsr.models import build_model, residual_scale
from hpcsr.models.config import resolve_mean_skip
from hpcsr.models.start_space import START_QUANTILE, resolve_start_unit
from hpcsr.pixel_size import grid_level
from hpcsr.train.activation import enable_activation_checkpointing
from hpcsr.train.calibration import fit_spread_gain
from hpcsr.train.checkpoint import CheckpointIncompatible, CheckpointManager, tag_of
from hpcsr.train.ema import ShardedEMA
from hpcsr.train.engine import build_engine
from hpcsr.train.freeze import freeze_for_run
from hpcsr.train.mean_selection import select_mean
from hpcsr.train.metrics import MetricsLog
from hpcsr.train.objective import PREFIX, TRAINED, StageObjective
from hpcsr.train.signals import REQUEUE_EXIT_CODE, StopRequest, ignore_stop_signals

log = logging.getLogger("hpcsr.train")

EXIT_DIVERGED = exits.DIVERGED  # too many non-finite losses in a row; the last checkpoint is intact
EXIT_SAVE_FAILED = exits.SAVE_FAILED  # training ended but its final checkpoint could not be written


@dataclass
class RunResult:
    """How a call of `hpcsr.train.run` ended. `requeue`: checkpointed after a stop request."""

    status: str  # 'complete', 'requeue', 'diverged' or 'save_failed'
    exit_code: int  # 0, REQUEUE_EXIT_CODE (3), EXIT_DIVERGED (4), EXIT_SAVE_FAILED (5)
    step: int
    samples_seen: int
    stage_dir: Path
    export: Path | None
    message: str

    @property
    def requeue(self) -> bool:
        return self.status == "requeue"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(requeue=self.requeue, stage_dir=str(self.stage_dir), export=str(self.export) if self.export else None)
        return d


@dataclass
class TrainState:
    """Progress that the checkpoint's client state carries besides DeepSpeed's own."""

    samples_seen: int = 0
    skipped_total: int = 0
    bad_in_row: int = 0
    lineage: list = dataclasses.field(default_factory=list)


TRAIN_NOISE, VAL_NOISE = 0, 1  # noise streams
RESIDUAL_PATCHES = 64  # training patches over which a diffusion stage measures the residual's std


def stacked(items: list[dict]) -> tuple[torch.Tensor, ...]:
    """The (lr, hr) batch tensors of PatchDataset items, and their mean-network start when they carry one."""
    return tuple(torch.stack([x[k] for x in items]) for k in ("lr", "hr", "start") if k in items[0])


def item_batches(data, n: int, b: int):
    """Items 0..n-1 of `data` in lists of b (generated, so few are held at once)."""
    for start in range(0, n, b):
        yield [data[i] for i in range(start, min(start + b, n))]


def first_batches(data, n: int, b: int):
    """(lr, hr[, start]) batches of items 0..n-1 of `data`, b at a time."""
    for items in item_batches(data, n, b):
        yield stacked(items)


def noise_generator(seed: int, stream: int, step: int, rank: int, micro: int) -> torch.Generator:
    """The diffusion noise of one micro-batch: a function of (seed, stream, step, rank, micro-batch)
    only, so a resumed run draws exactly the noise an uninterrupted one would."""
    value = np.random.SeedSequence([seed, stream, step, rank, micro]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(value[0]) << 32 | int(value[1]))


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _all_reduce(values: list[float], op=None) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t.tolist()


class Trainer:
    """One stage on this rank. `stop`: a StopRequest installed earlier (default: installed now)."""

    def __init__(self, cfg, info, stop: StopRequest | None = None):
        self.cfg, self.info = cfg, info
        self.rank, self.world = info.rank, info.world_size
        self.stage = cfg.train.stage
        self.stage_dir = Path(cfg.run_dir) / self.stage
        self.ckpt = CheckpointManager(self.stage_dir / "checkpoints", cfg.train.keep_checkpoints, self.rank, self.world)
        self.recipe = cfg.factor.recipe()
        self.state = TrainState()
        self.ema = None
        self.metrics = None
        self.stop = stop or StopRequest()  # a signal during setup is honoured at the first step
        self.resumed_from = None
        self.freeze = None

    # ------------------------------------------------------------------ setup

    def shard_path(self) -> Path:
        default = shard_path(self.cfg.data_dir, self.recipe.pair)
        path = Path(self.cfg.data.shard) if self.cfg.data.shard else default
        if not path.is_file():
            raise FileNotFoundError(
                f"shard {path} for factor pair {self.recipe.pair.name} does not exist: run "
                f"`hpcsr-preprocess` with this pair, or set data.shard / data_dir"
            )
        return path

    def extra_shard_paths(self) -> list[Path]:
        """data.extra_shards, each checked to exist."""
        missing = [p for p in self.cfg.data.extra_shards if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(
                f"data.extra_shards names shards that do not exist: {', '.join(missing)}; run "
                f"`hpcsr-preprocess shards` with pair {self.recipe.pair.name} on those stores, or drop them"
            )
        return [Path(p) for p in self.cfg.data.extra_shards]

    def train_patches(self, stream: str, augment: bool):
        """The train split's patches under `stream`: of data.shard, or mixed with data.extra_shards in
        proportion to their numbers of distinct patches or equally (data.mix, hpcsr.data.mixed)."""
        cfg = self.cfg
        parts = [
            PatchDataset(
                path,
                self.spec,
                "train",
                self.normaliser,
                cfg.seed,
                cfg.data.min_valid,
                stream,
                cfg.data.wet_bias,
                augment,
            )
            for path in [self.shard_path(), *self.extra_shard_paths()]
        ]
        return parts[0] if len(parts) == 1 else MixedPatches(parts, cfg.seed, parts[0].stream, cfg.data.mix)

    def _marker_extra(self) -> dict:
        cfg = self.cfg
        return {
            "stage": self.stage,
            "pair": self.recipe.pair.name,
            "model": dataclasses.asdict(cfg.model),
            "zero_stage": cfg.deepspeed.zero_stage,
            "precision": cfg.deepspeed.precision,
            "config_hash": cfg.hash(),
            "samples_seen": self.state.samples_seen,
            "code_version": self.code_version,
            "freeze": self.freeze.to_dict() if self.freeze else None,
        }

    def check_compatible(self, marker: dict, where) -> None:
        """Refuse a checkpoint of another factor pair, architecture or stage, naming both."""
        mine = {"pair": self.recipe.pair.name, "model": dataclasses.asdict(self.cfg.model), "stage": self.stage}
        theirs = {k: marker.get(k) for k in mine}
        theirs["model"] = {  # a key its code did not know yet: the value it was trained with
            k: (list(v) if isinstance(v, (list, tuple)) else v)
            for k, v in exports.recorded_model(theirs["model"] or {}).items()
        }
        mine["model"] = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in mine["model"].items()}
        diffs = []
        if theirs["pair"] != mine["pair"]:
            diffs.append(f"factor pair {theirs['pair']} (checkpoint) vs {mine['pair']} (this run)")
        if theirs["stage"] != mine["stage"]:
            diffs.append(f"stage {theirs['stage']} (checkpoint) vs {mine['stage']} (this run)")
        for key in sorted(set(theirs["model"]) | set(mine["model"])):
            if theirs["model"].get(key) != mine["model"].get(key):
                diffs.append(
                    f"model.{key}={theirs['model'].get(key)} (checkpoint) vs {mine['model'].get(key)} (this run)"
                )
        if diffs:
            raise CheckpointIncompatible(
                f"checkpoint {where} does not belong to this run: "
                + "; ".join(diffs)
                + ". Use another run_dir for this configuration, or the settings it was made with."
            )

    def setup(self) -> None:
        cfg = self.cfg
        torch.use_deterministic_algorithms(cfg.train.deterministic)
        if cfg.model.static_channels:
            raise ValueError(
                f"model.static_channels={cfg.model.static_channels}: the training data provide no static "
                "fields yet; set it to 0"
            )
        self.code_version = code_version()
        named = [("data.shard", self.shard_path())] + [("data.extra_shards", p) for p in self.extra_shard_paths()]
        levels = []  # model.pixel_input: log2 km of each shard's HR pixel, data.shard first
        for key, path in named:
            with Shard(path) as shard:
                if cfg.model.pixel_input:
                    levels.append(grid_level(shard.data_grid(), f"{key} {path}"))
                if shard.pair != self.recipe.pair:
                    raise ValueError(
                        f"{key}: shard {path} holds factor pair {shard.pair.name}, this run is "
                        f"{self.recipe.pair.name}: give the {self.recipe.pair.name} shard of that store"
                    )
                if key == "data.shard":
                    self.shard_stats = dict(shard.stats)
                    self.data_grid = shard.data_grid()
                    histogram = shard.hr_histogram()
                    skip = resolve_mean_skip(cfg.model.mean_skip, self.recipe.pair.t, shard.interval_minutes)
        self.shard_pixel_levels = torch.tensor(levels) if levels else None
        if skip != cfg.model.mean_skip:  # 'auto' from the data's step: the model, checkpoints and exports say which
            lr_step = self.recipe.pair.t * self.data_grid["interval_minutes"]
            log.info("model.mean_skip auto -> %s (LR step %d min)", skip, lr_step)
            self.cfg = cfg = type(cfg)(**{**vars(cfg), "model": dataclasses.replace(cfg.model, mean_skip=skip)})
        unit = resolve_start_unit(cfg.model.start_unit, histogram)
        if unit != cfg.model.start_unit:  # 'auto' from the train split: the model, checkpoints and exports say which
            log.info("model.start_unit auto -> %.4g mm (%g quantile of the wet HR amounts)", unit, START_QUANTILE)
            self.cfg = cfg = type(cfg)(**{**vars(cfg), "model": dataclasses.replace(cfg.model, start_unit=unit)})
        self.normaliser = Normaliser.from_stats(self.shard_stats, cfg.data.normalisation, cfg.data.log_unit, histogram)

        # the newest complete checkpoint wins over every initial-weights option
        self.resumed_from = self.ckpt.latest()
        universal = False
        if self.resumed_from is not None:
            self.check_compatible(self.resumed_from.marker, self.resumed_from.path)
            universal = self.ckpt.needs_universal(self.resumed_from, cfg.deepspeed.zero_stage)
            if universal:
                self.ckpt.prepare_universal(self.resumed_from)

        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        if self.shard_pixel_levels is not None:
            log.info(
                "model.pixel_input: HR pixels of 2^(%s) km",
                ", ".join(f"{v:.3f}" for v in self.shard_pixel_levels.tolist()),
            )
        self.model = self.new_model()
        self.train_data = self.train_patches("train", cfg.data.augment)
        if self.resumed_from is None:
            self.initialise_weights()
            if "denoiser" in TRAINED[self.stage]:
                self.measure_residual_std()
        if cfg.deepspeed.activation_checkpointing:
            enable_activation_checkpointing(self.model)
        objective = StageObjective(
            self.model,
            self.stage,
            autocast_bf16=cfg.deepspeed.precision == "bf16",
            normaliser=self.normaliser,
            mm_weight=cfg.train.mean_loss_mm_weight if "mean_net" in TRAINED[self.stage] else 0.0,
            hr_var_mm=float(self.shard_stats.get("hr_std", 0.0)) ** 2,
            levels=cfg.train.levels,
            grid_shift=cfg.train.mean_grid_shift,
        )

        # parameters a transfer seed keeps fixed for its first steps (the marker's record on resume)
        self.freeze = freeze_for_run(cfg.train.init_from, self.resumed_from.marker if self.resumed_from else None)
        if self.freeze:
            log.info(
                "frozen for steps 0..%d: parameters under %s", self.freeze.steps - 1, ", ".join(self.freeze.prefixes)
            )
        self.engine = build_engine(objective, cfg, load_universal=universal, freeze=self.freeze)
        if cfg.train.ema_decay > 0:  # the average of what this stage trains
            trained = tuple(f"{PREFIX}{module}." for module in TRAINED[self.stage])
            named = {n: p for n, p in self.engine.module.named_parameters() if n.startswith(trained)}
            self.ema = ShardedEMA(named, cfg.train.ema_decay)
        if self.resumed_from is not None:
            self.resume(universal)

        log.info(
            "stage %s ready at step %d on %d rank(s): ZeRO %d, %s, %d trainable parameters",
            self.stage,
            self.step,
            self.world,
            cfg.deepspeed.zero_stage,
            cfg.deepspeed.precision,
            sum(p.numel() for p in objective.parameters() if p.requires_grad),
        )
        self.val_data = None
        if cfg.data.val_patches and cfg.train.val_every:
            self.val_data = self.val_dataset()
        if self.rank == 0:
            self.metrics = MetricsLog(self.stage_dir / "logs", resume_step=self.step)
            resumed = str(self.resumed_from.path) if self.resumed_from else None
            self.metrics.record(
                "event",
                self.step,
                {
                    "event": "start",
                    "resumed_from": resumed,
                    "universal": universal,
                    "world_size": self.world,
                    "config_hash": cfg.hash(),
                    "lineage": self.state.lineage,
                },
            )

    def new_model(self):
        """The run's model, told the main shard's HR pixel size (model.pixel_input)."""
        model = build_model(self.cfg.model, self.recipe, self.spec.future, self.normaliser)
        model.pixel_level = None if self.shard_pixel_levels is None else float(self.shard_pixel_levels[0])
        return model

    def tell_pixel(self, source=None) -> None:
        """model.pixel_input: tell the model its items' HR pixel sizes, `source` (B,) each item's shard
        (MixedPatches' 'source'), or the main shard's (None: validation, calibration, one shard)."""
        if self.shard_pixel_levels is None:
            return
        levels = self.shard_pixel_levels
        self.model.pixel_level = float(levels[0]) if source is None else levels[source]

    def told_batches(self, data, n: int, b: int):
        """`first_batches` of `data`, the model told each batch's pixel sizes as the batch is taken."""
        for items in item_batches(data, n, b):
            self.tell_pixel(torch.stack([x["source"] for x in items]) if "source" in items[0] else None)
            yield stacked(items)
        self.tell_pixel()

    def val_dataset(self) -> PatchDataset:
        """The fixed validation patches (items 0..data.val_patches-1 of their own stream)."""
        cfg = self.cfg
        return PatchDataset(
            self.shard_path(), self.spec, "val", self.normaliser, cfg.seed, cfg.data.min_valid, "val", cfg.data.wet_bias
        )

    @property
    def spec(self) -> PatchSpec:
        t = self.recipe.pair.t
        return PatchSpec(
            self.recipe.context,
            self.recipe.patch,
            self.cfg.data.future_frames(t),
            motion_start=self.cfg.model.motion_start(t),
            upsample=self.cfg.model.upsample,
            start_unit=self.cfg.model.start_unit_mm,
        )

    @property
    def step(self) -> int:
        return int(self.engine.global_steps) if hasattr(self, "engine") else 0

    def initialise_weights(self) -> None:
        """No checkpoint: train.init_from (any pair, same architecture), then for the diffusion
        stage the frozen mean network from the mean stage's export (same pair and normalisation)."""
        cfg = self.cfg
        if cfg.train.init_from:
            report = exports.init_from_export(self.model, cfg.train.init_from)
            self.state.lineage += report["lineage"]
            log.info("initialised %d tensors from %s (pair %s)", report["loaded"], report["source"], report["pair"])
        if self.stage == "diffusion":
            source = cfg.train.mean_from or export_path(Path(cfg.run_dir) / "mean")
            try:
                mean_export = exports.load_export(source)
            except exports.ExportError as err:
                raise exports.ExportError(
                    f"the diffusion stage needs the trained mean network: {err} "
                    "(train stage 'mean' first, or set train.mean_from)"
                ) from None
            if mean_export.pair != self.recipe.pair:
                raise exports.ExportError(
                    f"mean export {mean_export.path} is for factor pair {mean_export.pair.name}, "
                    f"this run is {self.recipe.pair.name}: train the mean stage of this pair"
                )
            if mean_export.normaliser != self.normaliser:
                raise exports.ExportError(
                    f"mean export {mean_export.path} was trained with normalisation "
                    f"{mean_export.normaliser}, this run uses {self.normaliser}: use the same shard "
                    "and data.normalisation as the mean stage"
                )
            loaded = exports.load_weights(self.model, mean_export.state_dict, str(mean_export.path), ("mean_net.",))
            self.state.lineage += exports.inherited_lineage(mean_export, "mean_from")
            log.info("frozen mean network: %d tensors from %s", loaded, mean_export.path)

    def measure_residual_std(self) -> None:
        """Before the engine exists (whole weights on every rank): the residual's standard deviation
        over RESIDUAL_PATCHES training patches of their own stream, the same on every rank; the
        denoiser then learns a unit-variance residual whatever the pair and the data."""
        cfg = self.cfg
        data = self.train_patches("residual_std", augment=False)
        self.model.eval()
        dry = float(self.normaliser.forward(torch.zeros(1))[0])
        value = self.model.measure_residual_std(self.told_batches(data, RESIDUAL_PATCHES, cfg.data.batch_size), dry=dry)
        self.model.train()
        data.close()
        log.info(
            "residual std over %d training patches: %.4g (normalised units); %s scale, coefficients %s on %s",
            RESIDUAL_PATCHES,
            value,
            self.model.cfg.residual_norm,
            [round(float(c), 4) for c in self.model.residual_coef],
            list(residual_scale.FEATURES),
        )

    def resume(self, universal: bool) -> None:
        info = self.resumed_from
        client = self.ckpt.load(self.engine, info, universal).get("hpcsr", {})
        self.state = TrainState(**client["state"])
        saved = Normaliser.from_dict(client["normalisation"])
        if saved != self.normaliser:
            log.warning(
                "the shard's statistics changed since %s; keeping the checkpoint's normalisation %s", info.tag, saved
            )
            self.normaliser = saved
            self.engine.module.normaliser = saved  # the mean loss's mm term denormalises with it
        if self.ema is not None and client.get("ema"):
            self.ema.load_full_state(client["ema"])
        if int(self.engine.global_steps) != info.step:
            raise RuntimeError(
                f"checkpoint {info.path} holds DeepSpeed step {self.engine.global_steps}, its marker says {info.step}"
            )
        if client.get("config_hash") != self.cfg.hash() and self.rank == 0:
            log.warning(
                "resuming %s made with config %s under config %s (changed settings apply from here on)",
                info.tag,
                client.get("config_hash"),
                self.cfg.hash(),
            )
        log.info(
            "resumed from %s (step %d, %d samples seen%s)",
            info.path,
            info.step,
            self.state.samples_seen,
            ", universal checkpoint" if universal else "",
        )

    # ------------------------------------------------------------------ data

    def train_loader(self):
        cfg = self.cfg
        sampler = SamplesSeenSampler(cfg.data.batch_size, self.rank, self.world, self.state.samples_seen)
        workers = cfg.data.num_workers
        return DataLoader(
            self.train_data,
            batch_sampler=sampler,
            num_workers=workers,
            worker_init_fn=ignore_stop_signals if workers else None,
            prefetch_factor=cfg.data.prefetch_factor if workers else None,
            multiprocessing_context="fork" if workers else None,
        )

    def val_batches(self) -> list[tuple[list[int], int]]:
        """This rank's validation micro-batches as (items, real count): every rank gets the same
        number of batches (ZeRO-3 runs collectives in forward); padding items count 0."""
        n, b = self.cfg.data.val_patches, self.cfg.data.batch_size
        rounds = math.ceil(n / (b * self.world))
        out = []
        for r in range(rounds):
            start = (r * self.world + self.rank) * b
            items = [i for i in range(start, start + b) if i < n]
            out.append((items or [0], len(items)))
        return out

    # ------------------------------------------------------------------ phases

    def validate(self) -> float:
        self.engine.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for k, (items, real) in enumerate(self.val_batches()):
                lr, hr, *start = stacked([self.val_data[i] for i in items])
                gen = noise_generator(self.cfg.seed, VAL_NOISE, 0, self.rank, k)
                loss, _ = self.engine(lr, hr, gen, *start)
                if real:
                    total += float(loss) * real
                    count += real
        self.engine.train()
        total, count = _all_reduce([total, float(count)])
        return total / max(count, 1)

    def client_state(self) -> dict:
        """Collective (the EMA gathers under ZeRO-3). Per-rank RNG states go to rank_<r>.pt beside it."""
        ema = self.ema.full_state() if self.ema is not None else None
        return {
            "hpcsr": {
                "state": dataclasses.asdict(self.state),
                "normalisation": self.normaliser.to_dict(),
                "normalisation_stats": self.shard_stats,
                "ema": ema,
                "config_hash": self.cfg.hash(),
                "pair": self.recipe.pair.name,
                "recipe": exports.recipe_to_dict(self.recipe),
                "stage": self.stage,
                "code_version": self.code_version,
            }
        }

    def checkpoint(self) -> bool:
        client = self.client_state()
        ok = self.ckpt.save(self.engine, self.step, client, self._marker_extra())
        self._last_client = client
        if self.metrics:
            self.metrics.record(
                "event",
                self.step,
                {"event": "checkpoint" if ok else "checkpoint_failed", "message": self.ckpt.last_error},
            )
        return ok

    def export(self, final: bool) -> Path | None:
        """Rank 0 writes the export of the checkpoint just saved; all ranks agree it worked."""
        tag = tag_of(self.step)
        name = exports.FINAL_NAME if final else f"model_step_{self.step}.pt"
        path = self.stage_dir / exports.EXPORT_DIR / name
        error = None
        if self.rank == 0:
            try:
                self._write_export(path, tag, final)
            except Exception as err:  # reported on every rank below
                error = err
                log.error("export %s failed: %s", path, err)
        failed = _all_reduce([1.0 if error else 0.0], dist.ReduceOp.MAX)[0] > 0
        if failed:
            raise RuntimeError(
                f"export {path} failed ({error or 'see rank 0'}); the checkpoint {tag} is complete: "
                "rerun the same command to export it"
            )
        return path

    def _write_export(self, path: Path, tag: str, final: bool) -> None:
        weights = exports.strip_prefix(exports.consolidated_fp32(self.ckpt.root, tag), PREFIX)
        own = self.model.state_dict()
        missing = [k for k in own if k not in weights]
        if missing and self.cfg.deepspeed.zero_stage < 3:
            # ZeRO 1 does not save frozen parameters separately; the module holds them whole
            module_state = exports.strip_prefix(self.engine.module.state_dict(), PREFIX)
            for k in missing:
                weights[k] = module_state[k].float()
            missing = [k for k in own if k not in weights]
        if missing:
            raise RuntimeError(f"checkpoint {tag} lacks {len(missing)} tensors (e.g. {missing[0]})")
        weights = {k: weights[k] for k in own}
        hp = self._last_client["hpcsr"]
        raw = None
        if hp["ema"] is not None:
            raw = weights
            weights = dict(weights)
            for name, tensor in hp["ema"]["weights"].items():
                weights[name[len(PREFIX) :]] = tensor
        selection = None
        if final and self.stage == "mean":
            weights, selection = self.choose_mean_network(weights)
        cfg = self.cfg
        metadata = {
            "format": exports.EXPORT_FORMAT,
            "format_version": exports.EXPORT_VERSION,
            "stage": self.stage,
            "trained": list(TRAINED[self.stage]),
            "pair": {"s": self.recipe.pair.s, "t": self.recipe.pair.t, "name": self.recipe.pair.name},
            "recipe": exports.recipe_to_dict(self.recipe),
            "model": dataclasses.asdict(cfg.model),
            "future_context": self.spec.future,
            "normalisation": {**self.normaliser.to_dict(), "stats": self.shard_stats},
            "step": self.step,
            "samples_seen": self.state.samples_seen,
            "config_hash": cfg.hash(),
            "config": cfg.to_dict(),
            "code_version": self.code_version,
            "ema": {
                "decay": cfg.train.ema_decay,
                "applied": raw is not None,
                "updates": hp["ema"]["updates"] if hp["ema"] else 0,
            },
            "shard": str(self.shard_path()),
            "extra_shards": list(cfg.data.extra_shards),
            "data_grid": self.data_grid,
            "precision": cfg.deepspeed.precision,
            "zero_stage": cfg.deepspeed.zero_stage,
            "world_size": self.world,
        }
        if selection is not None:
            metadata["mean_selection"] = selection
        if final and "denoiser" in TRAINED[self.stage]:
            metadata["spread_calibration"] = self.calibrate(weights)
        metadata["lineage"] = self.state.lineage + [exports.lineage_entry("self", metadata, path)]
        exports.write_export(path, weights, metadata, raw)
        log.info("exported %s (step %d)", path, self.step)

    def choose_mean_network(self, weights: dict) -> tuple[dict, dict | None]:
        """Rank 0, final export of the mean stage: the trained mean network or its start, whichever
        has the lower loss on the validation patches (hpcsr.train.mean_selection); the weights as
        they are, and no record, without validation patches or with train.keep_better_start off."""
        cfg = self.cfg
        n = cfg.data.val_patches
        if not cfg.train.keep_better_start or not n:
            return weights, None
        model = self.new_model()
        model.load_state_dict(weights)
        model.eval()
        choice = select_mean(model, first_batches(self.val_data or self.val_dataset(), n, cfg.data.batch_size))
        log.info(
            "mean network kept: %s (validation loss on %d patches: trained %.5g, start %.5g)",
            choice.kept,
            choice.patches,
            choice.val_loss_trained,
            choice.val_loss_start,
        )
        if choice.kept == "start":
            state = model.state_dict()
            weights = {k: state[k].detach().float().clone() for k in weights}
        return weights, choice.to_dict()

    def calibrate(self, weights: dict) -> dict | None:
        """Rank 0, final export of a stage that trains the denoiser: the spread gain fitted on the
        validation patches with the sample section's sampler (hpcsr.train.calibration); None without
        validation patches or with train.calibration_members 0."""
        cfg = self.cfg
        members, n = cfg.train.calibration_members, cfg.data.val_patches
        if not members or not n:
            return None
        model = self.new_model()
        model.load_state_dict(weights)
        model.eval()
        batches = first_batches(self.val_data or self.val_dataset(), n, cfg.data.batch_size)
        sc = cfg.sample
        log.info(
            "fitting the spread gain on %d validation patches x %d members (%s, %d steps)",
            n,
            members,
            sc.sampler,
            sc.steps,
        )
        started = time.monotonic()
        fit = fit_spread_gain(
            model,
            batches,
            self.normaliser,
            members,
            sc.sampler,
            sc.steps,
            sc.eta,
            cfg.seed,
            cfg.train.calibration_min_gain,
            cfg.train.calibration_space,
        )
        log.info(
            "spread gain %.3g in %s (free fit %.3g, floor %g; %s, %d steps) on %d validation patches x %d members in "
            "%.0f s: fair CRPS %.4g -> %.4g mm, spread/skill %.2f -> %.2f",
            fit.gain,
            fit.space,
            fit.free_gain,
            fit.min_gain,
            fit.sampler,
            fit.steps,
            fit.patches,
            members,
            time.monotonic() - started,
            fit.crps_at_one,
            fit.crps_at_gain,
            fit.spread_skill_at_one,
            fit.spread_skill_at_gain,
        )
        return fit.to_dict()

    # ------------------------------------------------------------------ the loop

    def train(self) -> RunResult:
        cfg, tc = self.cfg, self.cfg.train
        total = tc.steps
        final_export = export_path(self.stage_dir)
        if self.step >= total:
            # finished before (e.g. a requeue of a completed job): make sure the final export exists
            if self.resumed_from is not None and not final_export.exists():
                self._last_client = self.client_state()
                self.export(final=True)
            self.stop.restore()
            return self._result("complete", 0, final_export, f"stage {self.stage} already complete at step {self.step}")

        self.engine.train()
        gas = cfg.deepspeed.gradient_accumulation
        global_micro = cfg.data.batch_size * self.world
        batches = iter(self.train_loader())
        bar = None
        if self.rank == 0 and tc.progress:
            bar = tqdm(
                total=total,
                initial=self.step,
                desc=f"train {self.stage}",
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
            )
        window_t, window_steps = 0.0, 0
        last_saved = self.resumed_from.step if self.resumed_from else -1
        try:
            while self.step < total:
                t0 = time.perf_counter()
                step = self.step
                sums = [0.0, 0.0, 0.0, 0.0, 0.0]  # loss, mean term, diffusion term, finite micro-batches, non-finite
                for micro in range(gas):
                    batch = next(batches)
                    noise = noise_generator(cfg.seed, TRAIN_NOISE, step, self.rank, micro)
                    start = (batch["start"],) if "start" in batch else ()  # the 'motion' start
                    self.tell_pixel(batch.get("source"))
                    loss, parts = self.engine(batch["lr"], batch["hr"], noise, *start)
                    self.tell_pixel()
                    if torch.isfinite(loss):
                        self.engine.backward(loss)
                        sums[0] += float(loss.detach())
                        sums[1] += float(parts[0].nan_to_num(0.0))
                        sums[2] += float(parts[1].nan_to_num(0.0))
                        sums[3] += 1
                    else:
                        # NaN gradients make every ZeRO stage skip this optimiser step (no update)
                        self.engine.backward(loss * float("nan"))
                        sums[4] += 1
                    self.engine.step()
                applied = self.engine.was_step_applied()
                self.state.samples_seen += global_micro * gas
                if applied and self.ema is not None:
                    self.ema.update()
                loss_sum, mean_sum, diff_sum, n_ok, n_bad, stop = _all_reduce(sums + [float(self.stop.signal)])
                if n_bad and applied:
                    raise RuntimeError(
                        f"DeepSpeed applied step {step} although its loss was not finite: "
                        "use ZeRO stage 1-3 (their overflow check skips such steps)"
                    )
                if applied:
                    self.state.bad_in_row = 0
                else:
                    self.state.bad_in_row += 1
                    self.state.skipped_total += 1
                    if self.metrics:
                        self.metrics.record(
                            "event",
                            self.step,
                            {"event": "skipped_step", "nonfinite_losses": n_bad, "in_a_row": self.state.bad_in_row},
                        )
                    log.warning(
                        "step %d skipped: %d non-finite loss(es) (%d in a row, %d in total)",
                        step,
                        int(n_bad),
                        self.state.bad_in_row,
                        self.state.skipped_total,
                    )
                window_t += time.perf_counter() - t0
                window_steps += 1
                if bar is not None:
                    bar.update(1)
                    if n_ok:
                        bar.set_postfix(loss=f"{loss_sum / n_ok:.4g}")

                if self.state.bad_in_row >= tc.max_bad_steps:
                    done = self.ckpt.latest()
                    msg = (
                        f"stopped at step {self.step}: {self.state.bad_in_row} non-finite losses in a row "
                        f"(train.max_bad_steps={tc.max_bad_steps}); the last checkpoint "
                        f"{done.tag if done else '(none)'} is intact. Lower train.lr or check the data, then resume."
                    )
                    log.error(msg)
                    if self.metrics:
                        self.metrics.record("event", self.step, {"event": "diverged", "message": msg})
                    return self._result("diverged", EXIT_DIVERGED, None, msg)

                if self.step % tc.log_every == 0 or self.step == total:
                    mem = _all_reduce([rss_mb()], dist.ReduceOp.MAX)[0]
                    if self.metrics:
                        self.metrics.record(
                            "train",
                            self.step,
                            {
                                "samples_seen": self.state.samples_seen,
                                "loss": loss_sum / n_ok if n_ok else float("nan"),
                                "loss_mean": mean_sum / n_ok if n_ok and "mean_net" in TRAINED[self.stage] else None,
                                "loss_diffusion": diff_sum / n_ok
                                if n_ok and "denoiser" in TRAINED[self.stage]
                                else None,
                                "lr": float(self.engine.get_lr()[0]),
                                "grad_norm": _grad_norm(self.engine),
                                "samples_per_s": global_micro * gas * window_steps / max(window_t, 1e-9),
                                "step_s": window_t / max(window_steps, 1),
                                "rss_mb_max": mem,
                                "skipped_total": self.state.skipped_total,
                            },
                        )
                    window_t, window_steps = 0.0, 0
                if self.val_data is not None and self.step % tc.val_every == 0:
                    val = self.validate()
                    if self.metrics:
                        self.metrics.record(
                            "val", self.step, {"val_loss": val, "samples_seen": self.state.samples_seen}
                        )

                milestone = tc.export_every and self.step % tc.export_every == 0 and self.step < total
                if stop or self.step % tc.checkpoint_every == 0 or self.step == total or milestone:
                    ok = self.checkpoint()
                    if ok:
                        last_saved = self.step
                        if milestone:
                            self.export(final=False)
                    if stop and self.step < total:
                        number = int(_all_reduce([float(self.stop.signal)], dist.ReduceOp.MAX)[0])
                        name = signal.Signals(number).name if number else "a signal"
                        msg = (
                            f"stop requested ({name} on some rank) at step {self.step}: "
                            + (f"checkpoint {tag_of(self.step)} saved" if ok else self.ckpt.last_error)
                            + "; exiting for a requeue"
                        )
                        log.warning(msg)
                        if self.metrics:
                            self.metrics.record("event", self.step, {"event": "stop_request", "message": msg})
                        return self._result("requeue", REQUEUE_EXIT_CODE, None, msg)
            if last_saved != self.step:
                return self._result(
                    "save_failed",
                    EXIT_SAVE_FAILED,
                    None,
                    f"training reached step {self.step} but its checkpoint could not be saved: "
                    f"{self.ckpt.last_error}. Free space and rerun the same command.",
                )
            path = self.export(final=True)
            return self._result("complete", 0, path, f"stage {self.stage} complete at step {self.step}")
        finally:
            if bar is not None:
                bar.close()
            self.stop.restore()

    def _result(self, status: str, code: int, export, message: str) -> RunResult:
        if self.metrics:
            self.metrics.record("event", self.step, {"event": "end", "status": status, "message": message})
            self.metrics.close()
            self.metrics = None
        return RunResult(status, code, self.step, self.state.samples_seen, self.stage_dir, export, message)


def _grad_norm(engine) -> float | None:
    value = engine.get_global_grad_norm()
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
