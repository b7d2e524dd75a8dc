"""The end of the mean stage keeps the mean network's start when it validates better
(hpcsr.train.mean_selection): a correction that moves towards the truth is kept, one that moves
away is dropped (the output layer at zero, so the network returns its start exactly), a tie keeps
the trained network. Real SRModels at micro size; truths made from the start by hand."""

import torch

from hpcsr.factors import recipe
from hpcsr.models import ModelConfig, build_model
from hpcsr.train.mean_selection import mean_loss_over, select_mean

MICRO = ModelConfig(widths=(8, 16), heads=2, windows=(1, 1), emb_dim=8)
OFFSET = 0.3  # the truth lies this far (normalised units) above the start everywhere


def model_and_batches():
    torch.manual_seed(0)
    model = build_model(MICRO, recipe(4, 1)).eval()  # output layer at zero: returns its start
    g = torch.Generator().manual_seed(3)
    batches = []
    for B in (3, 2):
        lr = torch.randn(B, model.frames, 4, 4, generator=g)
        with torch.no_grad():
            batches.append((lr, model.predict_mean(lr) + OFFSET))
    return model, batches


def set_correction(model, bias: float):
    with torch.no_grad():
        model.mean_net.out[-1].bias.fill_(bias)
        model.mean_net.out[-1].weight.normal_(0.0, 1e-3)


def test_a_correction_towards_the_truth_is_kept():
    model, batches = model_and_batches()
    set_correction(model, 0.8 * OFFSET)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    choice = select_mean(model, iter(batches))  # any iterable: it is read twice
    assert choice.kept == "trained" and choice.patches == 5
    assert abs(choice.val_loss_start - OFFSET**2) < 1e-6
    assert choice.val_loss_trained < 0.1 * choice.val_loss_start  # (0.2 x offset)^2 plus the tiny weights
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights as trained


def test_a_correction_away_from_the_truth_gives_back_the_start():
    model, batches = model_and_batches()
    set_correction(model, -OFFSET)
    choice = select_mean(model, batches)
    assert choice.kept == "start" and choice.val_loss_trained > 3 * choice.val_loss_start
    assert not model.mean_net.out[-1].weight.any() and not model.mean_net.out[-1].bias.any()
    lr, hr = batches[0]
    with torch.no_grad():
        assert torch.allclose(model.predict_mean(lr), hr - OFFSET, atol=1e-6)  # the start exactly
    assert abs(mean_loss_over(model, batches)[0] - choice.val_loss_start) < 1e-9


def test_a_tie_keeps_the_trained_network():
    model, batches = model_and_batches()  # untrained: trained and start are the same network
    choice = select_mean(model, batches)
    assert choice.kept == "trained" and choice.val_loss_trained == choice.val_loss_start
