"""Health: an unhealthy container is restarted by the daemon (the engine never does it),
whether the engine's HEALTHCHECK or the daemon's own http, tcp or exec probe says so."""
from __future__ import annotations

import json
from datetime import datetime

import pytest

from harness.daemon import wait_until

WARNING = 4

# The shell scripts below end promptly on SIGTERM: `sleep N & wait $!` lets the trap run at once.
LOOP = "while :; do sleep 0.2; done"
# Probes every 300 ms, two failures in a row are unhealthy; a loaded engine still answers an exec within 2 s.
FAST_PROBE = {"interval": "300ms", "timeout": "2s", "retries": 2}


def sh(script: str) -> list[str]:
    return ["sh", "-c", "trap 'exit 0' TERM; " + script]


def ts(event: dict) -> float:
    return datetime.fromisoformat(event["ts"]).timestamp()


def engine_epoch(stamp: str) -> float:
    # The engine writes nanoseconds; fromisoformat takes at most microseconds.
    head, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(fraction + '000000')[:6]}+00:00").timestamp()


def role_events(daemon, role: str) -> list[str]:
    return [e["event"] for e in daemon.events() if e.get("role") == role]


def in_order(names: list[str], *wanted: str) -> bool:
    """`wanted` appears in `names` as a subsequence."""
    rest = iter(names)
    return all(name in rest for name in wanted)


def test_engine_healthcheck_turning_unhealthy_gets_the_container_restarted_by_the_daemon(
        run_daemon, docker_client, site_name):
    command = sh(f"touch /tmp/ok; sleep 2 & wait $!; rm -f /tmp/ok; {LOOP}")
    healthcheck = {"test": "test -f /tmp/ok", "interval": "1s", "timeout": "1s", "retries": 1}
    daemon = run_daemon({"worker": {"command": command, "healthcheck": healthcheck}}).start()
    name = f"{site_name}-worker"
    daemon.wait_event("container_started", role="worker")
    first_start = docker_client.containers.get(name).attrs["State"]["StartedAt"]

    unhealthy = daemon.wait_event("container_unhealthy", role="worker", timeout=30)
    assert unhealthy["priority"] == WARNING and unhealthy["restart_in"] == "0.0"
    restarted = daemon.wait_event("container_restarted", role="worker", timeout=30)
    assert restarted["cause"] == "unhealthy"
    assert in_order(role_events(daemon, "worker"), "container_started", "container_unhealthy", "container_restarted")

    container = docker_client.containers.get(name)
    assert container.status == "running" and container.attrs["State"]["StartedAt"] != first_start
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert container.attrs["RestartCount"] == 0  # the engine never restarted it: the restart was ours
    assert container.attrs["Config"]["Healthcheck"]["Test"] == ["CMD-SHELL", "test -f /tmp/ok"]


# Each service answers for about 2 s, then stops answering while the container keeps running.
PROBES = {
    "http": (
        {"http": {"port": 8080, "path": "/ok.html"}},
        sh(f"mkdir -p /tmp/www; echo ok > /tmp/www/ok.html; httpd -p 8080 -h /tmp/www; "
           f"sleep 2 & wait $!; rm /tmp/www/ok.html; {LOOP}"),
        "HTTP 404",  # answering, but not 2xx/3xx: unhealthy
    ),
    "tcp": (
        {"tcp": {"port": 9000}},
        sh(f"nc -ll -p 9000 -e true & listener=$!; sleep 2 & wait $!; kill $listener; {LOOP}"),
        "refused",
    ),
    "exec": (
        {"exec": ["test", "-f", "/tmp/ok"]},
        sh(f"touch /tmp/ok; sleep 2 & wait $!; rm -f /tmp/ok; {LOOP}"),
        "exit code 1",
    ),
}


