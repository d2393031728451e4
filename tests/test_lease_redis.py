"""The protocol's scripts against a real Redis (Debian's redis-server on loopback): the contract the guard shares."""
from __future__ import annotations

import threading
import time

import pytest

from harness.redis_server import RedisServer
from supervisor.lease import LeaseChanged, LeaseClient, LeaseKeeper
from supervisor.leasing import HELD, RELEASED, STANDBY, LeaseState, Timing, lease_value


@pytest.fixture
def server(tmp_path):
    running = RedisServer(tmp_path / "redis").start()
    yield running
    running.kill()


def client(server: RedisServer, lease: float = 15.0) -> LeaseClient:
    return LeaseClient(server.url, "site", "celery", Timing(lease))


def test_acquire_on_a_fresh_redis_takes_token_1_says_data_lost_and_writes_the_protocols_value(server):
    leases = client(server)
    won, value, data_lost = leases.acquire("host-a", 1764478000.25, 0)
    assert (won, data_lost) == (True, True)
    assert value == lease_value("host-a", 1, 1764478000.25)
    raw = server.client()
    assert raw.get("indico-supervisor:site:celery:lease") == value
    assert 14_000 < raw.pttl("indico-supervisor:site:celery:lease") <= 15_000


def test_acquire_never_overwrites_a_held_key_and_answers_its_value(server):
    leases = client(server)
    _, held, _ = leases.acquire("host-a", 1.0, 0)
    won, value, data_lost = leases.acquire("host-b", 2.0, 0)
    assert (won, value, data_lost) == (False, held, False)


def test_a_counter_below_the_highest_token_seen_is_data_lost_and_jumps_past_it(server):
    leases = client(server)
    server.client().set("indico-supervisor:site:celery:token", 3)
    won, value, data_lost = leases.acquire("host-a", 1.0, 41)
    assert won and data_lost and '"token":42' in value
    assert server.client().get("indico-supervisor:site:celery:token") == "42"
    server.client().delete("indico-supervisor:site:celery:lease")
    assert client(server).acquire("host-b", 1.0, 42)[1:] == (lease_value("host-b", 43, 1.0), False)


def test_renew_and_release_act_only_on_the_exact_value(server):
    leases = client(server)
    _, value, _ = leases.acquire("host-a", 1.0, 0)
    other = lease_value("host-a", 2, 1.0)
    assert leases.renew(value) and not leases.renew(other)
    assert not leases.release(other) and leases.release(value)
    assert not leases.renew(value)


def test_a_keeper_holds_and_renews_and_a_second_stands_by_then_takes_over_after_a_release(server):
    posted: list = []
    got = threading.Condition()

    def post(message: LeaseChanged) -> None:
        with got:
            posted.append(message.view)
            got.notify_all()

    def wait_for(predicate) -> None:
        with got:
            assert got.wait_for(lambda: any(predicate(v) for v in posted), timeout=20), posted

    timing = Timing(3.0)
    first = LeaseKeeper(client(server, 3.0), LeaseState("celery", "host-a", timing), post)
    first.start()
    wait_for(lambda v: v.kind == HELD and v.holder == "host-a")
    second = LeaseKeeper(client(server, 3.0), LeaseState("celery", "host-b", timing), post)
    second.start()
    wait_for(lambda v: v.kind == STANDBY and v.holder == "host-a")
    renewals_before = sum(1 for v in posted if v.kind == HELD)
    time.sleep(timing.lease)  # a full lease: only renewals keep the key
    assert sum(1 for v in posted if v.kind == HELD) > renewals_before
    assert '"host":"host-a"' in server.client().get("indico-supervisor:site:celery:lease")

    first.release()
    first.join(5)

    wait_for(lambda v: v.kind == RELEASED)
    wait_for(lambda v: v.kind == HELD and v.holder == "host-b")
    second.stop()
    second.join(5)
