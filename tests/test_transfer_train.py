"""Transfer with real training runs: `python -m hpcsr.train.cli` (one process, real DeepSpeed ZeRO 1
with gloo on CPU, the tiny model) on shards written by the real preprocessing code (the
`train_dataset` fixture: pairs (2, 1) and (4, 3)). A (2, 1) source run (joint stage, with the
denoiser's EMA) gives an export and DeepSpeed checkpoints; seeds for (4, 3) are made from both, and a freeze seed is trained with
train.init_from, interrupted at a checkpoint and resumed with init_from pointing nowhere (resume
beats init)."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hpcsr import export as exports
from hpcsr.factors import recipe
from hpcsr.train.freeze import DEFAULT_PREFIXES, FreezeSpec
from hpcsr.transfer import main as transfer_main
from hpcsr.transfer import make_seed
from hpcsr.transfer.sources import SourceError, load_source

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
COMMON = [
    "model=tiny",
    "factor.patch=24",
    "data.batch_size=2",
    "data.future_context=0",  # the 4-day fixture's val split has no (4,3) block with one after it
    "train.lr=1e-3",
    "train.warmup_steps=1",
    "train.log_every=1",
    "train.progress=false",
    "data.val_patches=2",
    "train.val_every=2",
    "train.checkpoint_every=2",
]
TARGET_CONTEXT = 2  # the 4-day test shard's validation split is too short for recipe(4, 3)'s L = 5


def train(run_dir, data, *overrides, expect=0) -> str:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
        and not k.startswith(("SLURM_", "PMI_", "OMPI_", "HPCSR_FAULT"))
    }
    env.update(
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", HPCSR_DIST_SOURCE="single", PYTHONPATH=str(REPO)
    )
    cmd = [sys.executable, "-m", "hpcsr.train.cli", *COMMON, f"data_dir={data}", f"run_dir={run_dir}", *overrides]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    text = out.stdout + out.stderr
    assert out.returncode == expect, f"exit {out.returncode}, expected {expect}:\n{text[-4000:]}"
    return text


@pytest.fixture(scope="module")
def source_run(train_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("transfer_source") / "s2_t1"
    train(
        run,
        train_dataset,
        "factor.s=2",
        "factor.t=1",
        "factor.context=4",
        "train.steps=4",
        "train.stage=joint",
        "train.ema_decay=0.5",
    )
    return run


def test_checkpoint_source_gives_the_export_weights(source_run, tmp_path):
    export = exports.load_export(source_run / "joint")
    assert export.metadata["ema"]["applied"] and export.raw_state_dict is not None
    for weights, expected in (("ema", export.state_dict), ("raw", export.raw_state_dict)):
        from_ckpt = load_source(source_run / "joint" / "checkpoints" / "step_4", weights=weights)
        from_run = load_source(source_run, weights=weights)  # run folder -> joint/export/model.pt
        assert from_ckpt.kind == "checkpoint" and from_run.kind == "export"
        assert from_ckpt.pair.name == "s2_t1" and from_ckpt.metadata["step"] == 4 == from_run.metadata["step"]
        assert from_ckpt.state_dict.keys() == expected.keys() == from_run.state_dict.keys()
        for k, v in expected.items():
            assert torch.equal(from_ckpt.state_dict[k], v) and torch.equal(from_run.state_dict[k], v), (weights, k)
    ema_differs = [k for k in export.state_dict if not torch.equal(export.state_dict[k], export.raw_state_dict[k])]
    assert {k.split(".")[0] for k in ema_differs} == {"mean_net", "denoiser"}  # the joint stage trains both
    r = dataclasses.replace(recipe(4, 3), context=TARGET_CONTEXT)
    seed = make_seed(source_run / "joint" / "checkpoints", "4x3", tmp_path / "s.pt", "warm_start", recipe=r)
    lineage = exports.load_export(seed.path).metadata["lineage"]
    assert lineage[0]["role"] == "transfer:warm_start" and lineage[0]["export"].endswith("step_4")


def test_checkpoint_without_its_completion_marker_is_refused(source_run, tmp_path, capsys):
    root = tmp_path / "checkpoints"
    shutil.copytree(source_run / "joint" / "checkpoints" / "step_2", root / "step_2")
    shutil.copytree(source_run / "joint" / "checkpoints" / "step_4", root / "step_6")
    (root / "step_6" / "COMPLETE.json").unlink()  # as a save killed before its marker
    with pytest.raises(SourceError, match=r"step_6 has no valid completion marker .*complete: step_2"):
        load_source(root / "step_6")
    assert transfer_main(["seed", str(root / "step_6"), "--to", "4x3", "--out", str(tmp_path / "x.pt")]) == 2
    assert "no valid completion marker" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
    # a marker whose files do not match (truncated shard) is no better
    states = root / "step_2" / "mp_rank_00_model_states.pt"
    states.write_bytes(states.read_bytes()[:100])
    with pytest.raises(SourceError, match="step_2 has no valid completion marker"):
        load_source(root / "step_2")
    with pytest.raises(SourceError, match="holds no complete checkpoint"):
        load_source(root)


def test_freeze_seed_trains_with_init_from_and_resume_beats_init(source_run, train_dataset, tmp_path):
    r = dataclasses.replace(recipe(4, 3), context=TARGET_CONTEXT)
    seed = make_seed(
        source_run, "4x3", tmp_path / "seeds" / "s4_t3.pt", "freeze", recipe=r, freeze=FreezeSpec(DEFAULT_PREFIXES, 2)
    ).path
    seeded = exports.load_export(seed).state_dict
    run = tmp_path / "s4_t3"
    target = ["factor.s=4", "factor.t=3", f"factor.context={TARGET_CONTEXT}"]

    log = train(run, train_dataset, *target, "train.stage=mean", "train.steps=2", f"train.init_from={seed}")
    # 264 weights and the residual scale's three buffers (std, coefficients, dry value; a diffusion
    # stage measures them anew), and "frozen for steps 0..1" in log
    assert "initialised 267 tensors from" in log
    marker = json.loads((run / "mean" / "checkpoints" / "step_2" / "COMPLETE.json").read_text())
    assert marker["freeze"] == {"prefixes": list(DEFAULT_PREFIXES), "steps": 2}
    at2 = exports.load_export(run / "mean").state_dict
    frozen = [k for k in at2 if k.startswith(DEFAULT_PREFIXES)]
    trained = [k for k in at2 if k.startswith(("mean_net.head.", "mean_net.decoder.", "mean_net.out."))]
    assert frozen and all(torch.equal(at2[k], seeded[k]) for k in frozen)
    assert any(not torch.equal(at2[k], seeded[k]) for k in trained)

    # the run folder has a complete checkpoint: it resumes, and the initial-weights option is ignored
    log = train(
        run, train_dataset, *target, "train.stage=mean", "train.steps=4", f"train.init_from={tmp_path / 'missing.pt'}"
    )
    assert "resumed from" in log and "initialised" not in log
    final = exports.load_export(run / "mean")
    assert final.metadata["step"] == 4
    assert any(not torch.equal(final.state_dict[k], seeded[k]) for k in frozen)  # unfrozen from step 2 on
    assert [(e["role"], e["pair"], e["stage"]) for e in final.lineage] == [
        ("transfer:freeze", "s2_t1", "joint"),
        ("init_from", "s4_t3", "seed"),
        ("self", "s4_t3", "mean"),
    ]

    # without a checkpoint the same missing init_from is an error: init is really read
    log = train(
        tmp_path / "fresh",
        train_dataset,
        *target,
        "train.stage=mean",
        "train.steps=2",
        f"train.init_from={tmp_path / 'missing.pt'}",
        expect=2,  # bad input (hpcsr/exits.py)
    )
    assert "no export at" in log
