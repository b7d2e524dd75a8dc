"""Progress of the main job on the terminal: stage banners, and a live view of a launch (one bar
over its elements, each element's state changes, and the latest progress line of what runs,
read from the element's own log) so a user sees training and sampling move while they wait."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from tqdm import tqdm

from hpcsr.launch import submit

_TQDM = re.compile(r"\d+%\|")  # a tqdm progress line
_WIDTH = 70  # characters of an element's progress line shown next to the bar


def banner(number: int, total: int, title: str, started: float) -> None:
    line = f"[{number}/{total}] {title}"
    print(f"\n{'=' * 78}\n{line:<66}{time.monotonic() - started:>8.0f} s\n{'=' * 78}", flush=True)


def latest_line(*paths) -> str:
    """The last progress bar (or else the last line) in the tails of an element's logs."""
    best = ""
    for path in paths:
        if not path:
            continue
        try:
            with open(path, "rb") as fh:
                fh.seek(0, 2)
                fh.seek(max(0, fh.tell() - 4096))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            continue
        pieces = [p.strip() for p in re.split(r"[\r\n]", text) if p.strip()]
        bars = [p for p in pieces if _TQDM.search(p)]
        if bars:
            return bars[-1]
        if pieces:
            best = pieces[-1]
    return best


def stderr_of(stdout) -> str | None:
    """The stderr log beside a submitit stdout log (<job>_<task>_log.out -> .err)."""
    if not stdout:
        return None
    stdout = str(stdout)
    return stdout[:-4] + ".err" if stdout.endswith(".out") else None


def tail(path, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except (OSError, TypeError):
        return ""
    return "\n".join(re.split(r"[\r\n]+", text.strip())[-lines:])


class _Lines:
    """Progress for a log file or pipe: one line per change, and a heartbeat of what runs."""

    def __init__(self, total: int, stream, every_s: float = 10.0):
        self.total, self.stream, self.every_s = total, stream, every_s
        self.n, self.postfix, self.shown, self.last = 0, "", "", 0.0
        self.started = time.monotonic()

    def write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def update(self, n: int, postfix: str) -> None:
        self.n, self.postfix = n, postfix
        now = time.monotonic()
        if postfix and postfix != self.shown and now - self.last >= self.every_s:
            self.write(f"  [{self.n}/{self.total} ended, {now - self.started:.0f} s] {postfix}")
            self.shown, self.last = postfix, now

    def close(self) -> None:
        pass


class _Bar(_Lines):
    """Progress for a terminal: a tqdm bar whose postfix is the latest line of what runs."""

    def __init__(self, total: int, stream):
        super().__init__(total, stream)
        self.bar = tqdm(
            total=total,
            unit="element",
            desc="launch",
            file=stream,
            dynamic_ncols=True,
            bar_format="{desc}: {n}/{total} |{bar:20}| {elapsed} {postfix}",
        )

    def write(self, text: str) -> None:
        self.bar.write(text, file=self.stream)

    def update(self, n: int, postfix: str) -> None:
        self.bar.n = n
        self.bar.set_postfix_str(postfix[: _WIDTH + 20], refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def follow(launch_dir: Path, poll_s: float = 1.0, stream=sys.stdout) -> list[dict]:
    """Watch a submitted launch until every element has ended; returns the final element rows
    (hpcsr.launch.submit.element_states). Prints the log tail of each element that fails."""
    rows = submit.element_states(launch_dir)
    seen: dict[tuple, str] = {}
    view = _Bar(len(rows), stream) if stream.isatty() else _Lines(len(rows), stream)
    try:
        while True:
            rows = submit.element_states(launch_dir)
            for r in rows:
                label = r["state"] + (f" ({r['reason']})" if r["reason"] else "")
                key = (r["array"], r["index"])
                if seen.get(key) != label:
                    seen[key] = label
                    view.write(f"  {r['array']:<14} {r['pair']:<6} {label}")
                    stderr = stderr_of(r.get("stdout"))
                    if r["state"] in ("FAILED", "CANCELLED") and stderr:
                        view.write(f"  --- last lines of {stderr} ---\n{tail(stderr)}\n  ---")
            running = [r for r in rows if r["state"] == "RUNNING"]
            postfix = "; ".join(
                f"{r['array']} {r['pair']}: {latest_line(stderr_of(r.get('stdout')), r.get('stdout'))[-_WIDTH:]}"
                for r in running
            )
            done = sum(submit.is_final(r) for r in rows)
            view.update(done, postfix)
            if done == len(rows):
                return rows
            time.sleep(poll_s)
    finally:
        view.close()
