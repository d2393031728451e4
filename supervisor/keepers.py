"""The daemon's lease keepers: one `lease.LeaseKeeper` per singleton role, started, told and ended by the loop.

Owns: which keepers run; what the loop tells them each turn (whether the engine is
reachable, which lease value a container of ours carries, for adoption); the
graceful hand-over: a keeper whose role was disabled by a reload, or whose daemon
stops, releases its lease only once no container carries the lease's value (stop
the container first, then release).
Must not: decide about containers (the ledger's) or log (the keepers post to the inbox).
"""
from __future__ import annotations

import time
from typing import Callable

from .lease import LeaseClient, LeaseKeeper
from .leasing import HELD, LeaseState, Timing
from .model import Site

JOIN_TIMEOUT = 2.0  # a release is one Redis call with a socket timeout of L/10


class Keepers:
    def __init__(self, post: Callable[[object], None], monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.post, self.monotonic, self.wall = post, monotonic, wall
        self.active: dict[str, LeaseKeeper] = {}
        self.retiring: dict[str, LeaseKeeper] = {}  # roles no longer singletons: released once their container is gone
        self.site: Site | None = None

    def follow(self, site: Site, singleton_roles: list[str]) -> None:
        """Start a keeper for each new singleton role; retire the keepers of roles that are no longer ones."""
        self.site = site
        for role in [r for r in self.active if r not in singleton_roles]:
            self.retiring[role] = self.active.pop(role)
        for role in singleton_roles:
            if role in self.active:
                continue
            if role in self.retiring:  # back before its release: it still holds what it held
                self.active[role] = self.retiring.pop(role)
                continue
            cluster = site.cluster
            timing = Timing(cluster.lease)
            keeper = LeaseKeeper(LeaseClient(cluster.redis, site.name, role, timing),
                                 LeaseState(role, cluster.host, timing), self.post, self.monotonic, self.wall)
            self.active[role] = keeper
            keeper.start()

    def tick(self, ledger) -> None:
        """What the keepers must know after each turn of the loop."""
        crash_looping = ledger.crash_looping_singletons()
        for role, keeper in self.active.items():
            keeper.set_renew_allowed(ledger.engine_up)
            keeper.set_yielding(role in crash_looping)
        for role, value in ledger.adoptions().items():
            if role in self.active:
                self.active[role].adopt(value)
        for role, keeper in list(self.retiring.items()):
            if self._container_gone(ledger, role):
                keeper.release()
                del self.retiring[role]

    def finish(self, ledger, release: bool) -> None:
        """At the daemon's end: release what no container carries any more (`release`), else keep it to expire."""
        ending = [*self.active.items(), *self.retiring.items()]
        for role, keeper in ending:
            if release and self._container_gone(ledger, role):
                keeper.release()
            else:
                keeper.stop()  # a container still runs under it (stop.on_exit leave, a re-exec): its guard renews
        for _, keeper in ending:
            keeper.join(JOIN_TIMEOUT)
        self.active.clear()
        self.retiring.clear()

    @staticmethod
    def _container_gone(ledger, role: str) -> bool:
        view = ledger.leases.get(role)
        return view is None or view.kind != HELD or not ledger.holds_value(view.value)
