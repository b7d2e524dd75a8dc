"""Exponential moving average of the weights a stage trains (the mean network, the denoiser or
both), sharded like the weights themselves; exports carry it in place of the optimised weights.

Under ZeRO 1 and 2 every rank holds whole parameters, so every rank keeps the whole average (the
same numbers everywhere). Under ZeRO 3 a rank holds only its partition of each parameter
(`param.ds_tensor`), and its average covers just that partition. `full_state()` (collective)
gathers whole fp32 tensors for checkpoints and exports; `load_full_state()` cuts this rank's part
back out, so a checkpoint's average resumes on any world size. Updates follow applied optimiser
steps only, with the usual warm-up of the decay: min(decay, (1 + n) / (10 + n)) at update n.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _is_partitioned(p: torch.Tensor) -> bool:
    return hasattr(p, "ds_tensor")


def _local(p: torch.Tensor) -> torch.Tensor:
    return p.ds_tensor if _is_partitioned(p) else p.data


class ShardedEMA:
    """EMA of the parameters `named` (name -> parameter, in a fixed order that all ranks share)."""

    def __init__(self, named: dict, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay={decay} must be in (0, 1)")
        self.names = list(named)
        self.params = [named[n] for n in self.names]
        self.decay = decay
        self.updates = 0
        self.shadow = [_local(p).detach().float().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, p in zip(self.shadow, self.params):
            avg.lerp_(_local(p).detach().float(), 1.0 - d)
        self.updates += 1

    def _gather(self, p: torch.Tensor, avg: torch.Tensor) -> torch.Tensor:
        if not _is_partitioned(p):
            return avg.clone()
        parts = [torch.empty_like(avg) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, avg)
        return torch.cat(parts)[: p.ds_numel].view(p.ds_shape).clone()

    def full_state(self) -> dict:
        """{'decay', 'updates', 'weights': {name: whole fp32 tensor}}; collective under ZeRO-3."""
        return {
            "decay": self.decay,
            "updates": self.updates,
            "weights": {n: self._gather(p, a) for n, p, a in zip(self.names, self.params, self.shadow)},
        }

    @torch.no_grad()
    def load_full_state(self, state: dict) -> None:
        weights = state["weights"]
        missing = sorted(set(self.names) - set(weights))
        if missing:
            raise KeyError(
                f"EMA state lacks {len(missing)} tensors (e.g. {missing[0]}): the checkpoint was made for "
                "another model; resume in a fresh run folder"
            )
        for i, (n, p) in enumerate(zip(self.names, self.params)):
            whole = weights[n].float()
            if _is_partitioned(p):
                size = p.ds_tensor.numel()
                start = dist.get_rank() * size
                flat = torch.zeros(size * dist.get_world_size(), dtype=torch.float32)
                flat[: whole.numel()] = whole.flatten()
                self.shadow[i] = flat[start : start + size].clone()
            else:
                if whole.shape != p.shape:
                    raise ValueError(f"EMA tensor {n} has shape {tuple(whole.shape)}, the model {tuple(p.shape)}")
                self.shadow[i] = whole.clone()
        self.updates = int(state["updates"])
