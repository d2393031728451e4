"""The lease guard (image/lease_guard.py) as PID 1 of a real container, against a real Redis.

The container is the small Debian python3 + python3-redis image with the guard copied
in (tests.guard_image); Redis is reached through a proxy the test can cut. The test
plays the daemon: it writes the lease key with the value it gives the container.
"""
from __future__ import annotations

import json
import os
import time

import pytest

from harness.sites import SITE_LABEL
from tests.guard_image import GUARD_PATH, guard_image
from tests.lease_redis import RedisLink, RedisServer, bridge_gateway

# tests/run runs two test processes: its module fixtures serve one test process.
pytestmark = pytest.mark.xdist_group("lease_guard")

LEASE_MS = 3000
EX_FENCED = 75
STARTED = "program-started"
# The program: says it started, keeps a grandchild in its process group, ends on TERM with 7.
PROGRAM = ["sh", "-c", f"trap 'exit 7' TERM INT QUIT; sleep 1000 & echo {STARTED}; while :; do sleep 0.1; done"]


@pytest.fixture(scope="module")
def image(docker_client) -> str:
    return guard_image(docker_client)


@pytest.fixture
def link(redis_server, docker_client):
    link = RedisLink(redis_server, bridge_gateway(docker_client))
    yield link
    link.close()


@pytest.fixture
def lease(site_name, redis_server, link):
    """The key and value a daemon holding the lease would write and hand the container."""
    key = f"indico-supervisor:{site_name}:celery:lease"
    value = json.dumps({"host": "host-a", "token": 1, "since": time.time()}, separators=(",", ":"))
    env = {"INDICO_SUPERVISOR_LEASE_REDIS": link.url, "INDICO_SUPERVISOR_LEASE_KEY": key,
           "INDICO_SUPERVISOR_LEASE_VALUE": value, "INDICO_SUPERVISOR_LEASE_MS": str(LEASE_MS)}
    return {"key": key, "value": value, "env": env, "redis": redis_server.client()}


def hold(lease) -> None:
    lease["redis"].set(lease["key"], lease["value"], px=LEASE_MS)


def start_guarded(client, image, site, lease, program=PROGRAM):
    container = client.containers.create(image, [GUARD_PATH, *program], user="65534:65534",
                                         environment=lease["env"], labels={SITE_LABEL: site})
    container.start()
    return container


def logs(container) -> tuple[str, str]:
    return (container.logs(stdout=True, stderr=False).decode(),
            container.logs(stdout=False, stderr=True).decode())


def wait_started(container) -> None:
    for _ in range(600):
        out, err = logs(container)
        if STARTED in out:
            return
        container.reload()
        if container.status == "exited":
            raise AssertionError(f"the container ended before its program started:\n{err}")
        time.sleep(0.05)
    raise AssertionError(f"the program never started:\n{logs(container)}")


def ended(container, timeout: float = 30) -> int:
    return container.wait(timeout=timeout)["StatusCode"]


def test_guard_never_starts_the_program_when_the_key_is_absent(docker_client, image, site_name, lease):
    container = start_guarded(docker_client, image, site_name, lease)
    assert ended(container) == EX_FENCED
    out, err = logs(container)
    assert STARTED not in out
    assert "not starting sh" in err and "renew answered 0" in err


def test_guard_never_starts_the_program_when_the_key_holds_another_hosts_value(docker_client, image, site_name, lease):
    lease["redis"].set(lease["key"], lease["value"].replace("host-a", "host-b"), px=LEASE_MS)
    container = start_guarded(docker_client, image, site_name, lease)
    assert ended(container) == EX_FENCED
    assert STARTED not in logs(container)[0]
    assert lease["redis"].get(lease["key"]) == lease["value"].replace("host-a", "host-b")  # untouched


def test_guard_never_starts_the_program_while_redis_is_unreachable(docker_client, image, site_name, lease, link):
    hold(lease)
    link.cut()
    container = start_guarded(docker_client, image, site_name, lease)
    assert ended(container) == EX_FENCED
    out, err = logs(container)
    assert STARTED not in out
    assert "no renew succeeded" in err


def test_guard_starts_the_program_after_its_first_renew_and_keeps_the_lease_alive(docker_client, image, site_name, lease):
    hold(lease)
    container = start_guarded(docker_client, image, site_name, lease)
    wait_started(container)
    # Only the guard renews: the key outlives several lease periods, with the same value.
    time.sleep(3 * LEASE_MS / 1000)
    container.reload()
    assert container.status == "running"
    assert lease["redis"].get(lease["key"]) == lease["value"]
    assert 0 < lease["redis"].pttl(lease["key"]) <= LEASE_MS
    assert "started sh" in logs(container)[1]


