"""Where transferred weights come from, read on CPU into one `Source` (fp32 tensors by SRModel name):

- an export (`model.pt` written by `hpcsr train`, an export/ folder or a stage folder holding one);
- a DeepSpeed ZeRO checkpoint tag `<stage>/checkpoints/step_<N>/` (any ZeRO stage and world size,
  merged with DeepSpeed's zero_to_fp32), refused unless its completion marker exists and matches
  its files; a `checkpoints/` folder (or a stage folder without export) gives its newest complete tag;
- a run folder `<run_dir>` holding stage folders: the given stage, else the most trained one
  (joint, then diffusion, then mean) that has an export or a complete checkpoint;
- any other torch file holding a bare state dict (weights only, no metadata).

The denoiser's EMA average replaces its raw weights where the run kept one (`weights='ema'`, as the
export does); `weights='raw'` takes the optimised weights instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from hpcsr import export as exports
from hpcsr.artifacts import export_path, file_sha256
from hpcsr.factors import FactorPair
from hpcsr.train.checkpoint import MARKER, UNIVERSAL_DIR, CheckpointInfo, CheckpointManager
from hpcsr.train.objective import PREFIX, TRAINED

log = logging.getLogger(__name__)

STAGE_PREFERENCE = ("joint", "diffusion", "mean")  # most trained first
WEIGHTS = ("ema", "raw")
MODEL_STATES = "mp_rank_00_model_states.pt"


class SourceError(ValueError):
    """A source that cannot be used; the message names the path and what to do."""


@dataclass
class Source:
    """Weights to transfer and what is known about them (metadata is {} for a bare state dict)."""

    path: Path
    kind: str  # 'export', 'checkpoint' or 'state_dict'
    state_dict: dict
    metadata: dict

    @property
    def pair(self) -> FactorPair | None:
        pair = self.metadata.get("pair")
        return FactorPair(int(pair["s"]), int(pair["t"])) if pair else None

    @property
    def recipe(self):
        return exports.recipe_from_dict(self.metadata["recipe"]) if "recipe" in self.metadata else None

    @property
    def model(self) -> dict | None:
        record = self.metadata.get("model")
        return exports.recorded_model(record) if record else None

    @property
    def stage(self) -> str | None:
        return self.metadata.get("stage")

    def describe(self) -> dict:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "pair": self.pair.name if self.pair else None,
            "stage": self.stage,
            "step": self.metadata.get("step"),
            "config_hash": self.metadata.get("config_hash"),
        }

    def lineage(self, role: str) -> list:
        """The source's ancestors, then the source itself as `role` (a bare file: path and sha256)."""
        if self.kind == "state_dict":
            return [
                {
                    "role": role,
                    "stage": None,
                    "pair": None,
                    "step": None,
                    "config_hash": None,
                    "export": str(self.path),
                    "sha256": file_sha256(self.path),
                }
            ]
        chain = [e for e in self.metadata.get("lineage", []) if e.get("role") != "self"]
        return chain + [exports.lineage_entry(role, self.metadata, self.path)]


def load_source(path, stage: str | None = None, weights: str = "ema") -> Source:
    """Read a source (see the module docstring) on CPU."""
    if weights not in WEIGHTS:
        raise SourceError(
            f"weights={weights!r} unknown: use 'ema' (the denoiser's EMA average where kept, as "
            "exported) or 'raw' (the optimised weights)"
        )
    path = Path(path)
    if not path.exists():
        raise SourceError(
            f"source {path} does not exist: give an export (model.pt), a run or stage folder, or a "
            "checkpoint folder checkpoints/step_<N>"
        )
    if path.is_file():
        return _from_file(path, weights)
    if path.parent.name == UNIVERSAL_DIR or path.name == UNIVERSAL_DIR:
        raise SourceError(
            f"{path} is a DeepSpeed universal checkpoint made for a resume; point at the original "
            f"checkpoint {path.parent.parent / path.name if path.name != UNIVERSAL_DIR else path.parent} instead"
        )
    if (path / MARKER).exists() or (path / MODEL_STATES).exists() or path.name.startswith("step_"):
        return _from_checkpoint(_complete_tag(path), weights)
    if path.name == "checkpoints":
        return _from_checkpoint(_newest_complete(path), weights)
    if (path / exports.FINAL_NAME).is_file() or export_path(path).is_file():
        return _from_file(exports.resolve_export(path), weights)
    if (path / "checkpoints").is_dir():
        return _from_checkpoint(_newest_complete(path / "checkpoints"), weights)
    return _from_run(path, stage, weights)


def _from_run(run: Path, stage: str | None, weights: str) -> Source:
    stages = [stage] if stage else list(STAGE_PREFERENCE)
    for name in stages:
        folder = run / name
        if export_path(folder).is_file():
            return _from_file(export_path(folder), weights)
        if (folder / "checkpoints").is_dir() and CheckpointManager(folder / "checkpoints", 1).complete():
            return _from_checkpoint(_newest_complete(folder / "checkpoints"), weights)
    wanted = f"stage {stage}" if stage else f"any stage ({', '.join(STAGE_PREFERENCE)})"
    raise SourceError(
        f"{run} holds no export and no complete checkpoint of {wanted}: train the source first, or "
        "point at an export or a checkpoint folder"
    )


