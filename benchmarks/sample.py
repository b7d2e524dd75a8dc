"""Samplers: ensemble members/s and fair CRPS of the fast samplers against ancestral DDPM-1000.

Speed (figure "... members/s"): `SRModel.sample` at factor pair (10, 3), L = 5, one HR patch of
100 x 100 (10 x 10 LR cells), `--speed-members` members batched, at the default model size
(ModelConfig(), the author's widths; weights do not change the cost). DDIM-10 and DDIM-20 are timed
end to end; DDIM-50 and DDPM-1000 are modelled per repeat as setup + S x step, with setup (mean
network + conditioning) timed alone and step = (T_DDIM-10 - setup) / 10 (every sampler step is one
denoiser call at the same batch plus a few element-wise ops); the measured DDIM-20 checks the model
(measured and modelled seconds are in the JSON). --full times every setting end to end.
Baseline: DDPM-1000, target >= 20x members/s.

Quality (figure "... fair CRPS"): a tiny model (ModelConfig.tiny() without windowed attention)
trained briefly with `hpcsr train` (stage joint, DeepSpeed, CPU or GPU) on synthetic Comephore
data from `hpcsr-preprocess all`, then every sampler on the same test-split LR inputs (K target
blocks, one 40 x 40 patch, M members, the same seeds), output = relu(denormalised) + image-scale
mass transform as `hpcsr sample` does, scored with hpcsr.evaluate's fair CRPS against the HR
truth. Baseline: DDPM-1000 (fully run), target: CRPS within 5 % (ratio >= 1/1.05). The members/s
of these runs (all measured end to end) are reported with each CRPS figure as well.

Pipeline overhead (figure "hpcsr sample pipeline ..."): the CLI's path (EnsembleSampler: one
noise stream per member and target, members sampled one after the other, tiled denoiser) against
`SRModel.sample` batching the members, DDIM-10, one 100 x 100 tile, the speed part's model size.

    python benchmarks/sample.py [--quick] [--out benchmarks/results/sample.json] [--device cpu|cuda]
        [--train-steps 300] [--members 8] [--blocks 4] [--full] [--work /tmp/hpcsr_bench_sample]

--quick: tiny size for the speed and pipeline parts, 60 training steps, 2 blocks of 6 members.
Training data, runs (one per training length) and exports live in --work, reused by a rerun: the
trainer resumes its complete run and exits at once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import figure, format_value, untrained_export, write_result  # noqa: E402

from hpcsr.evaluate.metrics import crps_ensemble  # noqa: E402
from hpcsr.factors import FactorPair, recipe  # noqa: E402
from hpcsr.mass import conserve  # noqa: E402
from hpcsr.models import ModelConfig, build_model  # noqa: E402
from hpcsr.models.inputs import prepare_lr  # noqa: E402

PAIR = FactorPair(10, 3)
QUALITY_PATCH = 40  # HR side of the quality patch (4 x 4 LR cells)
DDPM = ("ddpm", 1000)


LABELS = {"dpmpp2m": "DPM-Solver++(2M)", "dpmpp2m_ddim": "DPM-Solver++(2M)+DDIM"}


def sampler_label(name: str, steps: int) -> str:
    return f"{LABELS.get(name, name.upper())}-{steps}"


# ------------------------------------------------------------------ speed at one size


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.no_grad()
def speed(
    cfg: ModelConfig, patch: int, members: int, settings: list[tuple[str, int]], repeats: int, full: bool, device
) -> dict:
    """Seconds per sample() call (all `members` at once) of each (sampler, steps). DDIM-10 and DDIM-20
    (and with `full` every setting) are timed end to end; per repeat r the cost of one step is
    (T_DDIM-10 - setup) / 10, setup = mean network + conditioning timed alone, and every setting is
    modelled as setup + steps x step (DDIM-20 checks the model)."""
    torch.manual_seed(0)
    rec = recipe(PAIR.s, PAIR.t)
    model = build_model(cfg, rec).eval().to(device)
    lr = torch.randn(1, rec.context, patch // PAIR.s, patch // PAIR.s, device=device)

    def prepare():
        mean = model.predict_mean(lr)
        model.denoiser.encode(*prepare_lr(lr, PAIR.s, cfg.upsample), None, mean, model.target).repeat(members)

    model.sample(lr, members, "ddim", 2)  # warm-up (allocator, oneDNN primitives), not timed
    setup = [timed(prepare, device) for _ in range(repeats)]
    gen = torch.Generator(device=device)
    measured = {}
    for name, steps in settings:
        if not (full or (name == "ddim" and steps in (10, 20))):
            continue
        measured[(name, steps)] = []
        for r in range(repeats):
            gen.manual_seed(r)
            measured[(name, steps)].append(timed(lambda: model.sample(lr, members, name, steps, generator=gen), device))
            print(
                f"  speed {sampler_label(name, steps)} x {members} members: {measured[(name, steps)][-1]:.2f} s",
                flush=True,
            )
    step = [(t - a) / 10 for t, a in zip(measured[("ddim", 10)], setup)]
    modelled = {key: [a + key[1] * b for a, b in zip(setup, step)] for key in settings}
    print(f"  speed: setup {np.median(setup):.3f} s + {np.median(step):.4f} s per step ({members} members)", flush=True)
    return {"setup_s": setup, "step_s": step, "measured": measured, "modelled": modelled}


# ------------------------------------------------------------------ a briefly trained model


def run(cmd: list[str], env: dict) -> None:
    print("  $ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env, cwd=HERE.parent, text=True, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )


def trained_export(work: Path, steps: int, device) -> tuple[Path, dict]:
    """Synthetic data -> shards -> `hpcsr train` (joint) -> export; returns its path and the training record."""
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if device.type != "cuda":
        env["CUDA_VISIBLE_DEVICES"] = ""
    data = work / "data"
    if not (data / "shards" / f"{PAIR.name}.h5").is_file():
        run(
            [
                str(bindir / "hpcsr-preprocess"),
                "all",
                "--out",
                str(data),
                "--days",
                "12",
                "--size",
                "120",
                "--pairs",
                f"{PAIR.s}x{PAIR.t}",
                "--seed",
                "3",
                "--quiet",
            ],
            env,
        )
    overrides = [
        f"factor=s{PAIR.s}_t{PAIR.t}",
        f"factor.patch={QUALITY_PATCH}",
        "model=tiny",
        "model.windows=[1,1,1]",
        "train.stage=joint",
        f"train.steps={steps}",
        "train.lr=1e-3",
        f"train.warmup_steps={max(1, steps // 10)}",
        "train.ema_decay=0",
        "train.val_every=0",
        f"train.log_every={max(1, steps // 10)}",
        f"train.checkpoint_every={steps}",
        "train.progress=false",
        "data.batch_size=8",
        f"data_dir={data}",
        f"run_root={work / f'runs_{steps}_steps'}",
        "seed=0",
    ]
    run([str(bindir / "hpcsr"), "train", *overrides], env)
    stage = work / f"runs_{steps}_steps" / PAIR.name / "joint"
    log = [json.loads(line) for line in (stage / "logs" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [
        {k: r[k] for k in ("step", "loss", "loss_mean", "loss_diffusion")} for r in log if r.get("kind") == "train"
    ]
    return stage / "export" / "model.pt", {"steps": steps, "overrides": overrides, "losses": losses}


# ------------------------------------------------------------------ quality on test inputs


def test_inputs(export, blocks: int):
    """K test-split targets (LR context, HR truth, normalised LR) in the wettest fully covered patch."""
    from hpcsr.data.patches import valid_corners
    from hpcsr.data.store import Shard

    shard = Shard(Path(export.metadata["shard"]))
    store = shard.hr_store()
    L, s = export.recipe.context, PAIR.s
    targets = shard.context_windows(L, split="test")
    if len(targets) == 0:
        raise RuntimeError(f"{shard.path} has no test-split target with {L} consecutive blocks: make more days")
    y0, y1, x0, x1 = shard.hr_window
    corners = valid_corners(store.valid_mask[y0:y1, x0:x1], QUALITY_PATCH, s, 1.0)
    lr_all = shard.lr[int(targets[0]) - L + 1 : int(targets[-1]) + 1]
    first = int(targets[0]) - L + 1
    p = QUALITY_PATCH // s
    wet = [
        [np.nanmean(lr_all[i - first, r // s : r // s + p, c // s : c // s + p]) for r, c in corners] for i in targets
    ]
    wet = np.asarray(wet)
    best = int(np.nanargmax(wet.mean(axis=0)))
    r, c = (int(v) for v in corners[best])
    order = np.argsort(-wet[:, best])[:blocks]
    chosen = sorted(int(targets[k]) for k in order)
    lr = np.stack([shard.lr[i - L + 1 : i + 1, r // s : r // s + p, c // s : c // s + p] for i in chosen]).astype(
        np.float32
    )
    hr = np.stack(
        [shard.read_hr_block(store, i, slice(r, r + QUALITY_PATCH), slice(c, c + QUALITY_PATCH)) for i in chosen]
    )
    return lr, hr, {"blocks": chosen, "corner_hr": [r, c], "times": [str(shard.times[i]) for i in chosen]}


@torch.no_grad()
def quality(export, settings: list[tuple[str, int]], members: int, blocks: int, device) -> tuple[dict, dict]:
    model = export.build_model().to(device)
    norm = export.normaliser
    lr_mm, hr, where = test_inputs(export, blocks)
    lr_mm_t = torch.from_numpy(lr_mm).to(device)
    lr_z = norm.forward(lr_mm_t)
    results = {}
    for name, steps in settings:
        gen = torch.Generator(device=device).manual_seed(1234)  # the same start noise for every sampler
        t0 = time.perf_counter()
        z = model.sample(lr_z, members, name, steps, generator=gen)  # (K, M, t, P, P)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        mm = torch.relu(norm.inverse(z))
        lr_target = lr_mm_t[:, None, -1:]  # (K, 1, 1, p, p) broadcast over members
        mm = conserve(mm, lr_target, PAIR.s, PAIR.t, export.recipe.mass, "image").cpu().numpy()
        ens = np.moveaxis(mm, 1, 0).reshape(members, -1)
        truth = hr.reshape(-1)
        ok = np.isfinite(truth) & np.isfinite(ens).all(axis=0)
        crps = float(crps_ensemble(ens[:, ok], truth[ok], fair=True).mean())
        results[(name, steps)] = {
            "crps": crps,
            "seconds": seconds,
            "members_per_s": blocks * members / seconds,
            "spread": float(ens[:, ok].std(axis=0, ddof=1).mean()),
            "mae_of_mean": float(np.abs(ens[:, ok].mean(axis=0) - truth[ok]).mean()),
        }
        print(f"  quality {sampler_label(name, steps)}: fair CRPS {crps:.4f} mm, {seconds:.1f} s", flush=True)
    return results, {**where, "truth_mean_mm": float(np.nanmean(hr)), "wet_fraction": float(np.nanmean(hr > 0.1))}


# ------------------------------------------------------------------ pipeline overhead


@torch.no_grad()
def pipeline_overhead(work: Path, cfg: ModelConfig, members: int, repeats: int, device) -> tuple[list, list]:
    """DDIM-10 on one 100 x 100 tile: hpcsr sample's EnsembleSampler vs SRModel.sample (members batched)."""
    from hpcsr.export import load_export
    from hpcsr.sampling import EnsembleSampler, SampleConfig, sample_sequence
    from hpcsr.sampling.inputs import LRSequence

    rec = recipe(PAIR.s, PAIR.t)
    path = untrained_export(work / "untrained" / "model.pt", cfg, PAIR)
    export = load_export(path)
    p = rec.patch // PAIR.s
    lr = np.random.default_rng(0).gamma(0.5, 2.0, (rec.context, p, p)).astype(np.float32)
    block = PAIR.t * 3600
    seq = LRSequence(
        lambda pos: lr[np.asarray(pos)],
        np.arange(1, rec.context + 1, dtype=np.int64) * block,
        3600,
        PAIR,
        (p, p),
        np.arange(rec.patch, dtype=np.float64),
        np.arange(rec.patch, dtype=np.float64),
    )
    sampler = EnsembleSampler(export, seq, SampleConfig(members=members, steps=10, mass="image"), device)
    target = seq.times[-1:]
    model = sampler.model
    lr_z = export.normaliser.forward(torch.from_numpy(lr)[None].to(device))
    pipe, batched = [], []
    for r in range(repeats + 1):
        a = timed(lambda: sample_sequence(sampler, target, None, progress=False), device)
        b = timed(
            lambda: model.sample(lr_z, members, "ddim", 10, generator=torch.Generator(device=device).manual_seed(r)),
            device,
        )
        if r:
            pipe.append(members / a)
            batched.append(members / b)
        print(
            f"  pipeline DDIM-10 x {members}: hpcsr sample path {a:.2f} s, SRModel.sample batched {b:.2f} s", flush=True
        )
    return pipe, batched


