"""One celery for the cluster, two hosts: how long each failover takes, and never two at once.

The scenarios are the tests' own (tests/failover.py): two real daemons, host a on the
main engine and host b on a second dockerd (tests/two_hosts.py), one real Redis reached
by each host through its own proxy, the celery under the lease guard (tests/guard_image.py),
L = 3 s. Each rep is a fresh site; the watcher samples both engines every 50 ms and
follows both event streams the whole time, and any overlap fails the rep.

Failover time: from the break (wall clock right before the act: the engine stopped,
the link cut, Redis restarted, SIGTERM to the holder) to the engine's `start` event of
the new holder's celery (`timeNano`; one machine, one clock). Target: what the protocol
allows, the lease plus a start: L (the key expires) + the standby's poll min(1 s, L/5)
+ 1 s for create and start; after Redis lost its data, one more L (the new holder
waits a full lease before it starts); a graceful stop releases, so no L at all.
The three scenarios where the lease rightly never moves (the daemon killed or stopped,
both started at once) report only whether they ended with one celery and no overlap.
"""
from __future__ import annotations

import tempfile
import traceback
import uuid
from pathlib import Path

from bench.lab import Lab, say
from bench.report import Result, median
from tests import failover
from tests.guard_image import guard_image
from tests.lease_redis import RedisServer
from tests.two_hosts import SecondEngine, load_images

L = failover.LEASE
START = 1.0  # create and start of a container, as bench/lease.py allows
POLL = min(1.0, L / 5)
TARGETS = {
    "holder_engine_stopped": L + POLL + START,
    "holder_partitioned": L + POLL + START,
    "redis_lost_its_data": 2 * L + POLL + START,
    "holder_stopped_gracefully": POLL + START,
}


def run(lab: Lab, quick: bool) -> Result:
    reps = 1 if quick else 5
    client = lab.client
    image = guard_image(client)
    root = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    redis = RedisServer(root / "redis").start()
    engines: list[SecondEngine] = []
    times: dict[str, list[float]] = {name: [] for name in failover.SCENARIOS}
    failures: dict[str, list[str]] = {name: [] for name in failover.SCENARIOS}
    try:
        for rep in range(reps):
            for name, scenario in failover.SCENARIOS.items():
                if not engines or not engines[-1].running:
                    engines.append(SecondEngine().start())
                    load_images(client, engines[-1].client(), [image])
                if redis.process.poll() is not None:
                    redis.start()
                site = "bf" + uuid.uuid4().hex[:10]
                cluster = failover.make_cluster(client, engines[-1], redis, site, image, root / site)
                failed = False
                try:
                    with cluster.watcher:
                        took = scenario(cluster)
                        cluster.watcher.check()
                    if took is not None:
                        times[name].append(took)
                    say(f"failover: rep {rep + 1}/{reps} {name}: "
                        + (f"{took:.2f} s" if took is not None else "one celery, no overlap"))
                except Exception as error:
                    failed = True
                    failures[name].append(f"{type(error).__name__}: {str(error)[:200]}")
                    say(f"failover: rep {rep + 1}/{reps} {name}: FAILED\n{traceback.format_exc()}")
                finally:
                    cluster.close(report=failed)
    finally:
        for engine in engines:
            engine.remove()
        redis.stop()

    result = Result("failover", f"Singleton failover between two hosts (L = {L:g} s)",
                    ("scenario", "reps ok", "median s", "max s", "target s"))
    for name in failover.SCENARIOS:
        ok = reps - len(failures[name])
        values = times[name]
        target = TARGETS.get(name)
        result.rows.append((name, f"{ok}/{reps}", median(values) if values else None,
                            max(values) if values else None, target))
        if target is not None:
            result.targets.append((f"{name}: max failover ≤ {target:g} s", bool(values) and max(values) <= target))
        for failure in failures[name]:
            result.notes.append(f"{name} failed once: {failure}")
    result.targets.append(("never two celery running, by 50 ms samples and by the engines' start/die times",
                           not any(failures.values())))
    result.notes.append(f"target = L (key expiry) + poll min(1 s, L/5) = {POLL:g} s + {START:g} s create and start; "
                        f"Redis data lost: + one more L (the new holder's wait); graceful stop: the holder releases")
    return result
