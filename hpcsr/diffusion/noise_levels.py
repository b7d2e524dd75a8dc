"""Which noise levels the denoiser trains on: the step n of each training item.

- 'uniform' (the default): n uniform over the schedule's steps (DDPM, Ho et al. 2020; the author's).
- 'lognormal': EDM's training distribution (Karras et al. 2022; CorrDiff and StormCast train so):
  ln sigma ~ N(log_mean, log_std^2) for the noise-to-signal ratio sigma = sqrt((1 - alphabar) / alphabar),
  mapped to the step whose sigma is nearest in log. EDM's P_mean = -1.2 is for data of standard
  deviation 0.5; the diffused residual has unit standard deviation (SRModel divides by its scale), so
  the lognormal default log_mean is -1.2 + ln 2 = -0.5, with EDM's log_std 1.2. Then 64 % of the draws
  fall at sigma 0.05..1, where the residual's few-pixel structure is decided (its 2-3 px standard
  deviation is 0.1-0.15), against 35 % of uniform steps of the (4, 1) schedule, whose upper half
  (sigma > 1.3) holds levels where the residual is unobservable. With the v-prediction loss this is
  EDM's objective on the schedule's steps: EDM's loss weight lambda(sigma) times its output scale
  c_out^2 is 1 in the network's units, as here.

Measured (issue 13, session s29; docs/SKILL_LOG.md): on real radar (trained on BoM, sampled
on KNMI, (4,2) / (8,2), two seeds each) the lognormal levels keep the fair CRPS within the seeds'
spread, bring spread/skill nearer 1 and cut the members' excess power at 2-3 px by a third; in the
demo's 250-step trainings they leave the ensembles over-dispersed (spread/skill 1.34 at s5_t3) and
cost 3-7 % of CRPS at two of three pairs. Not the default until longer trainings settle it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LEVELS = ("uniform", "lognormal")


@dataclass(frozen=True)
class NoiseLevels:
    kind: str = "uniform"
    log_mean: float = -0.5  # lognormal: mean of ln sigma (EDM's P_mean for unit-variance data)
    log_std: float = 1.2  # lognormal: standard deviation of ln sigma (EDM's P_std)

    def __post_init__(self):
        if self.kind not in LEVELS:
            raise ValueError(f"noise levels {self.kind!r} unknown: use one of {', '.join(LEVELS)}")
        if not (self.log_std > 0 and abs(self.log_mean) < float("inf") and self.log_std < float("inf")):
            raise ValueError(
                f"lognormal noise levels need a finite log mean ({self.log_mean}) and a finite log std > 0 ({self.log_std})"
            )

    def draw(self, schedule, count: int, generator=None, device=None) -> torch.Tensor:
        """`count` training steps (long, on `device`) of `schedule` (a NoiseSchedule)."""
        if self.kind == "uniform":
            return torch.randint(0, schedule.steps, (count,), generator=generator, device=device)
        z = torch.randn(count, generator=generator, device=device, dtype=torch.float32)
        return nearest_steps(schedule, self.log_mean + self.log_std * z.double())


def schedule_log_sigma(schedule) -> torch.Tensor:
    """ln sigma_n = ln sqrt((1 - alphabar_n) / alphabar_n) of every step (float64, increasing in n)."""
    alphabar = schedule.alphabar.double()
    return 0.5 * ((1 - alphabar) / alphabar).log()


def nearest_steps(schedule, log_sigma: torch.Tensor) -> torch.Tensor:
    """The step of `schedule` whose ln sigma is nearest to each value of `log_sigma` (long, same
    device); values beyond the schedule's ends go to its first or last step."""
    table = schedule_log_sigma(schedule).to(log_sigma.device)
    midpoints = 0.5 * (table[1:] + table[:-1])
    return torch.searchsorted(midpoints, log_sigma.double().contiguous())
