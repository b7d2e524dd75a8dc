"""hpcsr.transfer without training: strategies, the L/t/schedule changes, the report, refusals,
the freeze parameter groups and the transfer plan. Sources are real export files written by the
trainer's own writer (hpcsr.export.write_export) from tiny models with trained-looking
(perturbed) weights; seeds are loaded back with the trainer's `train.init_from` hook."""

import dataclasses
import json
import math

import pytest
import torch

from hpcsr import exits
from hpcsr import export as exports
from hpcsr.factors import FactorPair, recipe
from hpcsr.models import ModelConfig, build_model
from hpcsr.train.freeze import DEFAULT_PREFIXES, FreezeSpec, frozen_factor, param_groups
from hpcsr.transfer import main as transfer_main
from hpcsr.transfer import make_seed
from hpcsr.transfer.plan import distance, grid_parents, hydra_override, plan_chain
from hpcsr.transfer.sources import SourceError, load_source
from hpcsr.transfer.strategies import TransferRefused

TINY = ModelConfig.tiny()


def write_source(path, pair=(2, 1), cfg=TINY, stage="joint", seed=1):
    """An export of `pair` as the trainer writes it, with weights moved away from any fresh init."""
    r = recipe(*pair)
    torch.manual_seed(seed)
    model = build_model(cfg, r)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    metadata = {
        "format": exports.EXPORT_FORMAT,
        "format_version": exports.EXPORT_VERSION,
        "stage": stage,
        "trained": ["mean_net", "denoiser"] if stage == "joint" else ["mean_net"],
        "pair": {"s": r.pair.s, "t": r.pair.t, "name": r.pair.name},
        "recipe": exports.recipe_to_dict(r),
        "model": dataclasses.asdict(cfg),
        "future_context": 0,
        "normalisation": {"kind": "log1p", "shift": 0.1, "scale": 0.3},
        "step": 40,
        "samples_seen": 160,
        "config_hash": "feedc0de12345678",
        "lineage": [
            {
                "role": "self",
                "stage": stage,
                "pair": r.pair.name,
                "step": 40,
                "config_hash": "feedc0de12345678",
                "export": str(path),
            }
        ],
    }
    exports.write_export(path, model.state_dict(), metadata)
    return model


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "s2_t1" / "joint" / "export" / "model.pt"
    return path, write_source(path)


def test_transfer_to_other_L_and_t_copies_every_weight_and_rebuilds_the_schedule(tmp_path, source):
    src_path, src_model = source
    out = tmp_path / "seeds" / "s4_t2.pt"
    result = make_seed(src_path.parent.parent.parent, "4x2", out, "transfer")  # the run folder
    target = recipe(4, 2)
    assert (target.context, target.pair.t) != (10, 1)  # L 10 -> 6, t 1 -> 2
    rep = json.loads(result.report_path.read_text())
    tensors = {e["name"]: e for e in rep["tensors"]}
    own = src_model.state_dict()
    assert {n for n, e in tensors.items() if e["action"] == "copied"} == set(own)
    assert all(e["how"] == "copied (shape-independent of L/t)" for e in tensors.values() if e["action"] == "copied")
    schedule = [e for e in rep["tensors"] if e["name"].startswith("schedule.")]
    assert len(schedule) == 8 and all(
        e["action"] == "adapted" and f"..{target.beta_end:g}" in e["how"] for e in schedule
    )
    assert rep["summary"]["re-initialised"]["tensors"] == 0 and rep["summary"]["reinit_fraction"] == 0.0
    params = sum(p.numel() for p in src_model.parameters())  # the residual scale's buffers are copied, not counted
    assert rep["status"] == "ok" and rep["summary"]["target_parameters"] == params

    # the seed is what train.init_from loads: the target pair's model, the source's weights
    model = build_model(TINY, target)
    info = exports.init_from_export(model, out)
    assert info["pair"] == "s4_t2" and info["loaded"] == len(own)
    for k, v in model.state_dict().items():
        assert torch.equal(v, own[k]), k
    assert model.schedule.beta_end == target.beta_end != src_model.schedule.beta_end
    lr = torch.rand(2, target.context, 4, 4)
    assert model.predict_mean(lr).shape == (2, 2, 16, 16)  # L'=6 frames in, t'=2 frames out
    roles = [(e["role"], e["pair"]) for e in info["lineage"]]
    assert roles == [("transfer:transfer", "s2_t1"), ("init_from", "s4_t2")]
    meta = exports.load_export(out).metadata
    assert meta["stage"] == "seed" and meta["recipe"]["context"] == target.context and meta["step"] == 0
    assert meta["normalisation"]["kind"] == "log1p"  # what the copied weights were trained under


