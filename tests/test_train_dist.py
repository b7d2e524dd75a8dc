"""Training with real processes: 2 ranks of `python -m hpcsr.train.cli` found by hpcsr.dist (env
variables), real DeepSpeed with gloo on CPU, the tiny model on a shard written by the real
preprocessing writer. A reference run (2 ranks, ZeRO 1, 8 steps) is the yardstick: every
interrupted and resumed run must end with bitwise the same weights and log the same losses.

Fault injection (documented in hpcsr.train.checkpoint) stands in for a full disk and slows one save
down so that it can be killed mid-write; the signal, kill -9 and non-finite losses are real.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from hpcsr.dist import free_port
from hpcsr.train.calibration import GAINS

pytestmark = [pytest.mark.dist, pytest.mark.slow]  # each test starts DeepSpeed processes (15-140 s on 2 busy cores)

REPO = Path(__file__).resolve().parents[1]
COMMON = [
    "model=tiny",
    "factor.s=4",
    "factor.t=3",
    "factor.context=2",
    "factor.patch=24",
    "data.batch_size=2",
    "data.future_context=0",  # the 4-day fixture's val split has no 3-hour block with one after it
    "train.lr=1e-3",
    "train.warmup_steps=2",
    "train.log_every=1",
    "train.progress=false",
]
REFERENCE = [
    "train.keep_better_start=true",  # the choice between the trained mean network and its start, recorded
    "train.mean_grid_shift=true",  # the mean network trained off its pooling grid: resumes must stay exact
    "train.steps=8",
    "train.checkpoint_every=2",
    "train.export_every=4",
    "train.keep_checkpoints=4",
    "train.val_every=4",
    "data.val_patches=4",
]
_LAUNCH_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "HPCSR_DIST_SOURCE",
    "TORCHELASTIC_RUN_ID",
)


def child_env(extra=None) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _LAUNCH_VARS and not k.startswith(("SLURM_", "PMI_", "PMIX_", "OMPI_", "HPCSR_FAULT"))
    }
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    env.update(extra or {})
    return env


class Ranks:
    """n processes of `python -m hpcsr.train.cli` (or of a script) wired together by env variables."""

    def __init__(self, n, args, logs: Path, extra_env=None):
        port = free_port()
        logs.mkdir(parents=True, exist_ok=True)
        self.logs = [logs / f"rank{r}.log" for r in range(n)]
        self.procs = []
        for r in range(n):
            env = child_env(
                {
                    "RANK": str(r),
                    "WORLD_SIZE": str(n),
                    "LOCAL_RANK": str(r),
                    "LOCAL_WORLD_SIZE": str(n),
                    "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": str(port),
                    **(extra_env or {}),
                }
            )
            with open(self.logs[r], "w") as out:
                self.procs.append(
                    subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
                )

    def wait(self, timeout=240) -> list[int]:
        deadline = time.monotonic() + timeout
        codes = []
        for p in self.procs:
            try:
                codes.append(p.wait(timeout=max(deadline - time.monotonic(), 1)))
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"training did not end within {timeout} s:\n{self.output()}")
        return codes

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    def output(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in self.logs)


def train(n, run_dir, data, overrides=(), extra_env=None, timeout=240, expect=0):
    ranks = Ranks(
        n,
        ["-m", "hpcsr.train.cli", *COMMON, f"data_dir={data}", f"run_dir={run_dir}", *overrides],
        Path(run_dir).parent / f"logs_{Path(run_dir).name}_{time.monotonic_ns()}",
        extra_env,
    )
    codes = ranks.wait(timeout)
    assert codes == [expect] * n, f"exit codes {codes}, expected {expect}:\n{ranks.output()}"
    return ranks


def wait_for(predicate, ranks, timeout=180, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if any(p.poll() is not None for p in ranks.procs):
            pytest.fail(f"a rank ended before {what}:\n{ranks.output()}")
        if time.monotonic() > deadline:
            ranks.kill()
            pytest.fail(f"no {what} within {timeout} s:\n{ranks.output()}")
        time.sleep(0.02)


def records(stage_dir, kind=None):
    path = Path(stage_dir) / "logs" / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if kind is None or r["kind"] == kind]


def losses(stage_dir):
    return {r["step"]: r["loss"] for r in records(stage_dir, "train")}


def export_blob(stage_dir, name="model.pt"):
    return torch.load(Path(stage_dir) / "export" / name, map_location="cpu", weights_only=False)


def assert_same_weights(a, b):
    for key in ("state_dict", "raw_state_dict"):
        assert (key in a) == (key in b)
        if key in a:
            assert a[key].keys() == b[key].keys()
            different = [k for k in a[key] if not torch.equal(a[key][k], b[key][k])]
            assert not different, f"{len(different)} tensors differ in {key}, e.g. {different[:3]}"


def copy_checkpoint(src_stage, dst_stage, step):
    (dst_stage / "checkpoints").mkdir(parents=True)
    shutil.copytree(src_stage / "checkpoints" / f"step_{step}", dst_stage / "checkpoints" / f"step_{step}")


def train_one_rank(args, timeout=300) -> subprocess.CompletedProcess:
    """`hpcsr train ARGS` in one fresh process (one rank), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "hpcsr.train.cli", *args],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_script(code, tmp_path, timeout=240):
    """Run `code` in one fresh process (hpcsr.dist finds a single rank); returns its stdout."""
    script = tmp_path / f"script_{time.monotonic_ns()}.py"
    script.write_text(textwrap.dedent(code))
    out = subprocess.run(
        [sys.executable, str(script)], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, f"script failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def reference(train_dataset, tmp_path_factory):
    """2 ranks, ZeRO 1, mean stage, 8 steps, checkpoints every 2, milestone exports every 4."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    train(2, run_dir, train_dataset, REFERENCE)
    return run_dir / "mean"


def test_reference_run_layout_logs_and_export(reference, train_dataset):
    ckpt = reference / "checkpoints"
    assert sorted(p.name for p in ckpt.glob("step_*")) == ["step_2", "step_4", "step_6", "step_8"]
    marker = json.loads((ckpt / "step_8" / "COMPLETE.json").read_text())
    assert marker["world_size"] == 2 and marker["pair"] == "s4_t3" and marker["samples_seen"] == 8 * 2 * 2
    assert {"rank_00000.pt", "rank_00001.pt", "mp_rank_00_model_states.pt"} <= set(marker["files"])
    assert sorted(p.name for p in (reference / "export").iterdir()) == [
        "model.json",
        "model.pt",
        "model_step_4.json",
        "model_step_4.pt",
    ]
    assert sorted(losses(reference)) == list(range(1, 9))
    assert [r["step"] for r in records(reference, "val")] == [4, 8]
    train_rows = records(reference, "train")
    assert all(
        r["lr"] > 0 and r["grad_norm"] > 0 and r["samples_per_s"] > 0 and r["rss_mb_max"] > 0 for r in train_rows[:-1]
    )
    csv = (reference / "logs" / "metrics.csv").read_text().splitlines()
    assert len(csv) == 1 + 8 + 2
    assert list((reference / "logs" / "tensorboard").iterdir())

    from hpcsr.data.store import Shard
    from hpcsr.export import load_export

    export = load_export(reference)  # a stage folder resolves to export/model.pt
    meta = export.metadata
    assert meta["step"] == 8 and meta["samples_seen"] == 32 and meta["stage"] == "mean"
    assert (
        meta["pair"] == {"s": 4, "t": 3, "name": "s4_t3"} and export.recipe.context == 2 and export.recipe.patch == 24
    )
    with Shard(train_dataset / "shards" / "s4_t3.h5") as shard:
        assert meta["normalisation"]["stats"] == shard.stats
        assert export.normaliser.shift == shard.stats["hr_log1p_mean"]
    assert meta["lineage"][-1]["role"] == "self" and len(meta["lineage"]) == 1
    assert meta["code_version"]["hpcsr"] and len(meta["config_hash"]) == 16
    assert json.loads((reference / "export" / "model.json").read_text())["step"] == 8
    model = export.build_model()
    assert set(model.state_dict()) == set(export.state_dict)
    # the mean stage exports the EMA of what it trains (the mean network), the raw weights beside it
    assert meta["ema"]["applied"] and meta["ema"]["updates"] == 8
    differs = {k for k in export.state_dict if not torch.equal(export.state_dict[k], export.raw_state_dict[k])}
    assert differs and all(k.startswith("mean_net.") for k in differs)
    # ... or its start, had that validated better (hpcsr.train.mean_selection): the record says which
    choice = meta["mean_selection"]
    assert choice["patches"] == 4 and choice["kept"] == (
        "start" if choice["val_loss_start"] < choice["val_loss_trained"] else "trained"
    )
    head = [v for k, v in export.state_dict.items() if k.startswith("mean_net.out.2.")]  # the output conv
    assert any(v.any() for v in head) == (choice["kept"] == "trained")
    milestone = export_blob(reference, "model_step_4.pt")
    assert milestone["metadata"]["step"] == 4


def test_signal_failed_save_and_kill_minus_9_then_resume_exactly(reference, train_dataset, tmp_path):
    """One run survives: a full disk at step 4 on rank 1 (step_2 kept, training goes on), SIGUSR2
    to rank 1 alone (all ranks checkpoint and exit 3), kill -9 in the middle of a later save
    (the previous checkpoint is resumed). It ends bitwise equal to the uninterrupted reference."""
    run_dir = tmp_path / "run"
    stage = run_dir / "mean"
    overrides = REFERENCE + ["train.init_from=/nonexistent/export.pt"]  # resume must win over init_from

    first = Ranks(
        2,
        ["-m", "hpcsr.train.cli", *COMMON, f"data_dir={train_dataset}", f"run_dir={run_dir}", *REFERENCE],
        tmp_path / "logs1",
        {"HPCSR_FAULT_SAVE_ERROR": "4:1"},
    )
    wait_for(lambda: any(r.get("event") == "checkpoint_failed" for r in records(stage)), first, what="the failed save")
    first.procs[1].send_signal(signal.SIGUSR2)
    assert first.wait() == [3, 3], first.output()
    failed = next(r for r in records(stage) if r.get("event") == "checkpoint_failed")
    assert failed["step"] == 4 and "step_4 NOT saved" in failed["message"] and "step_2 is kept" in failed["message"]
    assert "No space left on device" in failed["message"]
    stop = next(r for r in records(stage) if r.get("event") == "stop_request")
    stopped_at = stop["step"]
    assert 5 <= stopped_at < 8 and "SIGUSR2 on some rank" in stop["message"]
    assert (stage / "checkpoints" / f"step_{stopped_at}" / "COMPLETE.json").exists()
    assert not (stage / "checkpoints" / "step_4").exists()

    # second attempt: killed with SIGKILL while it writes the checkpoint of step 8
    second = Ranks(
        2,
        ["-m", "hpcsr.train.cli", *COMMON, f"data_dir={train_dataset}", f"run_dir={run_dir}", *overrides],
        tmp_path / "logs2",
        {"HPCSR_FAULT_SAVE_DELAY_S": "8:120"},
    )
    tag8 = stage / "checkpoints" / "step_8"
    wait_for(lambda: tag8.is_dir() and any(tag8.iterdir()), second, what="the step 8 save")
    second.kill()
    assert not (tag8 / "COMPLETE.json").exists()
    from hpcsr.train.checkpoint import CheckpointManager

    survivor = CheckpointManager(stage / "checkpoints", keep=4).latest()
    assert survivor is not None and stopped_at <= survivor.step < 8

    train(2, run_dir, train_dataset, overrides)
    assert_same_weights(export_blob(stage), export_blob(reference))
    assert losses(stage) == losses(reference)  # one record per step, the same losses


def test_a_checkpoint_with_flipped_bytes_is_not_resumed(reference, train_dataset, tmp_path):
    """Issue 15, finding 3: 400 bytes flipped inside the newest checkpoint's model states (same size,
    so the marker's sizes still match) used to be resumed silently (exit 0, 109 tensors differing in
    the final export). Its SHA-256 no longer matches: resume warns naming the file, falls back to the
    checkpoint before, and ends bitwise equal to the reference."""
    stage = tmp_path / "run" / "mean"
    copy_checkpoint(reference, stage, 4)
    shutil.copytree(reference / "checkpoints" / "step_6", stage / "checkpoints" / "step_6")
    states = stage / "checkpoints" / "step_6" / "mp_rank_00_model_states.pt"
    data = bytearray(states.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 400] = bytes(b ^ 0xFF for b in data[middle : middle + 400])
    states.write_bytes(bytes(data))
    ranks = train(2, tmp_path / "run", train_dataset, REFERENCE)
    log = ranks.output()
    assert "mp_rank_00_model_states.pt does not match its SHA-256" in log and "falling back" in log, log
    start = next(r for r in records(stage) if r.get("event") == "start")
    assert start["resumed_from"].endswith("step_4")
    assert_same_weights(export_blob(stage), export_blob(reference))


@pytest.mark.parametrize("case", ["zero2-diffusion-accumulation-workers", "zero3-joint-ema"])
def test_exact_resume_other_zero_stages(case, reference, train_dataset, tmp_path):
    """Stopped at step 2 and resumed, a run ends bitwise equal to the uninterrupted one: ZeRO 2 on the
    diffusion stage (frozen mean from the reference export, 2 micro-batches per step, a DataLoader
    worker per rank) and ZeRO 3 with every parameter sharded on the joint stage (EMA gathered from
    shards)."""
    stage_name = "diffusion" if "diffusion" in case else "joint"
    overrides = ["train.steps=4", "train.checkpoint_every=2", f"train.stage={stage_name}"]
    if stage_name == "diffusion":
        overrides += [
            "train.val_every=0",
            "deepspeed=zero2",
            "deepspeed.gradient_accumulation=2",
            "data.num_workers=1",
            f"train.mean_from={reference / 'export' / 'model.pt'}",
        ]
    else:
        overrides += [
            "deepspeed=zero3",
            "deepspeed.param_persistence_threshold=0",
            "train.val_every=2",
            "data.val_patches=3",
        ]
    full = tmp_path / "full"
    train(2, full, train_dataset, overrides)
    resumed = tmp_path / "resumed"
    copy_checkpoint(full / stage_name, resumed / stage_name, 2)
    train(2, resumed, train_dataset, overrides)
    a, b = export_blob(full / stage_name), export_blob(resumed / stage_name)
    assert_same_weights(a, b)
    assert losses(resumed / stage_name) == {k: v for k, v in losses(full / stage_name).items() if k > 2}
    val = {r["step"]: r["val_loss"] for r in records(full / stage_name, "val")}
    val_resumed = {r["step"]: r["val_loss"] for r in records(resumed / stage_name, "val")}
    if stage_name == "joint":  # validation under ZeRO 3 (collectives in every forward), same after resume
        assert sorted(val) == [2, 4] and val_resumed == {4: val[4]}
    assert "raw_state_dict" in a and a["metadata"]["ema"]["applied"]  # the EMA of the trained networks is exported
    fit = a["metadata"]["spread_calibration"]  # fitted on the validation patches at the end
    assert fit == b["metadata"]["spread_calibration"]  # same weights, same patches, same seed: same gain
    assert fit["gain"] in GAINS and abs(math.log(fit["spread_skill_at_gain"])) <= abs(
        math.log(fit["spread_skill_at_one"])
    )
    assert (fit["sampler"], fit["steps"], fit["members"], fit["space"]) == ("dpmpp2m_ddim", 10, 8, "mm")
    if stage_name == "diffusion":
        mean_export = export_blob(reference)["state_dict"]
        frozen = [k for k in mean_export if k.startswith("mean_net.")]
        assert frozen and all(torch.equal(a["state_dict"][k], mean_export[k]) for k in frozen)
        assert [e["role"] for e in a["metadata"]["lineage"]] == ["mean_from", "self"]
        assert a["metadata"]["samples_seen"] == 4 * 2 * 2 * 2  # steps x micro-batches x batch x ranks


def test_universal_resume_on_one_rank_and_refusal_of_another_architecture(reference, train_dataset, tmp_path):
    """A 2-rank ZeRO-1 checkpoint resumes on 1 rank through DeepSpeed's universal checkpoint: the
    weights after loading are the reference's at that step, the data stream continues at the samples
    seen. A different architecture in the same run folder is refused, naming both."""
    run_dir = tmp_path / "run"
    copy_checkpoint(reference, run_dir / "mean", 4)
    out = run_script(
        f"""
        import json, torch
        from hpcsr.config import compose
        from hpcsr.dist import init_distributed, shutdown
        from hpcsr.train.checkpoint import CheckpointIncompatible
        from hpcsr.export import strip_prefix
        from hpcsr.train.trainer import Trainer
        common = {COMMON!r} + {REFERENCE!r} + ["data_dir={train_dataset}", "run_dir={run_dir}"]
        info = init_distributed()
        try:
            Trainer(compose(common + ["model.widths=[8,16,64]"]), info).setup()
            raise SystemExit("another architecture was accepted")
        except CheckpointIncompatible as err:
            refused = str(err)
        t = Trainer(compose(common), info)
        t.setup()
        loaded = strip_prefix({{k: v.detach().clone() for k, v in t.engine.module.state_dict().items()}}, "model.")
        # the optimised weights at step 4 (the export's state_dict is their EMA)
        ref = torch.load("{reference / "export" / "model_step_4.pt"}", weights_only=False)["raw_state_dict"]
        same = all(torch.equal(loaded[k].float(), ref[k]) for k in ref)
        start = (t.step, t.state.samples_seen)
        result = t.train()
        print("RESULT", json.dumps({{"refused": refused, "same": same, "start": start, "status": result.status,
                                    "end": [result.step, result.samples_seen]}}))
        shutdown(0)
    """,
        tmp_path,
    )
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert "model.widths=[8, 16, 32] (checkpoint) vs [8, 16, 64] (this run)" in result["refused"]
    assert result["same"] and result["start"] == [4, 16]
    assert result["status"] == "complete" and result["end"] == [8, 16 + 4 * 2]
    assert (run_dir / "mean" / "checkpoints" / "universal" / "step_4" / "COMPLETE.json").exists()
    assert json.loads((run_dir / "mean" / "checkpoints" / "step_8" / "COMPLETE.json").read_text())["world_size"] == 1


def test_non_finite_losses_are_skipped_then_stop_the_run(train_dataset, tmp_path):
    """Losses made NaN at chosen steps (the data cannot produce one: the model masks missing
    values): a lone NaN step is skipped (weights and schedule untouched) and counted, three in a
    row stop the run with exit code 4 and the last checkpoint complete."""
    run_dir = tmp_path / "run"
    out = run_script(
        f"""
        import json, torch
        from hpcsr.config import compose
        from hpcsr.dist import init_distributed, shutdown
        from hpcsr.train.checkpoint import CheckpointManager
        from hpcsr.train.objective import StageObjective
        from hpcsr.train.trainer import Trainer
        cfg = compose({COMMON!r} + ["data_dir={train_dataset}", "run_dir={run_dir}", "train.steps=12",
                                    "train.checkpoint_every=2", "train.max_bad_steps=3", "train.val_every=0"])
        t = Trainer(cfg, init_distributed())
        t.setup()
        bad = {{2, 5, 6, 7}}  # 0-based optimiser steps: steps 3, 6, 7, 8 are poisoned
        forward = StageObjective.forward
        def poisoned(self, lr, hr, generator=None):
            loss, parts = forward(self, lr, hr, generator)
            return (loss * float("nan"), parts) if t.step in bad else (loss, parts)
        StageObjective.forward = poisoned
        sums, step = [], t.engine.step
        def recorded_step(*a, **k):
            step(*a, **k)
            sums.append([float(p.double().sum()) for p in t.engine.module.parameters() if p.requires_grad][0])
        t.engine.step = recorded_step
        result = t.train()
        latest = CheckpointManager(t.ckpt.root, keep=2).latest()
        print("RESULT", json.dumps({{"code": result.exit_code, "status": result.status, "message": result.message,
                                    "sums": sums, "skipped": t.engine.skipped_steps, "latest": latest.step,
                                    "state": [t.state.skipped_total, t.state.bad_in_row]}}))
        shutdown(0)
    """,
        tmp_path,
    )
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert result["code"] == 4 and result["status"] == "diverged"
    assert "3 non-finite losses in a row" in result["message"] and "step_6 is intact" in result["message"]
    sums = result["sums"]  # one entry per optimiser step 1..8
    assert len(sums) == 8 and result["skipped"] == 4 and result["state"] == [4, 3]
    assert sums[2] == sums[1] and sums[5] == sums[4] == sums[6] == sums[7]  # skipped steps change nothing
    assert sums[1] != sums[0] and sums[3] != sums[2] and sums[4] != sums[3]  # the others train
    assert result["latest"] == 6
    events = [r for r in records(run_dir / "mean") if r.get("event") == "skipped_step"]
    assert [e["step"] for e in events] == [3, 6, 7, 8]


def test_joint_bf16_activation_checkpointing_initialised_from_an_export(reference, train_dataset, tmp_path):
    """One rank, joint stage, bf16 with activation checkpointing, initialised from the reference
    export: it trains, records the export as its parent, and a second call finds it complete."""
    run_dir = tmp_path / "run"
    overrides = [
        "train.stage=joint",
        "train.steps=2",
        "train.checkpoint_every=2",
        "train.val_every=0",
        "deepspeed.precision=bf16",
        "deepspeed.activation_checkpointing=true",
        f"train.init_from={reference / 'export' / 'model.pt'}",
    ]
    train(1, run_dir, train_dataset, overrides)
    blob = export_blob(run_dir / "joint")
    meta = blob["metadata"]
    assert meta["precision"] == "bf16" and meta["trained"] == ["mean_net", "denoiser"]
    assert [e["role"] for e in meta["lineage"]] == ["init_from", "self"]
    assert meta["lineage"][0]["export"] == str(reference / "export" / "model.pt")
    assert all(torch.isfinite(v).all() for v in blob["state_dict"].values())
    assert all(
        r["loss_mean"] is not None and r["loss_diffusion"] is not None for r in records(run_dir / "joint", "train")
    )
    ranks = train(1, run_dir, train_dataset, overrides)  # a requeue of a finished stage
    assert "already complete at step 2" in ranks.output()
