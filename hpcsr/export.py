"""Consolidated fp32 exports of a trained stage: the file hpcsr.train writes and sampling, transfer,
the launcher, the demo and the benchmarks read. It lives beside hpcsr.artifacts (the run layout),
not in hpcsr.train, so that its readers do not depend on training.

`<stage folder>/export/model.pt` (final) and `model_step_<N>.pt` (milestones), each a torch file
    {'format': 'hpcsr-export', 'format_version': 1,
     'state_dict': SRModel weights in fp32, the denoiser's EMA average substituted when kept,
     'raw_state_dict': the optimised weights when they differ from state_dict (EMA), else absent,
     'metadata': see below}
with the metadata also written beside it as JSON (`model.json`), for people and tools, plus the
SHA-256 of the torch file (`file_sha256`, in the JSON only): `load_export` reads the file once,
checks it against that digest and refuses a damaged export by name.
Metadata: stage, trained submodules, pair {s, t, name}, recipe (L, beta range, mass f, patch),
model (ModelConfig fields), future_context, normalisation {kind, shift, scale, stats (the shard's
train-split statistics)}, step, samples_seen, config_hash, config, code_version, ema, shard,
lineage (oldest first: every export this one descends from, each {role, stage, pair, step,
config_hash, export}; this export is the last entry, role 'self').

The weights come from the DeepSpeed checkpoint of the same step (DeepSpeed's zero_to_fp32 merges
the fp32 master weights of every rank and ZeRO stage), so an export is exactly a checkpoint.

`init_from_export(model, path)` is the initialisation hook of `train.init_from`: a strict copy of
every tensor with a clear error for missing keys or other shapes. The transfer step
(hpcsr.transfer) builds its strategies on the same loaders.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from hpcsr.artifacts import EXPORT_DIR
from hpcsr.artifacts import EXPORT_NAME as FINAL_NAME
from hpcsr.atomic import AtomicPath, write_json_atomic
from hpcsr.config import build
from hpcsr.data.normalise import Normaliser
from hpcsr.factors import FactorPair, MassFunction, Recipe
from hpcsr.models import build_model
from hpcsr.models.config import ModelConfig

EXPORT_FORMAT = "hpcsr-export"
EXPORT_VERSION = 1


LOCAL_SCALE_BUFFERS = ("residual_coef", "residual_dry")  # unused by a model with the global residual scale


class ExportError(ValueError):
    """An export that cannot be used here; the message names the file and the fix."""


# ModelConfig keys added after the first export format, each with the behaviour of the code before it:
# an export or checkpoint that names none of them was trained so. A key added to ModelConfig needs an
# entry here, or a run stopped before it cannot resume (tests/test_train_units.py checks the list).
LEGACY_MODEL = {
    "residual_norm": "global",  # before the local residual scale
    "residual_edge": "pixel",  # before the cell-averaged edge
    "norm": "group",  # before the per-pixel normalisation option (group was the only one)
    "mean_skip": "hold",  # before the linear-in-time start
    "start_unit": "network",  # before the start's own space (s53)
    "sigma_data": 1.0,  # before EDM's preconditioning option (1: plain v-prediction)
    "dry_offset": 0.0,  # before the dry level option (s56: dry at the 0 mm level)
    "downsample": "strided",  # before the pooled downsampling (s44)
    "pixel_input": False,  # before the networks could be told the pixel size (s58)
}


def recorded_model(record: dict) -> dict:
    """An export's (or checkpoint's) model record with the values it was trained with where it names
    none: a key added to ModelConfig later defaults to the old behaviour (LEGACY_MODEL), not the new
    default."""
    return {**LEGACY_MODEL, **record}


def recipe_to_dict(recipe: Recipe) -> dict:
    return {
        "s": recipe.pair.s,
        "t": recipe.pair.t,
        "context": recipe.context,
        "beta_start": recipe.beta_start,
        "beta_end": recipe.beta_end,
        "mass": dataclasses.asdict(recipe.mass),
        "patch": recipe.patch,
        "published": recipe.published,
        "mass_scale": recipe.mass_scale,
    }


def recipe_from_dict(d: dict) -> Recipe:
    return Recipe(
        FactorPair(int(d["s"]), int(d["t"])),
        int(d["context"]),
        float(d["beta_start"]),
        float(d["beta_end"]),
        MassFunction(**d["mass"]),
        int(d["patch"]),
        bool(d["published"]),
        str(d.get("mass_scale", "image")),
    )  # exports made before the scale was recorded sampled 'image'


def strip_prefix(state_dict: dict, prefix: str) -> dict:
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state_dict.items()}


def consolidated_fp32(checkpoint_root: Path, tag: str) -> dict:
    """Whole fp32 tensors of a DeepSpeed checkpoint (any ZeRO stage and world size), keys as saved."""
    # lazy for start-up cost only: DeepSpeed takes seconds to import and sampling never needs it
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    with contextlib.redirect_stdout(io.StringIO()):
        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_root), tag=tag)
    return {k: v.float().contiguous() for k, v in state.items()}


def write_export(path, state_dict: dict, metadata: dict, raw_state_dict: dict | None = None) -> Path:
    """Write an export (torch file + JSON metadata beside it), each atomically. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "state_dict": {k: v.detach().float().cpu().contiguous() for k, v in state_dict.items()},
        "metadata": metadata,
    }
    if raw_state_dict is not None:
        blob["raw_state_dict"] = {k: v.detach().float().cpu().contiguous() for k, v in raw_state_dict.items()}
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    data = buffer.getvalue()
    with AtomicPath(path) as tmp:
        tmp.write_bytes(data)
    write_json_atomic(
        path.with_suffix(".json"), {**metadata, "file_sha256": hashlib.sha256(data).hexdigest()}, default=str
    )
    return path


