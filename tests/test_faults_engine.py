"""dockerd SIGKILLed under a running daemon, then started again: no crash, all back, no duplicate.

Like test_daemon_engine_restart.py (which stops dockerd with SIGTERM), this kills the
machine's engine, so it runs on its own: no other test may share the engine meanwhile.
Unlike a clean stop, a SIGKILL leaves the engine no time to stop its containers; the
dockerd that comes back (without live-restore) kills what it finds running, and may
refuse to start a container whose task is still known to containerd.
"""
from __future__ import annotations

import signal

import pytest

from harness.sites import SITE_LABEL
from harness.daemon import site_containers, wait_until
from tests.engine_control import signal_dockerd, start_dockerd

# They stop or restart the shared engine: tests/run runs them alone, after the rest.
pytestmark = pytest.mark.engine_restart

ROLE_LABEL = "io.indico-supervisor.role"


def test_dockerd_sigkilled_and_started_again_under_a_running_daemon(run_daemon, docker_client, site_name):
    daemon = run_daemon({"worker": {}, "celery": {}, "cron": {}}).start()
    daemon.wait_ready()
    names = set(site_containers(docker_client, site_name))
    assert len(names) == 3

    signal_dockerd(signal.SIGKILL)
    try:
        daemon.wait_event("engine_lost", timeout=30)
        assert daemon.process.poll() is None
    finally:
        start_dockerd()

    def all_running():
        now = site_containers(docker_client, site_name)
        return set(now) == names and all(c.status == "running" for c in now.values()) and now

    wait_until(all_running, timeout=120, interval=0.5, what="every container running again")
    daemon.wait_event("engine_connected", count=2, timeout=30)  # the first was at start
    assert daemon.process.poll() is None

    # No duplicates, no orphans: one container per role, each under its own name, nothing else labelled.
    labelled = docker_client.containers.list(all=True, filters={"label": f"{SITE_LABEL}={site_name}"})
    assert sorted(c.labels[ROLE_LABEL] for c in labelled) == ["celery", "cron", "worker"]
    assert {c.name for c in labelled} == names
    assert "Traceback" not in daemon.log_text()
    assert daemon.stop() == 0
    assert site_containers(docker_client, site_name) == {}
