"""Transfer chains for a factor grid: the order to train the pairs in and each pair's parent.

Distance between factor pairs (log scale, because what a network must learn grows with the ratio
of the factors, not their difference):

    d((s, t), (s', t')) = |ln s - ln s'| + w |ln t - ln t'|          (w = weight_t, default 1)

Order: pairs by volume s*s*t, then s, then t (smallest first). Each pair's parent is the nearest
pair by d among the pairs already trained before this launch (given) and those earlier in the
order; ties go to the smaller volume, then the smaller s. So parents are never larger than
their children within a launch: the small-factor runs, which see the most HR detail per LR value,
seed the larger ones. The first pair (and any pair with no candidate within `max_distance`, or
whose best parent would make the chain deeper than `max_depth` levels) trains from scratch.

`grid_parents(...)` returns the mapping hpcsr-launch reads as `grid.parents` (child: parent);
hpcsr-launch calls it itself for a grid with `grid.transfer=auto` and no explicit parents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hpcsr.factors import FactorPair


def distance(a: FactorPair, b: FactorPair, weight_t: float = 1.0) -> float:
    return abs(math.log(a.s) - math.log(b.s)) + weight_t * abs(math.log(a.t) - math.log(b.t))


def _order_key(p: FactorPair):
    return (p.volume, p.s, p.t)


@dataclass(frozen=True)
class PlanEntry:
    pair: FactorPair
    parent: FactorPair | None  # None: from scratch
    distance: float | None
    level: int  # transfer level in the launch: 0 = no parent in this launch
    parent_trained: bool  # the parent was trained before this launch (its export exists)

    def to_dict(self) -> dict:
        return {
            "pair": self.pair.name,
            "parent": self.parent.name if self.parent else None,
            "distance": self.distance,
            "level": self.level,
            "parent_trained": self.parent_trained,
        }


def plan_chain(
    pairs, trained=(), weight_t: float = 1.0, max_distance: float = math.inf, max_depth: int | None = None
) -> list[PlanEntry]:
    """The pairs of the grid in training order with their parents (see the module docstring).
    `trained`: pairs whose runs exist already; they are candidates but not trained again."""
    if weight_t < 0:
        raise ValueError(f"weight_t={weight_t} must be >= 0")
    if max_depth is not None and max_depth < 0:
        raise ValueError(f"max_depth={max_depth} must be >= 0 (0: every pair from scratch or from a trained run)")
    done = [FactorPair.parse(p) for p in trained]
    todo = sorted(dict.fromkeys(FactorPair.parse(p) for p in pairs if FactorPair.parse(p) not in done), key=_order_key)
    level = {p: -1 for p in done}
    entries = []
    for pair in todo:
        candidates = [
            c
            for c in level
            if distance(pair, c, weight_t) <= max_distance and (max_depth is None or level[c] + 1 <= max_depth)
        ]
        # distances rounded so that equal ratios tie exactly (ln 4 - ln 2 vs ln 8 - ln 4 differ in the last bit)
        parent = min(candidates, key=lambda c: (round(distance(pair, c, weight_t), 9), _order_key(c)), default=None)
        level[pair] = level[parent] + 1 if parent is not None else 0
        entries.append(
            PlanEntry(pair, parent, distance(pair, parent, weight_t) if parent else None, level[pair], parent in done)
        )
    return entries


def grid_parents(
    pairs, trained=(), weight_t: float = 1.0, max_distance: float = math.inf, max_depth: int | None = None
) -> dict[str, str]:
    """{child name: parent name} for hpcsr-launch's grid.parents (pairs from scratch left out)."""
    return {
        e.pair.name: e.parent.name
        for e in plan_chain(pairs, trained, weight_t, max_distance, max_depth)
        if e.parent is not None
    }


def hydra_override(parents: dict[str, str]) -> str:
    """The mapping as one Hydra override, e.g. ++grid.parents={s4_t2:s2_t1,s10_t3:s4_t2} (`++`: the
    grid files set parents to {}, and Hydra adds keys to a mapping only with + or ++)."""
    return "++grid.parents={" + ",".join(f"{c}:{p}" for c, p in parents.items()) + "}"
