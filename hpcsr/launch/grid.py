"""The factor grid: the `grid` config section expanded into factor pairs, and transfer chains
(child pair seeded from a parent pair's export) sorted into levels that run one after another.

    pairs = hpcsr.factors.expand_grid(cfg.grid)           # [FactorPair(1, 3), FactorPair(10, 1), ...]
    transfers = parse_parents(chosen_parents(cfg.grid, pairs), pairs, export_exists)
    for level in levels(pairs, transfers): ...            # level k waits for its parents in level k-1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from hpcsr.factors import FactorPair
from hpcsr.transfer.plan import grid_parents


def chosen_parents(grid, pairs: list[FactorPair]) -> dict[str, str]:
    """The child: parent mapping of a launch. grid.parents when given (explicit parents win, whole);
    else with grid.transfer=auto each pair's nearest pair by hpcsr.transfer.plan (`hpcsr transfer
    plan` prints the same), computed from the grid alone so that a relaunch gets the same parents
    and its finished elements are skipped; else none (every pair from scratch)."""
    if grid.parents or grid.transfer == "none":
        return dict(grid.parents)
    return grid_parents(pairs)


@dataclass(frozen=True)
class Transfer:
    """Where a pair's run is seeded from: a parent in this grid, or an export that already exists."""

    parent: FactorPair
    in_grid: bool  # True: wait for the parent's run in this launch; False: its export exists already


def parse_parents(
    parents: dict, pairs: list[FactorPair], export_exists: Callable[[FactorPair], bool]
) -> dict[FactorPair, Transfer]:
    """Read the child: parent mapping of grid.parents and check it: the child is in the grid, the
    parent is in the grid or has a finished export, and no pair is its own ancestor."""
    out: dict[FactorPair, Transfer] = {}
    for child_text, parent_text in parents.items():
        try:
            child, parent = FactorPair.parse(child_text), FactorPair.parse(parent_text)
        except ValueError as err:
            raise ValueError(f"grid.parents.{child_text}={parent_text!r}: {err}") from None
        if child not in pairs:
            raise ValueError(
                f"grid.parents.{child_text}: pair {child.name} is not in the grid "
                f"({', '.join(p.name for p in pairs)}); add it to the grid or drop the entry"
            )
        if child == parent:
            raise ValueError(f"grid.parents.{child_text}={parent_text!r}: a pair cannot be its own parent")
        if parent in pairs:
            out[child] = Transfer(parent, True)
        elif export_exists(parent):
            out[child] = Transfer(parent, False)
        else:
            raise ValueError(
                f"grid.parents.{child_text}={parent_text!r}: parent {parent.name} is neither in the "
                "grid nor finished (no export in its run folder); add it to the grid or train it first"
            )
    for child in out:  # cycles
        seen, node = [child], out[child]
        while node.in_grid and node.parent in out:
            if node.parent in seen:
                cycle = " -> ".join(p.name for p in seen + [node.parent])
                raise ValueError(f"grid.parents has a cycle {cycle}: every chain must start at a pair without parent")
            seen.append(node.parent)
            node = out[node.parent]
    return out


def levels(pairs: list[FactorPair], transfers: dict[FactorPair, Transfer]) -> list[list[FactorPair]]:
    """Split the pairs into levels: level 0 has no parent in the grid, level k's parents are in
    level k-1. Each level keeps the grid order."""
    depth: dict[FactorPair, int] = {}

    def level_of(pair: FactorPair) -> int:
        if pair not in depth:
            link = transfers.get(pair)
            depth[pair] = level_of(link.parent) + 1 if link is not None and link.in_grid else 0
        return depth[pair]

    out: list[list[FactorPair]] = []
    for pair in pairs:
        k = level_of(pair)
        while len(out) <= k:
            out.append([])
        out[k].append(pair)
    return out


def parent_of(pair: FactorPair, transfers: dict[FactorPair, Transfer]) -> Optional[FactorPair]:
    link = transfers.get(pair)
    return None if link is None else link.parent
