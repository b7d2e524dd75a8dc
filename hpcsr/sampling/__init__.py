"""Inference: an LR sequence and a trained export -> an HR ensemble netCDF over the full domain.

- inputs.py: the LR sequence from an LR netCDF, a shard, or HR coarsened on the fly;
- tiles.py: overlapping tiles and their seam-free blending windows;
- ensemble.py: mean network, whole-domain tiled diffusion sampling, relu, mass transform, masks,
  seeds and the split over ranks;
- writer.py: the CF netCDF layout, written atomically;
- run.py: `sample_to_netcdf`, what `hpcsr sample` (hpcsr/sample.py) calls.
"""

from hpcsr.sampling.ensemble import EnsembleSampler, SampleConfig, sample_sequence, target_times, unit_generator
from hpcsr.sampling.run import sample_to_netcdf

__all__ = ["SampleConfig", "EnsembleSampler", "sample_sequence", "sample_to_netcdf", "target_times", "unit_generator"]
