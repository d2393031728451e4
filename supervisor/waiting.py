"""Waiting for dependencies: a dependent's outage-time failures, its recovery, and when the site is settled.

A part of the `Ledger` (which inherits it) kept in a module of its own. The planner
says which dependencies do not hold (`plan.unmet_dependencies`); this decides what
that means for the dependent's record: its failures are the outage's and not counted,
its restart is immediate (after one health verdict's grace if it is still unhealthy),
and a role waiting on a stuck dependency counts as settled for READY=1.
Same rules as the ledger: pure, no engine, no clock, no logging; events are returned.
"""
from __future__ import annotations

from .lifecycle import Now, RoleRecord
from .plan import Cause, Failure
from .status import SETTLED, RoleStatus, State

FAILURE_EVENTS = {Cause.EXITED: "container_exited", Cause.OOM: "container_oom_killed",
                  Cause.UNHEALTHY: "container_unhealthy", Cause.REMOVED: "container_removed"}


class DependencyWaits:
    def _record_outage(self, failure: Failure, gap: str) -> None:
        """An exit or unhealthiness while a dependency does not hold: not the container's fault.

        Neither counted nor backed off; the planner restarts it once the dependency holds.
        """
        record = self.roles[failure.role]
        record.counted_run = failure.run
        record.outage_run = failure.run if failure.cause is Cause.UNHEALTHY else None
        record.last_failure = {"cause": failure.cause.value, "exit_code": failure.exit_code, "delay": 0.0}
        self._emit("warning", FAILURE_EVENTS[failure.cause], role=failure.role, exit_code=failure.exit_code,
                   uptime=None if failure.uptime is None else round(failure.uptime, 3), waiting_for=gap,
                   restarts=record.tracker.total)

    def _follow_dependencies(self, gaps: dict[str, str], now: Now) -> None:
        for container in self.site.enabled():
            record = self.roles[container.role]
            gap = gaps.get(container.role)
            if record.gap is not None and gap is None:
                # The dependency is back: restart at once, not after a backoff; but one left
                # unhealthy by the outage first gets one health verdict's time to recover by itself.
                record.tracker.clear_delay()
                if self._still_in_outage_run(record, container.name):
                    record.tracker.next_start_at = now.mono + recovery_grace(container)
            record.gap = gap
        for container in self.site.enabled():
            for dependency, condition in container.depends_on:
                self._warn_if_health_unknown(dependency, condition)
            self._forget_outage_if_recovered(container.role, container.name)

    def _still_in_outage_run(self, record: RoleRecord, name: str) -> bool:
        holder = next((c for c in self.observed.values() if c.name == name and c.site), None)
        return holder is not None and holder.running and record.outage_run == holder.run

    def _forget_outage_if_recovered(self, role: str, name: str) -> None:
        """Unhealthy during a dependency's outage, healthy again without us: nothing to restart.

        (Indico whose database came back answers again by itself.) A run that turned
        unhealthy on its own is still restarted, as ever.
        """
        record = self.roles.get(role)
        if record is None or record.outage_run is None:
            return
        holder = next((c for c in self.observed.values() if c.name == name and c.site), None)
        if holder is None or holder.run != record.outage_run or not holder.running:
            return
        probe_passed = record.probe_run == holder.run and record.probe_healthy is True
        if holder.health == "healthy" or (holder.health is None and probe_passed):
            record.counted_run = record.probe_unhealthy_run = record.outage_run = None
            record.last_failure = {}
            record.tracker.clear_delay()
            self._emit("info", "container_recovered", role=role,
                       hint="healthy again once its dependency was back: not restarted")

    def _warn_if_health_unknown(self, role: str, condition: str) -> None:
        configured = self.site.container(role)
        if condition != "healthy" or role in self.warned_no_health or configured is None:
            return
        if configured.probe is not None or configured.healthcheck is not None:
            return
        holder = next((c for c in self.observed.values() if c.name == configured.name and c.site), None)
        if holder is not None and holder.running and holder.health is None:
            self.warned_no_health.add(role)
            self._emit("warning", "dependency_health_unknown", role=role,
                       hint=f"roles depend on {role} being healthy, but nothing checks its health (no health, "
                            f"no healthcheck, and its image has no HEALTHCHECK): it counts as healthy once running")

    def settled(self, statuses: list[RoleStatus]) -> bool:
        """Every role runs or has a stated reason not to: the moment for READY=1.

        A role waiting for a dependency that is still on its way up is not settled; one
        waiting for a dependency that is itself stuck (failed, blocked, backing off) is.
        """
        by_role = {s.role: s for s in statuses}

        def settled(status: RoleStatus, seen: frozenset = frozenset()) -> bool:
            if status.state in SETTLED:
                return True
            if status.state is not State.WAITING or status.role in seen:
                return False
            dependency = by_role.get(status.detail.split(" ")[0])
            if dependency is None:
                return True
            stuck = dependency.state in (State.FAILED, State.BLOCKED, State.BACKOFF)
            return stuck or (dependency.state is State.WAITING and settled(dependency, seen | {status.role}))

        return self.engine_up and all(settled(s) for s in statuses)


def recovery_grace(container) -> float:
    """How long one health verdict takes: a dependent may show it has recovered by itself within it."""
    check = container.probe or container.healthcheck
    return 0.0 if check is None else min(check.interval * check.retries, 30.0)
