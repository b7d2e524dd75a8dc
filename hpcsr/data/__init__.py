"""Data access for training and sampling: HR store and shard readers, patch datasets, normalisation."""

from hpcsr.data.normalise import Normaliser
from hpcsr.data.patches import PatchDataset, PatchSpec
from hpcsr.data.sampler import SamplesSeenSampler
from hpcsr.data.store import HRStore, Shard

__all__ = ["HRStore", "Normaliser", "PatchDataset", "PatchSpec", "SamplesSeenSampler", "Shard"]
