"""Restarts: backoff and its reset, crash loops ending in `failed` until a reload,
containers removed behind the daemon's back, names held by strangers, engine refusals."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import datetime

from harness.daemon import site_containers, wait_until

ERROR, WARNING = 3, 4


def sh(script: str) -> list[str]:
    """A shell command that ends promptly on SIGTERM, whatever it is doing."""
    return ["sh", "-c", "trap 'exit 0' TERM; " + script]


def ts(event: dict) -> float:
    return datetime.fromisoformat(event["ts"]).timestamp()


def status_json(daemon) -> dict:
    done = subprocess.run([sys.executable, "-m", "supervisor", "status", "--json", "--config", str(daemon.config_path)],
                          capture_output=True, text=True, env=daemon.env, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def status_row(daemon, role: str) -> dict:
    return next(row for row in status_json(daemon)["containers"] if row["role"] == role)


def wait_state(daemon, role: str, state: str, timeout: float = 30) -> dict:
    return wait_until(lambda: (row := status_row(daemon, role))["state"] == state and row,
                      timeout=timeout, interval=0.2, what=f"status to show {role} {state}")


def started_at(client, name: str) -> str:
    return client.containers.get(name).attrs["State"]["StartedAt"]


def test_backoff_is_zero_then_doubles_from_backoff_up_to_max_backoff(run_daemon, docker_client, site_name):
    policy = {"backoff": "300ms", "max_backoff": "1200ms", "reset_after": "30s", "max_restarts": 10, "window": "1m"}
    daemon = run_daemon({"worker": {"command": ["sh", "-c", "exit 3"], "restart": policy}}).start()

    daemon.wait_event("container_exited", role="worker", count=5, timeout=30)
    exits = daemon.events("container_exited", role="worker")[:5]
    assert [float(e["restart_in"]) for e in exits] == [0.0, 0.3, 0.6, 1.2, 1.2]
    assert {e["exit_code"] for e in exits} == {"3"} and {e["priority"] for e in exits} == {WARNING}

    # Each restart waits out the delay its exit announced.
    daemon.wait_event("container_restarted", role="worker", count=4)
    restarts = daemon.events("container_restarted", role="worker")[:4]
    for exited, restarted in zip(exits, restarts):
        assert restarted["exit_code"] == "3" and restarted["delay"] == exited["restart_in"]
        assert ts(restarted) - ts(exited) >= float(exited["restart_in"]) - 0.05
    assert not daemon.events("container_failed")


def test_a_run_that_outlasts_reset_after_restarts_at_once_every_time(run_daemon, site_name):
    policy = {"backoff": "1s", "max_backoff": "10s", "reset_after": "500ms", "max_restarts": 10, "window": "1m"}
    daemon = run_daemon({"worker": {"command": sh("sleep 1 & wait $!; exit 1"), "restart": policy}}).start()

    daemon.wait_event("container_exited", role="worker", count=3, timeout=30)
    exits = daemon.events("container_exited", role="worker")[:3]
    assert [e["restart_in"] for e in exits] == ["0.0", "0.0", "0.0"]
    assert all(e["exit_code"] == "1" and float(e["uptime"]) >= 0.5 for e in exits)


def test_crash_loop_ends_in_failed_without_touching_the_other_container(run_daemon, docker_client, site_name):
    policy = {"backoff": "100ms", "max_backoff": "200ms", "max_restarts": 3, "window": "1m"}
    daemon = run_daemon({"worker": {"command": ["sh", "-c", "exit 5"], "restart": policy}, "celery": {}}).start()
    celery = f"{site_name}-celery"
    daemon.wait_event("container_started", role="celery")
    celery_started = started_at(docker_client, celery)

    failed = daemon.wait_event("container_failed", role="worker", timeout=30)
    assert failed["priority"] == ERROR and failed["exit_code"] == "5" and failed["cause"] == "exited"
    assert "reload" in failed["hint"]
    assert len(daemon.events("container_restarted", role="worker")) == 3  # max_restarts, then no more

    row = wait_state(daemon, "worker", "failed")
    assert "reload" in row["detail"]
    worker_started = started_at(docker_client, f"{site_name}-worker")
    time.sleep(1.0)  # an absence: nothing to wait on, so watch for a while
    assert docker_client.containers.get(f"{site_name}-worker").status == "exited"
    assert started_at(docker_client, f"{site_name}-worker") == worker_started
    assert len(daemon.events("container_restarted", role="worker")) == 3
    assert status_row(daemon, "worker")["state"] == "failed"

    assert status_row(daemon, "celery")["state"] == "running"
    assert docker_client.containers.get(celery).status == "running"
    assert started_at(docker_client, celery) == celery_started
    assert not daemon.events(role="celery", event="container_exited")


def test_reload_gives_a_failed_container_a_new_chance(run_daemon, docker_client, site_name, tmp_path):
    policy = {"backoff": "100ms", "max_backoff": "200ms", "max_restarts": 2, "window": "1m"}
    # Fails until the admin fixes the cause (a file in the data volume), as a real crash loop would.
    command = sh("test -f /opt/indico/data/fixed || exit 4; while :; do sleep 0.2; done")
    daemon = run_daemon({"worker": {"command": command, "restart": policy}}).start()
    daemon.wait_event("container_failed", role="worker", timeout=30)
    wait_state(daemon, "worker", "failed")
    restarts_before = len(daemon.events("container_restarted", role="worker"))

    (tmp_path / "data" / "fixed").write_text("")
    daemon.signal(signal.SIGHUP)

    forgiven = daemon.wait_event("container_forgiven", role="worker")
    restarted = daemon.wait_event("container_restarted", role="worker", count=restarts_before + 1)
    assert daemon.events().index(forgiven) < daemon.events().index(restarted)
    wait_state(daemon, "worker", "running")
    assert docker_client.containers.get(f"{site_name}-worker").status == "running"
    assert daemon.process.poll() is None


def test_a_managed_container_removed_behind_the_daemons_back_is_recreated(run_daemon, docker_client, site_name):
    daemon = run_daemon({"worker": {}, "celery": {}}).start()
    daemon.wait_ready()
    name = f"{site_name}-worker"
    old_id = docker_client.containers.get(name).id
    celery_started = started_at(docker_client, f"{site_name}-celery")

    docker_client.containers.get(name).remove(force=True)

    removed = daemon.wait_event("container_removed", role="worker", priority=WARNING)
    assert removed["restart_in"] == "0.0" and removed["container"] == name
    restarted = daemon.wait_event("container_restarted", role="worker", cause="removed")
    new = wait_until(lambda: (c := site_containers(docker_client, site_name).get(name)) and c.status == "running" and c,
                     what="a new worker container running")
    assert new.id != old_id and restarted["container_id"] == new.id[:12]
    assert new.labels["io.indico-supervisor.role"] == "worker"
    assert started_at(docker_client, f"{site_name}-celery") == celery_started


def test_a_foreign_container_holding_a_wanted_name_blocks_only_that_role_and_is_never_touched(
        run_daemon, docker_client, busybox, site_name):
    name = f"{site_name}-worker"
    foreign = docker_client.containers.run(busybox, ["sleep", "600"], name=name, detach=True)
    try:
        before = (foreign.id, started_at(docker_client, name))
        daemon = run_daemon({"worker": {}, "celery": {}}).start()

        blocked = daemon.wait_event("container_blocked", role="worker")
        assert blocked["priority"] == ERROR and foreign.id[:12] in blocked["reason"]
        daemon.wait_ready()
        assert docker_client.containers.get(f"{site_name}-celery").status == "running"
        row = wait_state(daemon, "worker", "blocked")
        assert foreign.id[:12] in row["detail"] and "not own" in row["engine"]

        assert daemon.stop() == 0
        still = docker_client.containers.get(name)
        assert (still.id, still.attrs["State"]["StartedAt"]) == before and still.status == "running"
        assert not [e for e in daemon.events() if e.get("container") == name and e["event"] != "container_blocked"]
        assert f"{site_name}-celery" not in site_containers(docker_client, site_name)  # ours was stopped
    finally:
        foreign.remove(force=True)  # no site label: the fixture would not clean it up


def test_a_blocked_role_starts_within_seconds_once_the_foreign_container_is_gone(
        run_daemon, docker_client, busybox, site_name):
    name = f"{site_name}-worker"
    foreign = docker_client.containers.run(busybox, ["sleep", "600"], name=name, detach=True)
    try:
        daemon = run_daemon({"worker": {}}).start()
        daemon.wait_event("container_blocked", role="worker")
        daemon.wait_ready()
    finally:
        foreign.remove(force=True)
    gone_at = time.monotonic()
    # Not the 30 s resync: a blocked role makes the daemon look every couple of seconds.
    daemon.wait_event("container_started", role="worker", timeout=10)
    assert time.monotonic() - gone_at < 10
    ours = docker_client.containers.get(name)
    assert ours.status == "running" and ours.labels["io.indico-supervisor.site"] == site_name


def test_an_engine_refusal_is_retried_with_growing_delay_and_the_rest_runs(run_daemon, docker_client, site_name):
    missing = f"nosuch-{site_name}"
    policy = {"backoff": "200ms", "max_backoff": "2s", "max_restarts": 2, "window": "1m"}
    daemon = run_daemon({"worker": {"network": {"links": [missing]}, "restart": policy}, "celery": {}}).start()

    daemon.wait_event("container_start_failed", role="worker", count=4, timeout=30)
    refusals = daemon.events("container_start_failed", role="worker")[:4]
    assert [float(e["retry_in"]) for e in refusals] == [0.0, 0.2, 0.4, 0.8]
    for refusal in refusals:
        assert refusal["priority"] == ERROR
        assert missing in refusal["reason"] and "No such container" in refusal["reason"]  # the engine's own words

    assert daemon.process.poll() is None
    assert docker_client.containers.get(f"{site_name}-celery").status == "running"
    assert f"{site_name}-worker" not in site_containers(docker_client, site_name)
    assert "No such container" in status_row(daemon, "worker")["detail"]
    # More refusals than max_restarts, yet no crash loop: the refusal is not the container's doing.
    assert not daemon.events("container_failed") and status_row(daemon, "worker")["state"] != "failed"
