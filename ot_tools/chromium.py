"""Debian's Chromium for the dashboard's browser tests and `ot bench dashboard`.

Playwright's own browser download cannot be reached here, so Playwright drives the distribution's
build (`/usr/bin/chromium`), installed with apt on first use the way the local stack installs its
servers (`streaming.stack.processes.apt_install`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from streaming.stack.local import REPO_ROOT
from streaming.stack.processes import apt_install

CHROMIUM = Path("/usr/bin/chromium")
# Flags for a headless run inside a container (no user namespaces for the sandbox, small /dev/shm).
ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]


def ensure_chromium(log_dir: Path = REPO_ROOT / ".stack" / "logs") -> Path:
    """The Chromium binary, installed with apt-get when missing (root or passwordless sudo)."""
    if not CHROMIUM.exists():
        apt_install(["chromium"], "chromium", log_dir / "apt.log")
    found = CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")
    if not found:
        raise RuntimeError("chromium: installed with apt, yet /usr/bin/chromium is missing")
    return Path(found)
