"""Every role's lifecycle and everything the daemon knows, in one pure ledger.

Owns: the containers as last observed; per role its restart tracker, the run whose
failure is already counted, its probe's verdict, the engine's last refusal and its
state; per image its resolution; the actions in flight (one per role, image or
container, and one resync); containers written off by a failed replacement; the
resync schedule and the stop's progress. It answers "what next" through the pure planner.

Must not: talk to the engine, start threads, read a clock (time comes in as a `Now`),
or log: every method returns the `Event`s to log. So a test can replay any sequence
of the daemon's messages and action outcomes through it, in milliseconds.

How actions change it is written per action kind in `actions.py` (the outcomes
themselves in `outcomes.py`, which the ledger inherits); a role's states and their
legal changes are `lifecycle.py`'s; what unmet dependencies mean for a role is
`waiting.py`'s (also inherited); the daemon's stop is `stopping.py`'s; a singleton's
lease `singletons.py`'s; a new image's upgrade gate `upgrades.py`'s.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .lifecycle import IMAGE_RETRY, Event, ImageRecord, Now, RoleRecord, role_status, transition_events
from .missed import MissedEvents
from .outcomes import ActionOutcomes, seconds
from .singletons import SingletonLeases
from .stopping import Stopping
from .waiting import FAILURE_EVENTS, DependencyWaits
from .model import Observed, Probe, Run, Site
from .plan import (Create, ReopenEvents, Failure, Remove, ResolveImage, Restart, Resync, RoleView, RunUpgrade, Start,
                   Stop, World, new_failures, plan, unmet_dependencies)
from .policy import RestartTracker
from .spec import desired_specs
from .status import RoleStatus
from .upgrades import UpgradeGate, Upgrades

BLOCKED_RESYNC_EVERY = 2.0  # a foreign container holding our name shows in no event of ours
UNREACHABLE_RESYNC_AFTER = 2.0


@dataclass(frozen=True)
class ProbeTarget:
    run: Run
    probe: Probe
    container_id: str
    ip: str | None


def lock_of(action) -> tuple:
    """What an action holds while in flight: its role, its image, its container, or the resync.

    One action per lock at a time: the planner skips a busy role, image or container.
    """
    match action:
        case Create(role=role) | Start(role=role) | Restart(role=role):
            return ("role", role)
        case ResolveImage(image=image):
            return ("image", image)
        case Remove(container=container) | Stop(container=container):
            return ("container", container.id)
        case Resync():
            return ("resync",)
        case ReopenEvents():
            return ("events",)
        case RunUpgrade():
            return ("upgrade",)
    raise TypeError(f"not an action: {action!r}")


class Ledger(ActionOutcomes, DependencyWaits, SingletonLeases, Upgrades, Stopping):
    def __init__(self, site: Site):
        self.site = site
        self.observed: dict[str, Observed] = {}
        self.roles: dict[str, RoleRecord] = {}
        self.images: dict[str, ImageRecord] = {}
        self.in_flight: dict[tuple, object] = {}
        self.written_off: dict[str, str] = {}  # container ID -> role: replaced by us, its end is no failure
        self.rolling: str | None = None  # the role recreated last for a changed spec
        self.blocked: dict[str, str] = {}
        self.waiting: dict[str, str] = {}  # role -> what it waits for, as the planner said
        self.engine_up = False
        self.next_resync_at = 0.0
        self.stopping = False
        self.finished = False  # the stop is done: the loop may end
        self.stop_tried: set[str] = set()
        self.missed = MissedEvents()  # changes a resync found that no event reported
        self.warned_no_health: set[str] = set()  # dependencies `healthy` on nothing that checks health
        self.leases = {}  # singleton role -> its lease as the keeper last said (singletons.py)
        self._events: list[Event] = []
        self.upgrade = UpgradeGate()  # a new Indico image's upgrade jobs (`upgrades.py`)
        self.adopt(site)
        self._events.clear()  # nothing is forgiven at the start

    # What the engine shows.

    def see(self, container: Observed) -> list[Event]:
        """What the event stream said (an inspect after an event): also proof the stream works."""
        self.missed.heard(container.id)
        self._see(container)
        return self._take()

    # Public methods hand back (and clear) the pending events; the ledger's own steps call
    # the underscored forms, so no event is taken and dropped on the way.
    def _see(self, container: Observed) -> None:
        known = self.observed.get(container.id)
        if known is not None and known.observed_at > container.observed_at:
            return
        self.observed[container.id] = container
        if known is not None and known.health != container.health and container.health:
            self._emit("info", "container_health", container=container.name, role=container.role,
                       health=container.health)
        record = self.roles.get(container.role or "")
        configured = self.site.container(container.role) if container.role else None
        if record is not None and container.site and configured and container.name == configured.name:
            record.last_container_id, record.last_run = container.id, container.run

    def container_died(self, container_id: str, exit_code: int | None, oom_killed: bool, observed_at: float,
                       now: Now) -> list[Event]:
        self.missed.heard(container_id)
        known = self.observed.get(container_id)
        if known is None or not known.running or known.observed_at > observed_at:
            return self._take()  # the inspect that follows every event tells the rest
        return self.see(replace(known, status="exited", exit_code=exit_code, oom_killed=oom_killed,
                                finished_at=now.wall, health=None, observed_at=observed_at))

    def container_gone(self, container_id: str, observed_at: float) -> list[Event]:
        self.missed.heard(container_id)
        known = self.observed.get(container_id)
        if known is not None and known.observed_at <= observed_at:
            del self.observed[container_id]
        return self._take()

    def resynced(self, containers: tuple[Observed, ...], started_at: float) -> list[Event]:
        fresh = {c.id for c in containers}
        for container_id, known in list(self.observed.items()):
            if container_id not in fresh and known.observed_at < started_at:
                del self.observed[container_id]
        for container in containers:
            self._see(container)
        if not self.engine_up:
            self._emit("info", "engine_synced", containers=len(containers))
        self.engine_up = True
        return self._take()

    def engine_lost(self, error: str) -> list[Event]:
        """The watcher's stream broke."""
        self.missed.stream_lost()
        self._engine_lost(error)
        return self._take()

    def _engine_lost(self, error: str) -> None:
        if self.engine_up:
            self._emit("error", "engine_lost", reason=error,
                       hint="reconnecting with backoff; containers are left as they are")
        self.engine_up = False

    def engine_back(self, now: Now) -> list[Event]:
        """The watcher's stream is open (again)."""
        self.missed.stream_opened(now.mono)
        self._emit("info", "engine_connected")
        self.next_resync_at = 0.0
        return self._take()

    def probe_verdict(self, role: str, run: Run, healthy: bool, detail: str) -> list[Event]:
        record = self.roles.get(role)
        if record is None or record.probe_run != run:
            return self._take()  # a verdict on a run that is already gone
        record.probe_healthy = healthy
        if healthy:
            self._emit("info", "probe_passed", role=role, detail=detail)
        else:
            record.probe_unhealthy_run = run
            self._emit("warning", "probe_failed", role=role, detail=detail)
        return self._take()

    def probe_started(self, role: str, run: Run) -> None:
        record = self.roles[role]
        record.probe_run, record.probe_healthy = run, None

    # What to do next.

    def next_actions(self, now: Now) -> tuple[list, list[Event]]:
        """The actions to start now; the caller starts each through `actions.begin`."""
        if self.finished:
            return [], self._take()
        if self.stopping:
            return self._next_stop(), self._take()
        found: list = []
        overdue = self.missed.overdue(now.mono)
        if overdue and ("events",) not in self.in_flight:
            found.append(ReopenEvents(tuple(overdue)))
        if now.mono >= self.next_resync_at and ("resync",) not in self.in_flight:
            found.append(Resync())
        if self.engine_up:
            found += self._reconcile(now)
        return found, self._take()

    def _reconcile(self, now: Now) -> list:
        gaps = unmet_dependencies(self.world(now))
        # A failure first seen in the turn its dependency came back belongs to the outage too.
        outage = {role: record.gap for role, record in self.roles.items() if record.gap} | gaps
        self._follow_dependencies(gaps, now)
        for failure in new_failures(self.world(now)):
            if failure.run.container_id in self.written_off:
                self.roles[failure.role].counted_run = failure.run  # its end was ours, already counted
            elif failure.role in outage:
                self._record_outage(failure, outage[failure.role])
            else:
                self._record_failure(failure, now)
        self._retry_after_cooldown(now)
        result = plan(self.world(now))
        self.write_off_fenced(result.actions)
        for role, why in result.blocked.items():
            if self.blocked.get(role) != why:
                self._emit("error", "container_blocked", role=role, reason=why)
        self.blocked, self.waiting = result.blocked, result.waiting
        if self.blocked:
            self.next_resync_at = min(self.next_resync_at, now.mono + BLOCKED_RESYNC_EVERY)
        return result.actions + self._upgrade_actions(gaps)

    def _record_failure(self, failure: Failure, now: Now) -> None:
        record = self.roles[failure.role]
        delay = record.tracker.delay_after_failure(now.mono, failure.uptime)
        record.counted_run = failure.run
        record.last_failure = {"cause": failure.cause.value, "exit_code": failure.exit_code, "delay": delay}
        if delay is None:
            policy = record.tracker.policy
            name = self.site.container(failure.role).name
            self._emit("error", "container_failed", role=failure.role, cause=failure.cause.value,
                       exit_code=failure.exit_code, restarts=len(record.tracker.recent), window=policy.window,
                       next_try_in=policy.cooldown,
                       hint=f"more than {policy.max_restarts} restarts within {policy.window:g}s; "
                            + ("no more restarts" if policy.cooldown is None else
                               f"tried again in {policy.cooldown:g}s with a fresh budget")
                            + f". Look at `docker logs {name}`, fix the cause, then `systemctl reload indico-supervisor`")
            return
        self._emit("warning", FAILURE_EVENTS[failure.cause], role=failure.role, exit_code=failure.exit_code,
                   uptime=None if failure.uptime is None else round(failure.uptime, 3),
                   restart_in=seconds(delay), restarts=record.tracker.total)

    def _retry_after_cooldown(self, now: Now) -> None:
        for role, record in self.roles.items():
            if record.tracker.cooled_down(now.mono):
                record.tracker.forgive(record.tracker.policy)
                record.last_failure["delay"] = 0.0
                self._emit("warning", "container_retrying", role=role,
                           hint="its cooldown after a crash loop has passed: trying again with a fresh restart budget")

    def world(self, now: Now) -> World:
        ids = {ref: image.image_id for ref, image in self.images.items() if image.image_id}
        desired, hands_off, fenced = self.apply_leases(desired_specs(self.site, ids), now)
        holders: dict[str, Observed] = {}
        for seen in self.observed.values():
            holders.setdefault(seen.name, seen)  # the one World.holder() finds: the first of that name
        views = {}
        for role, record in self.roles.items():
            spec = desired.get(role)
            holder = holders.get(spec.name) if spec else None
            # A probe's verdict holds for the run it probed only: a recreated container has none yet.
            probed = record.probe_healthy if holder is not None and record.probe_run == holder.run else None
            views[role] = RoleView(busy=self.busy(role), failed=record.tracker.failed,
                                   due=record.tracker.due(now.mono), counted_run=record.counted_run,
                                   last_container_id=record.last_container_id, last_run=record.last_run,
                                   probe_unhealthy_run=record.probe_unhealthy_run, probe_healthy=probed,
                                   has_probe=spec is not None and spec.container.probe is not None,
                                   refused_container=record.refused_container)
        resolving = frozenset(ref for kind, ref in (k for k in self.in_flight if len(k) == 2) if kind == "image")
        due = frozenset(ref for ref, image in self.images.items()
                        if image.stale and ref not in resolving and image.tracker.due(now.mono))
        removing = frozenset(ref for kind, ref in (k for k in self.in_flight if len(k) == 2) if kind == "container")
        return World(site=self.site.name, desired=desired, observed=tuple(self.observed.values()), roles=views,
                     images_busy=resolving, images_due=due, busy_containers=removing, rolling=self.rolling,
                     wall_now=now.wall, hands_off=hands_off, fenced=fenced,
                     held=self._held_roles())

    def probe_targets(self, now: Now) -> dict[str, ProbeTarget]:
        """The runs the daemon's probes should watch now: one per probed role whose container runs."""
        world = self.world(now)
        targets = {}
        for role, spec in world.desired.items():
            holder = world.holder(spec.name)
            probe = spec.container.probe
            if probe and holder and holder.running and world.owns(holder):
                targets[role] = ProbeTarget(holder.run, probe, holder.id, holder.ip)
        return targets

    # Actions in flight: `actions.py` calls these around each kind's own outcome.

    def busy(self, role: str) -> bool:
        return ("role", role) in self.in_flight

    def hold(self, action) -> None:
        self.in_flight[lock_of(action)] = action

    def release(self, action) -> None:
        self.in_flight.pop(lock_of(action), None)

    def engine_unreachable(self, error: str, now: Now) -> list[Event]:
        """An action found the engine gone: planning stops until a resync succeeds.

        Retrying against an engine that is gone would only spin; the watcher's
        reconnect, or the next resync, resumes it.
        """
        self._engine_lost(error)
        self.next_resync_at = min(self.next_resync_at, now.mono + UNREACHABLE_RESYNC_AFTER)
        return self._take()

    # Reload and stop.

    def adopt(self, site: Site) -> list[Event]:
        """Take a (new) site file: new settings, and a failed role gets a new chance."""
        self.site = site
        for container in site.enabled():
            record = self.roles.setdefault(container.role, RoleRecord(RestartTracker(container.restart)))
            if record.tracker.failed:
                self._emit("info", "container_forgiven", role=container.role,
                           hint="failed before the reload; trying again")
                record.last_failure["delay"] = 0.0  # the restart it gets now is immediate
            record.tracker.forgive(container.restart)
            self.images.setdefault(container.image, ImageRecord())
        enabled = {c.role for c in site.enabled()}
        for role in [r for r in self.roles if r not in enabled and not self.busy(r)]:
            del self.roles[role]
        return self._take()

    def reload(self, site: Site) -> list[Event]:
        events = self.adopt(site)
        for image in self.images.values():
            image.stale = True  # `always` pulls again; a retagged local image is noticed
            image.tracker.forgive(IMAGE_RETRY)
        self._rearm_upgrades()
        return events

    # Reporting.

    def statuses(self, now: Now) -> tuple[list[RoleStatus], list[Event]]:
        """Each enabled role's state; a change of state is an event with its cause."""
        world = self.world(now)
        statuses = []
        for container in self.site.enabled():
            record = self.roles[container.role]
            status = role_status(container, record, world, now, stopping=self.stopping, busy=self.busy(container.role),
                                 blocked=self.blocked.get(container.role), waiting=self.waiting.get(container.role, ""),
                                 image_error=self.images[container.image].error, gap=record.gap,
                                 upgrade=self.upgrade_view(container.role))
            statuses.append(status)
        statuses = self.lease_statuses(statuses, now)
        for status in statuses:
            self._events += transition_events(self.roles[status.role], status)
        return statuses, self._take()

    def deadlines(self, mono: float = 0.0) -> list[float]:
        """Monotonic times at which something becomes due: a resync, a restart, an image retry, a lease's."""
        found = [self.next_resync_at, *self.lease_deadlines(mono)]
        if self.missed.deadline() is not None:
            found.append(self.missed.deadline())
        found += [r.tracker.next_start_at for r in self.roles.values() if r.tracker.next_start_at]
        found += [r.tracker.retry_at for r in self.roles.values() if r.tracker.retry_at and r.tracker.failed]
        found += [i.tracker.next_start_at for i in self.images.values() if i.tracker.next_start_at]
        return found

    def wanted_names(self) -> list[str]:
        return [c.name for c in self.site.enabled()]

    def stop_timeout(self, role: str | None) -> float:
        known = self.site.container(role) if role else None
        return known.stop_timeout if known else 30.0

    # Events.

    def _emit(self, level: str, name: str, role: str | None = None, **fields) -> None:
        # A role's own container is named by the role's logger; any other container by its field.
        if role is not None and "container" in fields:
            fields = {"role": role, **fields}
            role = None
        self._events.append(Event(level, name, role, fields))

    def _take(self) -> list[Event]:
        events, self._events = self._events, []
        return events
