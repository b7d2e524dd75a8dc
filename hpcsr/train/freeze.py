"""Freezing part of a transferred model for the first steps of its new run (strategy `freeze`).

The seed export carries {'freeze': {'prefixes': [...], 'steps': N}} in its metadata; a run whose
train.init_from points at it keeps the parameters under those SRModel name prefixes fixed for its
first N optimiser steps, then trains them like the rest. The trainer records the spec in every
checkpoint marker, so a resume rebuilds the same optimizer without reading the seed again
(resume beats init).

How: the frozen parameters form their own AdamW parameter group whose learning-rate factor is 0
for steps 0..N-1 and the run's warm-up + cosine factor afterwards. With lr = 0, AdamW changes
nothing (its decoupled weight decay is scaled by lr too), so they stay bit-identical, under every
ZeRO stage; their Adam moments follow the real gradients meanwhile, so the first update after
unfreezing has a normal size. Default prefixes: the networks' LR encoders (the parts that read
the LR frames, whose statistics change least between factor pairs), so the decoders, heads and
the denoiser's residual UNet adapt to the new (s, t) first.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from hpcsr.export import load_export

DEFAULT_PREFIXES = ("mean_net.stem.", "mean_net.encoder.", "denoiser.context_encoder.")


@dataclass(frozen=True)
class FreezeSpec:
    prefixes: tuple  # SRModel parameter-name prefixes kept fixed
    steps: int  # optimiser steps they stay fixed

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"freeze steps={self.steps!r} must be a positive integer (optimiser steps)")
        if not self.prefixes or not all(isinstance(p, str) and p for p in self.prefixes):
            raise ValueError(
                f"freeze prefixes={list(self.prefixes)} must be non-empty names, e.g. {list(DEFAULT_PREFIXES)}"
            )

    def to_dict(self) -> dict:
        return {"prefixes": list(self.prefixes), "steps": self.steps}

    @classmethod
    def from_dict(cls, d: dict | None) -> "FreezeSpec | None":
        return None if not d else cls(tuple(d["prefixes"]), int(d["steps"]))

    def matches(self, name: str) -> bool:
        return name.startswith(tuple(self.prefixes))


def check_prefixes(spec: FreezeSpec, names) -> None:
    """Every prefix must select at least one parameter of the model."""
    names = list(names)
    unused = [p for p in spec.prefixes if not any(n.startswith(p) for n in names)]
    if unused:
        tops = sorted({".".join(n.split(".")[:2]) + "." for n in names})
        raise ValueError(f"freeze prefix(es) {unused} match no parameter of the model: choose among {tops}")


def freeze_for_run(init_from, resumed_marker: dict | None) -> FreezeSpec | None:
    """The freeze of a run: from the checkpoint marker when resuming, else from the metadata of the
    train.init_from export (None when there is none)."""
    if resumed_marker is not None:
        return FreezeSpec.from_dict(resumed_marker.get("freeze"))
    if not init_from:
        return None
    return FreezeSpec.from_dict(load_export(init_from).metadata.get("freeze"))


def frozen_factor(step: int, steps: int, factor) -> float:
    """Learning-rate factor of the frozen group: 0 before `steps`, then the run's own factor."""
    return 0.0 if step < steps else factor(step)


def param_groups(named_params, spec: FreezeSpec | None, factor, strip: str = ""):
    """([trained params, frozen params], [factor, frozen factor]) for the optimizer and LambdaLR;
    one group when nothing is frozen. `strip` is removed from names before matching (DeepSpeed's
    module prefix)."""
    named = list(named_params)
    if spec is None:
        return [[p for _, p in named]], [factor]
    frozen = [p for n, p in named if spec.matches(n[len(strip) :] if n.startswith(strip) else n)]
    if not frozen:
        return [[p for _, p in named]], [factor]
    ids = {id(p) for p in frozen}
    rest = [p for _, p in named if id(p) not in ids]
    held = functools.partial(frozen_factor, steps=spec.steps, factor=factor)
    if not rest:  # the stage trains only frozen parameters: one group, idle for the first steps
        return [frozen], [held]
    return [rest, frozen], [factor, held]
