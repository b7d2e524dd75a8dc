"""Pieces of the trainer that need no distributed run: schedule, DeepSpeed config, compatibility
checks, weight loading, metric files, signals, activation checkpointing, EMA, stage objectives."""

import dataclasses
import json
import math
import os
import signal

import pytest
import torch

from hpcsr.config import compose
from hpcsr.dist import DistInfo
from hpcsr.export import LEGACY_MODEL, ExportError, load_weights, resolve_export
from hpcsr.models import ModelConfig, build_model
from hpcsr.models.sr_model import masked_mse
from hpcsr.train.activation import enable_activation_checkpointing
from hpcsr.train.checkpoint import CheckpointIncompatible
from hpcsr.train.ema import ShardedEMA
from hpcsr.train.engine import deepspeed_config, warmup_cosine
from hpcsr.train.metrics import MetricsLog
from hpcsr.train.objective import StageObjective
from hpcsr.train.signals import StopRequest
from hpcsr.train.trainer import Trainer

TINY = ["model=tiny", "factor.s=4", "factor.t=3", "factor.context=2", "factor.patch=24", "data.batch_size=2"]


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig.tiny(), compose(TINY).factor.recipe())


def test_warmup_then_cosine_by_hand():
    f = dict(warmup=4, total=14, floor=0.1)
    assert warmup_cosine(0, **f) == 0.25 and warmup_cosine(3, **f) == 1.0
    assert warmup_cosine(4, **f) == pytest.approx(1.0)
    assert warmup_cosine(9, **f) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos(pi/2) = 0
    assert warmup_cosine(14, **f) == pytest.approx(0.1) and warmup_cosine(99, **f) == pytest.approx(0.1)
    assert warmup_cosine(0, warmup=0, total=10) == 1.0


def test_deepspeed_config_from_hydra():
    cfg = compose(TINY + ["deepspeed=zero3", "deepspeed.precision=bf16", "deepspeed.gradient_accumulation=3"])
    ds = deepspeed_config(cfg, load_universal=True, trainable=2000, world_size=2)
    assert ds["train_micro_batch_size_per_gpu"] == 2 and ds["gradient_accumulation_steps"] == 3
    assert ds["zero_optimization"]["stage"] == 3 and ds["bf16"]["enabled"] and ds["checkpoint"]["load_universal"]
    assert ds["zero_optimization"]["reduce_bucket_size"] == 1024  # this rank's share, rounded up to 64
    assert ds["zero_optimization"]["stage3_param_persistence_threshold"] == cfg.deepspeed.param_persistence_threshold
    plain = deepspeed_config(compose(TINY))
    assert not plain["bf16"]["enabled"] and plain["zero_optimization"]["stage"] == 1
    assert plain["zero_optimization"]["reduce_bucket_size"] == cfg.deepspeed.bucket_size


def trainer_for(overrides, tmp_path):
    cfg = compose(TINY + [f"run_dir={tmp_path}"] + overrides)
    info = DistInfo(0, 1, 0, 1, "127.0.0.1", 1, "single")
    return Trainer(cfg, info, stop=StopRequest(signals=()))


def test_checkpoint_of_another_pair_or_architecture_is_refused_naming_both(tmp_path):
    t = trainer_for([], tmp_path)
    good = {"pair": "s4_t3", "stage": "mean", "model": dataclasses.asdict(ModelConfig.tiny())}
    t.check_compatible(good, "here")
    with pytest.raises(CheckpointIncompatible, match=r"factor pair s10_t3 \(checkpoint\) vs s4_t3 \(this run\)"):
        t.check_compatible({**good, "pair": "s10_t3"}, "here")
    other = {**good["model"], "widths": [8, 16, 64]}
    with pytest.raises(CheckpointIncompatible, match=r"model.widths=\[8, 16, 64\] \(checkpoint\) vs \[8, 16, 32\]"):
        t.check_compatible({**good, "model": other}, "here")


# the ModelConfig keys of the first export format; every key added since has its old behaviour in LEGACY_MODEL
FIRST_MODEL_KEYS = {
    "widths",
    "heads",
    "windows",
    "blocks_per_level",
    "emb_dim",
    "static_channels",
    "upsample",
    "schedule",
    "diffusion_steps",
    "residual_scale",
}


def test_every_model_key_added_since_the_first_exports_has_its_old_behaviour_recorded():
    """Without it, a run checkpointed by the code before the key cannot resume (s57: model.dry_offset,
    model.norm and model.sigma_data were missing, and a run from s53 was refused)."""
    keys = {f.name for f in dataclasses.fields(ModelConfig)}
    assert not FIRST_MODEL_KEYS & set(LEGACY_MODEL)
    assert keys == FIRST_MODEL_KEYS | set(LEGACY_MODEL), "a new ModelConfig key needs its old behaviour in LEGACY_MODEL"
    dataclasses.replace(ModelConfig.tiny(), **LEGACY_MODEL)  # each old value is still a valid setting


