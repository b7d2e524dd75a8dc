"""Part files read one at a time: the step that merges many parts (365 daily parts a year in
ingest, one per rank and pair in shards) never holds them all open. Each open HDF5 file keeps its
metadata and chunk index in memory (about 2 MB for a day of 1536 x 1536 frames) and a file
descriptor, so holding every part made peak memory grow with the period (and 20 years of daily
parts would pass the usual limit of 1024 open files).
"""

from __future__ import annotations

import h5py


class OnePartOpen:
    """`parts[p]` is part file p opened for reading; opening another closes the previous one."""

    def __init__(self, paths):
        self.paths = list(paths)
        self.current, self.file = None, None

    def __getitem__(self, p: int) -> h5py.File:
        if p != self.current:
            self.close()
            self.file, self.current = h5py.File(self.paths[p], "r"), p
        return self.file

    def __len__(self) -> int:
        return len(self.paths)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.current, self.file = None, None

    def __enter__(self) -> "OnePartOpen":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
