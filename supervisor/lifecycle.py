"""A role's lifecycle: its states, the legal changes between them, and how its state follows from the facts.

Owns: `TRANSITIONS` (every legal change, in one place), the per-role and per-image
records the ledger keeps, and `role_status`, which derives a role's state from them.
States are derived each turn rather than stored by hand in many places, so they
cannot drift from the facts; a change outside `TRANSITIONS` is a bug, logged as
`state_transition_illegal` (and failed on by the replay tests).
Must not: talk to the engine, read a clock, or log: it returns events.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .model import Container, RestartPolicy, Run
from .plan import World
from .policy import RestartTracker
from .status import RoleStatus, State

IMAGE_RETRY = RestartPolicy(backoff=5, max_backoff=300)
FAILED_HINT = "crash loop: reload (systemctl reload indico-supervisor) to try again"
COOLDOWN_HINT = "crash loop: tried again after its cooldown, or at once on a reload (systemctl reload indico-supervisor)"

_ANY = frozenset(State)
# A role's legal state changes, in one place. States are derived from the facts each
# turn (so they cannot drift from them); a change outside this table is a bug, logged
# as `state_transition_illegal` and failed on by the replay tests.
TRANSITIONS: dict[State | None, frozenset[State]] = {
    None: _ANY,  # the first look at a role
    State.PULLING: _ANY - {State.PULLING},
    State.STARTING: _ANY - {State.STARTING},
    State.RUNNING: _ANY - {State.RUNNING},
    State.BACKOFF: _ANY - {State.BACKOFF},
    # Given up: only a reload (or a stop) moves it; it is never seen running again by itself.
    State.FAILED: frozenset({State.STARTING, State.PULLING, State.BLOCKED, State.WAITING, State.STOPPING,
                             State.STOPPED, State.STANDBY}),
    State.BLOCKED: _ANY - {State.BLOCKED},
    # A dependency's outage is no failure of the dependent's: it never ends in `failed` by waiting.
    State.WAITING: _ANY - {State.WAITING, State.FAILED},
    # Another host holds the singleton's lease: no failure of ours, never `failed` by standing by.
    State.STANDBY: _ANY - {State.STANDBY, State.FAILED},
    State.STOPPING: frozenset({State.STOPPED}),
    State.STOPPED: frozenset(),
    State.UPGRADING: _ANY - {State.UPGRADING},
    # Held on the old image until a reload or a newer image; its old container may still crash or stop.
    State.UPGRADE_FAILED: _ANY - {State.UPGRADE_FAILED},
}
# A reload forgives a crash loop and may bring a new image at once: upgrading comes next.
TRANSITIONS[State.FAILED] |= {State.UPGRADING, State.UPGRADE_FAILED}



@dataclass(frozen=True)
class Now:
    mono: float  # monotonic seconds: deadlines, ages
    wall: float  # epoch seconds: the engine's StartedAt and FinishedAt are on this clock


@dataclass(frozen=True)
class Event:
    """Something to log. With `role`, it is logged on that role's logger (role= and container= bound)."""
    level: str  # debug, info, warning, error
    name: str
    role: str | None = None
    fields: dict = field(default_factory=dict)



@dataclass
class RoleRecord:
    tracker: RestartTracker
    counted_run: Run | None = None  # the run whose end is already counted (or written off)
    last_container_id: str | None = None
    last_run: Run | None = None
    probe_run: Run | None = None  # the run the current prober watches
    probe_healthy: bool | None = None
    probe_unhealthy_run: Run | None = None
    error: str = ""  # the engine's reason for the last refused create or start
    refused_container: str | None = None  # whose start the engine refused: replace it, don't retry
    last_failure: dict = field(default_factory=dict)  # cause, exit_code, delay: logged with the restart
    state: State | None = None
    gap: str | None = None  # the dependency that does not hold, as the planner said: `db (unhealthy)`
    outage_run: Run | None = None  # the run found unhealthy while a dependency did not hold


@dataclass
class ImageRecord:
    tracker: RestartTracker = field(default_factory=lambda: RestartTracker(IMAGE_RETRY))
    image_id: str | None = None
    stale: bool = True  # resolve (again): at start and after each reload
    error: str = ""


def role_status(container: Container, record: RoleRecord, world: World, now: Now, *, stopping: bool, busy: bool,
                blocked: str | None, waiting: str, image_error: str, gap: str | None = None,
                upgrade: tuple[State, str, dict] | None = None) -> RoleStatus:
    """The role's state now, with what an admin needs to read next to it."""
    spec = world.desired.get(container.role)
    holder = world.holder(container.name)
    ours = holder if holder is not None and world.owns(holder) else None
    health = ""
    if ours is not None and ours.running:
        probed = record.probe_healthy if record.probe_run == ours.run else None
        health = ours.health or ("" if container.probe is None else
                                 {True: "healthy", False: "unhealthy", None: "starting"}[probed])
    next_at = record.tracker.next_start_at
    state, detail = State.STARTING, record.error or waiting
    if blocked is not None:
        state, detail = State.BLOCKED, blocked
    elif record.tracker.failed:
        next_at = record.tracker.retry_at
        state, detail = State.FAILED, FAILED_HINT if next_at is None else COOLDOWN_HINT
    elif stopping:
        # A start still under way brings a container that is then stopped too.
        state = State.STOPPING if ours is not None or busy else State.STOPPED
    elif spec is None or spec.image_id is None:
        state, detail = State.PULLING, image_error or waiting
    elif busy:
        state = State.STARTING
    elif upgrade is not None:  # held on its old image: (UPGRADING or UPGRADE_FAILED, detail, facts)
        state, detail = upgrade[0], upgrade[1]
    elif ours is not None and ours.running and record.counted_run != ours.run:
        state = State.RUNNING
    elif gap is not None:
        state, detail = State.WAITING, gap
    elif next_at is not None and next_at > now.mono:
        state = State.BACKOFF
    return RoleStatus(role=container.role, name=container.name, state=state, detail=detail, health=health,
                      restarts=record.tracker.total, started_at=ours.started_at if ours else None,
                      image=container.image, next_restart_at=now.wall + (next_at - now.mono) if next_at else None,
                      container_id=ours.id[:12] if ours else "", upgrade=upgrade[2] if upgrade else None)


def transition_events(record: RoleRecord, status: RoleStatus) -> list[Event]:
    """Moves the record to the status's state; the change (if any) as events, checked against TRANSITIONS."""
    before, after = record.state, status.state
    if before is after:
        return []
    events = []
    if after not in TRANSITIONS[before]:
        events.append(Event("error", "state_transition_illegal", None, {
            "role": status.role, "before": before.value, "after": after.value,
            "hint": "a bug in indico-supervisor: please report it"}))
    if after is State.WAITING:
        events.append(Event("info", "container_waiting", status.role, {"waiting_for": status.detail}))
    elif before is State.WAITING:
        events.append(Event("info", "container_waiting_ended", status.role, {"now": after.value}))
    # The role's, not its container's: no container= here.
    events.append(Event("debug", "state_changed", None, {
        "role": status.role, "before": before.value if before else None, "after": after.value,
        "detail": status.detail}))
    record.state = after
    return events
