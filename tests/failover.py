"""A two-host cluster for the failover scenarios, shared by tests/test_failover.py and bench/failover.py.

Host "a" is the main engine, host "b" a second dockerd (tests.two_hosts). Each host has
its own real daemon (harness.daemon) with the same site file except `cluster.host` and
the Redis URL: each reaches the one real Redis through its own proxy (tests.lease_redis),
which a scenario can cut. The celery container is the guard image (tests.guard_image)
running its program under the guard, as the worker image does, so a host whose daemon
cannot act (stopped, killed) is still fenced by its container.
"""
from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.daemon import Daemon, site_config, wait_until
from harness.sites import SITE_LABEL, remove_site_containers
from tests.guard_image import GUARD_PATH
from tests.lease_redis import RedisLink, RedisServer, bridge_gateway
from tests.two_hosts import SecondEngine, SingletonWatcher

LEASE = 3.0  # seconds: the shortest the daemon accepts, so scenarios stay short
CELERY = [GUARD_PATH, "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"]


@dataclass
class Host:
    name: str
    client: object  # the Docker SDK client of its engine
    docker_host: str
    link: RedisLink
    daemon: Daemon | None = None


@dataclass
class Cluster:
    site: str
    image: str
    root: Path
    redis: RedisServer
    hosts: dict[str, Host]
    engine_b: SecondEngine
    watcher: SingletonWatcher | None = None
    daemons: list[Daemon] = field(default_factory=list)

    def daemon(self, name: str) -> Daemon:
        host = self.hosts[name]
        root = self.root / name
        root.mkdir(parents=True, exist_ok=True)
        config = site_config(self.site, self.image, root, {"celery": {"command": CELERY}},
                             cluster={"redis": host.link.url, "lease": f"{LEASE:g}s", "host": f"host-{name}"})
        host.daemon = Daemon(root, config, {"DOCKER_HOST": host.docker_host})
        self.daemons.append(host.daemon)
        return host.daemon

    def holder(self, timeout: float = 60) -> str:
        """The host whose celery runs, once exactly one does."""
        sighting = self.watcher.wait_running(1, timeout)[0]
        return sighting.engine

    def lease_value(self) -> str | None:
        return self.redis.client().get(f"indico-supervisor:{self.site}:celery:lease")

    def report(self) -> str:
        """What each host's celery containers said (the guard's lines): printed by `close` for a failing test."""
        lines = []
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                for container in host.client.containers.list(all=True, filters={"label": f"{SITE_LABEL}={self.site}"}):
                    lines.append(f"--- host {host.name}: {container.name} {container.status}")
                    lines.append(container.logs(timestamps=True).decode(errors="replace")[-3000:])
        return "\n".join(lines)

    def close(self, report: bool = True) -> None:
        if report:  # pytest shows it only for a failing test
            print(self.report())
        for daemon in self.daemons:
            if daemon.process is not None and daemon.process.poll() is None:
                with contextlib.suppress(Exception):
                    daemon.process.send_signal(18)  # SIGCONT: a stopped daemon cannot die of SIGKILL's wait
                daemon.kill()
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                remove_site_containers(host.client, self.site)
            host.link.close()


def make_cluster(main_client, engine_b: SecondEngine, redis: RedisServer, site: str, image: str,
                 root: Path) -> Cluster:
    address = bridge_gateway(main_client)
    hosts = {"a": Host("a", main_client, "unix:///var/run/docker.sock", RedisLink(redis, address)),
             "b": Host("b", engine_b.client(), engine_b.docker_host, RedisLink(redis, address))}
    cluster = Cluster(site, image, root, redis, hosts, engine_b)
    cluster.watcher = SingletonWatcher({name: host.client for name, host in hosts.items()}, site)
    return cluster


def wait_for(predicate, timeout: float, what: str, period: float = 0.05):
    """`harness.daemon.wait_until`, polled every 50 ms: the scenarios time failovers of a few seconds."""
    return wait_until(predicate, timeout, period, what)


# The scenarios: each breaks the holder one way, ends with exactly one celery running,
# and returns the failover time (seconds from the break to the engine's `start` of the
# new holder's celery), or None where the lease rightly never changes hands.

def other(name: str) -> str:
    return "b" if name == "a" else "a"


def start_with_holder(cluster: Cluster, holder: str) -> None:
    """Daemon `holder` first (it takes the lease and starts celery), then the other as its standby."""
    cluster.daemon(holder).start().wait_event("lease_acquired", 60)
    cluster.watcher.wait_running(1, 60, engine=holder)
    cluster.daemon(other(holder)).start().wait_event("lease_standby", 60)