def test_warm_start_copies_all_and_keeps_lineage_chain(tmp_path, source):
    src_path, src_model = source
    first = make_seed(src_path, "4x2", tmp_path / "a.pt", "warm_start")
    second = make_seed(first.path, "10x3", tmp_path / "b.pt", "warm_start")  # a seed can seed again
    meta = exports.load_export(second.path).metadata
    assert [(e["role"], e["pair"]) for e in meta["lineage"]] == [
        ("transfer:warm_start", "s2_t1"),
        ("transfer:warm_start", "s4_t2"),
        ("self", "s10_t3"),
    ]
    assert all(
        torch.equal(v, src_model.state_dict()[k]) for k, v in exports.load_export(second.path).state_dict.items()
    )


def test_an_export_from_before_a_model_key_existed_seeds_with_the_value_it_was_trained_with(tmp_path):
    """An export written before model.residual_edge and model.mean_skip existed names neither: as a
    source it reads as trained (per-pixel edge, the held target frame), and its seed records that,
    not the keys' newer defaults (which its weights were never trained for)."""
    old = dataclasses.replace(TINY, residual_edge="pixel", mean_skip="hold")
    path = tmp_path / "old" / "model.pt"
    src_model = write_source(path, cfg=old)
    metadata = json.loads(path.with_suffix(".json").read_text())
    for key in ("residual_edge", "mean_skip"):
        del metadata["model"][key]
    exports.write_export(path, src_model.state_dict(), metadata)
    assert (load_source(path).model["residual_edge"], load_source(path).model["mean_skip"]) == ("pixel", "hold")
    seed = make_seed(path, "4x2", tmp_path / "seed.pt", "warm_start")
    loaded = exports.load_export(seed.path)
    assert (loaded.model_config.residual_edge, loaded.model_config.mean_skip) == ("pixel", "hold")
    assert all(torch.equal(v, src_model.state_dict()[k]) for k, v in loaded.state_dict.items())


def test_a_refused_transfer_leaves_an_earlier_seed_and_its_report_as_they_were(tmp_path, source):
    """Issue 15: a refusal used to overwrite <out>.report.json beside an earlier, good seed (a report
    of one transfer next to the seed of another). Now the seed, its JSON and report stay byte-identical
    and the refusal's report goes to <out>.refused.json."""
    src_path, _ = source
    out = tmp_path / "s4_t2.pt"
    make_seed(src_path, "4x2", out, "transfer")
    trio = [out, out.with_suffix(".json"), out.with_name("s4_t2.report.json")]
    before = [p.read_bytes() for p in trio]
    wide = ModelConfig(widths=(16, 32, 64), heads=2, windows=(3, 1, 1), emb_dim=16)
    with pytest.raises(TransferRefused, match="the earlier seed .* and its report are kept"):
        make_seed(src_path, "4x2", out, "transfer", model=wide)
    assert [p.read_bytes() for p in trio] == before
    assert json.loads(out.with_name("s4_t2.refused.json").read_text())["status"] == "refused"


