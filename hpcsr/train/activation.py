"""Activation checkpointing of the UNet blocks: their activations are recomputed in backward
instead of kept, trading about a third more compute for memory.

Each ResBlock, TemporalAttention and WindowAttention gets a forward that runs its original
forward under torch.utils.checkpoint (non-reentrant). The modules and their state-dict keys stay
as they are, so checkpoints and exports do not change. Only modules without parameters of their
own are wrapped (their parameters live in child layers, which are still called as modules during
the recomputation), so ZeRO-3 gathers the parameters again when it recomputes.
"""

from __future__ import annotations

import functools

from torch import nn
from torch.utils.checkpoint import checkpoint

from hpcsr.models.attention import TemporalAttention, WindowAttention
from hpcsr.models.blocks import ResBlock

CHECKPOINTED = (ResBlock, TemporalAttention, WindowAttention)


def _checkpointed(forward):
    @functools.wraps(forward)
    def run(*args, **kwargs):
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Wrap the forward of every checkpointable block of `model`; returns how many were wrapped."""
    count = 0
    for module in model.modules():
        if isinstance(module, CHECKPOINTED) and not list(module.parameters(recurse=False)):
            module.forward = _checkpointed(module.forward)
            count += 1
    return count
