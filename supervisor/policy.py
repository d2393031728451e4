"""Restart backoff and crash-loop arithmetic for one container. Pure: time comes in as numbers.

The first restart is immediate, then `backoff` doubles up to `max_backoff`; a
run that lasted `reset_after` starts the count afresh; more than `max_restarts`
restarts within `window` is a crash loop and ends in `failed` until its `cooldown`
has passed (then a fresh budget) or a reload.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .model import RestartPolicy


@dataclass
class RestartTracker:
    policy: RestartPolicy
    consecutive: int = 0  # failures since the last run that lasted reset_after
    recent: deque = field(default_factory=deque)  # times of counted restarts, pruned to `window`
    next_start_at: float | None = None
    failed: bool = False
    retry_at: float | None = None  # when a failed container is tried again (its cooldown); None: never
    total: int = 0  # every restart since the daemon started, for status

    def delay_after_failure(self, now: float, uptime: float | None, *, counted: bool = True) -> float | None:
        """Record a failure; return the delay before the next start, or None once given up.

        `counted` is False for failures that are not the container's doing (the
        engine refused a create or start): they back off the same way but never
        end in `failed`, so a database that is down for an hour does not strand Indico.
        """
        if self.failed:
            return None  # given up until a reload (`forgive`), however old the crash loop is
        if uptime is not None and uptime >= self.policy.reset_after:
            self.consecutive = 0
            self.recent.clear()
        while self.recent and self.recent[0] <= now - self.policy.window:
            self.recent.popleft()
        if counted and len(self.recent) >= self.policy.max_restarts:
            self.failed = True
            self.next_start_at = None
            self.retry_at = None if self.policy.cooldown is None else now + self.policy.cooldown
            return None
        delay = backoff_delay(self.policy, self.consecutive)
        self.consecutive += 1
        if counted:
            self.recent.append(now)
            self.total += 1
        self.next_start_at = now + delay
        return delay

    def started(self) -> None:
        self.next_start_at = None

    def forgive(self, policy: RestartPolicy) -> None:
        """A reload, or a cooldown passed: new settings, and a failed container gets a fresh budget."""
        self.policy = policy
        if self.failed:
            self.failed = False
            self.consecutive = 0
            self.recent.clear()
            self.next_start_at = None
            self.retry_at = None

    def cooled_down(self, now: float) -> bool:
        return self.failed and self.retry_at is not None and now >= self.retry_at

    def clear_delay(self) -> None:
        """Restart at once: the failures behind the delay were not the container's own."""
        self.consecutive = 0
        self.next_start_at = None

    def due(self, now: float) -> bool:
        return not self.failed and (self.next_start_at is None or now >= self.next_start_at)


def backoff_delay(policy: RestartPolicy, consecutive: int) -> float:
    """0 for the first restart, then backoff, 2×backoff, 4×… capped at max_backoff."""
    if consecutive <= 0:
        return 0.0
    # min() before the power would overflow: 2**1100 is not a float.
    exponent = min(consecutive - 1, 64)
    return min(policy.backoff * (2 ** exponent), policy.max_backoff)
