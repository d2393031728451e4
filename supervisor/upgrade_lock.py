"""One upgrade at a time across a cluster's hosts, and none twice for one image.

Every host of a site sees the new Indico image and would run `indico db upgrade`
against the one shared database at the same moment. With `cluster` set, the jobs
run under a site-wide lock in the cluster's Redis (SET NX with an expiry, renewed
while they run, so a host that dies mid-upgrade frees it within LOCK_TTL), and an
image the jobs passed for is recorded: a host that finds its image recorded skips
its jobs. Hosts that built the image themselves have different image IDs for it;
they still take turns, and the second `indico db upgrade` finds nothing to do.

While the lock is held elsewhere or Redis does not answer, the jobs wait (the old
containers serve meanwhile; STATUS says for whom). Without `cluster`, nothing here runs.
"""
from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Callable

import redis

from .lease import connect
from .leasing import KEY_PREFIX
from .upgrades import UpgradeResult

LOCK_TTL = 60.0  # seconds: how long a dead host's lock outlives it
RENEW_EVERY = 10.0
POLL = 1.0
DONE_TTL = 30 * 24 * 3600  # an image's upgrade is remembered for a month
REDIS_TIMEOUT = 5.0

RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def lock_key(site: str) -> str:
    return f"{KEY_PREFIX}:{site}:upgrade:lock"


def done_key(site: str, image_id: str) -> str:
    return f"{KEY_PREFIX}:{site}:upgrade:done:{image_id}"


@dataclass(frozen=True)
class UpgradeWaiting:
    """For the loop: the jobs wait for another host's upgrade, or for the cluster's Redis."""
    image_id: str
    reason: str


def upgrade_in_turn(cluster, site: str, image_id: str, jobs: Callable[[], UpgradeResult],
                    post: Callable[[object], None], stopping: Callable[[], bool]) -> UpgradeResult:
    """`jobs()` once this host holds the site's upgrade lock, unless another host already upgraded `image_id`."""
    client = connect(cluster.redis, REDIS_TIMEOUT)
    me = f"{cluster.host} {secrets.token_hex(4)}"  # unique even for two daemons with one host name
    told = None
    try:
        while True:
            try:
                done_by = client.get(done_key(site, image_id))
                if done_by is not None:
                    return UpgradeResult(0, done_by=done_by)
                if client.set(lock_key(site), me, nx=True, px=int(LOCK_TTL * 1000)):
                    return _holding(client, site, image_id, me, cluster.host, jobs)
                holder = client.get(lock_key(site)) or "another host"
                reason = f"waiting for the upgrade {holder.split(' ')[0]} runs"
            except redis.RedisError:
                reason = "waiting for the cluster's Redis"
            if reason != told:
                post(UpgradeWaiting(image_id, reason))
                told = reason
            if stopping():
                return UpgradeResult(0, failed_command="(waiting for the cluster's upgrade lock)",
                                     output=("the daemon stopped",))
            time.sleep(POLL)
    finally:
        client.close()


def _holding(client, site: str, image_id: str, me: str, host: str,
             jobs: Callable[[], UpgradeResult]) -> UpgradeResult:
    done = threading.Event()
    renew = client.register_script(RENEW_SCRIPT)

    def keep() -> None:
        while not done.wait(RENEW_EVERY):
            try:
                renew(keys=[lock_key(site)], args=[me, int(LOCK_TTL * 1000)])
            except redis.RedisError:
                pass  # the jobs go on; a lock that lapses lets another host wait less, never run twice an image
    keeper = threading.Thread(target=keep, name="upgrade-lock", daemon=True)
    keeper.start()
    try:
        result = jobs()
        if result.failed_command is None:
            try:
                client.set(done_key(site, image_id), host, ex=DONE_TTL)
            except redis.RedisError:
                pass  # other hosts then run the jobs too, in turn: `indico db upgrade` finds nothing left to do
        return result
    finally:
        done.set()
        keeper.join()
        try:
            client.register_script(RELEASE_SCRIPT)(keys=[lock_key(site)], args=[me])
        except redis.RedisError:
            pass  # it expires by itself within LOCK_TTL

