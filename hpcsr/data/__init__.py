"""Data access for training and sampling: HR store and shard readers, patch datasets, normalisation."""