@pytest.mark.parametrize("kind", PROBES)
def test_the_daemons_own_probe_detects_a_failure_and_restarts_the_container(kind, run_daemon, docker_client, site_name):
    probe, command, why = PROBES[kind]
    health = {**probe, **FAST_PROBE, "start_period": "1s"}  # a slow first bind is not the failure under test
    daemon = run_daemon({"worker": {"command": command, "health": health}, "celery": {}}).start()
    name = f"{site_name}-worker"
    daemon.wait_event("probe_passed", role="worker", timeout=30)
    first_start = docker_client.containers.get(name).attrs["State"]["StartedAt"]

    failed = daemon.wait_event("probe_failed", role="worker", timeout=30)
    assert failed["priority"] == WARNING and why in failed["detail"]
    daemon.wait_event("container_unhealthy", role="worker", timeout=30)
    restarted = daemon.wait_event("container_restarted", role="worker", timeout=30)
    assert restarted["cause"] == "unhealthy"
    assert in_order(role_events(daemon, "worker"),
                    "probe_passed", "probe_failed", "container_unhealthy", "container_restarted")

    # The new run is probed afresh and passes again.
    daemon.wait_event("probe_passed", role="worker", count=2, timeout=30)
    container = docker_client.containers.get(name)
    assert container.status == "running" and container.attrs["State"]["StartedAt"] != first_start
    assert container.attrs["RestartCount"] == 0
    assert not [e for e in role_events(daemon, "celery") if e.startswith("probe_") or e == "container_restarted"]


def test_a_probe_passes_only_once_the_service_answers_and_start_period_forgives_the_wait(
        run_daemon, docker_client, site_name):
    command = sh(f"sleep 2 & wait $!; mkdir -p /tmp/www; echo ok > /tmp/www/ok.html; httpd -p 8080 -h /tmp/www; {LOOP}")
    health = {"http": {"port": 8080, "path": "/ok.html"}, **FAST_PROBE, "start_period": "10s"}
    daemon = run_daemon({"worker": {"command": command, "health": health}}).start()
    name = f"{site_name}-worker"

    passed = daemon.wait_event("probe_passed", role="worker", timeout=30)
    started = engine_epoch(docker_client.containers.get(name).attrs["State"]["StartedAt"])
    # The server listens 2 s in (the engine stamps StartedAt a little after the command begins);
    # a probe that passed without the server would have done so within one 300 ms interval.
    assert ts(passed) - started >= 1.5
    assert "HTTP 200" in passed["detail"]
    assert not daemon.events("probe_failed") and not daemon.events("container_unhealthy")
    assert not daemon.events("container_restarted")
    assert len(daemon.events("container_started", role="worker")) == 1  # the same run throughout

    def health_in_state_file():
        state = json.loads((daemon.runtime / f"{site_name}.state.json").read_text())
        return next(row["health"] for row in state["containers"] if row["role"] == "worker")
    wait_until(lambda: health_in_state_file() == "healthy", what="the state file to say healthy")


def test_an_exec_probe_that_hangs_fails_after_its_timeout(run_daemon, docker_client, site_name):
    # The engine's exec has no timeout of its own: the probe must give up by itself.
    command = sh(f"touch /tmp/ok; sleep 2 & wait $!; rm -f /tmp/ok; {LOOP}")
    health = {"exec": ["sh", "-c", "test -f /tmp/ok || sleep 60"], "interval": "300ms", "timeout": "1s", "retries": 2}
    daemon = run_daemon({"worker": {"command": command, "health": health}}).start()

    passed = daemon.wait_event("probe_passed", role="worker", timeout=30)
    failed = daemon.wait_event("probe_failed", role="worker", timeout=30)
    assert "no answer within 1s" in failed["detail"]
    # File gone about 2 s after the pass, then two timed-out checks: nowhere near the hung 60 s.
    assert ts(failed) - ts(passed) < 10
    restarted = daemon.wait_event("container_restarted", role="worker", timeout=30)
    assert restarted["cause"] == "unhealthy"
