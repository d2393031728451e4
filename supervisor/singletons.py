"""What the singleton leases mean for the ledger: which roles may have a container here, and how they show.

A ledger mixin (like `waiting.py`). Owns `leases` (role -> the keeper's last
`LeaseView`) and turns it into the planner's inputs: a singleton role is desired only
while this host holds its lease, past the data-lost wait and before the fence deadline
(its container then carries the lease's token label and the guard's environment); a
container of a role whose lease is not held is removed at once, with no grace; a role
whose lease was never answered yet is left as it is (a guarded container fences itself).
A container of ours carrying the value the key still holds is adopted, not replaced.
Must not: talk to Redis or the engine, read a clock, or log: it returns events.
"""
from __future__ import annotations

import time
from dataclasses import replace

from .leasing import HELD, RELEASED, STANDBY, UNKNOWN, YIELD_REASON, LeaseView, lease_key, parse_value
from .lifecycle import Event, Now
from .plan import LEASE_FENCE_REASON, Remove
from .spec import ContainerSpec
from .status import RoleStatus, State

ENV_REDIS = "INDICO_SUPERVISOR_LEASE_REDIS"
ENV_KEY = "INDICO_SUPERVISOR_LEASE_KEY"
ENV_VALUE = "INDICO_SUPERVISOR_LEASE_VALUE"
ENV_MS = "INDICO_SUPERVISOR_LEASE_MS"


def leased_spec(spec: ContainerSpec, cluster, lease_key: str, value: str) -> ContainerSpec:
    """The role's spec under a lease: the guard's environment (part of the hash: a new token, a new container)."""
    env = dict(spec.container.env)
    env.update({ENV_REDIS: cluster.redis, ENV_KEY: lease_key, ENV_VALUE: value, ENV_MS: str(cluster.lease_ms)})
    holder = parse_value(value)
    return replace(spec, container=replace(spec.container, env=tuple(sorted(env.items()))),
                   lease_token=holder.token if holder else None)


def _clock(since: float | None) -> str:
    return time.strftime("%H:%M", time.localtime(since)) if since else "?"


def lease_status(status: RoleStatus, view: LeaseView | None, mono: float, data_lost_wait: float) -> RoleStatus:
    """A singleton role's status: its lease's holder and token, and `standby` while another host holds it."""
    if view is None:
        # Not settled (READY waits): the first answer comes within a socket timeout.
        return replace(status, state=State.STARTING, detail="lease not known yet: asking Redis")
    fields = {"lease_holder": view.holder or "", "lease_token": view.token}
    if view.kind == HELD and view.ready(mono):
        return replace(status, **fields)
    if status.state in (State.STOPPING, State.STOPPED):
        return replace(status, **fields)
    if view.kind == HELD and view.start_at is not None and mono < view.start_at:
        return replace(status, state=State.STARTING, **fields,
                       detail=f"lease held (token {view.token}); Redis lost its data: the container starts "
                              f"after one full lease ({data_lost_wait:g}s), once any old holder has fenced")
    if view.kind == STANDBY:
        detail = (f"held by {view.holder} since {_clock(view.since)}" if view.holder
                  else "held by a value no daemon wrote" if view.value else "held by no host")
        if status.state is State.FAILED:  # the lease was handed over: say why this host does not take it back
            detail += "; this host's container gave up (crash loop): reload (systemctl reload indico-supervisor) to try again"
        return replace(status, state=State.STANDBY, **fields, detail=detail)
    return replace(status, state=State.STANDBY, lease_holder="", lease_token=None,
                   detail=f"no lease: {view.reason or 'unknown'}")


