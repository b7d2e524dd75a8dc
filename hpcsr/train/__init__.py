"""Training: DeepSpeed ZeRO engine for the mean and diffusion stages, checkpoints, resume."""
