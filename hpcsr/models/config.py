"""Schema of the `model` config section: sizes of the mean network and the residual denoiser.

The default is the author's size (widths 16-32-64-128-256, 4 heads, windows [3,3,1,1,1]);
`ModelConfig.tiny()` is the CPU test size, `ModelConfig.large()` a parameter-heavy size for memory planning. Nothing here depends on the factor pair: (s, t, L) and
the noise schedule's beta range come from `hpcsr.factors.recipe`.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, fields


def check_choices(obj, section: str) -> None:
    """Refuse a field of the dataclass `obj` whose value is not one of its Literal annotation's
    choices: hpcsr.config.build checks them in a composed config, this in one built in code (an
    export's metadata, dataclasses.replace)."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        choices = typing.get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is typing.Literal else ()
        value = getattr(obj, f.name)
        if choices and value not in choices:
            *first, last = map(repr, choices)
            raise ValueError(f"{section}.{f.name}={value!r} must be {', '.join(first)} or {last}")


# The longest LR step (t x the HR step) over which 'auto' moves the rain along its motion. Measured
# (benchmarks/motion_baseline.py, ten radar days, cell mass on both): interpolating along the motion
# gives 0.70-0.98 x the RMSE of linear interpolation at 20-min LR steps, 0.85-0.98 x at 30 min,
# 0.99-1.00 x at 45 min and 1.00-1.01 x at 2-3 h (hourly Comephore), 1.06-1.12 x on the hourly
# synthetic demo data: beyond about half an hour the rain grows, decays and turns more than it moves.
MOTION_MAX_LR_MINUTES = 30


def resolve_mean_skip(choice: str, t: int, hr_step_minutes: float) -> str:
    """The mean network's start for `choice` at temporal factor t on data of HR step `hr_step_minutes`:
    'auto' is 'motion' when t > 1 and t x the step is at most MOTION_MAX_LR_MINUTES, else 'linear';
    other choices are kept."""
    if choice != "auto":
        return choice
    return "motion" if t > 1 and t * hr_step_minutes <= MOTION_MAX_LR_MINUTES else "linear"


@dataclass
class ModelConfig:
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)  # channels per UNet level (level count = length)
    heads: int = 4  # attention heads (every width must be divisible by it)
    windows: tuple[int, ...] = (3, 3, 1, 1, 1)  # spatial attention window per level (odd; 1 = none)
    blocks_per_level: int = 1  # residual conv blocks per encoder level
    emb_dim: int = 64  # width of the time / diffusion-step / frame-position embeddings
    static_channels: int = 0  # static HR input fields (elevation, land mask, ...) given to both nets
    upsample: typing.Literal["bicubic", "bilinear", "nearest"] = "bicubic"  # LR -> HR grid interpolation
    schedule: typing.Literal["linear", "cosine", "sigmoid"] = "linear"  # beta schedule (cosine ignores beta_end)
    diffusion_steps: int = 1000  # steps of the forward noising chain
    residual_scale: float = (
        1.0  # extra factor on the measured residual scale: the diffusion runs on (hr - mean) / (sigma * this)
    )
    residual_norm: typing.Literal["global", "local"] = (
        "local"  # sigma: one std for all pixels (CorrDiff), or per pixel from the mean and LR (residual_scale.py)
    )
    residual_edge: typing.Literal["pixel", "cell"] = (
        "cell"  # the local scale's edge feature: gradient of the mean averaged over an LR cell, or per pixel
    )
    norm: typing.Literal["group", "pixel"] = (
        "group"  # normalisation: GroupNorm over the whole field (the author's) or per pixel over channels
    )
    mean_skip: typing.Literal["auto", "hold", "linear", "motion"] = (
        "auto"  # what the mean net corrects: the target LR frame for all t steps, linear in time to its
        # neighbours, that along the rain's motion (hpcsr.motion; the start comes with the input), or
        # auto: motion where an LR step is short enough for the rain to keep its shape, else linear
        # (`resolve_mean_skip`, from the training data's step; exports record the resolved choice)
    )
    start_unit: typing.Literal["auto", "network"] | float = (
        "auto"  # u of the space w = log1p(mm / u) the mean net's start is interpolated in (start_space.py):
        # auto: the 99th percentile of the train split's wet HR amounts (resolved by training, recorded
        # in exports); network: the networks' own units; a number: u in mm per HR step
    )
    sigma_data: float = 1.0  # the denoiser's data scale (EDM preconditioning, hpcsr.diffusion.parametrization; 1: v)
    dry_offset: float = 0.0  # the denoiser's target at dry (0 mm) HR pixels sits this many residual units below
    # the residual that reaches 0 mm (0: at it); the sampler's relu maps it to 0 mm (SRModel.diffused_residual)
    downsample: typing.Literal["strided", "pool"] = (
        "pool"  # halving between UNet levels: 2 x 2 mean then a 3 x 3 conv (aligned with the upsampling's
        # 2 x 2 blocks, alike at every border), or a stride-2 3 x 3 conv (centred on the even pixels)
    )
    pixel_input: bool = False  # both networks are told the HR pixel size (log2 of its side in km, an embedding):
    # for training on several pixel sizes (data.extra_shards); the trainer tells each patch's, the sampler the input's

    def __post_init__(self):
        self.widths = tuple(self.widths)
        self.windows = tuple(self.windows)
        if not self.widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in self.widths):
            raise ValueError(f"model.widths={list(self.widths)} must be a non-empty list of positive integers")
        if self.heads < 1 or any(w % self.heads for w in self.widths):
            raise ValueError(
                f"model.heads={self.heads} must divide every width in {list(self.widths)}: pick a common divisor"
            )
        if len(self.windows) != len(self.widths):
            raise ValueError(
                f"model.windows={list(self.windows)} needs one entry per level ({len(self.widths)} widths)"
            )
        if any(w < 1 or w % 2 == 0 for w in self.windows):
            raise ValueError(f"model.windows={list(self.windows)} must be odd and >= 1 (1 = no spatial attention)")
        for key in ("blocks_per_level", "emb_dim", "diffusion_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key}={getattr(self, key)} must be >= 1")
        if self.emb_dim % 2:
            raise ValueError(f"model.emb_dim={self.emb_dim} must be even (sine and cosine halves)")
        if self.static_channels < 0:
            raise ValueError(f"model.static_channels={self.static_channels} must be >= 0")
        check_choices(self, "model")  # upsample, schedule, residual_norm, residual_edge, mean_skip, downsample
        if self.start_unit not in ("auto", "network") and not (
            isinstance(self.start_unit, (int, float)) and not isinstance(self.start_unit, bool) and self.start_unit > 0
        ):
            raise ValueError(
                f"model.start_unit={self.start_unit!r} must be 'auto', 'network' or a positive number of mm"
            )
        if not self.residual_scale > 0:
            raise ValueError(f"model.residual_scale={self.residual_scale} must be > 0")
        if not (math.isfinite(self.dry_offset) and self.dry_offset >= 0):
            raise ValueError(f"model.dry_offset={self.dry_offset} must be a finite number >= 0 (0: dry is not offset)")
        if not self.sigma_data > 0:
            raise ValueError(f"model.sigma_data={self.sigma_data} must be > 0 (1: the denoiser predicts v)")

    @property
    def start_unit_mm(self) -> float | None:
        """u of the mean's start space in mm, or None: the networks' units ('network', and 'auto'
        before training resolves it)."""
        return None if isinstance(self.start_unit, str) else float(self.start_unit)

    def motion_start(self, t: int) -> bool:
        """Whether the mean network at temporal factor t is given its start along the motion (computed
        over the whole field by the patch loader and the sampler): mean_skip 'motion' and t > 1."""
        return self.mean_skip == "motion" and t > 1

    @property
    def levels(self) -> int:
        return len(self.widths)

    @classmethod
    def tiny(cls) -> "ModelConfig":
        """Three levels 8-16-32, 2 heads: a fwd+bwd of a few patches takes well under a second on CPU."""
        return cls(widths=(8, 16, 32), heads=2, windows=(3, 1, 1), emb_dim=16)

    @classmethod
    def large(cls) -> "ModelConfig":
        """The default with a 1024-wide bottom level: 8x its parameters for 2.9x its FLOPs (memory planning)."""
        return cls(widths=(16, 32, 64, 128, 1024))

    @classmethod
    def named(cls, name: str) -> "ModelConfig":
        """The size of configs/model/<name>.yaml: tiny, default or large."""
        sizes = {"tiny": cls.tiny, "default": cls, "large": cls.large}
        if name not in sizes:
            raise ValueError(f"model size {name!r} unknown: use one of {', '.join(sizes)}")
        return sizes[name]()
