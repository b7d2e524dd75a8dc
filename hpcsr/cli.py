"""`hpcsr <command> [args]`: one console script for the stages that run inside a job.

Each command lives in its own module and is imported only when asked for, so `hpcsr --help` is
instant. Preprocessing has its own script (`hpcsr-preprocess`) and launching too (`hpcsr-launch`).
"""

from __future__ import annotations

import importlib
import sys

# command -> ("module:function", one-line help); each function takes the remaining argv.
COMMANDS = {
    "config": ("hpcsr.cli:show_config", "print the composed, validated configuration (Hydra overrides)"),
    "train": ("hpcsr.train.cli:main", "train a stage (mean, diffusion, joint) with DeepSpeed (Hydra overrides)"),
    "sample": ("hpcsr.sample:main", "super-resolve an LR sequence into an HR ensemble (netCDF)"),
    "evaluate": ("hpcsr.evaluate.cli:main", "metrics, baselines, plots and report"),
    "transfer": ("hpcsr.transfer:main", "seed a new factor pair's run from an existing checkpoint"),
    "demo": ("hpcsr.demo:main", "the main job end to end on synthetic Comephore data"),
    "size-table": ("hpcsr.models.size_table:main", "parameters and FLOPs per paper factor pair"),
}


def show_config(argv):
    """Print the configuration composed from configs/ with the given overrides, as JSON."""
    import json

    from hpcsr.config import ConfigError, compose  # lazy for start-up cost: `hpcsr --help` loads no torch

    try:
        cfg = compose(argv)
    except ConfigError as err:
        print(f"hpcsr config: {err}", file=sys.stderr)
        return 2
    print(json.dumps(cfg.to_dict(), indent=2, default=str))
    print(f"# config hash {cfg.hash()}")
    return 0


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: hpcsr <command> [args]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "also: hpcsr-preprocess (ingest and shards), hpcsr-launch (Slurm and local grids)"]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"hpcsr: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    target, _ = COMMANDS[name]
    module, func = target.split(":")
    try:
        entry = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as err:
        print(f"hpcsr {name}: not available in this installation ({err})", file=sys.stderr)
        return 2
    return int(entry(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
