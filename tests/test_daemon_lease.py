"""The singleton lease end to end on one host: the real daemon, the real engine (busybox), a real Redis.

Two hosts are the guard branch's tests; here "another host" is a key the test plants.
Lease 3 s: renewals every 0.6 s, the fence deadline 2 s after the last one answered.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from harness.daemon import site_containers, wait_until
from harness.redis_server import RedisServer

LEASE = 3.0


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


@pytest.fixture
def lease_daemon(run_daemon, redis_server):
    def make(lease: float = LEASE, **containers):
        return run_daemon(containers or {"worker": {}, "celery": {}},
                          cluster={"redis": redis_server.url, "lease": f"{lease:g}s", "host": "host-a"})
    return make


def keys(site: str) -> tuple[str, str]:
    return f"indico-supervisor:{site}:celery:lease", f"indico-supervisor:{site}:celery:token"


def celery(client, site: str):
    return site_containers(client, site).get(f"{site}-celery")


def running_celery(client, site: str):
    found = celery(client, site)
    return found if found is not None and found.status == "running" else None


def status(daemon, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "supervisor", "status", *extra, "--config", str(daemon.config_path)],
                          env=daemon.env, capture_output=True, text=True, timeout=60)


def test_the_daemon_acquires_the_lease_and_runs_celery_labelled_with_its_token_and_the_guards_env(
        lease_daemon, redis_server, docker_client, site_name):
    daemon = lease_daemon().start()
    daemon.wait_ready()
    acquired = daemon.wait_event("lease_acquired", role="celery")
    container = wait_until(lambda: running_celery(docker_client, site_name), what="celery running")
    lease_key, token_key = keys(site_name)
    value = redis_server.client().get(lease_key)
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert env["INDICO_SUPERVISOR_LEASE_VALUE"] == value
    assert env["INDICO_SUPERVISOR_LEASE_KEY"] == lease_key
    assert env["INDICO_SUPERVISOR_LEASE_MS"] == "3000"
    assert env["INDICO_SUPERVISOR_LEASE_REDIS"] == redis_server.url
    holder = json.loads(value)
    assert holder["host"] == "host-a" and holder["token"] == int(acquired["token"]) == 1
    assert container.labels["indico-supervisor.lease-token"] == "1"
    shown = json.loads(status(daemon, "--json").stdout)
    row = next(r for r in shown["containers"] if r["role"] == "celery")
    assert (row["state"], row["lease_holder"], row["lease_token"]) == ("running", "host-a", 1)
    # The Redis password is a secret: not in the log, the state file or status.
    state_text = next(daemon.runtime.glob("*.state.json")).read_text()
    assert redis_server.password not in daemon.log_text() + state_text + status(daemon).stdout


def test_a_lease_held_by_another_host_keeps_this_one_on_standby_until_the_key_is_gone(
        lease_daemon, redis_server, docker_client, site_name):
    lease_key, token_key = keys(site_name)
    redis = redis_server.client()
    redis.set(token_key, 41)
    redis.set(lease_key, json.dumps({"host": "host-b", "token": 41, "since": time.time()}, separators=(",", ":")),
              px=600_000)
    daemon = lease_daemon().start()
    daemon.wait_ready()
    standby = daemon.wait_event("lease_standby", role="celery")
    assert (standby["holder"], standby["token"]) == ("host-b", "41")
    assert celery(docker_client, site_name) is None
    check = status(daemon, "--check")
    assert check.returncode == 0, check.stdout
    table = status(daemon).stdout
    assert "standby" in table and "held by host-b since" in table and "lease held by host-b, token 41" in table

    redis.delete(lease_key)

    acquired = daemon.wait_event("lease_acquired", role="celery")
    assert acquired["token"] == "42"
    container = wait_until(lambda: running_celery(docker_client, site_name), what="celery running after the takeover")
    assert container.labels["indico-supervisor.lease-token"] == "42"
    assert daemon.events("lease_standby", role="celery").__len__() == 1  # once per change, not per poll


def test_stopping_the_daemon_removes_celery_first_then_releases_the_lease(
        lease_daemon, redis_server, docker_client, site_name):
    daemon = lease_daemon().start()
    daemon.wait_ready()
    wait_until(lambda: running_celery(docker_client, site_name), what="celery running")
    lease_key, _ = keys(site_name)

    assert daemon.stop() == 0

    assert redis_server.client().get(lease_key) is None
    names = [e["event"] for e in daemon.events() if e.get("role") == "celery" or e.get("event") == "lease_released"]
    assert names.index("container_removed") < names.index("lease_released")
    assert daemon.events("lease_released", role="celery", released="true")


def test_redis_gone_removes_celery_before_its_lease_could_have_expired(
        lease_daemon, redis_server, docker_client, site_name):
    # The fence comes L/3 before the expiry: 3 s here, room for a loaded machine's kill and removal.
    redis_server.client().set(keys(site_name)[1], 5)  # a used counter: no data-lost wait
    daemon = lease_daemon(lease=9.0).start()
    daemon.wait_ready()
    wait_until(lambda: running_celery(docker_client, site_name), what="celery running")
    lease_key, _ = keys(site_name)
    redis = redis_server.client()
    # The latest moment the key could outlive its holder: its expiry as Redis last set it.
    expires_at = time.monotonic() + redis.pttl(lease_key) / 1000

    redis_server.kill()  # a partition's stand-in: no renewal reaches Redis any more

    wait_until(lambda: celery(docker_client, site_name) is None, timeout=30, interval=0.02, what="celery removed")
    gone_at = time.monotonic()
    assert gone_at < expires_at, f"removed {gone_at - expires_at:.3f}s after the key expired"
    order = [e["event"] for e in daemon.events() if e.get("event", "").startswith(("lease_", "container_removed"))]
    assert order.index("lease_renew_failed") < order.index("container_removed")
    assert daemon.wait_event("lease_lost", role="celery")["reason"].startswith("fenced")


def test_a_restarted_daemon_adopts_its_celery_and_keeps_renewing_the_same_lease(
        lease_daemon, redis_server, docker_client, site_name):
    # No guard runs in busybox: the lease must outlast the daemon's restart on its own (10 s).
    # A used token counter: this is no fresh Redis, so no data-lost wait either.
    redis_server.client().set(keys(site_name)[1], 5)
    first = lease_daemon(lease=10.0).start()
    first.wait_ready()
    before = wait_until(lambda: running_celery(docker_client, site_name), what="celery running")
    lease_key, _ = keys(site_name)
    value = redis_server.client().get(lease_key)
    first.kill()

    second = lease_daemon(lease=10.0).start()
    second.wait_event("lease_acquired", role="celery", count=2)
    second.wait_event("daemon_ready", count=2)
    time.sleep(10.0 * 1.2)  # longer than the lease: only renewals by the new daemon keep the key

    after = celery(docker_client, site_name)
    assert after is not None and after.id == before.id and after.status == "running"
    assert redis_server.client().get(lease_key) == value
    assert len(second.events("container_started", role="celery")) == 1  # the first daemon's (one log file)
    assert not second.events("container_removed") and not second.events("lease_lost")


def test_a_reload_that_disables_celery_stops_it_gracefully_then_releases_the_lease(
        lease_daemon, redis_server, docker_client, site_name):
    daemon = lease_daemon().start()
    daemon.wait_ready()
    wait_until(lambda: running_celery(docker_client, site_name), what="celery running")
    lease_key, _ = keys(site_name)
    config = dict(daemon.config)
    config["containers"] = {**config["containers"], "celery": {**config["containers"]["celery"], "enabled": False}}
    daemon.write(config)

    daemon.signal(signal.SIGHUP)

    released = daemon.wait_event("lease_released", role="celery")
    assert released["released"] == "true"
    assert celery(docker_client, site_name) is None and redis_server.client().get(lease_key) is None
    removed = daemon.events("container_removed", role="celery")
    assert removed and daemon.events().index(removed[0]) < daemon.events().index(released)


def test_an_upgrade_reexec_keeps_the_lease_and_the_same_celery(lease_daemon, redis_server, docker_client, site_name):
    # SIGUSR2 (the package's postinst): the lease is neither released nor retaken, the container adopted.
    redis_server.client().set(keys(site_name)[1], 5)
    daemon = lease_daemon(lease=10.0).start()
    daemon.wait_ready()
    before = wait_until(lambda: running_celery(docker_client, site_name), what="celery running")
    value = redis_server.client().get(keys(site_name)[0])

    daemon.signal(signal.SIGUSR2)

    daemon.wait_event("daemon_started", count=2)
    daemon.wait_event("lease_acquired", role="celery", count=2)  # the new process holds it again: adopted
    daemon.wait_event("daemon_ready", count=2)
    assert redis_server.client().get(keys(site_name)[0]) == value
    assert celery(docker_client, site_name).id == before.id
    assert not daemon.events("lease_released") and not daemon.events("container_removed")


def test_a_crash_looping_celery_hands_its_lease_over_and_this_host_does_not_take_it_back(
        lease_daemon, redis_server, docker_client, site_name):
    redis_server.client().set(keys(site_name)[1], 5)
    daemon = lease_daemon(celery={"command": ["sh", "-c", "exit 3"],
                                  "restart": {"max_restarts": 1, "backoff": "100ms", "max_backoff": "200ms",
                                              "cooldown": "never"}}).start()
    daemon.wait_event("container_failed", role="celery")

    released = daemon.wait_event("lease_released", role="celery")
    assert released["reason"] == "crash loop here"
    assert redis_server.client().get(keys(site_name)[0]) is None
    # Polls go on (every 0.6 s here) and only watch: the key stays free for a healthy host.
    time.sleep(LEASE)
    assert redis_server.client().get(keys(site_name)[0]) is None
    assert len(daemon.events("lease_acquired", role="celery")) == 1
    table = status(daemon).stdout
    assert "standby" in table and "held by no host" in table and "crash loop" in table
    assert status(daemon, "--check").returncode == 1  # celery runs nowhere: a warning
