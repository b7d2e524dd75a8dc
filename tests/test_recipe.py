"""recipe(s, t): the four published points exactly, the documented rules elsewhere (hand values),
and the properties the rules promise over the whole grid s in 1..25, t in 1..6."""

import math

import pytest

from hpcsr.factors import (
    PAPER_PAIRS,
    FactorPair,
    beta_end_rule,
    context_length,
    mass_rule,
    patch_rule,
    recipe,
)

GRID = [(s, t) for s in range(1, 26) for t in range(1, 7)]

# DESIGN.md section 3, from the author's run names: (s, t): (L, beta_end, power, offset)
PUBLISHED = {
    (1, 3): (4, 0.015, 0.5, 0.01),
    (10, 1): (10, 0.01, 0.5, 0.01),
    (10, 3): (5, 0.02, 1.0, 0.02),
    (25, 6): (3, 0.035, 1.0, 0.04),
}


@pytest.mark.parametrize("pair", sorted(PUBLISHED))
def test_published_points_exactly(pair):
    r = recipe(*pair, mass_preset="author")
    L, beta_end, power, offset = PUBLISHED[pair]
    assert (r.context, r.beta_end, r.mass.power, r.mass.offset) == (L, beta_end, power, offset)
    assert r.beta_start == 1e-4 and r.mass.cap == math.inf and r.published and r.mass_scale == "image"
    assert r.patch == 100


def test_default_mass_is_the_measured_identity_per_cell():
    """Every pair samples with f(x) = x matched per LR cell unless the author's preset is asked for;
    the preset changes nothing else."""
    for s, t in GRID:
        r, author = recipe(s, t), recipe(s, t, "author")
        assert (r.mass.power, r.mass.offset, r.mass.cap, r.mass_scale) == (1.0, 0.0, math.inf, "cell")
        assert (r.context, r.beta_end, r.patch, r.published) == (
            author.context,
            author.beta_end,
            author.patch,
            author.published,
        )
        if (s, t) not in PUBLISHED:
            assert author.mass == mass_rule(s, t)
    with pytest.raises(ValueError, match="mass preset 'sqrt' unknown: use one of measured, author"):
        recipe(10, 3, "sqrt")


def test_paper_pairs_are_the_published_ones():
    assert {(p.s, p.t) for p in PAPER_PAIRS} == set(PUBLISHED)
    assert sum(recipe(s, t).published for s, t in GRID) == 4


def test_context_rule_hand_values_and_horizon():
    assert [context_length(t) for t in range(1, 7)] == [10, 6, 5, 4, 3, 3]
    for s, t in GRID:
        r = recipe(s, t)
        assert 10 <= r.horizon_hours <= 18 and r.context >= 2, (s, t, r.context)


def test_beta_rule_hand_values():
    # 0.005 t + b(t) ln s, b = 0.005/ln 10 up to t = 3, linear to 0.005/ln 25 at t = 6
    assert beta_end_rule(1, 3) == 0.015
    assert beta_end_rule(10, 1) == 0.01
    assert beta_end_rule(10, 3) == 0.02
    assert beta_end_rule(25, 6) == 0.035  # the published value, from the rule itself
    assert beta_end_rule(10, 6) == 0.034  # 0.03 + (0.005 / ln 25) * ln 10 = 0.03358
    assert beta_end_rule(5, 2) == 0.013  # 0.01 + 0.00349
    assert beta_end_rule(1, 1) == 0.01  # 0.005 clipped up
    assert beta_end_rule(25, 1) == 0.012


def test_beta_grows_with_the_factor():
    """The rule and the recipe (published points included) are monotone in s and t over the grid."""
    for s, t in GRID:
        if s > 1:
            assert beta_end_rule(s - 1, t) <= beta_end_rule(s, t)
        if t > 1:
            assert beta_end_rule(s, t - 1) <= beta_end_rule(s, t)
    inversions = [
        ((a, b), (s, t))
        for s, t in GRID
        for a, b in ((s - 1, t), (s, t - 1))
        if a >= 1 and b >= 1 and recipe(a, b).beta_end > recipe(s, t).beta_end
    ]
    assert inversions == []
    assert all(0.01 <= recipe(s, t).beta_end <= 0.04 for s, t in GRID)


def test_mass_rule_hand_values():
    assert mass_rule(1, 3) == mass_rule(10, 1) == mass_rule(2, 1) == mass_rule(5, 4)
    assert (mass_rule(5, 4).power, mass_rule(5, 4).offset) == (0.5, 0.01)  # volume 100
    assert (mass_rule(10, 3).power, mass_rule(10, 3).offset) == (1.0, 0.02)  # volume 300
    assert (mass_rule(25, 6).power, mass_rule(25, 6).offset) == (1.0, 0.04)  # volume 3750
    # volume 125: 0.02 + 0.02 ln(125/300) / ln(3750/300) = 0.01307
    assert (mass_rule(5, 5).power, mass_rule(5, 5).offset) == (1.0, 0.013)
    # identity offsets grow with the block volume
    identity = sorted((s * s * t, mass_rule(s, t).offset) for s, t in GRID if s * s * t > 100)
    assert all(a[1] <= b[1] for a, b in zip(identity, identity[1:]))


def test_patch_rule():
    for s in range(1, 26):
        p = patch_rule(s)
        assert p % s == 0 and 100 <= p < 100 + s
    assert {s for s in range(1, 26) if patch_rule(s) == 100} == {1, 2, 4, 5, 10, 20, 25}
    assert patch_rule(3) == patch_rule(6) == 102


def test_bad_pairs_name_the_value():
    with pytest.raises(ValueError, match="factor s=0 is outside 1..25"):
        recipe(0, 3)
    with pytest.raises(ValueError, match="factor t=7 is outside 1..6"):
        recipe(10, 7)
    with pytest.raises(ValueError, match="cannot read factor pair 'ten'"):
        FactorPair.parse("ten")
    assert FactorPair.parse("s10_t3") == FactorPair.parse("10x3") == FactorPair.parse("(10, 3)") == FactorPair(10, 3)
