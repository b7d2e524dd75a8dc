"""The UNets' downsampling (model.downsample): whether the top and left borders are treated like the
bottom and right ones, and what an export from before the option is rebuilt with."""

import copy
import dataclasses

import pytest
import torch
from torch import nn

from hpcsr.export import recorded_model
from hpcsr.factors import recipe
from hpcsr.models import ModelConfig, build_model

TINY = ModelConfig.tiny()


def randomised(cfg, s=4, t=2, seed=0):
    """A model of `cfg` at (s, t) with every weight drawn (fresh output layers are zero)."""
    model = build_model(cfg, recipe(s, t), 1).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def mean_and_v(model, lr, noisy):
    """The mean network's output and the denoiser's v on it at one diffusion step."""
    with torch.no_grad():
        mean = model.predict_mean(lr)
        lr_up, valid = model._prepare(lr, None)
        cond = model.denoiser.encode(lr_up, valid, None, mean, model.target)
        return mean, model.denoiser(noisy, torch.tensor([500]), cond)


def mirrored(model):
    """A copy of `model` whose 3 x 3 kernels are mirrored top to bottom (1 x 1 ones are their own
    mirror; the window attention has no position terms)."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for m in twin.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                m.weight.copy_(m.weight.flip(-2))
    return twin


@pytest.mark.parametrize("downsample", ["pool", "strided"])
def test_pooled_downsampling_treats_the_top_and_bottom_borders_alike(downsample):
    """Mirror the field top to bottom and the kernels with it: the pooled UNet returns the mirrored
    mean and v (its 2 x 2 means line up with the upsampling's 2 x 2 blocks, and every border is padded
    alike); the stride-2 convolution samples the even rows, which the mirror turns into odd ones, so
    its output differs."""
    model = randomised(dataclasses.replace(TINY, downsample=downsample))
    g = torch.Generator().manual_seed(1)
    lr = torch.rand(1, model.frames, 12, 12, generator=g)
    noisy = torch.randn(1, 2, 48, 48, generator=g)
    mean, v = mean_and_v(model, lr, noisy)
    mean_m, v_m = mean_and_v(mirrored(model), lr.flip(-2), noisy.flip(-2))
    diff = max(float((mean_m.flip(-2) - mean).abs().max()), float((v_m.flip(-2) - v).abs().max()))
    if downsample == "pool":
        assert diff < 1e-5
    else:
        assert diff > 1e-3


def test_an_export_from_before_the_option_keeps_the_stride_2_convolution():
    """A model record without the key is rebuilt as it was trained, not with the new default; the
    state dict's shapes do not change with the option, so only the record tells them apart."""
    old = {k: v for k, v in dataclasses.asdict(TINY).items() if k != "downsample"}
    assert recorded_model(old)["downsample"] == "strided"
    assert TINY.downsample == "pool"
    shapes = {
        kind: {
            k: v.shape
            for k, v in build_model(dataclasses.replace(TINY, downsample=kind), recipe(4, 2)).state_dict().items()
        }
        for kind in ("pool", "strided")
    }
    assert shapes["pool"] == shapes["strided"]


def test_an_unknown_downsampling_is_refused():
    with pytest.raises(ValueError, match="model.downsample='max' must be 'strided' or 'pool'"):
        dataclasses.replace(TINY, downsample="max")
