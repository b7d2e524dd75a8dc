"""hpcsr's own stages (mean, diffusion, joint, sample, evaluate; registered as entry points of the
group hpcsr.stages, see hpcsr.launch.registry), and the element: what every rank of a job array
task runs.

A stage runs a function `(spec, info) -> dict` (info: hpcsr.dist.DistInfo of this rank); a returned
`{'requeue': True}` means "I checkpointed after a signal, run me again". The element around it:
  - finds its rank through hpcsr.dist,
  - notes SIGUSR2/SIGTERM arriving outside the stage's own handlers (and then requeues),
  - does nothing when the stage already finished with the same configuration (a done marker),
  - requeues the job when the stage asks (Slurm: `scontrol requeue` by rank 0; local: exit code 144,
    which submitit's local controller restarts), at most launcher.max_requeues times,
  - writes the done marker (rank 0, atomically) after success.
Stages are loaded when a configuration names them (hpcsr.launch.registry), so a missing optional
module stops the plan with its name instead of failing inside a queued job.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

import hpcsr
from hpcsr import exits
from hpcsr.artifacts import EXPORT_DIR, EXPORT_NAME, ensemble_path, json_hash, shard_path
from hpcsr.atomic import write_json_atomic
from hpcsr.dist import discover
from hpcsr.factors import FactorPair
from hpcsr.launch.registry import Stage, stage, stage_order

# submitit's local controller restarts the tasks of a job that exits with this code
REQUEUE_EXIT_CODE = exits.JOB_REQUEUE


def train(spec: "ElementSpec", info) -> dict:
    """One training stage (hpcsr.train.run: resume beats train.init_from beats a fresh start)."""
    # lazy for start-up cost only: the job runner imports this module before its signal handlers
    # are in place (hpcsr.launch.job) and the registry whenever a configuration is validated, so it
    # loads no torch; training, sampling and evaluation load only in the element that runs them
    from hpcsr.train import run

    result = run(spec.cfg)
    if result.requeue:
        return {"requeue": True, "step": result.step, "samples_seen": result.samples_seen}
    if result.exit_code != 0:
        raise RuntimeError(
            f"{spec.name}: training ended '{result.status}' (exit code {result.exit_code}) at step "
            f"{result.step}: {result.message}"
        )
    return {"step": result.step, "samples_seen": result.samples_seen, "export": str(result.export)}


def _set_by_launcher(section, keys, name: str) -> None:
    """Refuse keys of the config section `name` that the launcher's stage of that name sets per pair."""
    for key in keys:
        value = getattr(section, key)
        if value not in (None, ()):
            raise ValueError(
                f"{name}.{key}={value!r}: the launcher's {name} stage sets {', '.join(keys)} for each pair "
                f"(from the run folder and the shard); leave {name}.{key} unset"
            )


def _shard(spec: "ElementSpec") -> str:
    """The pair's shard: data.shard, else <data_dir>/shards/s{s}_t{t}.h5."""
    return spec.cfg.data.shard or str(shard_path(spec.cfg.data_dir, spec.pair))


def check_sample(spec: "ElementSpec") -> None:
    """When a plan is built: the sample section leaves the pair's input and output to the stage."""
    from hpcsr.sampling.config import INPUT_KEYS  # lazy for start-up cost, as above

    _set_by_launcher(spec.cfg.sample, INPUT_KEYS, "sample")


def sample(spec: "ElementSpec", info) -> dict:
    """The pair's ensemble over its shard's test split (hpcsr.sampling.run_sample with the sample
    section), from the joint stage's export when the launch trains 'joint', else the diffusion
    stage's; written to <run_dir>/sample/ensemble.nc."""
    from hpcsr.data.store import Shard  # lazy for start-up cost, as above
    from hpcsr.sampling.run import run_sample

    cfg = spec.cfg
    check_sample(spec)
    shard = _shard(spec)
    start, end = Shard(shard).splits["test"]
    # the split is [start, end) in HR-step end times; the sampler takes an inclusive range
    last = end - np.timedelta64(1, "s")
    trained = "joint" if "joint" in cfg.launcher.stages else "diffusion"
    run = dataclasses.replace(
        cfg.sample,
        export=str(Path(cfg.run_dir) / trained),
        lr=shard,
        pair=spec.pair.name,
        time_range=(str(start), str(last)),
        out=str(ensemble_path(cfg.run_dir)),
    )
    result = run_sample(run, command=f"hpcsr-launch, stage {spec.name}")
    return {"ensemble": run.out, "summary": result.summary()}


