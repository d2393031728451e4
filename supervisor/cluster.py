"""The site file's `cluster` section: the Redis that holds the singleton leases, the lease's length, this host's name.

Owns: reading and checking the section (problems with key paths, like every other
section) and `Cluster`, the value the lease keepers are built from. The URL's
password is a secret: `logs.secrets_of_site` registers it with the redactor.
Must not: connect to Redis (that is `lease.py`'s job).
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from .durations import format_duration
from .schema import Reader, key_path

CLUSTER_KEYS = ["redis", "lease", "host"]
DEFAULT_LEASE = 15.0
# Below this the holder's renewals (every L/5) and its socket timeouts (L/10) get too
# short to survive an ordinary network hiccup: the lease would flap.
MIN_LEASE = 3.0
REDIS_SCHEMES = ("redis", "rediss")
HOST_HINT = "a host name of letters, digits, '.', '_' or '-' (default: this machine's hostname)"


@dataclass(frozen=True)
class Cluster:
    redis: str  # a secret: its password is masked in every output
    lease: float = DEFAULT_LEASE  # seconds
    host: str = ""  # this host's name in the lease's value

    @property
    def lease_ms(self) -> int:
        return int(round(self.lease * 1000))


def read_cluster(r: Reader, top: dict) -> Cluster | None:
    """The `cluster` section, or None when it is absent or wrong (then its problems are on the reader)."""
    if "cluster" not in top or top["cluster"] is None:
        return None
    body = r.mapping(top["cluster"], "cluster", CLUSTER_KEYS)
    if body is None:
        return None
    url = _redis_url(r, body.get("redis"), key_path("cluster", "redis"))
    lease = r.duration(body.get("lease", DEFAULT_LEASE), key_path("cluster", "lease"))
    if lease is not None and lease < MIN_LEASE:
        r.problem(key_path("cluster", "lease"),
                  f"too short: at least {format_duration(MIN_LEASE)} (15s is a good default); the holder renews "
                  f"every fifth of it and must survive a short network hiccup", body.get("lease"))
        lease = None
    host = r.string(body.get("host", socket.gethostname()), key_path("cluster", "host"),
                    pattern=r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", hint=HOST_HINT)
    if url is None or lease is None or host is None:
        return None
    return Cluster(redis=url, lease=lease, host=host)


def _redis_url(r: Reader, node: object, path: str) -> str | None:
    hint = ("a Redis URL reachable from this host and from the containers, "
            "e.g. redis://:PASSWORD@10.0.0.5:6379/0 or rediss://… for TLS")
    if node is None:
        r.problem(path, f"missing; {hint}")
        return None
    if not isinstance(node, str):
        r.problem(path, f"expected {hint}", node)
        return None
    try:
        parts = urlsplit(node)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        r.problem(path, f"not a valid URL; expected {hint}", node)
        return None
    if parts.scheme not in REDIS_SCHEMES:
        r.problem(path, f"the scheme must be redis:// or rediss://; expected {hint}", node)
        return None
    if not parts.hostname:
        r.problem(path, f"no host in the URL; expected {hint}", node)
        return None
    return node
