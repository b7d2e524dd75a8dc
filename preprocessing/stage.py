"""The launcher's preprocess stage (hpcsr-launch names it `preprocessing.stage:preprocess`, so hpcsr
never imports this package): the HR store and the grid's LR shards in data_dir, resumable, MPI
over the element's ranks."""

from __future__ import annotations


def preprocess(spec, info) -> dict:
    """Run hpcsr-preprocess with launcher.preprocess for the grid's pairs (spec: an ElementSpec)."""
    # lazy for start-up cost only: hpcsr-launch imports this module when it checks a plan
    from preprocessing.cli import main

    args = list(spec.cfg.launcher.preprocess) + [
        "--out",
        spec.cfg.data_dir,
        "--pairs",
        ",".join(f"{p.s}x{p.t}" for p in spec.pairs),
    ]
    code = main(args)
    if code != 0:
        raise RuntimeError(f"hpcsr-preprocess {' '.join(args)} failed with exit code {code} (its error is above)")
    return {"data_dir": spec.cfg.data_dir, "pairs": [p.name for p in spec.pairs]}
