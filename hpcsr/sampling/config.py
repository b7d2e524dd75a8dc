"""Schema of the `sample` config section: what `hpcsr.sampling.run.run_sample` reads and writes
(input, output, device) on top of how it samples (`hpcsr.sampling.ensemble.SampleConfig`, whose
fields it inherits so that `sample.members=20` reads as the `hpcsr sample --members 20` flag).

`hpcsr sample` translates its flags into this config; the launcher's sample stage takes the
section from the Hydra tree and sets the input and output keys itself (INPUT_KEYS).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields

from hpcsr.sampling.ensemble import SampleConfig

# the keys that name the data sampled and the file written (the launcher sets them per pair)
INPUT_KEYS = ("export", "lr", "hr", "out", "pair", "time_range")


@dataclass
class SampleStageConfig(SampleConfig):
    """One run of the sampler: input, output, device, and how to sample (the inherited fields)."""

    export: typing.Optional[str] = None  # trained export: model.pt, its export/ folder or the stage folder
    lr: typing.Optional[str] = None  # LR input: netCDF precip(time, y, x) or a shard .h5
    hr: typing.Optional[str] = None  # HR input coarsened with the export's (s, t) (perfect-model test), not with lr
    out: typing.Optional[str] = None  # output netCDF (written atomically)
    pair: typing.Optional[str] = None  # factor pair the export must have, e.g. s10_t3 (error if it differs)
    time_range: typing.Optional[tuple[str, str]] = None  # only blocks whose HR steps end in [START, END] (ISO)
    hr_step_minutes: typing.Optional[int] = None  # HR step if the input lacks interval_minutes
    phase_minutes: int = 0  # hr: blocks start this many minutes after 00 UTC
    device: str = "auto"  # auto (cuda:LOCAL_RANK when a GPU is visible, else cpu), cpu or cuda:N
    allow_other_grid: bool = False  # sample an input whose HR step or pixel differs from the export's training data
    progress: bool = True  # progress bar on rank 0

    def sampling(self) -> SampleConfig:
        """How to sample, without the run's paths (what the sampler records in the file)."""
        return SampleConfig(**{f.name: getattr(self, f.name) for f in fields(SampleConfig)})