def test_other_widths_are_refused_with_the_list_of_mismatched_tensors(tmp_path, source, capsys):
    src_path, _ = source
    wide = ModelConfig(widths=(16, 32, 64), heads=2, windows=(3, 1, 1), emb_dim=16)
    for strategy in ("warm_start", "weights_only", "transfer"):
        out = tmp_path / f"{strategy}.pt"
        with pytest.raises(TransferRefused) as err:
            make_seed(src_path, "4x2", out, strategy, model=wide)
        msg = str(err.value)
        assert "mean_net.stem.weight" in msg and "(8, 2, 3, 3) in the source vs (16, 2, 3, 3)" in msg
        assert not out.exists()
        rep = json.loads(out.with_name(f"{strategy}.report.json").read_text())
        assert rep["status"] == "refused" and "model.widths=[8, 16, 32] (source) vs [16, 32, 64]" in rep["error"]
    forced = make_seed(src_path, "4x2", tmp_path / "forced.pt", "transfer", model=wide, force=True)
    assert forced.report.status == "forced" and forced.report.reinit_fraction > 0.99 and forced.path.exists()
    # the CLI says the same and exits 3; the report keeps the full list
    code = transfer_main(
        ["seed", str(src_path), "--to", "4x2", "--out", str(tmp_path / "cli.pt"), "model.widths=[16,32,64]"]
    )
    assert code == exits.REFUSED
    err = capsys.readouterr().err
    assert "refused" in err and "mean_net.stem.weight" in err and "more (all in the report JSON)" in err


def test_transfer_reinitialises_what_does_not_fit_within_the_limit(tmp_path, source):
    src_path, src_model = source
    more_attention = dataclasses.replace(TINY, windows=(3, 3, 1))  # adds window attention at level 1
    with pytest.raises(TransferRefused, match="would be re-initialised"):
        make_seed(src_path, "4x2", tmp_path / "strict.pt", "transfer", model=more_attention, max_reinit=0.0)
    result = make_seed(src_path, "4x2", tmp_path / "seed.pt", "transfer", model=more_attention, max_reinit=0.5)
    rep = result.report
    new = [e for e in rep.entries if e.action == "re-initialised"]
    assert new and all(".encoder.1.spatial." in e.name and e.how.startswith("not in the source") for e in new)
    target_model = build_model(more_attention, recipe(4, 2))
    target = target_model.state_dict()
    expected = sum(target[e.name].numel() for e in new) / sum(p.numel() for p in target_model.parameters())
    assert rep.reinit_fraction == pytest.approx(expected) and 0 < expected < 0.5
    seed = exports.load_export(result.path).state_dict
    assert all(torch.equal(seed[k], v) for k, v in src_model.state_dict().items())  # the rest copied


def test_new_static_channels_are_adapted_and_leave_the_function_unchanged(tmp_path, source):
    src_path, src_model = source
    with_static = dataclasses.replace(TINY, static_channels=1)
    result = make_seed(src_path, "2x6", tmp_path / "seed.pt", "transfer", model=with_static)  # L = 3: a cheap check
    adapted = {
        e.name: e.how for e in result.report.entries if e.action == "adapted" and not e.name.startswith("schedule.")
    }
    assert set(adapted) == {"mean_net.stem.weight", "denoiser.stem.weight", "denoiser.context_encoder.stem.weight"}
    assert all("1 new static channel(s) zero-initialised" in how for how in adapted.values())
    model = build_model(with_static, recipe(2, 6))
    exports.init_from_export(model, result.path)
    reference = build_model(TINY, recipe(2, 6))
    reference.load_state_dict(src_model.state_dict())
    lr = torch.rand(2, 3, 4, 4)
    static = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.predict_mean(lr, static), reference.predict_mean(lr), rtol=0, atol=1e-6)


