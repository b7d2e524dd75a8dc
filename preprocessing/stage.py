"""The launcher's preprocess stage, registered as the entry point `preprocess` of the group
hpcsr.stages (pyproject.toml), so hpcsr never imports this package: the HR store and the grid's LR
shards in data_dir, from the config's `preprocess` section (preprocessing.config), resumable, MPI
over the element's ranks."""

from __future__ import annotations

from hpcsr.launch.registry import Stage


def check(spec) -> None:
    """When a plan is built: the preprocess section (a plain mapping to hpcsr) is a valid
    PreprocessConfig, so a bad value stops hpcsr-launch before anything is queued."""
    # lazy for start-up cost only: the registry loads this module whenever it lists the stages
    from preprocessing.config import from_mapping

    from_mapping(spec.cfg.preprocess)


def preprocess(spec, info) -> dict:
    """preprocessing.run.run_preprocess of the preprocess section into data_dir for the grid's pairs
    (spec: an ElementSpec), on every rank of the element."""
    # lazy for start-up cost only, as in check
    from preprocessing.config import from_mapping
    from preprocessing.run import run_preprocess

    result = run_preprocess(from_mapping(spec.cfg.preprocess), spec.cfg.data_dir, spec.pairs)
    return {"data_dir": spec.cfg.data_dir, "pairs": [p.name for p in spec.pairs], **result.summary()}


PREPROCESS = Stage(preprocess, order=10, per_pair=False, check=check, reads=("preprocess",))
