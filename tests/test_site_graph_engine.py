"""A site is a graph, against the real engine: start order, waiting, a site network and
named volumes the daemon creates, recreated dependencies, cooldown after a crash loop.

Stand-in (busybox) containers where the point is the supervisor's own behaviour, real
PostgreSQL and Redis (tests.indico_images) where it is the order a real site needs.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from harness.daemon import wait_until
from harness.sites import remove_site_containers
from tests.indico_images import postgres_image, redis_image
from tests.test_daemon_notify import FakeSystemd

REPO = Path(__file__).resolve().parent.parent


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


@pytest.fixture
def site_resources(docker_client, site_name):
    """The network and volumes a test's site makes; removed afterwards (the daemon never removes them)."""
    yield {"network": f"{site_name}-net", "volume": f"{site_name}-pgdata"}
    import docker.errors
    remove_site_containers(docker_client, site_name)  # before `site_name` would: they hold the network
    for remove in (lambda: docker_client.networks.get(f"{site_name}-net").remove(),
                   lambda: docker_client.volumes.get(f"{site_name}-pgdata").remove(force=True)):
        try:
            remove()
        except docker.errors.NotFound:
            pass


@pytest.fixture
def systemd(tmp_path):
    listener = FakeSystemd(str(tmp_path / "notify.sock"))
    yield listener
    listener.close()


def user_of(client, image: str) -> str:
    """The image's own account as numeric UID:GID (the site file takes numbers)."""
    out = client.containers.run(image, ["sh", "-c", "echo $(id -u):$(id -g)"], remove=True, entrypoint=[])
    return out.decode().strip()


