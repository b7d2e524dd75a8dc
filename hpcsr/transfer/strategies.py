"""The named transfer strategies: which source tensors go into the target model, and how.

    warm_start    every tensor of an hpcsr export or checkpoint, the architecture identical; the
                  target run starts a fresh optimizer (the seed carries no optimizer state)
    weights_only  every tensor matched by name and shape from any torch file, a bare state dict
                  too (no metadata needed: give the target's model config; lineage then records
                  the file and its sha256)
    transfer      shape-aware: equal shapes copied, known differences adapted, the rest keeps the
                  target's fresh initialisation; refused above `max_reinit` (share of parameters)
    freeze        warm_start, plus a freeze spec in the seed's metadata: the trainer keeps the
                  listed parameter prefixes (the LR encoders by default) fixed for N steps

Known differences and their adaptation (transfer):
  - context length L and output frames t: none needed. No tensor shape depends on them (frames are
    embedded by their time, heads are applied per frame; see hpcsr.models), so every such tensor is
    'copied (shape-independent of L/t)';
  - noise schedule (beta range from the target recipe, model.diffusion_steps): its buffers are not
    weights; they are rebuilt from the target recipe ('adapted');
  - model.static_channels: the stems' input channels [dynamic..., static...]: the common channels
    are copied, new static channels start at zero (the net computes what it did before), removed
    ones are dropped ('adapted').
Anything else of another shape (other widths, levels, heads, emb_dim) is re-initialised (transfer)
or refused (the other strategies), listing every mismatched tensor.
"""

from __future__ import annotations

import dataclasses

import torch

from hpcsr.transfer.report import ADAPTED, COPIED, DROPPED, REINITIALISED, TensorAction, TransferReport

STRATEGIES = ("warm_start", "weights_only", "transfer", "freeze")
STRICT = ("warm_start", "weights_only", "freeze")  # every target tensor must come from the source
NEEDS_METADATA = ("warm_start", "freeze")  # the source must be an hpcsr export or checkpoint
# convolutions whose input channels are [fixed dynamic inputs..., static fields...]: name -> dynamic count
STEMS = {"mean_net.stem.weight": 2, "denoiser.stem.weight": 4, "denoiser.context_encoder.stem.weight": 2}
SCHEDULE_PREFIX = "schedule."


class TransferRefused(ValueError):
    """The transfer cannot be made as asked; `report` holds every tensor's fate."""

    def __init__(self, message: str, report: TransferReport):
        super().__init__(message)
        self.report = report


def _copied_how(lt_changed: bool) -> str:
    return "copied (shape-independent of L/t)" if lt_changed else "copied"


def _adapt_stem(name: str, src: torch.Tensor, own: torch.Tensor) -> tuple[torch.Tensor, str] | None:
    """A stem convolution of another static-channel count: copy the common input channels, zero
    the new ones. None when the tensors differ in any other way."""
    if name not in STEMS or src.dim() != 4 or src.shape[0] != own.shape[0] or src.shape[2:] != own.shape[2:]:
        return None
    dynamic = STEMS[name]
    have, want = src.shape[1], own.shape[1]
    if have < dynamic or want < dynamic:
        return None
    out = torch.zeros_like(own)
    common = min(have, want)
    out[:, :common] = src[:, :common]
    if want > have:
        how = f"input channels: {common} copied, {want - have} new static channel(s) zero-initialised"
    else:
        how = f"input channels: {common} copied, {have - want} static channel(s) of the source dropped"
    return out, how


