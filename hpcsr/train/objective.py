"""The loss of each training stage, as the module DeepSpeed wraps.

- mean:      mean_loss (MSE of the mean network); the denoiser is frozen and unused.
- diffusion: the mean network is frozen (CorrDiff's two stages); its prediction, made under
             no_grad, conditions the denoiser's v-prediction loss on the residual hr - mean.
- joint:     mean_loss + diffusion_loss, both networks trained at once (the author's recipe);
             the residual uses the mean of the same forward pass, detached (the diffusion
             gradient does not flow into the mean network).

`StageObjective.forward(lr, hr, generator)` returns (loss, parts) with parts = [mean term,
diffusion term] (NaN where a stage has no such term), so DeepSpeed sees one module whose
state_dict keys are the SRModel's with the prefix `model.`.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from hpcsr.models.sr_model import masked_mse

STAGES = ("mean", "diffusion", "joint")
PREFIX = "model."
# the submodules each stage trains (the others are frozen)
TRAINED = {"mean": ("mean_net",), "diffusion": ("denoiser",), "joint": ("mean_net", "denoiser")}


class StageObjective(nn.Module):
    def __init__(self, model: nn.Module, stage: str, autocast_bf16: bool = False):
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage {stage!r} unknown: use one of {', '.join(STAGES)}")
        self.model, self.stage, self.autocast_bf16 = model, stage, autocast_bf16
        for name in ("mean_net", "denoiser"):
            getattr(model, name).requires_grad_(name in TRAINED[stage])

    def train(self, mode: bool = True):
        super().train(mode)
        if self.stage == "diffusion":
            self.model.mean_net.eval()  # frozen: always in inference mode
        return self

    def _autocast(self):
        if self.autocast_bf16:
            return torch.autocast(device_type="cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward(self, lr: torch.Tensor, hr: torch.Tensor, generator: torch.Generator | None = None):
        m = self.model
        nan = torch.full((), float("nan"), device=hr.device)
        with self._autocast():
            if self.stage == "mean":
                loss = m.mean_loss(lr, hr)
                return loss, torch.stack([loss.detach().float(), nan])
            if self.stage == "diffusion":
                with torch.no_grad():
                    mean = m.predict_mean(lr)
                loss = m.diffusion_loss(lr, hr, mean, generator=generator)
                return loss, torch.stack([nan, loss.detach().float()])
            mean = m.predict_mean(lr)
            mean_term = masked_mse(mean, hr, torch.isfinite(hr))
            diffusion_term = m.diffusion_loss(lr, hr, mean, generator=generator)
            loss = mean_term + diffusion_term
            return loss, torch.stack([mean_term.detach().float(), diffusion_term.detach().float()])


def trained_prefixes(stage: str) -> tuple[str, ...]:
    """State-dict key prefixes (without `model.`) of the parameters the stage trains."""
    return tuple(f"{name}." for name in TRAINED[stage])
