"""A cluster's hosts take turns to upgrade the shared database, and one image is upgraded once: a real Redis."""
from __future__ import annotations

import threading
import time

import pytest

from harness.redis_server import RedisServer
from supervisor.cluster import Cluster
from supervisor.upgrade_lock import UpgradeWaiting, done_key, lock_key, upgrade_in_turn
from supervisor.upgrades import UpgradeResult

SITE = "lock-test"


@pytest.fixture
def server(tmp_path):
    running = RedisServer(tmp_path / "redis").start()
    yield running
    running.kill()


def cluster(server: RedisServer, host: str) -> Cluster:
    return Cluster(redis=server.url, lease=15.0, host=host)


class Jobs:
    """Upgrade jobs that take `seconds`, recording when each host's ran."""

    def __init__(self, seconds: float = 0.0, fail: bool = False):
        self.seconds, self.fail = seconds, fail
        self.runs: list[tuple[str, float, float]] = []
        self._lock = threading.Lock()

    def of(self, host: str):
        def run() -> UpgradeResult:
            began = time.monotonic()
            time.sleep(self.seconds)
            with self._lock:
                self.runs.append((host, began, time.monotonic()))
            return UpgradeResult(0, failed_command="indico db upgrade", exit_code=1) if self.fail else UpgradeResult(2)
        return run


def in_turn(server, host, image_id, jobs, posted=None, stopping=lambda: False):
    return upgrade_in_turn(cluster(server, host), SITE, image_id, jobs.of(host),
                           (posted if posted is not None else []).append, stopping)


def test_two_hosts_with_the_same_new_image_upgrade_it_once(server):
    jobs = Jobs(seconds=1.5)
    results, posted = {}, []
    threads = [threading.Thread(target=lambda h=h: results.__setitem__(h, in_turn(server, h, "sha256:new", jobs, posted)))
               for h in ("host-a", "host-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(jobs.runs) == 1, jobs.runs
    [(ran_on, _, _)] = jobs.runs
    other = "host-b" if ran_on == "host-a" else "host-a"
    assert results[ran_on] == UpgradeResult(2)
    assert results[other] == UpgradeResult(0, done_by=ran_on)  # skipped: recorded as done by the first
    assert UpgradeWaiting("sha256:new", f"waiting for the upgrade {ran_on} runs") in posted
    assert server.client().get(lock_key(SITE)) is None  # released at once, not left to expire


def test_hosts_with_different_image_ids_run_their_jobs_in_turn_never_together(server):
    jobs = Jobs(seconds=1.0)
    threads = [threading.Thread(target=in_turn, args=(server, h, f"sha256:{h}", jobs)) for h in ("host-a", "host-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(jobs.runs) == 2
    (_, _, first_end), (_, second_start, _) = sorted(jobs.runs, key=lambda run: run[1])
    assert second_start >= first_end


def test_a_failed_upgrade_is_not_recorded_and_the_next_host_tries_it(server):
    failing = Jobs(fail=True)
    assert in_turn(server, "host-a", "sha256:new", failing).failed_command == "indico db upgrade"
    assert server.client().get(done_key(SITE, "sha256:new")) is None
    passing = Jobs()
    assert in_turn(server, "host-b", "sha256:new", passing) == UpgradeResult(2)
    assert [host for host, _, _ in passing.runs] == ["host-b"]


def test_without_redis_the_jobs_wait_and_say_why_and_a_stop_ends_the_wait(server):
    server.kill()
    jobs, posted = Jobs(), []
    deadline = time.monotonic() + 2.5
    result = in_turn(server, "host-a", "sha256:new", jobs, posted, stopping=lambda: time.monotonic() > deadline)
    assert jobs.runs == []  # never a migration without the lock
    assert posted == [UpgradeWaiting("sha256:new", "waiting for the cluster's Redis")]
    assert result.failed_command is not None


def test_a_lock_left_by_a_dead_host_expires_and_the_jobs_then_run(server):
    server.client().set(lock_key(SITE), "host-dead 0000", px=1500)
    jobs, posted = Jobs(), []
    assert in_turn(server, "host-a", "sha256:new", jobs, posted) == UpgradeResult(2)
    assert posted == [UpgradeWaiting("sha256:new", "waiting for the upgrade host-dead runs")]
    assert [host for host, _, _ in jobs.runs] == ["host-a"]
