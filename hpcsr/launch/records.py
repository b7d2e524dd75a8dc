"""Files the launcher keeps: numbered launch folders and the launch record (written through hpcsr.atomic).

Layout under `launcher.folder`:
    0001/launch.json       what was submitted: arrays, job ids, pairs, log paths (rewritten after
                           each array, so a failure half-way leaves an exact record)
    0001/<array>/          submitit's pickles and logs of one array (e.g. 0001/L0.mean/)
    0001/code/             the code snapshot when launcher.snapshot is on
    latest                 the number of the newest launch (what `status` and `cancel` read)
Numbered folders (never timestamps) keep old results of a fresh cluster's reused job ids apart.
"""

from __future__ import annotations

import json
from pathlib import Path

from hpcsr.atomic import write_text_atomic


def new_launch_dir(folder) -> Path:
    """Create the next numbered launch folder (0001, 0002, ...) and point `latest` at it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
    n = max(numbers, default=0) + 1
    while True:
        path = folder / f"{n:04d}"
        try:
            path.mkdir()  # exclusive: two launches at once get different numbers
            break
        except FileExistsError:
            n += 1
    write_text_atomic(folder / "latest", path.name + "\n")
    return path


def find_launch(folder, launch: str | None = None) -> Path:
    """The launch folder named `launch` (a number), else the newest one; a clear error if none."""
    folder = Path(folder)
    if launch is None:
        latest = folder / "latest"
        if not latest.is_file():
            raise FileNotFoundError(
                f"no launch recorded in {folder}: submit one with `hpcsr-launch submit`, or "
                "pass the launcher.folder you used (--folder PATH)"
            )
        launch = latest.read_text().strip()
    path = folder / (f"{int(launch):04d}" if str(launch).isdigit() else str(launch))
    if not (path / "launch.json").is_file():
        known = sorted(p.name for p in folder.iterdir() if (p / "launch.json").is_file()) if folder.is_dir() else []
        raise FileNotFoundError(
            f"launch {launch!r} has no record {path / 'launch.json'}; "
            f"known launches in {folder}: {', '.join(known) or 'none'}"
        )
    return path


def read_record(launch_dir) -> dict:
    return json.loads((Path(launch_dir) / "launch.json").read_text())
