"""Stopping and starting the machine's dockerd, for the tests that take the engine away.

Such a test owns the engine while it runs: pytest runs tests one at a time, and no
other process may share the engine meanwhile.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from harness.daemon import wait_until

ENSURE_ENGINE = Path(__file__).parent / "tools" / "ensure-engine"


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def live_dockerd_pids() -> list[int]:
    """dockerd processes that are not zombies: where PID 1 reaps nothing, a killed one lingers as Z."""
    found = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found if _state(int(pid)) not in (None, "Z")]


def signal_dockerd(signum: int) -> None:
    """SIGTERM (a clean stop) or SIGKILL (a crash) to the one dockerd; returns once it is gone."""
    pids = live_dockerd_pids()
    assert len(pids) == 1, f"expected one dockerd, found {pids}"
    os.kill(pids[0], signum)
    wait_until(lambda: not live_dockerd_pids(), timeout=60, what="dockerd to exit")


def start_dockerd() -> None:
    """The test command's own way: ensure-engine starts one and waits until it answers."""
    subprocess.run([str(ENSURE_ENGINE)], check=True, timeout=180)
