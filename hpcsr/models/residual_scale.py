"""Where the residual (hr - mean) is large: a per-pixel scale from what the sampler also knows.

One global standard deviation (CorrDiff's residual normalisation) makes the diffused residual
unit-variance on average, but the residual is not equally large everywhere: it is near zero under
dry, steady LR and large at rain edges and where the rain moves. A denoiser trained briefly
learns the average size better than where it goes, so with one global scale its members carry
the training data's average residual everywhere: drizzle and holes in dry or smooth areas, and,
on a radar whose rain is smoother than the training radar's, far too much spread (measured in the
skill experiment: on KNMI the residual was 4x smaller than on the BoM training day at t = 2, in
the global unit). The local scale is

    sigma(x) = max(c . f(x), FLOOR * global std),   f = [1, wet, edge, change]   (normalised units)

    wet    = relu(mean - dry)          how much rain the mean network puts there (dry: 0 mm)
    edge   = |grad mean_c| per HR frame, mean_c the mean averaged over an LR cell around each pixel
                                       rain edges, where position errors make the residual
                                       (model.residual_edge 'cell'; 'pixel': |grad mean| itself)
    change = mean over the LR frames next to the target of |lr_up(j) - lr_up(target)|
             (valid cells only)        where the rain moves or grows between LR steps

with c >= 0 fitted by non-negative least squares of sqrt(pi/2) |hr - mean| on f over training
patches (for a Gaussian residual E|r| = sigma sqrt(2/pi)), when a diffusion stage starts.
Measured with the skill experiment's mean networks (fitted on 256 BoM training patches, applied
to the KNMI evaluation crop it never saw), the RMS of the normalised residual r / sigma, ideal 1:
global 0.59 / 0.24 / 0.23 at (4,1) / (4,2) / (8,2), local 1.14 / 0.60 / 0.67; in dry pixels the
local scale is 4-6x smaller than in wet ones.

The edge is taken on the cell-averaged mean because sigma is an envelope: the LR input says
nothing about pixel-scale structure, and |grad mean| at the pixel scale followed the mean
network's own pixel-scale texture, printing it into the members as a grain (skill experiment at
t = 2: the edge term's power at 2-4 px rose 6x with a sharper mean network, and the members'
deviations carried 2.4x the truth's power at 2-4 px).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

FEATURES = ("one", "wet", "edge", "change")
FLOOR = 0.05  # lower bound of sigma, as a fraction of the global residual std (keeps residual / sigma finite)


def cell_average(x: torch.Tensor, cell: int) -> torch.Tensor:
    """x (B, t, Y, X) averaged over the odd window of side cell | 1 centred on each pixel (the
    pixels inside the field only): a field that varies on the LR cell's scale, not the pixel's."""
    if cell <= 1:
        return x
    k = cell | 1
    B, t = x.shape[:2]
    pooled = F.avg_pool2d(x.reshape(B * t, 1, *x.shape[2:]), k, stride=1, padding=k // 2, count_include_pad=False)
    return pooled.reshape(x.shape)


def features(
    lr_up: torch.Tensor, lr_valid: torch.Tensor, mean: torch.Tensor, target: int, dry, cell: int = 1
) -> torch.Tensor:
    """f (B, t, Y, X, 4) from the upsampled LR (B, F, Y, X), its validity and the mean (B, t, Y, X);
    `dry` (float or scalar tensor) is the normalised value of 0 mm; the edge is the gradient of the
    mean averaged over `cell` pixels (1: the mean itself)."""
    mean = mean.float()
    wet = (mean - dry).clamp_min(0)
    gy, gx = torch.gradient(cell_average(mean, cell), dim=(-2, -1))
    edge = (gy.square() + gx.square()).sqrt()
    neighbours = [j for j in (target - 1, target + 1) if 0 <= j < lr_up.shape[1]]
    change = torch.zeros_like(mean[:, :1])
    for j in neighbours:
        both = lr_valid[:, j] * lr_valid[:, target]
        change = change + ((lr_up[:, j] - lr_up[:, target]).abs() * both)[:, None].float()
    change = (change / max(len(neighbours), 1)).expand_as(mean)
    return torch.stack([torch.ones_like(mean), wet, edge, change], dim=-1)


def scale_field(coef: torch.Tensor, f: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """sigma (B, t, Y, X) = max(coef . f, floor) (a scalar tensor: no host synchronisation)."""
    return torch.maximum(f @ coef.float(), floor.float())


class NonNegativeFit:
    """Streaming non-negative least squares of y on f (few features): accumulate the normal
    equations, then solve exactly by trying every subset of active features (2^4 = 16)."""

    def __init__(self, n: int = len(FEATURES)):
        self.ftf = torch.zeros(n, n, dtype=torch.float64)
        self.fty = torch.zeros(n, dtype=torch.float64)
        self.count = 0

    def add(self, f: torch.Tensor, y: torch.Tensor) -> None:
        """Rows f (N, n) and targets y (N,)."""
        f, y = f.double(), y.double()
        self.ftf += f.T @ f
        self.fty += f.T @ y
        self.count += len(y)

    def solve(self) -> torch.Tensor:
        """The coefficients >= 0 of least error (all zero when nothing was added)."""
        n = len(self.fty)
        best, best_loss = torch.zeros(n, dtype=torch.float64), 0.0  # loss relative to y.y (the zero fit)
        for k in range(1, n + 1):
            for subset in itertools.combinations(range(n), k):
                idx = list(subset)
                try:
                    sol = torch.linalg.solve(self.ftf[idx][:, idx], self.fty[idx])
                except RuntimeError:  # singular (a feature constant zero on these patches)
                    continue
                if (sol < 0).any() or not torch.isfinite(sol).all():
                    continue
                loss = float(sol @ self.ftf[idx][:, idx] @ sol - 2 * sol @ self.fty[idx])
                if loss < best_loss:
                    best_loss, best = loss, torch.zeros(n, dtype=torch.float64).index_put_((torch.tensor(idx),), sol)
        return best


def abs_to_sigma(residual: torch.Tensor) -> torch.Tensor:
    """sqrt(pi/2) |r|: an unbiased sample of sigma for a zero-mean Gaussian residual."""
    return residual.abs() * math.sqrt(math.pi / 2)