def test_a_checkpoint_from_before_a_new_model_key_resumes_with_the_old_behaviour_only(tmp_path):
    """A checkpoint marker that names none of the three keys LEGACY_MODEL lacked before s57 (as one of
    s53's runs): the default run resumes it, a run that sets one of them otherwise is refused, naming it."""
    t = trainer_for([], tmp_path)
    added = ("dry_offset", "norm", "sigma_data")
    old = {k: v for k, v in dataclasses.asdict(t.cfg.model).items() if k not in added}
    marker = {"pair": "s4_t3", "stage": "mean", "model": old}
    t.check_compatible(marker, "here")
    with pytest.raises(CheckpointIncompatible, match=r"model.dry_offset=0.0 \(checkpoint\) vs 0.5 \(this run\)"):
        trainer_for(["model.dry_offset=0.5"], tmp_path).check_compatible(marker, "here")


def test_weights_of_another_architecture_are_refused_with_the_keys(tmp_path):
    small = tiny_model()
    big = build_model(
        dataclasses.replace(ModelConfig.tiny(), widths=(8, 16, 48), heads=2), compose(TINY).factor.recipe()
    )
    with pytest.raises(ExportError, match=r"checkpoint \(48, 32, 3, 3\) vs model \(32, 32, 3, 3\)|vs model"):
        load_weights(small, big.state_dict(), "other.pt")
    state = small.state_dict()
    del state["mean_net.stem.weight"]
    with pytest.raises(ExportError, match="missing mean_net.stem.weight"):
        load_weights(small, state, "cut.pt")
    assert load_weights(tiny_model(1), tiny_model(2).state_dict(), "same.pt") == len(small.state_dict())
    with pytest.raises(ExportError, match="no export at"):
        resolve_export(tmp_path / "nothing")


def test_metric_files_are_cut_back_to_the_resumed_step(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    for step in range(1, 6):
        log.record("train", step, {"loss": 1.0 / step, "samples_seen": 4 * step})
    log.record("event", 5, {"event": "checkpoint"})
    log.close()
    log = MetricsLog(tmp_path, resume_step=3, tensorboard=False)
    log.record("train", 4, {"loss": float("nan")})
    log.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[-1]["loss"] is None
    csv_rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert csv_rows[0].startswith("kind,step,") and [r.split(",")[1] for r in csv_rows[1:]] == ["1", "2", "3", "4"]


def test_stop_request_records_the_first_signal_and_restores():
    before = signal.getsignal(signal.SIGUSR2)
    stop = StopRequest()
    os.kill(os.getpid(), signal.SIGUSR2)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signal == signal.SIGUSR2 and stop.name == "SIGUSR2"
    stop.restore()
    assert signal.getsignal(signal.SIGUSR2) == before


@pytest.mark.slow  # the first checkpointed call imports torch._dynamo (~10-30 s on a busy machine)
def test_activation_checkpointing_gives_the_same_gradients():
    lr, hr = torch.randn(2, 2, 6, 6), torch.randn(2, 3, 24, 24)
    grads = []
    for checkpointed in (False, True):
        model = tiny_model()
        if checkpointed:
            assert enable_activation_checkpointing(model) > 0
        model.mean_loss(lr, hr).backward()
        g = torch.Generator().manual_seed(0)
        model.diffusion_loss(lr, hr, hr.mul(0.5), generator=g).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-7)


def test_ema_by_hand_and_round_trip():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    ema = ShardedEMA({"w": w}, decay=0.9)
    with torch.no_grad():
        w.copy_(torch.tensor([3.0, 6.0]))
    ema.update()  # decay warms up: min(0.9, 1/10) = 0.1 -> 0.1 * old + 0.9 * new
    torch.testing.assert_close(ema.shadow[0], torch.tensor([2.8, 5.6]))
    ema.update()  # min(0.9, 2/11)
    d = 2 / 11
    torch.testing.assert_close(ema.shadow[0], d * torch.tensor([2.8, 5.6]) + (1 - d) * torch.tensor([3.0, 6.0]))
    state = ema.full_state()
    other = ShardedEMA({"w": torch.nn.Parameter(torch.zeros(2))}, decay=0.9)
    other.load_full_state(state)
    assert torch.equal(other.shadow[0], ema.shadow[0]) and other.updates == 2


def test_stage_objectives_freeze_what_they_do_not_train():
    lr, hr = torch.randn(2, 2, 6, 6), torch.randn(2, 3, 24, 24)
    mean = StageObjective(tiny_model(), "mean")
    assert not any(p.requires_grad for p in mean.model.denoiser.parameters())
    loss, parts = mean(lr, hr)
    assert loss.item() == parts[0].item() and math.isnan(parts[1].item())
    diffusion = StageObjective(tiny_model(), "diffusion").train()
    assert not diffusion.model.mean_net.training and diffusion.model.denoiser.training
    assert not any(p.requires_grad for p in diffusion.model.mean_net.parameters())
    joint = StageObjective(tiny_model(), "joint")
    loss, parts = joint(lr, hr, torch.Generator().manual_seed(1))
    assert loss.item() == pytest.approx(parts.sum().item(), rel=1e-6)
    loss.backward()
    assert all(p.grad is not None for p in joint.model.mean_net.parameters())