# ------------------------------------------------------------------ report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE / "results" / "sample.json", help="result JSON")
    p.add_argument("--quick", action="store_true", help="tiny speed part, 60 training steps, 2 blocks x 6 members")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--steps", default="10,20,50", help="fast-sampler step counts (default 10,20,50)")
    p.add_argument("--speed-members", type=int, default=4, help="members per sample() call in the speed part")
    p.add_argument(
        "--repeats", type=int, default=3, help="timed repeats in the speed part (pipeline part: one less, at least 1)"
    )
    p.add_argument(
        "--full", action="store_true", help="time every sampler end to end in the speed part (DDPM-1000 too)"
    )
    p.add_argument("--train-steps", type=int, help="training steps of the quality model (default 300, quick 60)")
    p.add_argument("--members", type=int, help="members in the quality part (default 8, quick 6)")
    p.add_argument("--blocks", type=int, help="test blocks in the quality part (default 4, quick 2)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; on a shared CPU use 1)")
    p.add_argument("--work", type=Path, default=Path("/tmp/hpcsr_bench_sample"), help="data, runs and exports")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    steps = [int(v) for v in a.steps.split(",") if v.strip()]
    train_steps = a.train_steps or (60 if a.quick else 300)
    members = a.members or (6 if a.quick else 8)
    blocks = a.blocks or (2 if a.quick else 4)
    a.work.mkdir(parents=True, exist_ok=True)
    speed_cfg = ModelConfig.tiny() if a.quick else ModelConfig()
    speed_patch = QUALITY_PATCH if a.quick else recipe(PAIR.s, PAIR.t).patch
    print(
        f"speed: {'tiny' if a.quick else 'default'} model, patch {speed_patch}, {a.speed_members} members, "
        f"{device}, {torch.get_num_threads()} threads",
        flush=True,
    )
    speed_settings = [DDPM] + [("ddim", S) for S in steps]
    sp = speed(speed_cfg, speed_patch, a.speed_members, speed_settings, a.repeats, a.full, device)

    def rate(key):
        source = "measured" if key in sp["measured"] else "modelled"
        return [a.speed_members / v for v in sp[source][key]], source

    ddpm_rate, ddpm_source = rate(DDPM)
    size = "tiny" if a.quick else "default"
    figures = []
    for S in steps:
        values, source = rate(("ddim", S))
        figures.append(
            figure(
                f"DDIM-{S} members/s ({source}), {size} size, patch {speed_patch}",
                "members/s",
                values,
                f"DDPM-1000 ({ddpm_source})",
                ddpm_rate,
                True,
                target_ratio=20,
            )
        )

    print(f"quality: training a tiny model for {train_steps} steps in {a.work}", flush=True)
    from hpcsr.export import load_export

    export_path, train_info = trained_export(a.work, train_steps, device)
    export = load_export(export_path)
    settings = [DDPM] + [("ddim", S) for S in steps] + [(name, S) for name in LABELS for S in steps if S <= 20]
    qual, where = quality(export, settings, members, blocks, device)
    ref = qual[DDPM]
    for key in settings[1:]:
        q = qual[key]
        fig = figure(
            f"{sampler_label(*key)} fair CRPS, trained tiny, patch {QUALITY_PATCH}",
            "mm",
            [q["crps"]],
            "DDPM-1000",
            [ref["crps"]],
            False,
            target_ratio=1 / 1.05,
            members_per_s=q["members_per_s"],
            speedup_vs_ddpm=q["members_per_s"] / ref["members_per_s"],
            spread_mm=q["spread"],
            mae_of_mean_mm=q["mae_of_mean"],
        )
        figures.append(fig)

    pipe, batched = pipeline_overhead(a.work, speed_cfg, a.speed_members, max(1, a.repeats - 1), device)
    figures.append(
        figure(
            f"hpcsr sample pipeline DDIM-10 members/s, {size} size, one 100 x 100 tile",
            "members/s",
            pipe,
            "SRModel.sample, members batched",
            batched,
            True,
        )
    )

    fast = []
    for key in settings[1:]:
        speed_ratio = qual[key]["members_per_s"] / ref["members_per_s"]
        crps_ratio = qual[key]["crps"] / ref["crps"]
        if speed_ratio >= 20 and crps_ratio <= 1.05:
            fast.append({"setting": sampler_label(*key), "speedup": speed_ratio, "crps_ratio": crps_ratio})
    meta = {
        "pair": PAIR.name,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "speed": {
            "model": size,
            "patch": speed_patch,
            "members_per_call": a.speed_members,
            "step_s": sp["step_s"],
            "setup_s": sp["setup_s"],
            "measured_s": {sampler_label(*k): v for k, v in sp["measured"].items()},
            "modelled_s": {sampler_label(*k): v for k, v in sp["modelled"].items()},
            "weights": "untrained (the cost does not depend on them)",
        },
        "quality": {
            "model": "ModelConfig.tiny() with windows [1,1,1]",
            "weights": f"trained {train_steps} steps (hpcsr train, stage joint) on synthetic Comephore data",
            "train": train_info,
            "members": members,
            "blocks": blocks,
            "patch": QUALITY_PATCH,
            "inputs": where,
            "results": {sampler_label(*k): v for k, v in qual.items()},
        },
        "target": ">= 20x members/s of DDPM-1000 with fair CRPS within 5 %",
        "target_met_by": fast,
    }
    path = write_result(a.out, "sample", figures, a.quick, meta)

    print(f"\n{'setting':<22} {'members/s':>10} {'x DDPM':>8} {'fair CRPS mm':>13} {'CRPS / DDPM':>12}")
    for key in settings:
        q = qual[key]
        print(
            f"{sampler_label(*key):<22} {format_value(q['members_per_s']):>10} "
            f"{q['members_per_s'] / ref['members_per_s']:>8.1f} {q['crps']:>13.4f} {q['crps'] / ref['crps']:>12.3f}"
        )
    print(
        f"(quality part: trained tiny model, patch {QUALITY_PATCH}, {blocks} blocks x {members} members, all measured)"
    )
    print(
        f"\n{'speed part (' + size + ' size, patch ' + str(speed_patch) + ')':<58} {'members/s':>10} {'x DDPM-1000':>12}"
    )
    for fig in figures[: len(steps)]:
        print(f"{fig['name']:<58} {format_value(fig['value']):>10} {fig['ratio']:>12.1f}")
    print(f"DDPM-1000: {format_value(float(np.median(ddpm_rate)))} members/s ({ddpm_source})")
    print(
        f"pipeline: {format_value(figures[-1]['value'])} members/s vs batched {format_value(figures[-1]['baseline']['value'])}"
    )
    print(f"target met by: {', '.join(f['setting'] for f in fast) or 'none'}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