def status_json(daemon) -> dict:
    """`indico-supervisor status --json` as an admin runs it, beside that daemon (its runtime directory)."""
    done = subprocess.run([sys.executable, "-m", "supervisor", "status", "--json", "--config", str(daemon.config_path)],
                          capture_output=True, text=True, timeout=60, cwd=REPO, env=daemon.env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_worker_starts_only_once_postgresql_is_healthy_on_a_network_the_daemon_made(
        docker_client, run_daemon, busybox, site_name, site_resources):
    client = docker_client
    db_image, redis_image_ref = postgres_image(client), redis_image(client)
    network, volume = site_resources["network"], site_resources["volume"]
    pg_isready = ["CMD", "/usr/lib/postgresql/15/bin/pg_isready", "-h", "127.0.0.1", "-p", "5432"]
    daemon = run_daemon({
        "worker": {"depends_on": {"db": "healthy", "redis": "started"}},
        "celery": {"depends_on": {"db": "healthy", "redis": "started"}},
        "db": {"image": db_image, "command": None, "user": user_of(client, db_image), "stop_signal": "SIGINT",
               "volumes": {"extra": [f"{volume}:/var/lib/postgresql/indico"]},
               "healthcheck": {"test": pg_isready[1:], "interval": "500ms", "timeout": "5s", "retries": 60}},
        "redis": {"image": redis_image_ref, "command": None, "user": user_of(client, redis_image_ref)},
    }, network={"name": network})
    daemon.start()
    daemon.wait_ready(timeout=120)
    db = client.containers.get(f"{site_name}-db")
    worker = client.containers.get(f"{site_name}-worker")
    first_healthy = min(epoch(probe["End"]) for probe in db.attrs["State"]["Health"]["Log"] if probe["ExitCode"] == 0)
    assert epoch(worker.attrs["State"]["StartedAt"]) > first_healthy
    # Its own network, made by the daemon with the site's label; its own data volume.
    made = client.networks.get(network)
    assert made.attrs["Labels"]["io.indico-supervisor.site"] == site_name
    assert set(made.attrs["Containers"]) >= {db.id, worker.id}
    assert client.volumes.get(volume).attrs["Labels"]["io.indico-supervisor.site"] == site_name
    mounts = {m["Destination"]: m for m in db.attrs["Mounts"]}
    assert mounts["/var/lib/postgresql/indico"]["Name"] == volume
    assert "/opt/indico/data" not in mounts  # Indico's binds are the worker's, not PostgreSQL's
    # The worker reaches the database by its container name, through the network's DNS.
    reach = worker.exec_run(["sh", "-c", f"echo | nc -w 2 {site_name}-db 5432"])
    assert reach.exit_code == 0, reach.output
    assert daemon.stop() == 0
    # Stopped dependents first; the volume stays.
    stops = [e["role"] for e in daemon.events("container_stopping")]
    assert stops.index("worker") < stops.index("db") and stops.index("celery") < stops.index("redis")
    assert client.volumes.get(volume)


def test_a_waiting_role_shows_its_cause_in_status_and_the_status_line(docker_client, run_daemon, site_name, systemd,
                                                                       tmp_path):
    client = docker_client
    daemon = run_daemon({
        "db": {"health": {"exec": ["test", "-f", "/tmp/ready"], "interval": "200ms", "retries": 1000}},
        "worker": {"depends_on": {"db": "healthy"}},
    }, env={"NOTIFY_SOCKET": systemd.path})
    daemon.start()
    wait_until(lambda: any("worker waiting for db (starting)" in m[2]["STATUS"] for m in systemd.messages("STATUS")),
               60, 0.1, "the STATUS line saying what the worker waits for")
    row = next(r for r in status_json(daemon)["containers"] if r["role"] == "worker")
    assert row["state"] == "waiting" and row["detail"] == "db (starting)"
    assert not systemd.messages("READY")  # the database is on its way up: not ready yet
    waiting = daemon.wait_event("container_waiting", role="worker")
    assert waiting["waiting_for"] in ("db (not created)", "db (starting)")  # logged once, on entry
    client.containers.get(f"{site_name}-db").exec_run(["touch", "/tmp/ready"])
    daemon.wait_event("container_started", role="worker", timeout=30)
    daemon.wait_event("container_waiting_ended", role="worker")
    systemd.wait_for("READY")
    assert daemon.stop() == 0
    assert len(daemon.events("container_waiting")) == 1


def test_an_exiting_dependent_waits_for_its_dependency_uncounted_and_restarts_once_it_is_back(
        docker_client, run_daemon, site_name):
    client = docker_client
    # The worker exits whenever the database's marker file is missing: "cannot connect".
    daemon = run_daemon({
        "db": {"command": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"]},
        "worker": {"depends_on": ["db"]},
    }, restart={"backoff": "200ms", "max_backoff": "1s", "reset_after": "30s", "max_restarts": 2, "window": "1m"})
    daemon.start()
    daemon.wait_ready(timeout=60)
    db = client.containers.get(f"{site_name}-db")
    db.pause()  # an outage: the database hangs, and the worker dies of it, again and again
    try:
        worker = client.containers.get(f"{site_name}-worker")
        for attempt in range(4):  # more failures than max_restarts: without waiting, this would end in `failed`
            if attempt:
                worker.start()  # someone tries by hand; it dies again
                wait_until(lambda: client.containers.get(worker.id).status == "running", 10, 0.05, "worker running")
            exits_before = len(daemon.events("container_exited", role="worker"))  # counted before the kill
            worker.kill()
            daemon.wait_event("container_exited", role="worker", count=exits_before + 1)
            time.sleep(0.3)
            assert client.containers.get(worker.id).status == "exited"  # not restarted while db is down
        row = next(r for r in status_json(daemon)["containers"] if r["role"] == "worker")
        assert row["state"] == "waiting" and row["detail"] == "db (paused)" and row["restarts"] == 0
    finally:
        db.unpause()
    restarted = daemon.wait_event("container_restarted", role="worker", timeout=30)
    assert restarted["delay"] == "0.0"
    time.sleep(1)
    assert not daemon.events("container_failed")
    assert len(daemon.events("container_restarted", role="worker")) == 1
    assert daemon.stop() == 0


@pytest.mark.parametrize("network, restarts", [("links", 1), ("site network", 0)])
def test_a_recreated_dependency_recreates_its_dependent_only_over_a_legacy_link(
        docker_client, run_daemon, site_name, site_resources, network, restarts):
    client = docker_client
    db_name = f"{site_name}-db"
    wiring = {"links": [f"{db_name}:indico-db"]} if network == "links" else {"name": site_resources["network"]}
    daemon = run_daemon({"db": {"network": {"links": []} if network == "links" else wiring},
                         "worker": {"depends_on": ["db"], "network": wiring}})
    daemon.start()
    daemon.wait_ready(timeout=60)
    worker_before = client.containers.get(f"{site_name}-worker").attrs["State"]["StartedAt"]
    daemon.config["containers"]["db"]["env"] = {"PGTZ": "UTC"}  # a changed spec: the db is recreated
    daemon.write(daemon.config)
    daemon.signal(1)
    daemon.wait_event("container_recreated", role="db", timeout=30)
    if restarts:
        daemon.wait_event("container_recreated", role="worker", timeout=30)
        event = daemon.wait_event("container_recreating", role="worker")
        assert event["reason"] == "linked dependency db was recreated", daemon.log_text()[-4000:]
        hosts = client.containers.get(f"{site_name}-worker").exec_run(["cat", "/etc/hosts"]).output.decode()
        new_ip = client.containers.get(db_name).attrs["NetworkSettings"]["IPAddress"]
        assert new_ip in hosts
    else:
        time.sleep(2)
        assert client.containers.get(f"{site_name}-worker").attrs["State"]["StartedAt"] == worker_before
    assert len(daemon.events("container_recreated", role="worker")) == restarts
    assert not daemon.events("container_restarted") and not daemon.events("container_start_failed")
    assert daemon.stop() == 0


def test_a_crash_looping_role_fails_then_is_started_again_after_its_cooldown(docker_client, run_daemon, site_name):
    daemon = run_daemon({"worker": {"command": ["sh", "-c", "exit 3"],
                                    "restart": {"backoff": "100ms", "max_backoff": "200ms", "max_restarts": 2,
                                                "window": "1m", "cooldown": "3s"}}})
    daemon.start()
    failed = daemon.wait_event("container_failed", role="worker", timeout=30)
    assert failed["priority"] == 3 and failed["next_try_in"] == "3.0"
    row = next(r for r in status_json(daemon)["containers"] if r["role"] == "worker")
    assert row["state"] == "failed" and row["next_restart_at"] is not None
    daemon.wait_event("container_retrying", role="worker", timeout=15)
    daemon.wait_event("container_failed", role="worker", timeout=30, count=2)  # logged at err each time
    assert daemon.stop() == 0