def _complete_tag(tag: Path) -> CheckpointInfo:
    done = {c.path.resolve(): c for c in CheckpointManager(tag.parent, 1).complete()}
    info = done.get(tag.resolve())
    if info is None:
        others = ", ".join(c.path.name for c in done.values()) or "none"
        raise SourceError(
            f"checkpoint {tag} has no valid completion marker ({MARKER} missing, or its files do not "
            f"match it): the save was interrupted and the checkpoint may be partial. Use a complete "
            f"checkpoint of {tag.parent} (complete: {others}) or the run's export"
        )
    bad = CheckpointManager.verify(info)
    if bad is not None:
        raise SourceError(
            f"checkpoint {tag}: {bad} does not match its SHA-256 in {MARKER} (the file is damaged): use "
            f"another checkpoint of {tag.parent} or the run's export"
        )
    return info


def _newest_complete(root: Path) -> CheckpointInfo:
    """The newest complete checkpoint whose files match their digests (a damaged one is skipped
    with a warning naming the file)."""
    done = CheckpointManager(root, 1).complete()
    if not done:
        raise SourceError(
            f"{root} holds no complete checkpoint (none has its completion marker {MARKER}): "
            "train until a checkpoint is saved, or point at an export"
        )
    for info in reversed(done):
        bad = CheckpointManager.verify(info)
        if bad is None:
            return info
        log.warning(
            "checkpoint %s: %s does not match its SHA-256 in %s (damaged): trying the previous one",
            info.path,
            bad,
            MARKER,
        )
    raise SourceError(
        f"every complete checkpoint of {root} has a damaged file (SHA-256 differs from its marker): "
        "point at the run's export"
    )


def _from_file(path: Path, weights: str) -> Source:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise SourceError(f"cannot read {path}: {err}; the file is damaged or not a torch file") from None
    if isinstance(blob, dict) and blob.get("format") == exports.EXPORT_FORMAT:
        export = exports.load_export(path)
        state = export.state_dict
        if weights == "raw" and export.raw_state_dict is not None:
            state = export.raw_state_dict
        return Source(export.path, "export", {k: v.float() for k, v in state.items()}, dict(export.metadata))
    state = _bare_state_dict(blob)
    if state is None:
        raise SourceError(
            f"{path} holds neither an hpcsr export nor a state dict of tensors: give an export "
            "(model.pt), a checkpoint folder, or a torch file of {name: tensor}"
        )
    return Source(path, "state_dict", state, {})


def _bare_state_dict(blob) -> dict | None:
    """{name: tensor} from a torch file: the dict itself or its 'state_dict' / 'module' / 'model'
    entry, the DeepSpeed prefix `model.` removed when every key has it."""
    if not isinstance(blob, dict):
        return None
    for candidate in (blob, blob.get("state_dict"), blob.get("module"), blob.get("model")):
        if isinstance(candidate, dict) and candidate and all(torch.is_tensor(v) for v in candidate.values()):
            state = {str(k): v.detach().float().cpu() for k, v in candidate.items()}
            if all(k.startswith(PREFIX) for k in state):
                state = exports.strip_prefix(state, PREFIX)
            return state
    return None


def _from_checkpoint(info: CheckpointInfo, weights: str) -> Source:
    """Whole fp32 weights of a complete checkpoint, merged over ranks on CPU, with the metadata its
    marker and client state hold."""
    marker = info.marker
    try:
        states = torch.load(info.path / MODEL_STATES, map_location="cpu", weights_only=False)
        merged = exports.strip_prefix(exports.consolidated_fp32(info.path.parent, info.tag), PREFIX)
    except Exception as err:
        raise SourceError(f"cannot read DeepSpeed checkpoint {info.path}: {err}") from None
    module = exports.strip_prefix(states.get("module") or {}, PREFIX)
    # zero_to_fp32 returns the optimised tensors; under ZeRO 1-2 the module file holds the frozen ones whole
    for name, tensor in module.items():
        if name not in merged and int(marker.get("zero_stage", 1)) < 3:
            merged[name] = tensor.float()
    client = states.get("hpcsr") or {}
    ema = client.get("ema")
    if weights == "ema" and ema:
        for name, tensor in ema["weights"].items():
            merged[name[len(PREFIX) :] if name.startswith(PREFIX) else name] = tensor.float()
    stage = marker.get("stage") or client.get("stage")
    if "recipe" not in client:
        raise SourceError(
            f"checkpoint {info.path} lacks hpcsr's client state (recipe, normalisation): it was not "
            "written by `hpcsr train`; load it as a bare state dict file instead"
        )
    recipe = exports.recipe_from_dict(client["recipe"])
    metadata = {
        "stage": stage,
        "trained": list(TRAINED.get(stage, ())),
        "pair": {"s": recipe.pair.s, "t": recipe.pair.t, "name": recipe.pair.name},
        "recipe": client["recipe"],
        "model": marker.get("model"),
        "normalisation": client.get("normalisation"),
        "step": info.step,
        "samples_seen": marker.get("samples_seen"),
        "config_hash": marker.get("config_hash"),
        "code_version": marker.get("code_version"),
        "zero_stage": marker.get("zero_stage"),
        "world_size": marker.get("world_size"),
        "precision": marker.get("precision"),
        "ema": {"applied": bool(weights == "ema" and ema)},
    }
    lineage = list((client.get("state") or {}).get("lineage", []))
    metadata["lineage"] = lineage + [exports.lineage_entry("self", metadata, info.path)]
    return Source(info.path, "checkpoint", merged, metadata)
