"""The singleton lease's edge: the Lua scripts in the site's Redis, and one keeper thread per singleton role.

Owns: the redis-py client (short socket timeouts, no retries: a blocked call must not
carry the holder past its fence deadline), the acquire/renew/release scripts of the
protocol, and `LeaseKeeper`, a thread that drives `leasing.LeaseState` and posts a
`LeaseChanged` to the daemon's inbox at each change (and at each renew, which moves
the fence deadline). The daemon's loop checks that deadline too, from its own thread.
Must not: touch containers or the ledger: it only posts messages, like the watcher.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Callable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .leasing import ACQUIRE, HELD, PEEK, RENEW, YIELD, LeaseState, LeaseView, Timing, lease_key, token_key

# KEYS: lease, token. ARGV: host, since (JSON number text), lease ms, floor.
# The value is built as text in one fixed key order, so it is byte for byte what
# `leasing.lease_value` writes: renew and release compare it as an exact string.
ACQUIRE_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current then return {0, current} end
local floor = tonumber(ARGV[4])
local token = redis.call('INCR', KEYS[2])
local data_lost = 0
if token == 1 or token <= floor then data_lost = 1 end
if token <= floor then
  token = floor + 1
  redis.call('SET', KEYS[2], token)
end
local value = '{"host":' .. cjson.encode(ARGV[1]) .. ',"token":' .. string.format('%d', token)
  .. ',"since":' .. ARGV[2] .. '}'
redis.call('SET', KEYS[1], value, 'PX', ARGV[3])
return {1, value, data_lost}
"""
RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class LeaseChanged:
    """A keeper's news for the loop: the role's lease as it stands now."""
    view: LeaseView


def connect(url: str, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                retry=Retry(NoBackoff(), 0), decode_responses=True,
                                health_check_interval=0)


class LeaseClient:
    """The three scripts for one role's keys, on one connection pool."""

    def __init__(self, url: str, site: str, role: str, timing: Timing):
        self.redis = connect(url, timing.socket_timeout)
        self.lease_key, self.token_key = lease_key(site, role), token_key(site, role)
        self.lease_ms = int(round(timing.lease * 1000))
        self._acquire = self.redis.register_script(ACQUIRE_SCRIPT)
        self._renew = self.redis.register_script(RENEW_SCRIPT)
        self._release = self.redis.register_script(RELEASE_SCRIPT)

    def acquire(self, host: str, since: float, floor: int) -> tuple[bool, str, bool]:
        """(won, the key's value, data lost)."""
        answer = self._acquire(keys=[self.lease_key, self.token_key],
                               args=[host, json.dumps(round(since, 3)), self.lease_ms, floor])
        return answer[0] == 1, answer[1], len(answer) > 2 and answer[2] == 1

    def renew(self, value: str) -> bool:
        return self._renew(keys=[self.lease_key], args=[value, self.lease_ms]) == 1

    def release(self, value: str) -> bool:
        return self._release(keys=[self.lease_key], args=[value]) == 1

    def peek(self) -> str | None:
        return self.redis.get(self.lease_key)

    def close(self) -> None:
        self.redis.close()


def reason(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


class LeaseKeeper:
    """One singleton role's lease, kept on a thread of its own; every change goes to `post`."""

    def __init__(self, client: LeaseClient, state: LeaseState, post: Callable[[object], None],
                 monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.client, self.state, self.post = client, state, post
        self.monotonic, self.wall = monotonic, wall
        self._lock = threading.Lock()  # the state is shared with the loop's calls below
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{state.role}", daemon=True)
        self._posted: LeaseView | None = None

    # Called from the loop's thread.

    def start(self) -> None:
        self._thread.start()

    def set_renew_allowed(self, allowed: bool) -> None:
        """While the engine is unreachable the daemon cannot fence its container: only the guard renews."""
        with self._lock:
            if self.state.renew_allowed != allowed:
                self.state.renew_allowed = allowed
                self._wake.set()

    def set_yielding(self, yielding: bool) -> None:
        """Hand the lease over (and stop taking it) while this host's container crash-loops."""
        with self._lock:
            if self.state.yielding != yielding:
                self.state.yielding = yielding
                self._wake.set()

    def adopt(self, value: str) -> None:
        with self._lock:
            if self.state.adopt_value != value and self.state.view.kind != HELD:
                self.state.adopt(value)
                self._wake.set()

    def release(self) -> None:
        """Stop keeping the lease and give it up (the container is gone already); ends the thread."""
        self._release.set()
        self._wake.set()

    def stop(self) -> None:
        """End the thread, keeping the lease as it is: it expires, or a re-exec'd daemon adopts it."""
        self._stop.set()
        self._wake.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    # The thread.

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._release.is_set():
                    self._give_up()
                    return
                self._turn()
        finally:
            self.client.close()

    def _turn(self) -> None:
        now = self.monotonic()
        with self._lock:
            if self.state.view.kind == HELD:
                self._publish(self.state.fence_if_due(now))
            request, due = self.state.next_request(now)
            adopt_value = self.state.adopt_value
            held_value = self.state.view.value
            floor = self.state.floor
        if request is None:
            self._wake.wait(max(0.0, min(due, now + 1.0) - now))
            self._wake.clear()
            return
        sent_at = self.monotonic()
        try:
            if request == ACQUIRE:
                won, value, data_lost = self.client.acquire(self.state.host, self.wall(), floor)
                with self._lock:
                    self._publish(self.state.acquired(sent_at, won, value, data_lost))
            elif request == RENEW:
                value = adopt_value if adopt_value is not None else held_value
                ok = self.client.renew(value)
                with self._lock:
                    self._publish(self.state.renewed(sent_at, ok, value))
            elif request == YIELD:
                released = self.client.release(held_value)
                with self._lock:
                    self._publish(self.state.yielded(sent_at, released))
            elif request == PEEK:
                seen = self.client.peek()
                with self._lock:
                    self._publish(self.state.peeked(sent_at, seen))
        except (redis.RedisError, OSError) as error:
            with self._lock:
                self._publish(self.state.unanswered(sent_at, reason(error)))

    def _give_up(self) -> None:
        with self._lock:
            value = self.state.view.value if self.state.view.kind == HELD else None
        released = False
        if value is not None:
            try:
                released = self.client.release(value)
            except (redis.RedisError, OSError):
                released = False  # it expires on its own within one lease
        with self._lock:
            self._publish(self.state.released(released))

    def _publish(self, view: LeaseView) -> None:
        # Views are values: a standby's polls that find the same holder post nothing; a held
        # lease's renew moves its fence deadline, which the loop checks itself, so it posts.
        if view != self._posted:
            self._posted = view
            self.post(LeaseChanged(view))
