"""Launching: factor grids to Slurm job arrays through submitit, or local processes."""
