"""Seed exports: a source's weights made into the starting point of another factor pair's run.

`make_seed(source, to, out, strategy)` builds the target pair's model (its recipe: L, beta range,
mass f; the source's architecture unless another is given), fills it by the strategy
(hpcsr.transfer.strategies), and writes
    <out>              an export that `train.init_from` accepts (hpcsr.export format, stage
                       'seed', step 0), metadata with the transfer, the freeze spec if any and the
                       lineage: the source's ancestors, the source (role 'transfer:<strategy>'), the seed
    <out>.json         its metadata (as every export)
    <out>.report.json  the report: every tensor copied / adapted / re-initialised / dropped
The report is written also when the transfer is refused; the seed only when it is made. A refusal
never touches an earlier seed at <out>: its report then goes to <out>.refused.json, so the seed and
the report beside it always describe the same transfer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from hpcsr import export as exports
from hpcsr.artifacts import code_version, json_hash
from hpcsr.atomic import write_json_atomic
from hpcsr.config import build
from hpcsr.factors import FactorPair, Recipe
from hpcsr.factors import recipe as recipe_of
from hpcsr.models import build_model
from hpcsr.models.config import ModelConfig
from hpcsr.train.freeze import FreezeSpec, check_prefixes
from hpcsr.transfer.report import TransferReport
from hpcsr.transfer.sources import Source, load_source
from hpcsr.transfer.strategies import NEEDS_METADATA, STRATEGIES, check, match_tensors, model_differences

SEED_STAGE = "seed"
DEFAULT_MAX_REINIT = 0.1  # share of the target's parameters a transfer may re-initialise


@dataclass
class SeedResult:
    path: Path  # the seed export
    report_path: Path
    report: TransferReport


def report_path_for(out) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".report.json")


def _recipe_dict(r: Recipe) -> dict:
    return {**exports.recipe_to_dict(r), "mass_label": r.mass.label}


def make_seed(
    source,
    to,
    out,
    strategy: str = "transfer",
    *,
    model=None,
    recipe: Recipe | None = None,
    future_context: int | None = None,
    max_reinit: float = DEFAULT_MAX_REINIT,
    force: bool = False,
    freeze: FreezeSpec | None = None,
    init_seed: int = 0,
    stage: str | None = None,
    weights: str = "ema",
) -> SeedResult:
    """Make the seed export `out` for pair `to` from `source` (a path or a Source). Raises
    TransferRefused (report saved) or ValueError / SourceError on bad input."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} unknown: choose one of {', '.join(STRATEGIES)}")
    if not 0.0 <= max_reinit <= 1.0:
        raise ValueError(f"max_reinit={max_reinit} must be a share in [0, 1] of the target's parameters")
    if (strategy == "freeze") != (freeze is not None):
        raise ValueError("strategy freeze needs a freeze spec (steps, prefixes), and only it takes one")
    target = FactorPair.parse(to)
    target_recipe = recipe or recipe_of(target.s, target.t)
    if target_recipe.pair != target:
        raise ValueError(f"recipe is for {target_recipe.pair.name}, the target pair is {target.name}")
    src = source if isinstance(source, Source) else load_source(source, stage, weights)
    if strategy in NEEDS_METADATA and src.kind == "state_dict":
        raise ValueError(
            f"strategy {strategy} needs an hpcsr export or checkpoint (its model config and lineage); "
            f"{src.path} is a bare state dict: use --strategy weights_only or transfer"
        )
    model_cfg = model if model is not None else _source_model(src)
    if future_context is None:
        future_context = int(src.metadata.get("future_context") or 0)

    torch.manual_seed(init_seed)
    target_model = build_model(model_cfg, target_recipe, future_context)
    src_recipe = src.recipe
    lt_changed = src_recipe is None or (src_recipe.context, src_recipe.pair.t) != (target_recipe.context, target.t)
    report = TransferReport(
        strategy,
        src.describe(),
        {
            "pair": target.name,
            "recipe": _recipe_dict(target_recipe),
            "model": dataclasses.asdict(model_cfg),
            "future_context": future_context,
        },
        max_reinit,
    )
    source_beta = f"beta {src_recipe.beta_start:g}..{src_recipe.beta_end:g}" if src_recipe else None
    state = match_tensors(strategy, src.state_dict, target_model, report, lt_changed, source_beta)
    report.notes += _notes(src, target_recipe, lt_changed)
    rpath = report_path_for(out)
    try:
        check(strategy, report, force, model_differences(src.model, model_cfg))
        if freeze is not None:
            check_prefixes(freeze, [n for n, _ in target_model.named_parameters()])
    except ValueError as err:
        if report.status != "refused":
            report.status, report.error = "refused", str(err)
        if Path(out).exists():  # an earlier seed stays with its own report
            rpath = Path(out).with_name(Path(out).stem + ".refused.json")
            err.args = (
                f"{err.args[0] if err.args else err} (the earlier seed {out} and its report are kept; this "
                f"refusal's report: {rpath})",
            ) + tuple(err.args[1:])
        _write_report(rpath, report)
        raise
    target_model.load_state_dict(state, strict=True)
    metadata = _metadata(src, strategy, target_recipe, model_cfg, future_context, report, freeze, Path(out))
    path = exports.write_export(out, target_model.state_dict(), metadata)
    _write_report(rpath, report)
    return SeedResult(path, rpath, report)