def resolve_export(path) -> Path:
    """An export file from a path to it, to an export/ folder, or to a stage folder."""
    path = Path(path)
    for candidate in (path, path / FINAL_NAME, path / EXPORT_DIR / FINAL_NAME):
        if candidate.is_file():
            return candidate
    raise ExportError(
        f"no export at {path} (looked for {path}, {path / FINAL_NAME}, {path / EXPORT_DIR / FINAL_NAME}): "
        "point to a model.pt written by `hpcsr train`, or train that stage first"
    )


@dataclass(frozen=True)
class Export:
    """A loaded export: weights, metadata and what sampling needs, rebuilt from the metadata."""

    path: Path
    state_dict: dict
    metadata: dict
    raw_state_dict: dict | None = None

    @property
    def pair(self) -> FactorPair:
        return FactorPair(int(self.metadata["pair"]["s"]), int(self.metadata["pair"]["t"]))

    @property
    def recipe(self) -> Recipe:
        return recipe_from_dict(self.metadata["recipe"])

    @property
    def model_config(self) -> ModelConfig:
        return build(ModelConfig, recorded_model(self.metadata["model"]), "model")

    @property
    def normaliser(self) -> Normaliser:
        return Normaliser.from_dict(self.metadata["normalisation"])

    @property
    def lineage(self) -> list:
        return list(self.metadata.get("lineage", []))

    def build_model(self):
        """The SRModel of this export with its weights loaded (eval mode, CPU)."""
        normaliser = self.normaliser if "normalisation" in self.metadata else None  # model.start_unit in mm needs it
        model = build_model(self.model_config, self.recipe, int(self.metadata.get("future_context", 0)), normaliser)
        state = self.state_dict
        if model.cfg.residual_norm == "global":  # exports from before the local residual scale lack its buffers
            state = {**{k: v for k, v in model.state_dict().items() if k in LOCAL_SCALE_BUFFERS}, **state}
        load_weights(model, state, str(self.path))
        return model.eval()


