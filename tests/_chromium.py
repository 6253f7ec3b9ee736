"""Headless Chromium for browser tests: the binary (installed with apt-get when missing), one call to run
it with a throwaway profile, and the filter that picks console messages out of its log.

Chromium comes from Debian's ``chromium`` package; when ``/usr/bin/chromium`` is missing the fixture
installs it with apt-get (package registries are reachable; the pages themselves need no network).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND"
"""Resolve no host name: a page that needs the network fails to render under this flag."""


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Path to headless-capable Chromium, installed with apt-get if it is not there yet."""
    if not CHROMIUM.exists():
        if shutil.which("apt-get") is None:
            pytest.fail("chromium is not installed and apt-get is not available to install it "
                        "(install Debian's `chromium` package)")
        steps = [["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]]
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True, timeout=900,
                                    env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            if result.returncode != 0:
                pytest.fail(f"could not install chromium: `{' '.join(step)}` exited {result.returncode}:\n"
                            f"{result.stderr[-2000:]}")
    if not CHROMIUM.exists():
        pytest.fail(f"apt-get installed chromium but {CHROMIUM} does not exist")
    return CHROMIUM


def run_chromium(chromium: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium with a fresh profile folder and ``args`` (e.g. ``--dump-dom URL``)."""
    return subprocess.run([str(chromium), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=240)


def console_messages(log: str) -> list[str]:
    """Chromium's console lines (``...:CONSOLE(...)] "message", source: ...``): uncaught exceptions,
    console.error/warn/log."""
    return [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
