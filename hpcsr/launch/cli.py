"""`hpcsr-launch`: factor grids as Slurm job arrays (or local processes).

    hpcsr-launch [submit] [--dry-run] [--wait] [OVERRIDES ...]   plan and submit (default command)
    hpcsr-launch plan [OVERRIDES ...]                            = submit --dry-run
    hpcsr-launch status [--folder DIR] [--launch N] [--wait] [OVERRIDES ...]
    hpcsr-launch cancel [--folder DIR] [--launch N] [OVERRIDES ...]

OVERRIDES are Hydra overrides of configs/ (launcher=slurm cluster=example_site grid=product
grid.s=[5,10] grid.t=[1,3] launcher.stages=[mean,diffusion] ...). Exit codes: 0 ok, 1 a submission
or an element failed, 2 bad input (the message names the value and the fix).
"""

from __future__ import annotations

# The commands import what they use inside their functions, for start-up cost only: --help and
# argument errors answer without loading torch and Hydra.
import argparse
import os
import sys
from pathlib import Path

COMMANDS = ("submit", "plan", "status", "cancel")


def _parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"hpcsr-launch {command}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if command == "submit":
        p.add_argument("--dry-run", action="store_true", help="print the plan and sbatch scripts, submit nothing")
    if command in ("submit", "status"):
        p.add_argument("--wait", action="store_true", help="block until every element has ended; exit 1 if any failed")
    if command in ("status", "cancel"):
        p.add_argument("--folder", help="launcher.folder of the launch (default: from the overrides)")
        p.add_argument("--launch", help="launch number (default: the latest)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. launcher=slurm grid=product grid.s=[5,10]")
    return p


def _fail(message: str, code: int = 2) -> int:
    print(f"hpcsr-launch: {message}", file=sys.stderr)
    return code


def _launch_dir(args) -> Path:
    from hpcsr.config import compose
    from hpcsr.launch.records import find_launch

    folder = args.folder or os.path.abspath(compose(args.overrides).launcher.folder)
    return find_launch(folder, args.launch)


def _submit(args) -> int:
    from hpcsr.launch import plan as planning
    from hpcsr.launch import report, snapshot, submit
    from hpcsr.launch.records import read_record

    plan = planning.build(args.overrides)
    if args.dry_run:
        launch_dir = Path(plan.base.launcher.folder) / "{launch}"
        code_dir = launch_dir / "code" if plan.base.launcher.snapshot else snapshot.live_root()
        print(
            report.dry_run(plan, submit.scripts(plan, launch_dir, code_dir, submit.placeholder_ids(plan)), launch_dir)
        )
        return 0
    launch_dir = submit.submit(plan)
    print(report.submitted(launch_dir, read_record(launch_dir)), flush=True)
    if args.wait:
        return _wait(launch_dir, plan.base.launcher.poll_s, plan.base.cluster.release_requeued)
    return 0


def _wait(launch_dir: Path, poll_s: float, release: bool) -> int:
    from hpcsr.launch import report, submit
    from hpcsr.launch.records import read_record

    rows = submit.wait(launch_dir, poll_s, release, say=lambda line: print(line, flush=True))
    print(report.status_table(launch_dir, read_record(launch_dir), rows))
    return 0 if all(r["state"] == "COMPLETED" for r in rows) else 1


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "submit"
    if command == "plan":
        command, argv = "submit", ["--dry-run", *argv]
    args = _parser(command).parse_args(argv)

    from hpcsr.config import ConfigError
    from hpcsr.launch.submit import SubmitError

    try:
        if command == "submit":
            return _submit(args)
        from hpcsr.launch import report, submit
        from hpcsr.launch.records import read_record

        launch_dir = _launch_dir(args)
        if command == "cancel":
            print(submit.cancel(launch_dir))
            return 0
        if args.wait:
            from hpcsr.config import compose

            cfg = compose(args.overrides)
            return _wait(launch_dir, cfg.launcher.poll_s, cfg.cluster.release_requeued)
        print(report.status_table(launch_dir, read_record(launch_dir), submit.element_states(launch_dir)))
        return 0
    except (ConfigError, ValueError, FileNotFoundError) as err:
        return _fail(str(err))
    except (SubmitError, RuntimeError) as err:
        return _fail(str(err), 1)


if __name__ == "__main__":
    sys.exit(main())
