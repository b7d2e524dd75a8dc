"""The spread gain g: how a member is widened about the mean network's prediction.

A member is the mean m plus the sampled residual r (normalised units, log1p of mm for rain). The
spread calibration (hpcsr.train.calibration) fits one g on the validation patches and the sampler
applies it in the space the fit used, recorded in the export (`spread_calibration.space`):

- 'mm' (the default since s38): relu(M + g (X - M)), M = relu(mm of m), X = relu(mm of m + r);
  every member's departure from the mean network's rain, in mm, times g;
- 'normalised' (before s38): relu(mm of m + g r); the residual times g in log1p units, so in mm
  the member's ratio to the mean network's rain is raised to the power g.

Why mm: a gain above 1 in log1p units multiplies large departures exponentially. The demo's s5_t3
(transferred from s4_t2, validation spread/skill 0.59 at g = 1, so the fit keeps the grid's largest
gain, 2) gave members up to 31.7 mm/h against the truth's 13.1, power at 2 px .. the LR cell 1.30-2.37 x
the truth's, and the truth below every member 1.83 x as often as in a flat rank histogram. Same
weights and members, g = 2 in mm: 23.7 mm/h, 0.81-1.59 x, 1.43 x; fair CRPS / bicubic MAE 0.660 ->
0.663, ensemble-mean RMSE / bicubic 1.091 -> 1.083, spread/skill 0.986 -> 0.906. In mm a member that
is drier than the mean is clipped at 0 where g pushes it below, so widening also dries, where the
power rule only ever moves rain towards 0. At g = 1 both spaces give the sampler's own member.
"""

from __future__ import annotations

import torch

SPACES = ("mm", "normalised")
DEFAULT_SPACE = "mm"
LEGACY_SPACE = "normalised"  # the space of an export's calibration that does not name one (before s38)


def check_space(space: str) -> None:
    """A clear error unless `space` is one of SPACES."""
    if space not in SPACES:
        raise ValueError(f"spread gain space {space!r} unknown: use one of {', '.join(SPACES)}")


def widened_mm(mean: torch.Tensor, residual: torch.Tensor, gain: float, normaliser, space: str) -> torch.Tensor:
    """The member mean + residual (normalised units) widened by `gain` in `space`, in mm (>= 0), before
    any mass transform."""
    check_space(space)
    if space == "normalised":
        return torch.relu(normaliser.inverse(mean + gain * residual))
    member = torch.relu(normaliser.inverse(mean + residual))
    if gain == 1:
        return member
    centre = torch.relu(normaliser.inverse(mean))
    return torch.relu(centre + gain * (member - centre))