class SingletonLeases:
    """Mixin for `Ledger`: expects `site`, `observed`, `written_off`, `_emit` and `_take`."""

    leases: dict[str, LeaseView]

    def lease_changed(self, view: LeaseView, now: Now) -> list[Event]:
        before = self.leases.get(view.role)
        self.leases[view.role] = view
        was_held = before is not None and before.kind == HELD
        if view.kind == HELD and (not was_held or before.value != view.value):
            self._emit("info", "lease_acquired", role=view.role, token=view.token, holder=view.holder,
                       data_lost=view.data_lost,
                       **({"hint": "Redis lost its data: the container starts after one full lease"}
                          if view.data_lost else {}))
        elif view.kind == HELD and view.renew_failing and not before.renew_failing:
            self._emit("warning", "lease_renew_failed", role=view.role, token=view.token,
                       reason=view.renew_failing, fence_in=round(max(0.0, view.fence_at - now.mono), 3),
                       hint="the container is removed at the fence deadline unless a renew succeeds")
        if view.kind == RELEASED:
            if before is None or before.kind != RELEASED:
                self._emit("info", "lease_released", role=view.role, token=before.token if before else None,
                           released=view.reason == "released")
            return self._take()
        if was_held and view.reason == YIELD_REASON:
            self._emit("warning", "lease_released", role=view.role, token=before.token, released=True,
                       reason="crash loop here", hint="another host may run it; a reload here tries again")
        elif was_held and view.kind != HELD:
            self._emit("error", "lease_lost", role=view.role, token=before.token, reason=view.reason,
                       hint="its container is removed at once; this host stands by")
        if view.kind == STANDBY and (before is None or before.kind != STANDBY
                                     or (before.holder, before.token) != (view.holder, view.token)):
            self._emit("info", "lease_standby", role=view.role, holder=view.holder, token=view.token,
                       since=view.since)
        elif view.kind == UNKNOWN and not was_held and (before is None or before.kind != UNKNOWN):
            self._emit("warning", "lease_unknown", role=view.role, reason=view.reason,
                       hint="no container is started or removed for this role until Redis answers")
        return self._take()

    def singleton_roles(self) -> list[str]:
        if self.site.cluster is None:
            return []
        return [c.role for c in self.site.enabled() if c.singleton]

    def apply_leases(self, desired: dict[str, ContainerSpec], now: Now) -> tuple[dict, frozenset, frozenset]:
        """(desired with singleton roles leased or left out, names to leave alone, names to remove at once)."""
        desired = dict(desired)
        hands_off, fenced = set(), set()
        cluster = self.site.cluster
        for role in self.singleton_roles():
            spec = desired.get(role)
            if spec is None:
                continue
            view = self.leases.get(role)
            key = lease_key(self.site.name, role)
            adopted = self._adoptable(role, view)
            if view is not None and view.ready(now.mono):
                desired[role] = leased_spec(spec, cluster, key, view.value)
            elif adopted is not None:
                desired[role] = leased_spec(spec, cluster, key, adopted)
            else:
                del desired[role]
                if view is None or (view.kind == UNKNOWN and not view.fenced):
                    hands_off.add(spec.name)
                else:
                    fenced.add(spec.name)
        return desired, frozenset(hands_off), frozenset(fenced)

    def _adoptable(self, role: str, view: LeaseView | None) -> str | None:
        """The key's value, when it names this host and a container of ours carries it (a restarted daemon)."""
        if view is None or view.kind != STANDBY or view.holder != self.site.cluster.host:
            return None
        if any(o.site and o.role == role and o.lease_value == view.value for o in self.observed.values()):
            return view.value
        return None

    def crash_looping_singletons(self) -> set[str]:
        """Singleton roles given up here (`failed`) with no container of theirs running: their lease goes.

        A celery that cannot run on this host must not keep the cluster's only slot. Only
        once nothing of it runs: stop first, then release.
        """
        return {role for role in self.singleton_roles()
                if self.roles[role].tracker.failed
                and not any(o.site and o.role == role and o.running for o in self.observed.values())}

    def adoptions(self) -> dict[str, str]:
        """Role -> the value its keeper should renew instead of acquiring."""
        found = {}
        for role in self.singleton_roles():
            value = self._adoptable(role, self.leases.get(role))
            if value is not None:
                found[role] = value
        return found

    def write_off_fenced(self, actions: list) -> None:
        """A container removed for the lease is ours to remove: no failure counted when the role comes back."""
        for action in actions:
            if isinstance(action, Remove) and action.reason == LEASE_FENCE_REASON and action.container.role:
                self.written_off[action.container.id] = action.container.role

    def lease_deadlines(self, mono: float) -> list[float]:
        found = []
        for view in self.leases.values():
            if view.kind == HELD:
                found += [t for t in (view.start_at, view.fence_at) if t is not None and t > mono]
        return found

    def lease_statuses(self, statuses: list[RoleStatus], now: Now) -> list[RoleStatus]:
        singletons = set(self.singleton_roles())
        wait = self.site.cluster.lease if self.site.cluster else 0.0
        return [lease_status(s, self.leases.get(s.role), now.mono, wait) if s.role in singletons else s
                for s in statuses]

    def holds_value(self, value: str) -> bool:
        """Whether a container we see still carries this lease value: release only once none does."""
        return any(o.lease_value == value for o in self.observed.values())
