"""Training records on rank 0: JSON lines (every record and event), CSV (one row per record, fixed
columns) and TensorBoard scalars, all under `<stage folder>/logs/`.

On resume the files are cut back to the resumed step (records written after the checkpoint by
the interrupted attempt are dropped, atomically) and TensorBoard purges its later events, so each
step appears once however often the run was requeued.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from hpcsr.atomic import write_text_atomic

CSV_COLUMNS = (
    "kind",
    "step",
    "samples_seen",
    "loss",
    "loss_mean",
    "loss_diffusion",
    "val_loss",
    "lr",
    "grad_norm",
    "samples_per_s",
    "step_s",
    "rss_mb_max",
    "skipped_total",
)


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """Append-only metric files of one stage (rank 0 only; other ranks do not create one)."""

    def __init__(self, folder, resume_step: int = 0, tensorboard: bool = True):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.folder / "metrics.jsonl"
        self.csv = self.folder / "metrics.csv"
        self._truncate(resume_step)
        new_csv = not self.csv.exists()
        self._csv_fh = open(self.csv, "a", newline="")
        self._csv = csv.DictWriter(self._csv_fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        if new_csv:
            self._csv.writeheader()
        self._jsonl_fh = open(self.jsonl, "a")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(
                str(self.folder / "tensorboard"), purge_step=resume_step + 1 if resume_step else None
            )

    def _truncate(self, step: int) -> None:
        for path in (self.jsonl, self.csv):
            if not path.exists():
                continue
            lines = path.read_text().splitlines(keepends=True)
            if path.suffix == ".jsonl":
                keep = [ln for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= step]
            else:
                keep = lines[:1] + [ln for ln in lines[1:] if ln.strip() and int(ln.split(",")[1]) <= step]
            if len(keep) != len(lines):
                write_text_atomic(path, "".join(keep))

    def record(self, kind: str, step: int, values: dict) -> None:
        """One record: kind 'train', 'val' or 'event' (events go to JSONL only)."""
        row = {"kind": kind, "step": step, **{k: _finite_or_none(v) for k, v in values.items()}}
        self._jsonl_fh.write(json.dumps(row, sort_keys=True, default=str) + "\n")
        self._jsonl_fh.flush()
        if kind == "event":
            return
        self._csv.writerow(row)
        self._csv_fh.flush()
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and value is not None and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        self._jsonl_fh.close()
        self._csv_fh.close()
        if self._tb is not None:
            self._tb.close()
