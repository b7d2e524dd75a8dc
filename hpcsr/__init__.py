"""hpcsr: scale-adaptive joint spatiotemporal super-resolution of precipitation with diffusion models."""

__version__ = "0.1.0"
