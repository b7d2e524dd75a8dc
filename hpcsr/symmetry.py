"""The 8 symmetries of the square on a field's last two axes (rotations by multiples of 90 degrees,
with or without a transpose), used twice: training patches are turned by one of them
(`hpcsr.data.patches`, augmentation), and with `sample.mean_symmetries=8` the mean network's
estimate averages over all eight (`self_ensemble`, inference; measured in docs/SKILL_LOG.md, s49).

Coarsening over square LR cells commutes with every one of them, so a turned (lr, hr) pair is still
a valid example, and a turned input's prediction turned back is another estimate of the same field.
"""

from __future__ import annotations

from typing import Callable

import torch

SYMMETRIES = 8  # of the square: 4 rotations x (transposed or not)


def check_symmetries(n) -> None:
    """The mean estimate's symmetry count: 1 (the network as it is) or 8 (the self-ensemble)."""
    if isinstance(n, bool) or n not in (1, SYMMETRIES):
        raise ValueError(
            f"mean_symmetries={n!r} must be 1 (the mean network as it is) or {SYMMETRIES} (its mean over the "
            "8 symmetries of the square)"
        )


def dihedral(z: torch.Tensor, k: int) -> torch.Tensor:
    """Symmetry k (0..7) of the square applied to the last two axes: k % 4 quarter turns, then a
    transpose when k >= 4. k = 0 is the identity."""
    z = torch.rot90(z, k % 4, dims=(-2, -1))
    return z.transpose(-2, -1).contiguous() if k >= 4 else z.contiguous()


def undo_dihedral(z: torch.Tensor, k: int) -> torch.Tensor:
    """The inverse of `dihedral(., k)`: undo the transpose, then turn back."""
    if k >= 4:
        z = z.transpose(-2, -1)
    return torch.rot90(z, -(k % 4), dims=(-2, -1)).contiguous()


def self_ensemble(predict: Callable[..., torch.Tensor], *fields: torch.Tensor | None) -> torch.Tensor:
    """The mean over the 8 symmetries g of g^-1 predict(g x) for fields x (..., Y, X) (None passes
    through): an estimate that turns with its input, as the truth does. A network trained on turned
    patches is equivariant only as far as its training went; the rest of its error, which depends
    on the orientation, averages down (Lim et al. 2017, "geometric self-ensemble")."""
    total = None
    for k in range(SYMMETRIES):
        turned = [None if f is None else dihedral(f, k) for f in fields]
        out = undo_dihedral(predict(*turned), k)
        total = out if total is None else total + out
    return total / SYMMETRIES