def check_evaluate(spec: "ElementSpec") -> None:
    """When a plan is built: the evaluate section leaves the pair's input and output to the stage."""
    from hpcsr.evaluate.config import INPUT_KEYS  # lazy for start-up cost, as above

    _set_by_launcher(spec.cfg.evaluate, INPUT_KEYS, "evaluate")


def evaluate(spec: "ElementSpec", info) -> dict:
    """The sample stage's ensemble scored against its truth cut from the shard's HR store, as
    `hpcsr demo` scores it (hpcsr.evaluate.truth), with the evaluate section's settings; rank 0
    writes <run_dir>/evaluate/truth.nc and the report folder <run_dir>/evaluate/report/."""
    from hpcsr.data.store import Shard  # lazy for start-up cost, as above
    from hpcsr.evaluate.truth import evaluate_against_store

    check_evaluate(spec)
    if info.rank != 0:
        return {}
    ensemble = ensemble_path(spec.cfg.run_dir)
    if not ensemble.is_file():
        raise ValueError(
            f"{spec.name}: no ensemble at {ensemble}: run the sample stage before it (launcher.stages=[..., sample, evaluate])"
        )
    folder = Path(spec.cfg.run_dir) / "evaluate"
    hr_store = Shard(_shard(spec)).hr_store_path
    result = evaluate_against_store(spec.cfg.evaluate, ensemble, hr_store, folder / "report", folder / "truth.nc")
    scores = result.metrics["forecasts"]["ensemble"]
    return {
        "metrics": str(result.written["json"]),
        "report": str(result.written["html"]),
        "ensemble": {k: float(scores[k]) for k in ("rmse", "crps")},
    }


FINAL_EXPORT = f"{EXPORT_DIR}/{EXPORT_NAME}"  # a training stage's export, relative to its folder
# hpcsr's own stages, registered as entry points of the group hpcsr.stages in pyproject.toml
MEAN = Stage(train, order=20, training=True, train_stage="mean", export=FINAL_EXPORT)
DIFFUSION = Stage(train, order=30, training=True, train_stage="diffusion", export=FINAL_EXPORT)
JOINT = Stage(train, order=40, training=True, train_stage="joint", export=FINAL_EXPORT)
SAMPLE = Stage(sample, order=50, check=check_sample, reads=("sample",))
EVALUATE = Stage(
    evaluate, order=60, check=check_evaluate, reads=("sample", "evaluate")
)  # another ensemble: score again


def check_element(spec: "ElementSpec") -> None:
    """The stage's own check of an element's settings (Stage.check), when a plan is built."""
    check = stage(spec.stage).check
    if check is not None:
        check(spec)


@dataclass(frozen=True)
class ElementSpec:
    """Everything one element needs, pickled into its job: the stage, its pair and its config."""

    stage: str
    pair: Optional[FactorPair]  # None for a stage run once for the whole grid
    parent: Optional[FactorPair]  # transfer parent whose export initialises this run
    cfg: object  # hpcsr.config.RootConfig composed for this pair and stage (absolute paths)
    pairs: tuple  # every pair of the grid (for stages run once)
    max_requeues: int

    @property
    def name(self) -> str:
        return f"{self.stage}:{self.pair.name if self.pair else 'all'}"


# config parts that say how a stage is launched, not what it computes
_LAUNCH_ONLY = {"cluster", "grid"}


def identity(spec: ElementSpec) -> str:
    """Hash of everything in the config that changes a stage's result (not where or how it runs):
    the sections and launcher keys some stage lists in Stage.reads count only for those that do."""
    own = stage(spec.stage).reads
    selective = {name for other in stage_order() for name in stage(other).reads}
    data = {k: v for k, v in spec.cfg.to_dict().items() if k not in _LAUNCH_ONLY}
    data["launcher"] = {k: v for k, v in data.get("launcher", {}).items() if f"launcher.{k}" in own}
    for section in selective - set(own):
        data.pop(section, None)
    if spec.pair is None:  # a stage run once for the grid depends on the grid's pairs, not on one pair
        data["pairs"] = [p.name for p in spec.pairs]
        for key in ("factor", "run_dir"):
            data.pop(key, None)
    return json_hash(data)