def test_weights_only_takes_a_bare_state_dict_warm_start_does_not(tmp_path, source):
    _, src_model = source
    bare = tmp_path / "bare.pt"
    torch.save({"module": {"model." + k: v for k, v in src_model.state_dict().items()}}, bare)
    assert load_source(bare).kind == "state_dict"
    with pytest.raises(ValueError, match="carries no model config"):
        make_seed(bare, "4x2", tmp_path / "x.pt", "weights_only")
    result = make_seed(bare, "4x2", tmp_path / "w.pt", "weights_only", model=TINY)
    lineage = exports.load_export(result.path).metadata["lineage"]
    assert lineage[0]["role"] == "transfer:weights_only" and len(lineage[0]["sha256"]) == 64
    with pytest.raises(ValueError, match="needs an hpcsr export or checkpoint"):
        make_seed(bare, "4x2", tmp_path / "y.pt", "warm_start", model=TINY)
    junk = tmp_path / "junk.pt"
    torch.save([1, 2, 3], junk)
    with pytest.raises(SourceError, match="neither an hpcsr export nor a state dict"):
        load_source(junk)
    junk.write_bytes(b"not a torch file")
    with pytest.raises(SourceError, match="cannot read"):
        load_source(junk)


def test_freeze_spec_travels_in_the_seed_and_bad_prefixes_are_refused(tmp_path, source):
    src_path, _ = source
    spec = FreezeSpec(DEFAULT_PREFIXES, 5)
    result = make_seed(src_path, "4x2", tmp_path / "f.pt", "freeze", freeze=spec)
    assert exports.load_export(result.path).metadata["freeze"] == {"prefixes": list(DEFAULT_PREFIXES), "steps": 5}
    with pytest.raises(ValueError, match=r"match no parameter.*mean_net\.encoder\."):
        make_seed(src_path, "4x2", tmp_path / "g.pt", "freeze", freeze=FreezeSpec(("mean_net.encoders.",), 5))
    with pytest.raises(ValueError, match="needs a freeze spec"):
        make_seed(src_path, "4x2", tmp_path / "h.pt", "freeze")
    with pytest.raises(ValueError, match="steps=0"):
        FreezeSpec(DEFAULT_PREFIXES, 0)


@pytest.mark.slow  # a DeepSpeed engine
def test_frozen_group_has_zero_learning_rate_then_the_run_schedule():
    model = build_model(TINY, recipe(2, 6))  # L = 3, t = 6 on 8 x 8 patches: cheap steps
    named = [("model." + n, p) for n, p in model.named_parameters()]
    schedule = lambda step: 0.5 + step  # noqa: E731
    groups, factors = param_groups(named, FreezeSpec(("mean_net.encoder.",), 3), schedule, strip="model.")
    frozen_ids = {id(p) for n, p in model.named_parameters() if n.startswith("mean_net.encoder.")}
    assert {id(p) for p in groups[1]} == frozen_ids and not frozen_ids & {id(p) for p in groups[0]}
    assert [factors[1](s) for s in range(5)] == [0.0, 0.0, 0.0, 3.5, 4.5] and factors[0](1) == 1.5
    assert frozen_factor(2, 3, schedule) == 0.0
    # AdamW with lr 0 (and weight decay) leaves the group bit-identical while the rest moves
    opt = torch.optim.AdamW([{"params": g} for g in groups], lr=1e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factors)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lr = torch.rand(2, 3, 4, 4)
    hr = torch.rand(2, 6, 8, 8)
    for _ in range(3):
        model.mean_loss(lr, hr).backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after if k.startswith("mean_net.encoder."))
    assert not torch.equal(before["mean_net.head.conv1.weight"], after["mean_net.head.conv1.weight"])
    model.mean_loss(lr, hr).backward()
    opt.step()  # step 3: unfrozen
    assert not torch.equal(
        before["mean_net.encoder.0.blocks.0.conv1.weight"],
        model.state_dict()["mean_net.encoder.0.blocks.0.conv1.weight"],
    )
    assert param_groups(named, None, schedule)[1] == [schedule]


