"""The engine's event stream going quiet without breaking: found by a resync, and read afresh."""
from __future__ import annotations

import pytest

from harness.daemon import kill_main_process, site_containers


def event_stream(request: bytes) -> bool:
    line = request.split(b"\r\n", 1)[0]
    return line.startswith(b"GET /") and b"/events" in line


@pytest.fixture
def engine_proxy(tmp_path):
    from tests.proxies import FreezingProxy, engine_socket_path
    proxy = FreezingProxy(str(tmp_path / "engine.sock"), engine_socket_path())
    yield proxy
    proxy.close()


def test_a_quiet_event_stream_is_found_by_a_resync_and_reopened_and_the_missed_exit_is_restarted(
        run_daemon, docker_client, site_name, engine_proxy):
    daemon = run_daemon({"worker": {}}, env={"DOCKER_HOST": engine_proxy.docker_host}).start()
    daemon.wait_ready()
    engine_proxy.freeze(event_stream)  # the open stream goes quiet, as behind a stalled connection
    engine_proxy.freeze(None)  # a new one would work
    name = f"{site_name}-worker"
    before = site_containers(docker_client, site_name)[name].attrs["State"]["StartedAt"]

    kill_main_process(docker_client, name)

    reopened = daemon.wait_event("events_reopened", timeout=90)  # the next resync (every 30 s) and the grace
    assert name in reopened["containers"], reopened
    assert reopened["priority"] == 4
    daemon.wait_event("container_restarted", role="worker", timeout=30)
    assert site_containers(docker_client, site_name)[name].attrs["State"]["StartedAt"] != before
    assert engine_proxy.matching(event_stream) >= 2  # a fresh stream was opened
    assert not daemon.events("engine_lost")  # a reopen is no outage
    assert len(daemon.events("events_reopened")) == 1
