"""Scale transfer: start a new factor pair's run from a trained pair's weights.

    from hpcsr.transfer import make_seed
    result = make_seed("runs/s2_t1", "4x2", "seeds/s4_t2.pt", strategy="transfer")
    print(result.report.format())          # every tensor: copied / adapted / re-initialised
    # then: hpcsr train factor.s=4 factor.t=2 train.init_from=seeds/s4_t2.pt

Pieces: `sources` (exports, DeepSpeed checkpoints with completion markers, run folders, bare
state dicts), `strategies` (warm_start, weights_only, transfer, freeze), `report`, `seed` (the seed
export with lineage), `freeze` (the trainer's freeze hook), `plan` (training order and parents
for a grid), `cli` (`hpcsr transfer ...`, entry `hpcsr.transfer:main`).
"""

from __future__ import annotations


def main(argv=None) -> int:
    """`hpcsr transfer ...` (see hpcsr.transfer.cli)."""
    from hpcsr.transfer.cli import main as cli_main  # lazy for start-up cost, as below

    return cli_main(argv)


def __getattr__(name):  # the API without importing torch-heavy modules at `import hpcsr.transfer`
    if name in ("make_seed", "SeedResult"):
        from hpcsr.transfer import seed

        return getattr(seed, name)
    if name in ("plan_chain", "grid_parents"):
        from hpcsr.transfer import plan

        return getattr(plan, name)
    raise AttributeError(f"module 'hpcsr.transfer' has no attribute {name!r}")


__all__ = ["main", "make_seed", "SeedResult", "plan_chain", "grid_parents"]