def match_tensors(
    strategy: str,
    source_state: dict,
    model: torch.nn.Module,
    report: TransferReport,
    lt_changed: bool,
    source_beta: str | None,
) -> dict:
    """Decide every target tensor's fate into `report`; return the complete state dict for `model`
    (copied and adapted tensors from the source, the rest from the model's own initialisation)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} unknown: choose one of {', '.join(STRATEGIES)}")
    own = model.state_dict()
    params = {n for n, _ in model.named_parameters()}
    out = {}
    for name, tensor in own.items():
        src = source_state.get(name)
        entry = dict(
            name=name,
            source_shape=tuple(src.shape) if src is not None else None,
            target_shape=tuple(tensor.shape),
            numel=tensor.numel(),
            parameter=name in params,
        )
        if src is not None and src.shape == tensor.shape:
            out[name] = src.to(tensor.dtype).clone()
            report.add(TensorAction(action=COPIED, how=_copied_how(lt_changed), **entry))
            continue
        adapted = _adapt_stem(name, src, tensor) if src is not None and strategy == "transfer" else None
        if adapted is not None:
            out[name], how = adapted
            report.add(TensorAction(action=ADAPTED, how=how, mismatch=True, **entry))
            continue
        out[name] = tensor.detach().clone()
        why = (
            f"shape {tuple(src.shape)} in the source vs {tuple(tensor.shape)} in the target"
            if src is not None
            else "not in the source"
        )
        report.add(
            TensorAction(action=REINITIALISED, how=f"{why}: the target's fresh initialisation", mismatch=True, **entry)
        )
    for name, src in source_state.items():
        if name not in own:
            report.add(
                TensorAction(
                    name=name,
                    action=DROPPED,
                    how="not in the target model",
                    source_shape=tuple(src.shape),
                    target_shape=None,
                    numel=src.numel(),
                    parameter=False,
                    mismatch=True,
                )
            )
    schedule = getattr(model, "schedule", None)
    if schedule is not None:
        how = (
            f"rebuilt from the target recipe: {schedule.kind} beta {schedule.beta_start:g}..{schedule.beta_end:g} "
            f"over {schedule.steps} steps" + (f" (source {source_beta})" if source_beta else "")
        )
        for name, buf in schedule.named_buffers():
            report.add(
                TensorAction(
                    name=SCHEDULE_PREFIX + name,
                    action=ADAPTED,
                    how=how,
                    source_shape=None,
                    target_shape=tuple(buf.shape),
                    numel=buf.numel(),
                    parameter=False,
                )
            )
    return out


def model_differences(source_model: dict | None, target_model) -> list[str]:
    """'model.key=a (source) vs b (target)' for every differing ModelConfig field."""
    if not source_model:
        return []
    mine = dataclasses.asdict(target_model)
    norm = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
    return [
        f"model.{k}={norm(source_model.get(k))} (source) vs {norm(mine.get(k))} (target)"
        for k in sorted(set(mine) | set(source_model))
        if norm(source_model.get(k)) != norm(mine.get(k))
    ]


def check(strategy: str, report: TransferReport, force: bool, model_diffs: list[str], listed: int = 40) -> None:
    """Refuse (raise TransferRefused, report.status='refused') what the strategy does not allow."""
    bad = [e for e in report.mismatched if e.action != ADAPTED]
    if strategy in STRICT and bad:
        reason = f"strategy {strategy} copies every tensor, but {len(bad)} tensor(s) do not fit the target model" + (
            f" ({'; '.join(model_diffs)})" if model_diffs else ""
        )
        fix = (
            "use the source's model config for the target, or --strategy transfer to copy what fits "
            "and re-initialise the rest"
        )
    elif strategy == "transfer" and report.reinit_fraction > report.max_reinit:
        if force:
            report.status = "forced"
            report.notes.append(
                f"{100 * report.reinit_fraction:.1f} % of the parameters re-initialised, over the "
                f"limit of {100 * report.max_reinit:g} %: accepted because of --force"
            )
            return
        reason = (
            f"{100 * report.reinit_fraction:.1f} % of the target's parameters would be re-initialised "
            f"(limit {100 * report.max_reinit:g} %)" + (f"; {'; '.join(model_diffs)}" if model_diffs else "")
        )
        fix = (
            "the architectures cannot be reconciled: use the source's model config for the target; or raise "
            "--max-reinit / pass --force to accept a mostly fresh model"
        )
    else:
        return
    lines = [f"{e.name}: {e.action}, {e.how}" for e in bad]
    shown = "\n  ".join(lines[:listed])
    more = f"\n  ... and {len(lines) - listed} more (all in the report JSON)" if len(lines) > listed else ""
    report.status = "refused"
    report.error = f"{reason}; {fix}"
    raise TransferRefused(f"{reason}. Mismatched tensors:\n  {shown}{more}\nFix: {fix}", report)
