"""Which code a job imports. With launcher.snapshot: a copy of the packages (hpcsr with its configs,
and preprocessing) in the launch folder, first on the jobs' PYTHONPATH, so a job that starts hours
later runs the code of its submission even if the checkout has changed since. Without: the code the
submitting process imports, i.e. the source checkout when hpcsr is not installed in site-packages."""

from __future__ import annotations

import importlib.util
import shlex
import shutil
from pathlib import Path

import hpcsr

PACKAGES = ("hpcsr", "preprocessing")


def take(launch_dir: Path) -> Path:
    """Copy the packages into launch_dir/code (configs included, caches left out); returns the folder."""
    target = launch_dir / "code"
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        source = Path(list(spec.submodule_search_locations)[0])
        shutil.copytree(
            source,
            target / name,
            symlinks=False,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"),
        )
    return target


def live_root() -> Path | None:
    """The checkout holding the imported hpcsr package, or None when it is installed in site-packages."""
    root = Path(hpcsr.__file__).resolve().parent.parent
    return None if root.name in ("site-packages", "dist-packages") else root


def setup_line(code_dir: Path) -> str:
    """The shell line a batch script runs to use the snapshot."""
    return f"export PYTHONPATH={shlex.quote(str(code_dir))}${{PYTHONPATH:+:$PYTHONPATH}}"
