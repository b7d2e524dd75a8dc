"""Training: DeepSpeed ZeRO engine for the mean and diffusion stages, checkpoints, resume.

    from hpcsr.config import compose
    from hpcsr.train import run
    result = run(compose(["factor=s10_t3", "train.stage=mean"]))   # every rank calls it
    result.exit_code   # 0 complete, 3 requeue me (checkpointed after SIGTERM/SIGUSR2), 4 diverged, 5 save failed

The same call serves the first start and every requeue: a complete checkpoint in
<run_dir>/<stage>/checkpoints/ is resumed (on any world size), else the stage starts from
train.init_from / the mean export / scratch. See hpcsr.train.trainer for the phases and folders,
hpcsr.export for the export format.
"""

from __future__ import annotations

import logging

from hpcsr.dist import init_distributed
from hpcsr.train.signals import REQUEUE_EXIT_CODE, StopRequest
from hpcsr.train.trainer import EXIT_DIVERGED, EXIT_SAVE_FAILED, RunResult, Trainer

__all__ = ["run", "RunResult", "REQUEUE_EXIT_CODE", "EXIT_DIVERGED", "EXIT_SAVE_FAILED"]


def run(cfg) -> RunResult:
    """Train `cfg.train.stage` on every rank (starts torch.distributed through hpcsr.dist if needed).
    Does not end the process: the CLI ends it with hpcsr.dist.shutdown(result.exit_code)."""
    stop = StopRequest()  # before anything slow: a stop signal during start-up is honoured at the first step
    info = init_distributed(timeout_s=cfg.train.dist_timeout_s)
    logger = logging.getLogger("hpcsr")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter(f"[%(asctime)s rank {info.rank}] %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if info.rank == 0 else logging.WARNING)
    trainer = Trainer(cfg, info, stop)
    trainer.setup()
    return trainer.train()
