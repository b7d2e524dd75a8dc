"""The loss of each training stage, as the module DeepSpeed wraps.

- mean:      mean_loss (MSE of the mean network); the denoiser is frozen and unused.
- diffusion: the mean network is frozen (CorrDiff's two stages); its prediction, made under
             no_grad, conditions the denoiser's v-prediction loss on the residual hr - mean.
- joint:     mean_loss + diffusion_loss, both networks trained at once (the author's recipe);
             the residual uses the mean of the same forward pass, detached (the diffusion
             gradient does not flow into the mean network).

With `grid_shift` (train.mean_grid_shift; the mean stage, the diffusion stage ignores it) each
training forward runs the mean network on a window of the patch: its side the largest multiple of
the UNet's pooling grid g (2^(levels-1) pixels) that fits at every offset, its corner (dy, dx) drawn
in 0..g-1 from the step's generator; inputs, start and target are cut alike and the loss is the window's (validation, export and sampling
run on whole fields). Why: a patch's origin is an LR cell's corner, so without it the g x g pooling
blocks always sit at the same place inside the cells, and the network can tie what it learns to that
place, which shows as steps at the cell edges and does not carry to another radar. The window is cut,
not padded: s51 shifted the field by replicate padding instead, and the network then drew a bright
line along the domain's right and bottom edges at (8, 2), since most of its training forwards had
padding after the field and inference has none. Measured from scratch in s52 (docs/SKILL_LOG.md): no
edge line, the ensembles' CRPS 0.4-1.3 % lower, but the mean's RMSE no lower (+0.7 % at (8, 2) over
three seeds) nor its seams: an option, not the default.

`StageObjective.forward(lr, hr, generator)` returns (loss, parts) with parts = [mean term,
diffusion term] (NaN where a stage has no such term), so DeepSpeed sees one module whose
state_dict keys are the SRModel's with the prefix `model.`.

The mean term is the MSE in normalised units plus, with `mm_weight` > 0 (`train.mean_loss_mm_weight`),
that weight times the MSE in mm of what the product delivers from the mean (`delivered_mm`: relu
after denormalisation, then the recipe's mass transform against the LR), divided by the train
split's HR variance in mm. The normalised term alone (log1p units) is ruled by the many light
values; the delivered field is what the evaluation scores (RMSE in mm, after the mass transform).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from hpcsr.diffusion.noise_levels import NoiseLevels
from hpcsr.mass import conserve, default_mode
from hpcsr.models.blocks import crop
from hpcsr.models.sr_model import masked_mse
from hpcsr.train.config import grid_shift_conflict

STAGES = ("mean", "diffusion", "joint")
PREFIX = "model."
# the submodules each stage trains (the others are frozen)
TRAINED = {"mean": ("mean_net",), "diffusion": ("denoiser",), "joint": ("mean_net", "denoiser")}


def delivered_mm(x: torch.Tensor, lr: torch.Tensor, normaliser, recipe) -> torch.Tensor:
    """What the sampler makes of normalised HR fields x (B, ..., t, Y, X): relu(mm), then the
    recipe's mass transform against the target LR frame of lr (B, frames, y, x), normalised, at
    index recipe.context - 1. Differentiable in x."""
    return conserved_mm(torch.relu(normaliser.inverse(x.float())), lr, normaliser, recipe)


def conserved_mm(mm: torch.Tensor, lr: torch.Tensor, normaliser, recipe) -> torch.Tensor:
    """HR fields mm (B, ..., t, Y, X) in mm after the recipe's mass transform against the target LR
    frame of lr (as `delivered_mm`)."""
    if recipe.mass_scale == "none":
        return mm
    past = recipe.context
    lr_mm = normaliser.inverse(lr[:, past - 1 : past].float())  # (B, 1, y, x), NaN kept
    lr_mm = lr_mm.view(lr_mm.shape[0], *([1] * (mm.dim() - 4)), *lr_mm.shape[1:])
    s, t = recipe.pair.s, recipe.pair.t
    return conserve(mm, lr_mm, s, t, recipe.mass, recipe.mass_scale, default_mode(recipe.mass_scale))


class StageObjective(nn.Module):
    def __init__(
        self,
        model: nn.Module,
        stage: str,
        autocast_bf16: bool = False,
        normaliser=None,
        mm_weight: float = 0.0,
        hr_var_mm: float = 1.0,
        levels: NoiseLevels | None = None,
        grid_shift: bool = False,
    ):
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage {stage!r} unknown: use one of {', '.join(STAGES)}")
        if mm_weight < 0 or (mm_weight > 0 and (normaliser is None or not hr_var_mm > 0)):
            raise ValueError(
                f"mean loss mm weight {mm_weight}: >= 0, and > 0 needs the normaliser and a positive HR variance"
            )
        self.model, self.stage, self.autocast_bf16 = model, stage, autocast_bf16
        self.normaliser, self.mm_weight, self.hr_var_mm = normaliser, float(mm_weight), float(hr_var_mm)
        self.levels = levels  # None: SRModel.diffusion_loss's default
        if grid_shift and (conflict := grid_shift_conflict(stage, self.mm_weight)):
            raise ValueError(conflict)
        self.grid_shift = grid_shift
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

    def window(self, generator: torch.Generator | None, shape) -> tuple[int, int, int, int] | None:
        """The (top, left, h, w) window of a field of `shape` (H, W) that one training forward of the
        mean network runs on (None: the whole field): h, w the largest multiples of the pooling grid
        g with h + g - 1 <= H (w alike), the corner drawn in 0..g-1."""
        if not (self.grid_shift and self.training and generator is not None):
            return None
        g = self.model.mean_net.grid
        h, w = ((side - g + 1) // g * g for side in shape)
        if h < g or w < g:
            raise ValueError(f"train.mean_grid_shift: a {tuple(shape)} patch leaves no window of the {g} px grid")
        dy, dx = torch.randint(0, g, (2,), generator=generator, device=generator.device).tolist()
        return dy, dx, h, w

    def mean_term(self, lr: torch.Tensor, hr: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """MSE of the mean in normalised units, plus mm_weight x the delivered field's MSE in mm
        over the HR variance (mm^2) of the train split; NaN in hr left out."""
        valid = torch.isfinite(hr)
        loss = masked_mse(mean, hr, valid)
        if self.mm_weight > 0:
            recipe = self.model.recipe
            pred = delivered_mm(mean, lr, self.normaliser, recipe)
            truth = self.normaliser.inverse(hr.float())
            valid = valid & torch.isfinite(pred)
            loss = loss + self.mm_weight * masked_mse(pred, truth, valid) / self.hr_var_mm
        return loss

    def forward(self, lr: torch.Tensor, hr: torch.Tensor, generator: torch.Generator | None = None, start=None):
        """(loss, [mean term, diffusion term]) of one batch; `start`: the mean network's start
        (model.mean_skip 'motion', the items' 'start'), else None."""
        m = self.model
        nan = torch.full((), float("nan"), device=hr.device)
        with self._autocast():
            if self.stage == "mean":
                window = self.window(generator, hr.shape[-2:])
                mean = m.predict_mean(lr, start=start, window=window)
                loss = self.mean_term(lr, hr if window is None else crop(hr, window), mean)
                return loss, torch.stack([loss.detach().float(), nan])
            if self.stage == "diffusion":
                with torch.no_grad():
                    mean = m.predict_mean(lr, start=start)
                loss = m.diffusion_loss(lr, hr, mean, generator=generator, levels=self.levels)
                return loss, torch.stack([nan, loss.detach().float()])
            mean = m.predict_mean(lr, start=start)
            mean_term = self.mean_term(lr, hr, mean)
            diffusion_term = m.diffusion_loss(lr, hr, mean, generator=generator, levels=self.levels)
            loss = mean_term + diffusion_term
            return loss, torch.stack([mean_term.detach().float(), diffusion_term.detach().float()])


def trained_prefixes(stage: str) -> tuple[str, ...]:
    """State-dict key prefixes (without `model.`) of the parameters the stage trains."""
    return tuple(f"{name}." for name in TRAINED[stage])