def failover_time(cluster: Cluster, to: str, since: float, timeout: float = 60) -> float:
    """Once celery runs on host `to`: seconds from `since` to its start, by the engine's clock."""
    cluster.watcher.wait_running(1, timeout, engine=to)
    starts = wait_for(lambda: [at for engine, _, at in cluster.watcher.starts() if engine == to and at >= since],
                      10, f"the start event of celery on {to}")
    return starts[-1] - since


def only_on(cluster: Cluster, host: str) -> None:
    running = [s.engine for s in cluster.watcher.running_now()]
    assert running == [host], f"celery runs on {running}, expected only on {host}"


def both_at_once(cluster: Cluster) -> None:
    cluster.daemon("a"), cluster.daemon("b")
    for host in cluster.hosts.values():
        host.daemon.start()
    holder = cluster.holder()
    cluster.hosts[other(holder)].daemon.wait_event("lease_standby", 30)
    time.sleep(2 * LEASE)  # a few lease periods: nothing changes hands
    only_on(cluster, holder)
    assert {engine for engine, _, _ in cluster.watcher.starts()} == {holder}
    return None


def holder_daemon_killed(cluster: Cluster) -> None:
    """The guard alone keeps the lease: the celery runs on, and the daemon back adopts it."""
    start_with_holder(cluster, "a")
    container = cluster.watcher.running_now()[0].container
    cluster.hosts["a"].daemon.kill()
    time.sleep(3 * LEASE)
    only_on(cluster, "a")
    cluster.daemon("a").start().wait_ready(60)
    time.sleep(LEASE)
    assert [s.container for s in cluster.watcher.running_now()] == [container], "not adopted"
    return None


def holder_daemon_stopped(cluster: Cluster) -> None:
    """SIGSTOP for three lease periods: the guard renews meanwhile; the daemon resumes as holder."""
    start_with_holder(cluster, "a")
    daemon = cluster.hosts["a"].daemon
    daemon.signal(signal.SIGSTOP)
    time.sleep(3 * LEASE)
    daemon.signal(signal.SIGCONT)
    time.sleep(2 * LEASE)
    cluster.watcher.wait_running(1, 30, engine="a")
    assert {engine for engine, _, _ in cluster.watcher.starts()} == {"a"}
    return None


def holder_engine_stopped(cluster: Cluster) -> float:
    """Only the second engine is ever stopped: host b holds, its engine stops (its containers with it)
    and stays down (see tests.two_hosts: it is never started again)."""
    start_with_holder(cluster, "b")
    since = time.time()
    cluster.engine_b.stop()
    took = failover_time(cluster, "a", since)
    time.sleep(LEASE)
    only_on(cluster, "a")
    return took


def holder_partitioned(cluster: Cluster) -> float:
    start_with_holder(cluster, "a")
    since = time.time()
    cluster.hosts["a"].link.cut()
    took = failover_time(cluster, "b", since)
    cluster.hosts["a"].link.restore()
    cluster.hosts["a"].daemon.wait_event("lease_standby", 30)
    time.sleep(LEASE)  # back from the partition, it never preempts
    only_on(cluster, "b")
    return took


def redis_lost_its_data(cluster: Cluster) -> float:
    start_with_holder(cluster, "a")
    since = time.time()
    cluster.redis.restart()
    holder = wait_for(lambda: [d for d in cluster.daemons if d.events("lease_acquired", data_lost="true")
                               and len(d.events("lease_acquired")) >= (2 if d is cluster.hosts["a"].daemon else 1)],
                      30, "a daemon acquiring the lease Redis lost")
    name = "a" if holder[0] is cluster.hosts["a"].daemon else "b"
    took = failover_time(cluster, name, since)
    time.sleep(LEASE)
    only_on(cluster, name)
    return took


def holder_stopped_gracefully(cluster: Cluster) -> float:
    start_with_holder(cluster, "a")
    since = time.time()
    assert cluster.hosts["a"].daemon.stop() == 0
    took = failover_time(cluster, "b", since)
    only_on(cluster, "b")
    return took


SCENARIOS = {
    "both_at_once": both_at_once,
    "holder_daemon_killed": holder_daemon_killed,
    "holder_daemon_stopped": holder_daemon_stopped,
    "holder_engine_stopped": holder_engine_stopped,
    "holder_partitioned": holder_partitioned,
    "redis_lost_its_data": redis_lost_its_data,
    "holder_stopped_gracefully": holder_stopped_gracefully,
}
