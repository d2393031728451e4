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


def test_a_release_in_the_data_lost_wait_leaves_the_key_to_expire(server):
    posted: list = []
    keeper = LeaseKeeper(client(server), LeaseState("celery", "host-a", Timing(15.0)), posted.append)
    keeper.start()
    deadline = time.monotonic() + 20
    while not any(m.view.kind == HELD for m in posted) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(m.view.kind == HELD and m.view.data_lost for m in posted), posted
    keeper.release()  # e.g. systemctl stop, or a reload disabling celery, before its container started
    keeper.join(5)
    assert posted[-1].view.kind == RELEASED and posted[-1].view.reason.startswith("left to expire")
    assert server.client().get("indico-supervisor:site:celery:lease") is not None


def test_a_keeper_survives_a_key_it_cannot_decode_and_acquires_once_it_is_gone(server):
    server.client().set("indico-supervisor:site:celery:lease", b"\xff\xfe not ours")
    posted: list = []
    keeper = LeaseKeeper(client(server, 3.0), LeaseState("celery", "host-a", Timing(3.0)), posted.append)
    keeper.start()
    deadline = time.monotonic() + 20
    while not posted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert posted and posted[0].view.kind != HELD
    server.client().delete("indico-supervisor:site:celery:lease")
    while not any(m.view.kind == HELD for m in posted) and time.monotonic() < deadline:
        time.sleep(0.05)
    keeper.stop()
    keeper.join(5)
    assert any(m.view.kind == HELD for m in posted), posted


def test_a_retiring_keeper_stops_renewing_while_the_engine_is_unreachable_too(server):
    # A reload disabled celery, whose container is still being stopped when the engine goes:
    # renewing on would keep the cluster's lease here for as long as the engine is away.
    from types import SimpleNamespace

    from supervisor.cluster import Cluster
    from supervisor.keepers import Keepers
    from tests.test_ledger import container, site
    posted: list = []
    keepers = Keepers(posted.append)
    keepers.follow(site(container("celery", singleton=True),
                        cluster=Cluster(redis=server.url, lease=3.0, host="host-a")), ["celery"])
    deadline = time.monotonic() + 20
    while not any(m.view.kind == HELD for m in posted) and time.monotonic() < deadline:
        time.sleep(0.05)
    view = [m.view for m in posted if m.view.kind == HELD][-1]
    keepers.follow(keepers.site, [])  # the reload
    ledger = SimpleNamespace(engine_up=False, leases={"celery": view}, holds_value=lambda value: True,
                             crash_looping_singletons=set, adoptions=dict)
    keepers.tick(ledger)
    retiring = keepers.retiring["celery"]
    try:
        assert not retiring.state.renew_allowed
    finally:
        keepers.finish(ledger, release=False)


def test_a_retired_keepers_late_last_word_never_overwrites_the_view_of_the_keeper_that_followed_it(server):
    # A reload disabled celery (its keeper releases, slowly: Redis is cut off from it), another
    # enabled it again: the old keeper's `released` must not reach the ledger after the new one's news.
    from types import SimpleNamespace

    from supervisor.cluster import Cluster
    from supervisor.keepers import Keepers
    from tests.lease_redis import RedisLink
    from tests.test_ledger import container, site
    link = RedisLink(server, "127.0.0.1")
    posted: list = []
    keepers = Keepers(posted.append)
    ledger = SimpleNamespace(engine_up=True, leases={}, holds_value=lambda value: False,
                             crash_looping_singletons=set, adoptions=dict)
    celery = container("celery", singleton=True)
    server.client().set("indico-supervisor:prod:celery:token", 5)  # no data-lost wait: the release asks Redis
    try:
        via_link = site(celery, cluster=Cluster(redis=link.url, lease=3.0, host="host-a"))
        keepers.follow(via_link, ["celery"])
        deadline = time.monotonic() + 20
        while not any(m.view.kind == HELD for m in posted) and time.monotonic() < deadline:
            time.sleep(0.05)
        ledger.leases["celery"] = [m.view for m in posted if m.view.kind == HELD][-1]
        keepers.follow(via_link, [])
        old = keepers.retiring["celery"]
        link.cut()
        keepers.tick(ledger)  # its container is gone: it releases
        keepers.follow(site(celery, cluster=Cluster(redis=server.url, lease=3.0, host="host-a")), ["celery"])
        followed = len(posted)
        old.join(10)
        assert not any(m.view.kind == RELEASED for m in posted[followed:]), posted[followed:]
    finally:
        keepers.finish(ledger, release=False)
        link.close()
