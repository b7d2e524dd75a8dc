"""Factor pairs (spatial s, temporal t) and the scale-adaptive recipe: the three settings that change
with the factor (context length L, noise amplitude beta_end, mass function f) plus the patch size.

`recipe(s, t)` is the only place these rules live; configs, transfer and launch all call it. The
mass transform defaults to the measured choice (identity per LR cell); the author's is the preset
'author'.
The four pairs published with the method (arXiv 2604.21903, author's run names) are reproduced
exactly; every other pair follows the rules documented on each helper below.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

S_RANGE = (1, 25)
T_RANGE = (1, 6)


@dataclass(frozen=True, order=True)
class FactorPair:
    """A spatial factor s (1..25) and a temporal factor t (1..6)."""

    s: int
    t: int

    def __post_init__(self):
        for name, value, (lo, hi) in (("s", self.s, S_RANGE), ("t", self.t, T_RANGE)):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"factor {name}={value!r} is outside {lo}..{hi}: pick an integer {name} in {lo}..{hi}")

    @property
    def name(self) -> str:
        return f"s{self.s}_t{self.t}"

    @property
    def volume(self) -> int:
        """Number of HR values under one LR value: s * s * t."""
        return self.s * self.s * self.t

    def __str__(self) -> str:
        return f"({self.s},{self.t})"

    @classmethod
    def parse(cls, text) -> "FactorPair":
        """Accept 's10_t3', '10x3', '10,3', '(10, 3)', a FactorPair or a 2-sequence."""
        if isinstance(text, FactorPair):
            return text
        if isinstance(text, (tuple, list)) and len(text) == 2:
            return cls(int(text[0]), int(text[1]))
        m = re.fullmatch(r"\s*\(?\s*s?(\d+)\s*(?:_t|x|,)\s*t?(\d+)\s*\)?\s*", str(text))
        if not m:
            raise ValueError(f"cannot read factor pair {text!r}: write it as 's10_t3', '10x3' or '10,3'")
        return cls(int(m.group(1)), int(m.group(2)))


# The paper's grid of factor pairs.
PAPER_PAIRS = (FactorPair(1, 3), FactorPair(10, 1), FactorPair(10, 3), FactorPair(25, 6))


def expand_grid(grid) -> list[FactorPair]:
    """The pairs of a grid (hpcsr.launch.config.GridConfig: kind, pairs, s, t) in the order given
    (kind=product: s-major), validated."""
    if grid.kind == "product":
        raw = list(itertools.product(grid.s, grid.t))
        where = lambda i: f"grid.s x grid.t item {i} (s={raw[i][0]}, t={raw[i][1]})"  # noqa: E731
    else:
        raw = list(grid.pairs)
        where = lambda i: f"grid.pairs[{i}]={list(raw[i])}"  # noqa: E731
    pairs = []
    for i, item in enumerate(raw):
        if len(item) != 2:
            raise ValueError(f"{where(i)} must be two integers [s, t]")
        try:
            pair = FactorPair(*item)
        except ValueError as err:
            raise ValueError(f"{where(i)}: {err}") from None
        if pair in pairs:
            raise ValueError(f"{where(i)}: pair {pair.name} is listed twice; remove one")
        pairs.append(pair)
    return pairs


@dataclass(frozen=True)
class MassFunction:
    """f(x) = min(max(x**power - offset, 0), cap), the family used by the mass transform."""

    power: float = 1.0
    offset: float = 0.0
    cap: float = math.inf

    @property
    def label(self) -> str:
        kind = {1.0: "identity", 0.5: "sqrt"}.get(self.power, f"pow{self.power:g}")
        return f"{kind} c={self.offset:g}"


@dataclass(frozen=True)
class Recipe:
    """The factor-dependent settings of one pair; everything else is shared by all pairs."""

    pair: FactorPair
    context: int  # L: number of LR frames seen, the last one is super-resolved
    beta_start: float
    beta_end: float
    mass: MassFunction
    patch: int  # HR patch side, divisible by s
    published: bool  # True for the four pairs taken from the author's runs
    mass_scale: str = "cell"  # where the sampler matches the LR mass: cell, frame, image (see hpcsr.mass)

    @property
    def horizon_hours(self) -> int:
        """Hours of LR context seen (L * t at an hourly base cadence)."""
        return self.context * self.pair.t


BETA_START = 1e-4
# (s, t): (L, beta_end, power, offset), from the author's run names (DESIGN.md section 3).
_PUBLISHED = {
    (1, 3): (4, 0.015, 0.5, 0.01),
    (10, 1): (10, 0.01, 0.5, 0.01),
    (10, 3): (5, 0.02, 1.0, 0.02),
    (25, 6): (3, 0.035, 1.0, 0.04),
}


def context_length(t: int) -> int:
    """L such that L*t is closest to a target horizon H(t) = 10 + 2(t-1) hours without passing 18 h
    (t=1: 10, t=2: 6, t=3: 5, t=4: 4, t=5: 3, t=6: 3), at least 2 frames."""
    target = 10 + 2 * (t - 1)
    candidates = [L for L in range(2, 25) if L * t <= max(18, 2 * t)]
    return min(candidates, key=lambda L: (abs(L * t - target), -L))


def beta_end_rule(s: int, t: int) -> float:
    """beta_end = 0.005 t + b(t) ln s, clipped to [0.01, 0.04], rounded to 1e-3, with
    b(t) = 0.005 / ln 10 for t <= 3, falling linearly to 0.005 / ln 25 at t = 6.
    Exact at all four published points ((1,3) 0.015, (10,1) 0.01, (10,3) 0.02, (25,6) 0.035) and
    non-decreasing in s and in t: larger factors leave more unresolved detail, so the forward
    chain must reach more noise."""
    b3, b6 = 0.005 / math.log(10), 0.005 / math.log(25)
    b = b3 if t <= 3 else b3 + (b6 - b3) * (t - 3) / 3
    value = 0.005 * t + b * math.log(s)
    return round(min(max(value, 0.01), 0.04), 3)


# The mass transform a user gets, chosen by measurement (DESIGN.md section 8, closing notes of issues 8
# and 13): the identity f(x) = x matched per LR cell. The author's sqrt over the whole tile flattens
# peaks and spreads rain into dry areas (it multiplied bicubic's RMSE by 3.2 at (4,1) and 11 at (2,1)
# on real radar); per cell, a dry LR cell stays exactly dry (no drizzle) and every cell's mass is exact.
MEASURED_MASS, MEASURED_MASS_SCALE = MassFunction(1.0, 0.0), "cell"
MASS_PRESETS = ("measured", "author")


def mass_rule(s: int, t: int) -> MassFunction:
    """The author's mass function off the published pairs (preset 'author'): sqrt with c = 0.01 while
    s*s*t <= 100 (both published small pairs); identity above, with c growing in log(s*s*t) from 0.02
    at 300 to 0.04 at 3750 (the published large pairs), clipped."""
    volume = s * s * t
    if volume <= 100:
        return MassFunction(power=0.5, offset=0.01)
    frac = (math.log(volume) - math.log(300)) / (math.log(3750) - math.log(300))
    return MassFunction(power=1.0, offset=round(min(max(0.02 + 0.02 * frac, 0.01), 0.04), 3))


def patch_rule(s: int) -> int:
    """Smallest multiple of s that is >= 100 (100 for s in 1,2,4,5,10,20,25; 102 for 3 and 6)."""
    return s * math.ceil(100 / s)


def recipe(s: int, t: int, mass_preset: str = "measured") -> Recipe:
    """The settings for factor pair (s, t): published values where the author trained the pair,
    the rules above elsewhere. The mass transform: 'measured' (default) the identity per LR cell,
    'author' the author's function (published or `mass_rule`) over the whole tile ('image').
    Configs may override any field."""
    if mass_preset not in MASS_PRESETS:
        raise ValueError(f"mass preset {mass_preset!r} unknown: use one of {', '.join(MASS_PRESETS)}")
    pair = FactorPair(s, t)
    if (s, t) in _PUBLISHED:
        L, beta_end, power, offset = _PUBLISHED[(s, t)]
        author, published = MassFunction(power, offset), True
    else:
        L, beta_end, author, published = context_length(t), beta_end_rule(s, t), mass_rule(s, t), False
    if mass_preset == "author":
        return Recipe(pair, L, BETA_START, beta_end, author, patch_rule(s), published, "image")
    return Recipe(pair, L, BETA_START, beta_end, MEASURED_MASS, patch_rule(s), published, MEASURED_MASS_SCALE)
