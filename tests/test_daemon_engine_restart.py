"""The engine going away under a running daemon: it survives, reconnects, and brings everything back.

This test stops and starts the machine's dockerd, so it runs on its own: pytest
runs tests one at a time, and no other test may share the engine meanwhile.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.daemon_harness import site_containers, wait_until

ENSURE_ENGINE = Path(__file__).parent / "tools" / "ensure-engine"


def dockerd_pid() -> int | None:
    found = subprocess.run(["pgrep", "-xo", "dockerd"], capture_output=True, text=True).stdout.split()
    return int(found[0]) if found else None


def stop_dockerd() -> None:
    pid = dockerd_pid()
    assert pid, "no dockerd process to stop"
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: dockerd_pid() is None, timeout=60, what="dockerd to exit")


def test_dockerd_stopped_and_started_under_a_running_daemon(run_daemon, docker_client, site_name):
    daemon = run_daemon({"worker": {}, "celery": {}}).start()
    daemon.wait_ready()
    before = {n: c.attrs["State"]["StartedAt"] for n, c in site_containers(docker_client, site_name).items()}

    stop_dockerd()
    try:
        daemon.wait_event("engine_lost", timeout=30)
        time.sleep(2)  # the daemon keeps running without an engine
        assert daemon.process.poll() is None
    finally:
        subprocess.run([str(ENSURE_ENGINE)], check=True, timeout=120)

    def all_back():
        now = site_containers(docker_client, site_name)
        return len(now) == 2 and all(c.status == "running" and c.attrs["State"]["StartedAt"] != before[n]
                                     for n, c in now.items())

    wait_until(all_back, timeout=60, what="both containers running again")
    assert daemon.events("engine_connected") and daemon.process.poll() is None
    assert set(site_containers(docker_client, site_name)) == set(before)  # no duplicates, no orphans
    assert daemon.stop() == 0
