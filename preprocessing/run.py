"""The preprocess entry point: `run_preprocess(PreprocessConfig, out, pairs, comm) -> PreprocessResult`,
the one place a whole preprocessing run is done, for the launcher's preprocess stage and for
`hpcsr-preprocess all`. Synthesises the archives first for source=synthetic, ingests the source
into <out>/hr.h5 (not for source=store) and builds <out>/shards/s{s}_t{t}.h5 for the pairs; every
step is resumable (a rerun skips finished work) and runs on all ranks of `comm`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hpcsr.artifacts import shard_path
from hpcsr.data.store import HR_FILE
from preprocessing.config import PreprocessConfig
from preprocessing.ingest import ingest
from preprocessing.parallel import Comm
from preprocessing.shards import make_shards
from preprocessing.synth import synthesize


@dataclass(frozen=True)
class PreprocessResult:
    """The paths a run wrote (or found complete)."""

    archives: tuple[Path, ...]  # synthetic archives (source=synthetic), else empty
    store: Path  # the HR store
    shards: tuple[Path, ...]  # one shard per factor pair, in pair order

    def summary(self) -> dict:
        """JSON-able: the paths as strings."""
        return {
            "archives": [str(p) for p in self.archives],
            "store": str(self.store),
            "shards": [str(p) for p in self.shards],
        }


def run_preprocess(
    cfg: PreprocessConfig, out, pairs, comm: Comm | None = None, progress: bool = True
) -> PreprocessResult:
    """Raw source -> <out>/hr.h5 -> the pairs' shards in <out>/shards/ (see the module docstring).
    Every rank of `comm` (default: this process, or the MPI ranks that started it) calls it."""
    comm = comm or Comm()
    out = Path(out)
    shard_cfg = cfg.shard_config(pairs)  # every setting checked before the long steps
    archives: tuple[Path, ...] = ()
    inputs = cfg.inputs
    if cfg.source == "synthetic":
        raw = cfg.synthetic_dir(out)
        synth = cfg.synthetic.synth_config()
        made = comm.run_step("synthesising", lambda: synthesize(raw, synth, progress) if comm.rank == 0 else None)
        archives, inputs = tuple(made[0]), (str(raw),)
    store = Path(inputs[0]) if cfg.source == "store" and inputs else out / HR_FILE
    if cfg.source != "store":
        ingest(out, cfg.ingest_config(inputs), comm, progress)
    make_shards(out, shard_cfg, comm, progress, store_path=store)
    return PreprocessResult(archives, store, tuple(shard_path(out, p) for p in shard_cfg.pairs))