@pytest.mark.parametrize("how", ["deleted", "taken_by_another_host"])
def test_guard_kills_the_program_and_exits_75_when_the_lease_is_lost(docker_client, image, site_name, lease, how):
    hold(lease)
    container = start_guarded(docker_client, image, site_name, lease)
    wait_started(container)
    if how == "deleted":
        lease["redis"].delete(lease["key"])
    else:
        lease["redis"].set(lease["key"], lease["value"].replace('"token":1', '"token":2'), px=LEASE_MS)
    assert ended(container) == EX_FENCED
    err = logs(container)[1]
    assert "fenced: the lease key" in err and "renew answered 0" in err
    assert "killed the process group of sh" in err


def test_guard_fences_before_the_lease_could_expire_when_redis_becomes_unreachable(docker_client, image, site_name,
                                                                                    lease, link):
    hold(lease)
    container = start_guarded(docker_client, image, site_name, lease)
    wait_started(container)
    link.cut()
    time.sleep(0.2)  # a renew already past the proxy lands before the key's expiry is read
    before = time.time()
    remaining_ms = lease["redis"].pttl(lease["key"])
    expires_at = before + remaining_ms / 1000  # the key cannot expire before this moment
    assert remaining_ms > 0, "the key expired before the test could read it"
    assert ended(container) == EX_FENCED
    died = docker_client.api.inspect_container(container.id)["State"]["FinishedAt"]
    assert _epoch(died) < expires_at, (died, expires_at)
    assert "no renew succeeded within 2.00s" in logs(container)[1]


def _epoch(rfc3339: str) -> float:
    """The engine's FinishedAt (nanoseconds, UTC) as seconds since the epoch."""
    from datetime import datetime, timezone

    seconds, _, fraction = rfc3339.rstrip("Z").partition(".")
    stamp = datetime.strptime(seconds, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return stamp + float("0." + (fraction or "0"))


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT", "SIGQUIT"])
def test_guard_forwards_a_stop_signal_and_exits_with_the_programs_status(docker_client, image, site_name, lease,
                                                                        signal_name):
    hold(lease)
    container = start_guarded(docker_client, image, site_name, lease)
    wait_started(container)
    container.kill(signal=signal_name)
    assert ended(container) == 7  # the program's own status, from its trap
    assert "fenced" not in logs(container)[1]


def test_guard_exits_with_the_status_of_a_program_that_ends_by_itself(docker_client, image, site_name, lease):
    hold(lease)
    container = start_guarded(docker_client, image, site_name, lease, ["sh", "-c", f"echo {STARTED}; exit 3"])
    assert ended(container) == 3
    assert STARTED in logs(container)[0]


def test_guard_never_prints_the_redis_password(docker_client, image, site_name, lease, redis_server, link):
    hold(lease)
    link.cut()  # the failing renews are reported, with their errors
    container = start_guarded(docker_client, image, site_name, lease)
    assert ended(container) == EX_FENCED
    out, err = logs(container)
    assert "renew failed" in err
    assert redis_server.password not in out + err


def test_worker_image_runs_celery_under_the_guard_as_pid_1_when_given_a_lease(docker_client, site_name, lease,
                                                                             tmp_path):
    from tests.indico_images import worker_image
    from tests.test_image_entrypoint import UID_GID, binds, make_usable_config, run_once

    image = worker_image(docker_client)
    volumes = {}
    for name in ("data", "scratch"):
        volumes[name] = tmp_path / name
        volumes[name].mkdir()
        os.chown(volumes[name], *map(int, UID_GID.split(":")))
    assert run_once(docker_client, image, site_name, ["make-config"], volumes)[0] == 0
    make_usable_config(volumes)
    hold(lease)
    # `--help`: the entrypoint's celery branch, cheaply (no database or broker needed).
    container = docker_client.containers.create(image, ["celery", "--help"], user=UID_GID, environment=lease["env"],
                                                labels={SITE_LABEL: site_name}, volumes=binds(volumes))
    container.start()
    assert ended(container, timeout=120) == 0
    out, err = logs(container)
    assert "indico-lease-guard: lease renewed; started indico celery worker -B --help (pid " in err
    assert "guard pid 1," in err
    assert "Usage:" in out


def test_guard_never_starts_the_program_on_a_renew_whose_fence_deadline_has_passed():
    # The answer came late (a frozen container, a starved CPU): by its send time the program
    # would already have to be dead, and the key may be another host's by now.
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("lease_guard", Path(__file__).parents[1] / "image" / "lease_guard.py")
    guard_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(guard_module)
    lease = guard_module.Lease({"INDICO_SUPERVISOR_LEASE_REDIS": "redis://127.0.0.1:1/0",
                                "INDICO_SUPERVISOR_LEASE_KEY": "k", "INDICO_SUPERVISOR_LEASE_VALUE": "v",
                                "INDICO_SUPERVISOR_LEASE_MS": str(LEASE_MS)})
    guard = guard_module.Guard(lease, ["true"], renew=lambda: 1)
    guard.answers.put((time.monotonic() - lease.fence_after - 0.1, 1))
    guard._handle_answers()
    try:
        assert guard.child is None
    finally:
        if guard.child is not None:
            os.waitpid(guard.child, 0)
