"""The networks: an attention UNet for the conditional mean and a residual diffusion denoiser.

Transferable by design: no parameter shape depends on the factor pair. Only t (output frames)
and L (context frames) change the tensors' shapes, and both are handled without per-pair weights:
- output frames: one output head (mean) and one denoiser, applied per frame and conditioned on
  the frame's time (k + 0.5) / t inside the target LR block, never t stacked channels;
- context frames: attention across frames with frame-time embeddings (times in LR blocks relative
  to the target), which accepts any L;
- s only sets the interpolation of the LR input to the HR grid (no weights).
The noise schedule (beta_end from the recipe) is a non-persistent buffer rebuilt from the recipe.
So a state dict of one pair loads with `strict=True` into the model of any other pair; the
transfer step may copy every tensor as is.
"""

from hpcsr.models.config import ModelConfig
from hpcsr.models.sr_model import SRModel, build_model

__all__ = ["ModelConfig", "SRModel", "build_model"]
