"""Inference: an LR sequence and a trained export -> an HR ensemble netCDF over the full domain.

- inputs.py: the LR sequence from an LR netCDF, a shard, or HR coarsened on the fly;
- tiles.py: overlapping tiles and their seam-free blending windows;
- ensemble.py: mean network, whole-domain tiled diffusion sampling, relu, mass transform, masks,
  seeds and the split over ranks;
- writer.py: the CF netCDF layout, written atomically;
- config.py: `SampleStageConfig`, the `sample` config section (input, output, device + SampleConfig);
- run.py: `run_sample(SampleStageConfig) -> SampleResult`, the stage's entry point, what
  `hpcsr sample` (hpcsr/sample.py) and the launcher's sample stage call.
"""

from hpcsr.sampling.config import SampleStageConfig
from hpcsr.sampling.ensemble import EnsembleSampler, SampleConfig, sample_sequence, target_times, unit_generator
from hpcsr.sampling.run import SampleResult, run_sample

__all__ = [
    "SampleConfig",
    "SampleStageConfig",
    "SampleResult",
    "EnsembleSampler",
    "run_sample",
    "sample_sequence",
    "target_times",
    "unit_generator",
]
