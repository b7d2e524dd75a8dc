"""Stop requests by signal: SIGTERM (Slurm's preemption and time limit, torchrun's shutdown) and
SIGUSR2 (`sbatch --signal=B:USR2@<s>` before the time limit) only set a flag; the trainer agrees
on it across ranks at the next step boundary (an all_reduce, so a signal to any one rank stops all),
checkpoints collectively and exits with REQUEUE_EXIT_CODE so the launcher runs it again.
"""

from __future__ import annotations

import signal

from hpcsr import exits

REQUEUE_EXIT_CODE = exits.REQUEUE  # "checkpointed after a stop request: run me again" (3)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class StopRequest:
    """Installs the handlers; `.signal` is the number of the first signal received (0: none)."""

    def __init__(self, signals=STOP_SIGNALS):
        self.signal = 0
        self._previous = {s: signal.signal(s, self._handle) for s in signals}

    def _handle(self, signum, frame):
        if not self.signal:
            self.signal = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else ""

    def restore(self) -> None:
        """Put back the handlers that were installed before."""
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """DataLoader worker_init_fn: workers ignore stop signals sent to the whole process group, so
    they keep serving the main process until it has checkpointed and ends them."""
    for s in STOP_SIGNALS + (signal.SIGINT,):
        signal.signal(s, signal.SIG_IGN)
