"""Schema of the `data` config section: where the shards are and how training patches are drawn."""

from __future__ import annotations

import typing
from dataclasses import dataclass

MIXES = ("patches", "shards")  # data.mix: how the shards of data.shard + data.extra_shards share the draws


@dataclass
class DataConfig:
    """Where the training patches come from and how they are batched (see hpcsr.data.patches)."""

    shard: typing.Optional[str] = None  # shard file; None: <data_dir>/shards/s{s}_t{t}.h5
    extra_shards: tuple[str, ...] = ()  # more shards of the pair (other radars, periods) mixed into training
    mix: typing.Literal["patches", "shards"] = "patches"  # with extra_shards, each draw picks a shard in proportion
    # to its distinct patches (every patch about equally likely) or each shard equally often (hpcsr.data.mixed)
    batch_size: int = 8  # patches per rank and step
    num_workers: int = 0  # DataLoader worker processes per rank (each opens its own HDF5 handles)
    min_valid: float = 1.0  # minimum fraction of valid HR pixels in a patch
    normalisation: typing.Literal["log1p", "scale"] = "log1p"  # transform of mm before the networks
    log_unit: float = 1.0  # log1p: z from log1p(mm / this), mm per HR step (hpcsr.data.normalise)
    future_context: typing.Optional[int] = (
        None  # LR frames after the super-resolved one also given; None: 1 when t > 1, 0 at t = 1 (future_frames)
    )
    val_patches: int = 64  # fixed validation patches (items 0..n-1 of the val split's own seeded stream)
    prefetch_factor: int = 2  # micro-batches each DataLoader worker reads ahead (with num_workers > 0)
    wet_bias: float = (
        0.3  # draw wet patches more often: keep prob. min(1, max(0.1, LR wet fraction / this)); 0: uniform
    )
    augment: bool = True  # turn each training patch by one of the 8 symmetries of the square (LR and HR alike)

    def future_frames(self, t: int) -> int:
        """The LR frames after the super-resolved one the model is given at temporal factor t: the
        setting, or by default 1 when t > 1 (the bicubic + linear-in-time baseline uses the next block
        for the later HR steps of a block) and 0 at t = 1 (causal, as the author; at t = 1 the baseline
        uses no other block, and 150 steps on BoM with one future frame did not beat the untrained start)."""
        if self.future_context is not None:
            return self.future_context
        return 1 if t > 1 else 0

    def __post_init__(self):
        extra = self.extra_shards
        self.extra_shards = (str(extra),) if isinstance(extra, str) else tuple(str(p) for p in extra)
        if self.mix not in MIXES:
            raise ValueError(f"data.mix={self.mix!r} must be one of {', '.join(MIXES)}")
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size={self.batch_size} must be >= 1")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers={self.num_workers} must be >= 0")
        if not 0.0 < self.min_valid <= 1.0:
            raise ValueError(f"data.min_valid={self.min_valid} must be in (0, 1]")
        if self.future_context is not None and self.future_context < 0:
            raise ValueError(f"data.future_context={self.future_context} must be >= 0")
        if self.val_patches < 0:
            raise ValueError(f"data.val_patches={self.val_patches} must be >= 0 (0: no validation)")
        if not 0.0 <= self.wet_bias <= 1.0:
            raise ValueError(f"data.wet_bias={self.wet_bias} must be in [0, 1] (0: uniform patch draws)")
        if not self.log_unit > 0 or (self.normalisation == "scale" and self.log_unit != 1.0):
            raise ValueError(f"data.log_unit={self.log_unit} must be > 0 (and 1 with normalisation 'scale')")
        if self.prefetch_factor < 1:
            raise ValueError(f"data.prefetch_factor={self.prefetch_factor} must be >= 1")
