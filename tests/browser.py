"""Open HTML reports in headless Chromium (Debian package `chromium`, installed by
`scripts/setup.sh --system`) over the DevTools protocol on a pipe (no extra Python package).

`Browser().check(page, screenshot)` loads `page` from disk, waits for its load event, and returns
what did not load: every failed request (Network.loadingFailed) and every <img> the browser could
not decode (naturalWidth 0); with `screenshot` it also writes a PNG of the rendered page.
`page_links(page)` lists the local files a page links to or embeds.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

LINK = re.compile(r"""(?:href|src)=['"]([^'"]+)['"]""")
BROKEN_IMAGES_JS = "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium; use as a context manager."""

    def __init__(self, timeout: float = 60.0):
        binary = chromium()
        if binary is None:
            raise RuntimeError(
                "Chromium is not installed: run 'bash scripts/setup.sh --system' (Debian package chromium)"
            )
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="hpcsr-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire():  # the browser reads commands on fd 3 and writes replies on fd 4
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--no-first-run",
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile.name}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire,
            pass_fds=(3, 4),
            start_new_session=True,  # its renderer and helper processes share one group, killed together
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        # Killing the main process alone left helpers writing into the profile while it was removed
        # (CI: "Directory not empty: 'Default'"); the whole group goes, then the profile.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        os.close(self._to_browser)
        os.close(self._from_browser)
        for _ in range(20):
            try:
                self._profile.cleanup()
                return
            except OSError:  # a helper outside the group may still be finishing a write
                time.sleep(0.25)
        shutil.rmtree(self._profile.name, ignore_errors=True)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe (exit {self.proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _wait_for(self, method: str, session: str) -> None:
        deadline = time.monotonic() + self.timeout
        seen = lambda: any(e.get("method") == method and e.get("sessionId") == session for e in self.events)  # noqa: E731
        while not seen():
            self.events.append(self._read_message(deadline))

    def check(self, page: Path, screenshot: Path | None = None, width: int = 1280) -> list[str]:
        """What failed to load when rendering `page` (empty when everything loaded)."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.events.clear()
        for domain in ("Page.enable", "Network.enable", "Runtime.enable"):
            self.call(domain, session)
        self.call(
            "Emulation.setDeviceMetricsOverride", session, width=width, height=900, deviceScaleFactor=1, mobile=False
        )
        self.call("Page.navigate", session, url=page.resolve().as_uri())
        self._wait_for("Page.loadEventFired", session)
        urls = {
            e["params"]["requestId"]: e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        }
        failed = [
            f"{urls.get(e['params']['requestId'], '?')}: {e['params'].get('errorText')}"
            for e in self.events
            if e.get("method") == "Network.loadingFailed" and e.get("sessionId") == session
        ]
        broken = self.call("Runtime.evaluate", session, expression=BROKEN_IMAGES_JS, returnByValue=True)["result"][
            "value"
        ]
        failed += [f"{src}: image did not decode" for src in broken]
        if screenshot is not None:
            shot = self.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        self.call("Target.closeTarget", targetId=target)
        return failed


def page_links(page: Path) -> list[Path]:
    """Local files that `page` links to or embeds (remote URLs and anchors are left out)."""
    out = []
    for target in LINK.findall(page.read_text()):
        url = urlparse(target)
        if url.scheme in ("http", "https", "mailto") or target.startswith("#"):
            continue
        out.append((page.parent / unquote(url.path)).resolve())
    return out
