"""The singleton lease on one host: how soon a standby takes over, and how early a cut-off holder fences.

Per rep, a fresh Redis (`harness/redis_server`, loopback) and a daemon with lease L on a
site whose celery another host holds (a planted key):
- takeover: the key deleted → the engine's `start` of this host's celery. Bounded by
  the standby's poll (min(1 s, L/5)) plus a create and start.
- fence: Redis killed (a partition's stand-in) → the engine's `die` of that celery,
  against the moment the key would have expired (its PTTL read just before the kill).
  The protocol fences 2L/3 after the last renew answered, L/3 before the expiry: the
  margin is what a second host's celery would have to wait on top of that.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from bench.lab import Lab, say
from bench.report import Result, median, p95
from harness.redis_server import RedisServer

LEASE = 9.0


def run(lab: Lab, quick: bool) -> Result:
    reps = 2 if quick else 6
    takeovers, margins, fence_after_kill = [], [], []
    for rep in range(reps):
        server = RedisServer(Path(tempfile.mkdtemp(prefix="bench-redis-"))).start()
        try:
            daemon = lab.site({"celery": {}}, cluster={"redis": server.url, "lease": f"{LEASE:g}s", "host": "bench-a"})
            key = f"indico-supervisor:{daemon.site}:celery:lease"
            redis = server.client()
            redis.set(f"indico-supervisor:{daemon.site}:celery:token", 10)  # a used counter: no data-lost wait
            redis.set(key, json.dumps({"host": "bench-b", "token": 10, "since": time.time()}, separators=(",", ":")),
                      px=600_000)
            daemon.start("--log-level", "info")
            daemon.wait_ready(60)
            daemon.wait_event("lease_standby", 30)
            name = f"{daemon.site}-celery"
            deleted = time.time()
            redis.delete(key)
            started = lab.events.first(name, "start", deleted, timeout=30)
            if started is not None:
                takeovers.append(started - deleted)
            time.sleep(LEASE / 5 * 2)  # a few renewals
            expires = time.time() + redis.pttl(key) / 1000
            killed = time.time()
            server.kill()
            died = lab.events.first(name, "die", killed, timeout=30)
            if died is not None:
                margins.append(expires - died)
                fence_after_kill.append(died - killed)
            daemon.stop(60)
            say(f"lease: rep {rep + 1}/{reps}: takeover {takeovers[-1] if takeovers else None}, "
                f"margin {margins[-1] if margins else None}")
        finally:
            server.kill()
    result = Result("lease", f"Singleton lease (L = {LEASE:g} s), one host: takeover and fence",
                    ("what", "reps", "median s", "p95 s", "min s", "max s"))
    for what, values in (("key deleted → standby's celery started", takeovers),
                         ("Redis killed → celery died", fence_after_kill),
                         ("celery died → key would have expired (margin)", margins)):
        result.rows.append((what, len(values), median(values), p95(values),
                            min(values) if values else None, max(values) if values else None))
    result.targets.append((f"takeover within the poll ({min(1.0, LEASE / 5):g} s) + 1 s for create and start",
                           bool(takeovers) and max(takeovers) <= min(1.0, LEASE / 5) + 1.0))
    result.targets.append(("every cut-off celery died before its key could expire",
                           len(margins) == reps and min(margins) > 0))
    result.notes.append(f"fence deadline 2L/3 = {2 * LEASE / 3:g} s after the last renew answered; renew every "
                        f"L/5 = {LEASE / 5:g} s, so the kill lands between {2 * LEASE / 3 - LEASE / 5:g} and "
                        f"{2 * LEASE / 3:g} s before the fence; a margin near L/3 = {LEASE / 3:g} s is the design")
    return result