def _source_model(src: Source):
    if not src.model:
        raise ValueError(
            f"{src.path} carries no model config: give the target's (e.g. model=tiny, or "
            "model.widths=[...] on the command line)"
        )
    return build(ModelConfig, dict(src.model), "model")


def _notes(src: Source, target: Recipe, lt_changed: bool) -> list[str]:
    notes = []
    r = src.recipe
    if r is not None:
        notes.append(
            f"source pair {r.pair.name} (L={r.context}, t={r.pair.t}, beta_end={r.beta_end}) -> target "
            f"{target.pair.name} (L={target.context}, t={target.pair.t}, beta_end={target.beta_end})"
        )
    if lt_changed:
        notes.append(
            "no weight depends on L or t: frame times are embedded in LR-block units and the heads run per "
            "output frame, so context and output lengths change without adapting any tensor; s only sets "
            "the LR-to-HR interpolation (no weights)"
        )
    if src.stage and src.metadata.get("trained") is not None:
        untrained = {"mean_net", "denoiser"} - set(src.metadata["trained"])
        if src.stage == "mean" and untrained:
            notes.append(
                f"the source is a {src.stage}-stage run: {', '.join(sorted(untrained))} was not trained "
                "there (its tensors are the source's initialisation)"
            )
    return notes


def _metadata(
    src: Source,
    strategy: str,
    target: Recipe,
    model_cfg,
    future_context: int,
    report: TransferReport,
    freeze: FreezeSpec | None,
    out: Path,
) -> dict:
    spec = {
        "strategy": strategy,
        "source": src.describe(),
        "target": target.pair.name,
        "recipe": exports.recipe_to_dict(target),
        "model": dataclasses.asdict(model_cfg),
        "freeze": freeze.to_dict() if freeze else None,
    }
    if src.kind == "state_dict":
        spec["source"]["sha256"] = src.lineage("x")[0]["sha256"]
    config_hash = json_hash(spec)
    metadata = {
        "format": exports.EXPORT_FORMAT,
        "format_version": exports.EXPORT_VERSION,
        "stage": SEED_STAGE,
        "trained": [],
        "pair": {"s": target.pair.s, "t": target.pair.t, "name": target.pair.name},
        "recipe": exports.recipe_to_dict(target),
        "model": dataclasses.asdict(model_cfg),
        "future_context": future_context,
        "step": 0,
        "samples_seen": 0,
        "config_hash": config_hash,
        "code_version": code_version(),
        "transfer": {**spec, "summary": report.summary(), "status": report.status, "report": str(report_path_for(out))},
    }
    if src.metadata.get("normalisation"):
        metadata["normalisation"] = src.metadata["normalisation"]  # what the copied weights were trained under
    if freeze is not None:
        metadata["freeze"] = freeze.to_dict()
    metadata["lineage"] = src.lineage(f"transfer:{strategy}") + [exports.lineage_entry("self", metadata, out)]
    return metadata


def _write_report(path: Path, report: TransferReport) -> None:
    write_json_atomic(path, report.to_dict(), default=str)
