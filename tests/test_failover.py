"""One celery for the whole cluster: two real daemons on two engines, one real Redis.

Each scenario (tests.failover) breaks the holder in one way and ends with exactly one
celery running; all along, the watcher (tests.two_hosts) holds both engines to "never
two running", by 50 ms samples and by the engines' own start and die times.
"""
from __future__ import annotations

import pytest

from tests import failover
from tests.guard_image import guard_image
from tests.lease_redis import RedisServer
from tests.two_hosts import SecondEngine, load_images

# tests/run runs two test processes: the second engine of the module fixtures stays in one
# of them (two second engines at once would draw networks from one address pool).
pytestmark = pytest.mark.xdist_group("two_hosts")


@pytest.fixture(scope="module")
def image(docker_client) -> str:
    return guard_image(docker_client)


@pytest.fixture(scope="module")
def engines(docker_client, image):
    """The second engine, a new one after a scenario stopped it (never started again)."""
    current: list[SecondEngine] = []

    def engine() -> SecondEngine:
        if not current or not current[-1].running:
            current.append(SecondEngine().start())
            load_images(docker_client, current[-1].client(), [image])
        return current[-1]

    yield engine
    for each in current:
        each.remove()


@pytest.fixture
def cluster(docker_client, engines, redis_server, site_name, image, tmp_path):
    engine_b = engines()
    if redis_server.process.poll() is not None:
        redis_server.start()
    cluster = failover.make_cluster(docker_client, engine_b, redis_server, site_name, image, tmp_path)
    try:
        with cluster.watcher:
            yield cluster
            cluster.watcher.check()
    finally:
        cluster.close()


def test_both_daemons_started_at_the_same_instant_run_one_celery(cluster):
    failover.both_at_once(cluster)


def test_holder_daemon_killed_leaves_its_celery_to_the_guard_and_adopts_it_when_back(cluster):
    failover.holder_daemon_killed(cluster)


def test_holder_daemon_stopped_for_three_lease_periods_keeps_one_celery(cluster):
    failover.holder_daemon_stopped(cluster)


def test_holder_engine_stopped_hands_celery_to_the_standby(cluster):
    failover.holder_engine_stopped(cluster)


def test_holder_partitioned_from_redis_fences_and_the_standby_takes_over_for_good(cluster):
    failover.holder_partitioned(cluster)


def test_redis_restarted_without_its_data_ends_with_one_celery(cluster):
    failover.redis_lost_its_data(cluster)


def test_holder_stopped_gracefully_hands_celery_over_at_once(cluster):
    failover.holder_stopped_gracefully(cluster)
