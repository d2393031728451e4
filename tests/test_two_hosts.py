"""The two-host fixtures themselves: the second engine, the watcher, the Redis links.

The watcher is what the failover scenarios' "never two at once" rests on, so it is
shown to fail when two do run at once, by its samples and by the engines' event times.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.daemon import SLEEPER
from harness.sites import SITE_LABEL, remove_site_containers
from tests.lease_redis import RedisLink, RedisServer, bridge_gateway
from tests.two_hosts import ROLE_LABEL, SecondEngine, SingletonWatcher, load_images

# tests/run runs two test processes: the second engine of the module fixtures stays in one
# of them (two second engines at once would draw networks from one address pool).
pytestmark = pytest.mark.xdist_group("two_hosts")


@pytest.fixture(scope="module")
def engine_b(docker_client, busybox):
    engine = SecondEngine().start()
    try:
        load_images(docker_client, engine.client(), [busybox])
        yield engine
    finally:
        engine.remove()


@pytest.fixture
def engines(docker_client, engine_b, site_name):
    yield {"a": docker_client, "b": engine_b.client()}
    remove_site_containers(engine_b.client(), site_name)


def celery(client, image, site):
    return client.containers.run(image, SLEEPER, detach=True, labels={SITE_LABEL: site, ROLE_LABEL: "celery"})


def test_second_engine_is_apart_from_the_main_one_and_leaves_its_bridge_alone(docker_client, engines, busybox,
                                                                                site_name):
    container = celery(engines["b"], busybox, site_name)
    assert container.id not in {c.id for c in docker_client.containers.list(all=True)}
    assert Path("/sys/class/net/docker0").exists()
    # Its containers reach this machine's addresses (where the Redis links listen) through their gateway.
    gateway = bridge_gateway(docker_client)
    assert engines["b"].containers.run(busybox, ["ping", "-c", "1", "-W", "5", gateway], remove=True) is not None


def test_watcher_fails_when_two_run_at_once_on_two_engines(engines, busybox, site_name):
    with SingletonWatcher(engines, site_name) as watcher:
        celery(engines["a"], busybox, site_name)
        celery(engines["b"], busybox, site_name)
        watcher.wait_running(2, 30)
        time.sleep(0.3)  # the event streams deliver both starts
    with pytest.raises(AssertionError, match="two celery containers running at once"):
        watcher.check()
    watcher.record.overlaps.clear()  # the samples aside, the engines' event times say it too
    with pytest.raises(AssertionError, match="still ran"):
        watcher.check()


def test_watcher_accepts_a_hand_over_whose_start_follows_the_die(engines, busybox, site_name):
    with SingletonWatcher(engines, site_name) as watcher:
        first = celery(engines["a"], busybox, site_name)
        watcher.wait_running(1, 30, engine="a")
        first.stop(timeout=5)
        celery(engines["b"], busybox, site_name)
        watcher.wait_running(1, 30, engine="b")
        time.sleep(0.3)
    watcher.check()
    actions = [(engine, action) for engine, _, action, _ in watcher.events()]
    assert actions == [("a", "start"), ("a", "die"), ("b", "start")]
    assert watcher.record.samples > 0


def test_redis_link_cut_hangs_every_connection_and_restore_lets_new_ones_through(docker_client, tmp_path):
    import redis

    server = RedisServer(tmp_path / "redis").start()
    link = RedisLink(server, bridge_gateway(docker_client))
    try:
        client = redis.Redis.from_url(link.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        assert client.ping()
        link.cut()
        with pytest.raises(redis.exceptions.TimeoutError):
            client.ping()
        link.restore()
        assert client.ping()
        client.set("k", "v")
        server.restart()  # Redis back without its data, on the same port
        fresh = redis.Redis.from_url(link.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        assert fresh.ping() and fresh.get("k") is None
    finally:
        link.close()
        server.stop()
