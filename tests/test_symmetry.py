"""The 8 symmetries of the square and the mean network's self-ensemble over them: the symmetries are
the eight distinct pixel permutations and undo exactly; the self-ensemble leaves an equivariant
operation as it is, makes any other one equivariant, and, in the model, leaves a fresh network's
start (what it returns before training) unchanged."""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hpcsr.factors import recipe
from hpcsr.models import ModelConfig, build_model
from hpcsr.motion import field_start
from hpcsr.sampling.ensemble import SampleConfig
from hpcsr.symmetry import SYMMETRIES, dihedral, self_ensemble, undo_dihedral

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_model import randomise  # noqa: E402

TINY = ModelConfig.tiny()


def test_dihedral_symmetries_are_the_eight_of_the_square():
    z = torch.arange(12.0).reshape(1, 3, 4)
    turned = [dihedral(z, k) for k in range(8)]
    assert torch.equal(turned[0], z)
    assert len({(tuple(t.shape), tuple(t.flatten().tolist())) for t in turned}) == 8  # all distinct
    for k in range(8):  # each is a permutation of the pixels, and quarter turns compose
        assert sorted(turned[k].flatten().tolist()) == sorted(z.flatten().tolist())
    assert torch.equal(dihedral(dihedral(z, 1), 1), dihedral(z, 2))


def test_undo_dihedral_inverts_each_symmetry_on_rectangles():
    z = torch.arange(2 * 3 * 5.0).reshape(2, 3, 5)
    for k in range(SYMMETRIES):
        assert torch.equal(undo_dihedral(dihedral(z, k), k), z)
        assert torch.equal(dihedral(undo_dihedral(z, k), k), z)


def kernel_operation(kernel):
    """A same-size 2D convolution of (B, Y, X) fields (zero padding) with `kernel` (3 x 3)."""
    return lambda x: F.conv2d(x[:, None], kernel[None, None], padding=1)[:, 0]


def test_an_equivariant_operation_is_its_own_self_ensemble():
    box = kernel_operation(torch.ones(3, 3) / 9)  # a symmetric kernel turns with its input
    x = torch.rand(2, 7, 9, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(self_ensemble(box, x), box(x))


def test_the_self_ensemble_of_any_operation_turns_with_its_input():
    g = torch.Generator().manual_seed(1)
    skewed = kernel_operation(torch.rand(3, 3, generator=g))  # no symmetry at all
    x = torch.rand(2, 7, 9, generator=g)
    assert not torch.allclose(skewed(dihedral(x, 1)), dihedral(skewed(x), 1))
    estimate = self_ensemble(skewed, x)
    assert not torch.allclose(estimate, skewed(x))
    for k in range(SYMMETRIES):
        torch.testing.assert_close(self_ensemble(skewed, dihedral(x, k)), dihedral(estimate, k))


def test_fields_given_as_none_pass_through():
    seen = []

    def predict(x, missing, y):
        seen.append(missing)
        return x + y

    x, y = torch.rand(1, 4, 4), torch.rand(1, 4, 4)
    torch.testing.assert_close(self_ensemble(predict, x, None, y), x + y)
    assert seen == [None] * SYMMETRIES


@pytest.mark.parametrize("mean_skip", ["linear", "motion"])
def test_the_model_s_self_ensemble_is_equivariant(mean_skip):
    model = randomise(build_model(dataclasses.replace(TINY, mean_skip=mean_skip), recipe(4, 2), future_context=1))
    model.eval()
    g = torch.Generator().manual_seed(2)
    lr = torch.rand(2, model.frames, 6, 6, generator=g)
    start = torch.stack([field_start(x, 4, 2, model.target) for x in lr]) if mean_skip == "motion" else None
    with torch.no_grad():
        plain = model.predict_mean(lr, start=start)
        estimate = model.predict_mean(lr, start=start, symmetries=8)
        assert (estimate - plain).abs().max() > 1e-4  # a trained-like network is not equivariant by itself
        for k in (1, 5):
            turned = model.predict_mean(
                dihedral(lr, k), start=None if start is None else dihedral(start, k), symmetries=8
            )
            torch.testing.assert_close(turned, dihedral(estimate, k), atol=1e-5, rtol=1e-5)


def test_a_fresh_network_s_estimate_is_its_start():
    """Before training the mean network returns its start (bicubic, linear in time), which turns with
    the LR: the self-ensemble leaves it as it is, so the untrained baseline does not move."""
    model = build_model(dataclasses.replace(TINY, mean_skip="linear"), recipe(4, 2), future_context=1).eval()
    lr = torch.rand(1, model.frames, 5, 5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model.predict_mean(lr, symmetries=8), model.predict_mean(lr), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("bad", [0, 2, 4, True, 16])
def test_a_symmetry_count_other_than_1_or_8_is_refused(bad):
    model = build_model(TINY, recipe(2, 1))
    with pytest.raises(ValueError, match="must be 1 .* or 8"):
        model.predict_mean(torch.rand(1, model.frames, 4, 4), symmetries=bad)
    with pytest.raises(ValueError, match="mean_symmetries"):
        SampleConfig(mean_symmetries=bad)
