"""The parts of benchmarks/scaling.py: one module per question (preprocessing, sampling, training
memory and checkpoints, loader appetite), the process measurement they share, and the report."""