def _recorded_digest(path: Path) -> str | None:
    """The file_sha256 of the export's JSON beside it (None when absent: older exports, copies)."""
    try:
        return json.loads(path.with_suffix(".json").read_text()).get("file_sha256")
    except (OSError, ValueError, AttributeError):
        return None


def load_export(path) -> Export:
    """Read and check an export (file, export/ folder or stage folder)."""
    path = resolve_export(path)
    data = path.read_bytes()
    expected = _recorded_digest(path)
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise ExportError(
            f"export {path} is damaged: its SHA-256 differs from the one recorded in "
            f"{path.with_suffix('.json').name} when it was written; re-export it from its checkpoint "
            "(or retrain that stage)"
        )
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as err:
        raise ExportError(f"cannot read export {path}: {err}; the file is damaged or not an hpcsr export") from None
    if not isinstance(blob, dict) or blob.get("format") != EXPORT_FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise ExportError(
            f"{path} is not an hpcsr export (format {found!r}): point to a model.pt written by `hpcsr train`"
        )
    if blob.get("format_version") != EXPORT_VERSION:
        raise ExportError(
            f"{path} is export format version {blob.get('format_version')}, this code reads "
            f"version {EXPORT_VERSION}: re-export it with a matching hpcsr"
        )
    return Export(path, blob["state_dict"], blob["metadata"], blob.get("raw_state_dict"))


def load_weights(model: torch.nn.Module, state_dict: dict, source: str, prefixes: tuple[str, ...] | None = None) -> int:
    """Copy `state_dict` into `model` (only keys under `prefixes` when given), refusing missing keys
    and shape mismatches with one error listing them. Returns the number of tensors copied."""
    own = model.state_dict()
    wanted = [k for k in own if prefixes is None or k.startswith(prefixes)]
    missing = [k for k in wanted if k not in state_dict]
    shapes = [
        (k, tuple(state_dict[k].shape), tuple(own[k].shape))
        for k in wanted
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    unexpected = [k for k in state_dict if k not in own and (prefixes is None or k.startswith(prefixes))]
    if missing or shapes or unexpected:
        lines = [f"{source} does not fit this model:"]
        lines += [f"  missing {k}" for k in missing[:10]]
        lines += [f"  {k}: checkpoint {a} vs model {b}" for k, a, b in shapes[:10]]
        lines += [f"  unexpected {k}" for k in unexpected[:10]]
        lines.append(
            "the architecture (model config) differs: use the model config it was trained with "
            "(see its metadata 'model'), or the transfer step for a partial copy"
        )
        raise ExportError("\n".join(lines))
    with torch.no_grad():
        for k in wanted:
            own[k].copy_(state_dict[k])
    return len(wanted)


def lineage_entry(role: str, metadata: dict, export_path) -> dict:
    return {
        "role": role,
        "stage": metadata.get("stage"),
        "pair": metadata.get("pair", {}).get("name"),
        "step": metadata.get("step"),
        "config_hash": metadata.get("config_hash"),
        "export": str(export_path),
    }


def inherited_lineage(export: Export, role: str) -> list:
    """The lineage a run starting from `export` inherits: its ancestors, then the export itself as `role`."""
    chain = [e for e in export.lineage if e.get("role") != "self"]
    return chain + [lineage_entry(role, export.metadata, export.path)]


def init_from_export(model: torch.nn.Module, path) -> dict:
    """The `train.init_from` hook: load every tensor of the export at `path` into `model` (strict).
    Returns a report {source, pair, loaded, lineage}. The factor pair may differ (the networks'
    shapes do not depend on it); the architecture may not."""
    export = load_export(path)
    loaded = load_weights(model, export.state_dict, str(export.path))
    return {
        "source": str(export.path),
        "pair": export.pair.name,
        "loaded": loaded,
        "lineage": inherited_lineage(export, "init_from"),
    }
