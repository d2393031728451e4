"""The daemon's stop: every owned container in reverse start order, one at a time, or none.

A part of the `Ledger` (which inherits it), like `waiting.py`. Same rules as the
ledger: pure, no engine, no clock, no logging; events are returned.
"""
from __future__ import annotations

from .lifecycle import Event
from .model import Observed
from .plan import Stop


class Stopping:
    # Set by the ledger's __init__: `stopping`, `finished`, `stop_tried`.

    def begin_stop(self, leave: bool, signal_name: str, on_exit: str) -> list[Event]:
        """Stop every owned container in reverse start order, or (`leave`) none of them."""
        self.stopping = True
        if leave:
            self.finished = True
            self._emit("info", "daemon_stopping", signal=signal_name, on_exit=on_exit,
                       containers_left_running=sum(1 for c in self.observed.values() if c.site and c.running))
            return self._take()
        self._emit("info", "daemon_stopping", signal=signal_name, on_exit="stop", containers=len(self._to_stop()))
        return self._take()

    def _next_stop(self) -> list:
        # Let a start under way finish, so nothing comes up after we stopped; only then
        # choose what to stop next, so what that start brought up is stopped too.
        if any(kind in ("role", "container") for kind, *_ in self.in_flight):
            return []
        remaining = self._to_stop()
        if not remaining:
            self.finished = True
            return []
        self.stop_tried.add(remaining[0].id)  # one try each: a refused removal is logged, not retried forever
        return [Stop(remaining[0], self.stop_timeout(remaining[0].role))]

    def _to_stop(self) -> list[Observed]:
        """Owned containers still to stop: dependents before what they depend on, unconfigured roles first."""
        order = list(self.site.start_order())
        owned = [c for c in self.observed.values() if c.site and c.id not in self.stop_tried
                 and c.status in ("running", "created", "exited", "paused")]
        owned.sort(key=lambda c: -order.index(c.role) if c.role in order else -len(order) - 1)
        return owned
