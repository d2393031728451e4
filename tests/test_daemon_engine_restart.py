"""The engine going away under a running daemon: it survives, reconnects, and brings everything back.

This test stops and starts the machine's dockerd, so it runs on its own: pytest
runs tests one at a time, and no other test may share the engine meanwhile.
"""
from __future__ import annotations

import signal
import time

import pytest

from harness.daemon import site_containers, wait_until
from tests.engine_control import signal_dockerd, start_dockerd

# They stop or restart the shared engine: tests/run runs them alone, after the rest.
pytestmark = pytest.mark.engine_restart


def test_dockerd_stopped_and_started_under_a_running_daemon(run_daemon, docker_client, site_name):
    daemon = run_daemon({"worker": {}, "celery": {}}).start()
    daemon.wait_ready()
    before = {n: c.attrs["State"]["StartedAt"] for n, c in site_containers(docker_client, site_name).items()}

    signal_dockerd(signal.SIGTERM)
    try:
        daemon.wait_event("engine_lost", timeout=30)
        time.sleep(2)  # the daemon keeps running without an engine
        assert daemon.process.poll() is None
    finally:
        start_dockerd()

    def all_back():
        now = site_containers(docker_client, site_name)
        return len(now) == 2 and all(c.status == "running" and c.attrs["State"]["StartedAt"] != before[n]
                                     for n, c in now.items())

    wait_until(all_back, timeout=60, what="both containers running again")
    assert daemon.events("engine_connected") and daemon.process.poll() is None
    assert set(site_containers(docker_client, site_name)) == set(before)  # no duplicates, no orphans
    assert daemon.stop() == 0
