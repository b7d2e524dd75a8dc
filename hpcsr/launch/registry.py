"""The stages hpcsr-launch can chain, found through the entry-point group `hpcsr.stages`: each entry
point names a `Stage` object, and its name is the stage's name in `launcher.stages`. hpcsr's own
stages are declared in its pyproject.toml like any other package's:

    [project.entry-points."hpcsr.stages"]
    preprocess = "preprocessing.stage:PREPROCESS"
    mean = "hpcsr.launch.stages:MEAN"

so a third-party package adds a stage by declaring one in its own pyproject.toml and installing
itself. A stage is loaded (its module imported) when a configuration names it or a plan is built;
one that cannot be loaded stops that configuration with its name and the reason.
"""

from __future__ import annotations

import functools
import importlib.metadata
from dataclasses import dataclass
from typing import Callable, Optional

GROUP = "hpcsr.stages"


@dataclass(frozen=True)
class Stage:
    """What the launcher needs to know about a stage."""

    run: Callable  # (spec: ElementSpec, info: hpcsr.dist.DistInfo) -> dict, run by every rank of an element
    order: int  # place in a chain: launcher.stages lists stages by increasing order
    per_pair: bool = True  # one element per factor pair (False: one element for the whole grid, before the others)
    training: bool = (
        False  # trains: in a transfer chain it waits for the parent and starts from its run (train.init_from)
    )
    train_stage: Optional[str] = None  # value of train.stage for this stage
    export: Optional[str] = None  # training: the finished run's export, relative to <run_dir>/<stage>/
    check: Optional[Callable] = None  # (spec: ElementSpec) -> None, run on every element when a plan is built
    # config sections (or launcher keys, e.g. 'launcher.probe') that only some stages read: a change
    # to one reruns the stages that list it, not the others (hpcsr.launch.stages.identity)
    reads: tuple[str, ...] = ()


@functools.cache
def _entry_points() -> dict:
    """{name: entry point} of the group; a name two installed packages declare differently is refused."""
    found = {}
    for point in importlib.metadata.entry_points(group=GROUP):
        if point.name in found and found[point.name].value != point.value:
            raise ValueError(
                f"stage {point.name!r} is declared twice in entry-point group {GROUP}: "
                f"{found[point.name].value} and {point.value}; uninstall one of the packages"
            )
        found[point.name] = point
    return found


@functools.cache
def stage(name: str) -> Stage:
    """The registered stage `name`; ValueError naming the registered ones when it is unknown, or
    the reason when its module cannot be loaded."""
    points = _entry_points()
    if name not in points:
        registered = ", ".join(stage_order()) or "none: install hpcsr (pip install -e .) to register its own"
        raise ValueError(
            f"stage {name!r} is unknown: the registered stages are {registered} (entry-point group {GROUP})"
        )
    point = points[name]
    try:
        found = point.load()
    except Exception as err:  # a third-party module may fail in any way: name it instead of a traceback
        raise ValueError(
            f"stage {name!r} ({point.value}) cannot be loaded ({type(err).__name__}: {err}); install what it "
            "needs or drop it from launcher.stages"
        ) from None
    if not isinstance(found, Stage):
        raise ValueError(f"entry point {name} = {point.value} of group {GROUP} is not a {__name__}.Stage")
    return found


def stage_order() -> tuple[str, ...]:
    """The names of the registered stages that load, in chain order."""
    loaded = {}
    for name in _entry_points():
        try:
            loaded[name] = stage(name)
        except ValueError:
            continue
    return tuple(sorted(loaded, key=lambda n: (loaded[n].order, n)))