def done_marker(spec: ElementSpec) -> Path:
    base = Path(spec.cfg.run_dir) if spec.pair is not None else Path(spec.cfg.data_dir)
    return base / "launch" / f"{spec.stage}.done.json"


# SIGUSR2/SIGTERM received outside a stage's own handlers (while the job starts, between stages)
SIGNALS_SEEN: list[int] = []


def note_signals() -> None:
    """Route SIGUSR2 and SIGTERM to SIGNALS_SEEN: the job runner does it first thing (a signal
    during the imports would otherwise kill the process), the element again after submitit has
    put its own handlers in place."""
    for sig in (signal.SIGUSR2, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: SIGNALS_SEEN.append(signum))


def _job_label() -> str:
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '?')}"
    return env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID") or f"pid {os.getpid()}"


def _slurm_state(job: str) -> tuple[str, str]:
    """(state, reason) of a Slurm job as squeue shows it; ('', '') when squeue cannot tell."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T|%r"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "", ""
    state, _, reason = out.stdout.strip().partition("|")
    return state, reason


def _requeue(spec: ElementSpec, info, result: dict) -> None:
    """Requeue this job (every rank gets here) and end the process without a result. A signal
    before the time limit (SIGUSR2, the job still RUNNING), the time limit itself or a preemption
    requeue; a cancel (SIGTERM from scancel) does not."""
    done = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    if done >= spec.max_requeues:
        raise RuntimeError(
            f"{spec.name} asks for requeue number {done + 1} but launcher.max_requeues="
            f"{spec.max_requeues}: raise cluster.time_min (or launcher.max_requeues) so each "
            "attempt makes enough progress"
        )
    executor = os.environ.get("SUBMITIT_EXECUTOR")
    if executor == "slurm":
        job = os.environ["SLURM_JOB_ID"]
        state = _slurm_state(job)
        if state[0] in ("COMPLETING", "CANCELLED") and state[1] != "TimeLimit" and "Preempt" not in state[1]:
            # scancel by a person (or Slurm's own requeue) sends SIGTERM too: do not undo it
            raise RuntimeError(
                f"{spec.name}: job {job} is ending ({'/'.join(state)}), not requeued; the checkpoint "
                f"is saved ({result}): resubmit the launch to resume"
            )
        if info.rank == 0:
            out = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
            # a negative code: scontrol itself was ended by the requeue it asked for (it runs in the job)
            if out.returncode > 0:
                raise RuntimeError(
                    f"{spec.name}: `scontrol requeue {job}` failed ({out.stderr.strip()}); the "
                    "checkpoint is saved: resubmit the same launch to resume"
                )
            print(
                f"[hpcsr-launch] {spec.name}: requeued job {job} (requeue {done + 1} of at most "
                f"{spec.max_requeues}) at {result}",
                flush=True,
            )
    elif executor != "local":
        raise RuntimeError(f"{spec.name} asks for a requeue but runs outside hpcsr-launch: run it again by hand")
    raise SystemExit(REQUEUE_EXIT_CODE)


def run_element(spec: ElementSpec) -> dict:
    """Run one element on this rank (see the module docstring)."""
    info = discover()
    marker = done_marker(spec)
    ident = identity(spec)
    if marker.is_file():
        previous = json.loads(marker.read_text())
        if previous.get("identity") == ident:
            if info.rank == 0:
                print(
                    f"[hpcsr-launch] {spec.name}: finished before with this configuration ({marker}); nothing to do",
                    flush=True,
                )
            return {**previous.get("result", {}), "skipped": True}
    fn = stage(spec.stage).run
    note_signals()  # instead of submitit's handler, which fails a job that is not "checkpointable"
    if SIGNALS_SEEN:  # arrived while the job was starting: nothing done yet, run again
        _requeue(spec, info, {"signal": signal.Signals(SIGNALS_SEEN[0]).name, "step": "start"})
    started = time.time()
    result = dict(fn(spec, info) or {})
    if result.pop("requeue", False):
        _requeue(spec, info, result)
    if info.rank == 0:
        write_json_atomic(
            marker,
            {
                "stage": spec.stage,
                "pair": spec.pair.name if spec.pair else None,
                "identity": ident,
                "job": _job_label(),
                "result": result,
                "started": started,
                "finished": time.time(),
                "code": str(Path(hpcsr.__file__).resolve().parent),
            },
        )
    return result
