"""The DeepSpeed engine of one training stage, built from the validated config.

A client `torch.optim.AdamW` and a `LambdaLR` warm-up + cosine schedule are handed to
`deepspeed.initialize`, so nothing is JIT-compiled (DeepSpeed's fused and CPU Adam would build
C++ ops for minutes) and the schedule is saved and restored with DeepSpeed's checkpoints.
ZeRO stages 1-3 all detect non-finite gradients and skip the step (no update, no schedule
advance), which is what the trainer relies on to skip a non-finite loss.
"""

from __future__ import annotations

import functools
import math

import torch

from hpcsr.train.freeze import param_groups

# DeepSpeed's default prints a line every 10 steps; the trainer logs by itself.
_NEVER = 2**31 - 1


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.0) -> float:
    """Learning-rate factor: linear warm-up over `warmup` steps, then cosine from 1 to `floor` at `total`.

    Bound with functools.partial: LambdaLR does not save a partial's arguments in its state_dict,
    so a resumed run follows the schedule of its current config (e.g. after raising train.steps)."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def deepspeed_config(cfg, load_universal: bool = False, trainable: int | None = None, world_size: int = 1) -> dict:
    """The DeepSpeed config dict of a RootConfig (`cfg.deepspeed`, `cfg.data.batch_size`).

    The communication buckets are capped at this rank's share of the `trainable` parameters:
    ZeRO 1/2 allocate a whole bucket at every backward (DeepSpeed's default of 5e8 elements, 2 GB,
    costs seconds per step on CPU for a model of a few million parameters) and ZeRO 3 keeps one."""
    ds = cfg.deepspeed
    bucket = int(min(ds.bucket_size, -(-trainable // world_size))) if trainable else ds.bucket_size
    bucket = -(-bucket // 64) * 64  # DeepSpeed wants a multiple of its alignment factor
    zero = {"stage": ds.zero_stage, "reduce_bucket_size": bucket, "allgather_bucket_size": bucket}
    if ds.zero_stage == 3:
        zero["stage3_param_persistence_threshold"] = ds.param_persistence_threshold
        zero["stage3_prefetch_bucket_size"] = bucket
    return {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": ds.gradient_accumulation,
        "gradient_clipping": ds.gradient_clipping,
        "zero_optimization": zero,
        "bf16": {"enabled": ds.precision == "bf16", "check_grad_overflow": True},
        "zero_allow_untested_optimizer": True,  # the client torch AdamW
        "steps_per_print": _NEVER,
        "wall_clock_breakdown": False,
        "checkpoint": {"load_universal": bool(load_universal)},
    }


def build_engine(module: torch.nn.Module, cfg, load_universal: bool = False, freeze=None):
    """deepspeed.initialize with AdamW over the trainable parameters and the warm-up + cosine schedule.
    `freeze` (hpcsr.train.freeze.FreezeSpec, from a transfer seed): those parameters form a second
    group whose learning rate is 0 for the first freeze.steps steps.
    Returns the engine (engine.optimizer, engine.lr_scheduler are DeepSpeed's wrappers)."""
    import deepspeed

    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameter in the model for this stage: check train.stage")
    tc = cfg.train
    factor = functools.partial(warmup_cosine, warmup=tc.warmup_steps, total=tc.steps, floor=tc.min_lr_ratio)
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    groups, factors = param_groups(named, freeze, factor, strip="model.")
    optimizer = torch.optim.AdamW(
        [{"params": g} for g in groups], lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay, foreach=False
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    config = deepspeed_config(cfg, load_universal, sum(p.numel() for p in params), world)
    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=schedule, config=config)
    return engine