@pytest.mark.parametrize("to, bad", [("30x2", "s=30"), ("4x7", "t=7"), ("0x1", "s=0")])
def test_target_pair_outside_the_range_is_refused(tmp_path, source, capsys, to, bad):
    src_path, _ = source
    code = transfer_main(["seed", str(src_path), "--to", to, "--out", str(tmp_path / "x.pt")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"--to '{to}'" in err and bad in err and ("1..25" in err or "1..6" in err)
    assert not (tmp_path / "x.pt").exists()


def test_cli_seed_prints_every_tensor_and_rejects_bad_options(tmp_path, source, capsys):
    src_path, src_model = source
    out = tmp_path / "c.pt"
    assert transfer_main(["seed", str(src_path), "--to", "s4_t2", "--out", str(out), "factor.context=3"]) == 0
    text = capsys.readouterr().out
    assert text.count("copied (shape-independent of L/t)") == len(src_model.state_dict())
    assert "train.init_from=" in text and exports.load_export(out).metadata["recipe"]["context"] == 3
    assert transfer_main(["seed", str(src_path), "--to", "4x2", "--out", str(out), "--strategy", "freeze"]) == 2
    assert "--freeze-steps" in capsys.readouterr().err
    assert transfer_main(["seed", str(src_path), "--to", "4x2", "--out", str(out), "factor.s=3"]) == 2
    assert "set by --to" in capsys.readouterr().err
    assert transfer_main(["seed", str(tmp_path / "nothing"), "--to", "4x2", "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_plan_distance_order_and_parents_by_hand():
    assert distance(FactorPair(10, 3), FactorPair(2, 1), weight_t=2) == pytest.approx(math.log(5) + 2 * math.log(3))
    entries = plan_chain(["25x6", "10x3", "1x3", "10x1"])
    assert [e.pair.name for e in entries] == ["s1_t3", "s10_t1", "s10_t3", "s25_t6"]  # by volume 3, 100, 300, 3750
    # (10,1): only (1,3), d = ln 10 + ln 3; (10,3): (10,1) at ln 3 beats (1,3) at ln 10;
    # (25,6): (10,3) at ln 2.5 + ln 2 beats (10,1) at ln 2.5 + ln 6
    assert [(e.parent.name if e.parent else None, e.level) for e in entries] == [
        (None, 0),
        ("s1_t3", 1),
        ("s10_t1", 2),
        ("s10_t3", 3),
    ]
    assert entries[3].distance == pytest.approx(math.log(2.5) + math.log(2))
    shallow = plan_chain(["25x6", "10x3", "1x3", "10x1"], max_depth=1)
    assert [(e.pair.name, e.parent.name if e.parent else None) for e in shallow] == [
        ("s1_t3", None),
        ("s10_t1", "s1_t3"),
        ("s10_t3", "s1_t3"),
        ("s25_t6", "s1_t3"),
    ]
    # trained pairs are candidates (any size) but not retrained; ties go to the smaller pair
    tied = plan_chain(["4x1"], trained=["2x1", "8x1"])
    assert tied[0].parent == FactorPair(2, 1) and tied[0].parent_trained and tied[0].level == 0
    assert plan_chain(["10x3"], max_distance=0.5, trained=["1x1"])[0].parent is None


def test_plan_output_feeds_hpcsr_launch_grid_parents(capsys):
    from hpcsr.config import compose
    from hpcsr.factors import expand_grid
    from hpcsr.launch.grid import levels, parse_parents

    assert transfer_main(["plan", "--grid", "product", "grid.s=[2,4]", "grid.t=[1,2]", "--format", "hydra"]) == 0
    override = capsys.readouterr().out.strip()
    assert override == hydra_override(grid_parents(["2x1", "2x2", "4x1", "4x2"]))
    cfg = compose(["grid=product", "grid.s=[2,4]", "grid.t=[1,2]", override])
    pairs = expand_grid(cfg.grid)
    links = parse_parents(cfg.grid.parents, pairs, lambda p: False)
    assert {c.name: link.parent.name for c, link in links.items()} == {
        "s2_t2": "s2_t1",
        "s4_t1": "s2_t1",
        "s4_t2": "s2_t2",
    }
    assert [[p.name for p in level] for level in levels(pairs, links)] == [["s2_t1"], ["s2_t2", "s4_t1"], ["s4_t2"]]
