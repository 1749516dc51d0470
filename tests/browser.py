"""A real headless browser for the tests: Debian's chromium driven through chromedriver, its WebDriver.

The W3C WebDriver protocol is plain JSON over HTTP, so the few commands the tests need (open a
page, run a script, take a screenshot) are spoken here with urllib instead of adding Selenium and
its dependencies. Everything stays on loopback: chromedriver listens on 127.0.0.1 and accepts
only local connections.

Where chromium or chromedriver is missing, `browser()` skips the test and says how to get them
(`make browser-deps`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request

import pytest

BINARIES = {"chromium": ("chromium", "chromium-browser"), "chromedriver": ("chromedriver",)}
INSTALL_HINT = "install them with `make browser-deps` (Debian: apt-get install chromium chromium-driver)"


def find(name: str) -> str | None:
    override = os.environ.get(f"TUNELAB_{name.upper()}")
    return override or next((path for path in map(shutil.which, BINARIES[name]) if path), None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Browser:
    def __init__(self, driver_url: str, session: str):
        self.url, self.session = driver_url, session

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 60):
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        request = urllib.request.Request(f"{self.url}/session/{self.session}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"WebDriver {method} {path}: {err.read().decode(errors='replace')[:500]}") from None

    def open(self, url: str) -> None:
        self.call("POST", "/url", {"url": url})

    def js(self, script: str, *args):
        """Run `script` (a function body: `return ...`) in the page and return its value."""
        return self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def cdp(self, command: str, params: dict | None = None):
        """A Chrome DevTools command, through chromedriver's own endpoint for them."""
        return self.call("POST", "/goog/cdp/execute", {"cmd": command, "params": params or {}})

    def wait_for(self, script: str, timeout: float = 30, every: float = 0.2):
        """Poll `script` until it returns something other than null or false (0 counts); that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(script)
            if (value is not None and value is not False) or time.monotonic() > deadline:
                return value
            time.sleep(every)

    def screenshot(self, width: int, max_height: int = 12000) -> bytes:
        """The whole page laid out `width` CSS pixels wide, as a PNG exactly `width` pixels wide
        (device scale 1; a narrow desktop window, not a phone emulation)."""
        self.cdp("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1,
                                                        "mobile": False})
        self.js("return new Promise(r => requestAnimationFrame(() => r(1)))")  # let the layout settle
        height = min(max_height, int(self.js("return document.documentElement.scrollHeight")))
        shot = self.cdp("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        })
        return base64.b64decode(shot["data"])


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", png[16:24])


@contextlib.contextmanager
def browser(width: int = 1400, height: int = 900):
    chromium, driver = find("chromium"), find("chromedriver")
    if not chromium or not driver:
        missing = " and ".join(n for n, p in (("chromium", chromium), ("chromedriver", driver)) if not p)
        pytest.skip(f"no headless browser: {missing} not found; {INSTALL_HINT}")
    port = free_port()
    process = subprocess.Popen([driver, f"--port={port}", "--allowed-ips=127.0.0.1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/status", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("chromedriver did not start") from None
                time.sleep(0.2)
        capabilities = {"browserName": "chrome", "goog:chromeOptions": {"binary": chromium, "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
            "--force-device-scale-factor=1", f"--window-size={width},{height}", "--no-first-run",
            "--disable-extensions", "--disable-background-networking", "--proxy-server=direct://",
        ]}}
        request = urllib.request.Request(f"{url}/session", method="POST", headers={"Content-Type": "application/json"},
                                         data=json.dumps({"capabilities": {"alwaysMatch": capabilities}}).encode())
        with urllib.request.urlopen(request, timeout=120) as response:
            session = json.loads(response.read())["value"]["sessionId"]
        page = Browser(url, session)
        try:
            yield page
        finally:
            with contextlib.suppress(Exception):
                page.call("DELETE", "", timeout=30)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
