"""The `probe` stage: a small, real, checkpointed workload that checks a site before GPU hours are
spent, and the launcher's tests use it as their element.

It runs gradient descent on a fixed least-squares problem (seeded by the factor pair), one step
every `launcher.probe.step_s` seconds, and behaves like a training stage: rank discovery through
hpcsr.dist, an atomic JSON checkpoint every `checkpoint_every` steps, SIGUSR2/SIGTERM -> checkpoint
-> ask for a requeue, resume from the checkpoint, an export of the final iterate (`export.json`,
the start of a transfer child: train.init_from = the parent's probe folder), an optional hold at
one step of the first attempt until the time-limit signal comes (`hold_at`), and a per-step
progress log (`progress.jsonl`) whose rows after a resume continue the uninterrupted curve exactly
(`curve()` computes it).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np

from hpcsr.atomic import write_json_atomic, write_text_atomic
from hpcsr.launch.registry import Stage


def _problem(seed: int, size: int = 8):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(size, size)) / np.sqrt(size) + np.eye(size)
    b = rng.normal(size=size)
    return a, b


def _step(x, a, b, lr: float):
    """One gradient step on 0.5 * |a x - b|^2; returns the new x and the loss before the step."""
    r = a @ x - b
    return x - lr * (a.T @ r), float(0.5 * r @ r)


def curve(seed: int, steps: int, lr: float = 0.05, x0=None) -> list[float]:
    """The loss of every step of an uninterrupted run (what a resumed run must reproduce), from
    x0 (default zeros; a transfer child starts from its parent's final iterate)."""
    a, b = _problem(seed)
    x, out = (np.zeros(len(b)) if x0 is None else np.asarray(x0, dtype=float)), []
    for _ in range(steps):
        x, loss = _step(x, a, b, lr)
        out.append(loss)
    return out


def seed_of(seed: int, s: int, t: int) -> int:
    """The problem's seed for a run's global seed and factor pair."""
    return seed * 1000 + s * 10 + t


def folder_of(cfg) -> Path:
    return Path(cfg.run_dir) / "probe"


def _hold_for_signal(caught: list, rank: int, step: int) -> None:
    """Wait until a signal arrives (launcher.probe.hold_at): the time limit's signal always comes, so
    a site check or a test sees a requeue however fast the steps before it ran."""
    print(f"[probe] rank {rank}: holding at step {step} until the time-limit signal", flush=True)
    while not caught:
        time.sleep(0.05)


def run(spec, info) -> dict:
    """Run (or resume) the probe of one element; returns {'requeue': bool, ...}. Every rank runs the
    loop; rank 0 writes the checkpoint and the progress log."""
    cfg = spec.cfg
    settings = cfg.launcher.probe
    folder = folder_of(cfg)
    state_path, log_path = folder / "state.json", folder / "progress.jsonl"
    a, b = _problem(seed_of(cfg.seed, cfg.factor.s, cfg.factor.t))
    step, x, attempt = 0, np.zeros(len(b)), 0
    if state_path.is_file():  # resume beats init
        state = json.loads(state_path.read_text())
        step, x, attempt = state["step"], np.array(state["x"]), state["attempts"]
    elif cfg.train.init_from:  # transfer: start from the parent's final iterate (its export)
        x = np.array(json.loads((Path(cfg.train.init_from) / "export.json").read_text())["x"])
    if info.rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        # rows written after the checkpoint by an attempt that was killed are dropped
        kept = [
            ln
            for ln in (log_path.read_text().splitlines() if log_path.is_file() else [])
            if json.loads(ln)["step"] < step
        ]
        write_text_atomic(log_path, "".join(ln + "\n" for ln in kept))
        print(
            f"[probe] rank 0 of {info.world_size} ({info.source}): start at step {step}/{settings.steps}, "
            f"attempt {attempt}",
            flush=True,
        )

    caught: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in (signal.SIGUSR2, signal.SIGTERM)
    }

    def save():
        if info.rank == 0:
            write_json_atomic(state_path, {"step": step, "x": x.tolist(), "attempts": attempt + 1})

    try:
        with open(log_path, "a") if info.rank == 0 else open(os.devnull, "w") as log:
            while step < settings.steps:
                if caught:
                    save()
                    name = signal.Signals(caught[0]).name
                    print(
                        f"[probe] rank {info.rank}: {name} at step {step}: checkpointed, asking for a requeue",
                        flush=True,
                    )
                    return {"requeue": True, "step": step, "signal": name}
                if attempt == 0 and step == settings.hold_at > 0:
                    _hold_for_signal(caught, info.rank, step)
                    continue
                time.sleep(settings.step_s)
                x, loss = _step(x, a, b, settings.lr)
                log.write(
                    json.dumps({"step": step, "loss": loss, "attempt": attempt, "world_size": info.world_size}) + "\n"
                )
                log.flush()
                step += 1
                if step % settings.checkpoint_every == 0:
                    save()
            save()
            if info.rank == 0:
                write_json_atomic(
                    folder / "export.json",
                    {"x": x.tolist(), "steps": step, "seed": seed_of(cfg.seed, cfg.factor.s, cfg.factor.t)},
                )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if info.rank == 0:
        print(f"[probe] done: {step} steps, final loss {_step(x, a, b, 0.0)[1]:.6g}", flush=True)
    return {"requeue": False, "steps": step, "attempts": attempt + 1}


# registered as the entry point `probe` of the group hpcsr.stages (pyproject.toml)
PROBE = Stage(run, order=70, training=True, export="export.json", reads=("launcher.probe",))