def test_the_mean_stage_trains_off_the_pooling_grid_and_validates_on_it():
    """train.mean_grid_shift: a training forward of the mean network runs on a window of the patch
    whose side is the largest multiple of the pooling grid g that fits at every offset, its corner drawn
    in 0..g-1 from the step's generator (the same generator, the same window), and the loss is the
    window's, computed here by hand; in eval mode (validation, export), without a generator or with the
    option off, the whole patch. The joint stage and the mm term refuse it; the diffusion stage ignores it."""
    from hpcsr.models.blocks import crop

    model = tiny_model()
    with torch.no_grad():  # a trained-like network: its output layer is not zero
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    g = torch.Generator().manual_seed(5)
    lr, hr = torch.randn(2, 2, 6, 6, generator=g), torch.randn(2, 3, 24, 24, generator=g)
    shifted = StageObjective(model, "mean", grid_shift=True).train()
    plain = StageObjective(model, "mean").train()
    grid = model.mean_net.grid
    assert grid == 4
    windows = {shifted.window(torch.Generator().manual_seed(k), (24, 22)) for k in range(40)}
    assert {w[2:] for w in windows} == {(20, 16)}  # 24 - 3 -> 20, 22 - 3 -> 16
    assert all(0 <= dy < grid and 0 <= dx < grid for dy, dx, _, _ in windows) and len(windows) > 8
    first = shifted(lr, hr, torch.Generator().manual_seed(1))[0]
    assert torch.equal(first, shifted(lr, hr, torch.Generator().manual_seed(1))[0])
    window = shifted.window(torch.Generator().manual_seed(1), (24, 24))
    target = crop(hr, window)
    by_hand = masked_mse(model.predict_mean(lr, window=window), target, torch.isfinite(target))
    torch.testing.assert_close(first, by_hand)
    unshifted = plain(lr, hr, torch.Generator().manual_seed(1))[0]
    assert not torch.allclose(first, unshifted)
    assert torch.equal(shifted(lr, hr)[0], unshifted)  # no generator: the whole patch
    shifted.eval()
    assert torch.equal(shifted(lr, hr, torch.Generator().manual_seed(1))[0], unshifted)
    with pytest.raises(ValueError, match="leaves no window"):
        StageObjective(model, "mean", grid_shift=True).train().window(torch.Generator(), (6, 24))
    for stage, weight in [("joint", 0.0), ("mean", 1.0)]:
        with pytest.raises(ValueError, match="mean_grid_shift is for the mean stage"):
            StageObjective(model, stage, grid_shift=True, mm_weight=weight, normaliser=object())
    StageObjective(model, "diffusion", grid_shift=True)


def test_mean_loss_mm_term_scores_the_delivered_field_by_hand():
    """The mm term is the MSE in mm of relu(denormalised mean) after the recipe's per-cell mass
    transform, over the HR variance; it is differentiable and conserves each cell's LR mass."""
    from hpcsr.coarsen import coarsen
    from hpcsr.data.normalise import Normaliser
    from hpcsr.train.objective import delivered_mm

    norm = Normaliser("log1p", 0.2, 0.7)
    model = tiny_model()
    generator = torch.Generator().manual_seed(3)
    lr = torch.randn(2, 2, 6, 6, generator=generator)
    hr = torch.randn(2, 3, 24, 24, generator=generator)
    hr[0, 0, 0, 0] = float("nan")
    plain = StageObjective(tiny_model(), "mean")
    weighted = StageObjective(model, "mean", normaliser=norm, mm_weight=2.0, hr_var_mm=0.5)
    mean = model.predict_mean(lr)
    delivered = delivered_mm(mean, lr, norm, model.recipe)
    lr_mm = norm.inverse(lr[:, 1])  # the target frame (context 2)
    torch.testing.assert_close(coarsen(delivered, 4, 3)[:, 0], lr_mm, rtol=1e-5, atol=1e-6)  # cell mass kept
    valid = torch.isfinite(hr)
    by_hand = ((mean - hr)[valid] ** 2).mean() + 2.0 * ((delivered - norm.inverse(hr))[valid] ** 2).mean() / 0.5
    loss, parts = weighted(lr, hr)
    torch.testing.assert_close(loss, by_hand, rtol=1e-5, atol=0)
    assert loss.item() > plain(lr, hr)[0].item()
    loss.backward()
    assert all(p.grad is not None for p in model.mean_net.parameters())
    with pytest.raises(ValueError, match="needs the normaliser"):
        StageObjective(tiny_model(), "mean", mm_weight=1.0)
