"""What to do, given what is wanted and what the engine shows. Pure: no engine, no clock.

Two steps, both level-triggered so a missed event changes nothing after a resync:
`new_failures` finds runs that ended badly and have not been counted yet;
`plan` turns the whole picture into actions for the executor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .model import Observed, Run
from .spec import ContainerSpec

RESTARTABLE_STATES = ("exited", "created")  # `start` reuses these; anything else is recreated
LEASE_FENCE_REASON = "singleton lease not held by this host"


@dataclass(frozen=True)
class RoleView:
    """What the plan needs to know of the daemon's bookkeeping for one role."""
    busy: bool = False  # an action for it is in flight
    failed: bool = False  # crash loop: given up until a reload
    due: bool = True  # its backoff delay (if any) has passed
    counted_run: Run | None = None  # the run whose failure is already recorded
    last_container_id: str | None = None  # the container it last had
    last_run: Run | None = None  # that container's last run seen
    probe_unhealthy_run: Run | None = None  # the run the daemon's probe gave up on
    probe_healthy: bool | None = None  # the daemon's probe, for the current run
    has_probe: bool = False
    refused_container: str | None = None  # the engine refused to start it: replace, don't retry


@dataclass(frozen=True)
class World:
    site: str
    desired: dict[str, ContainerSpec]  # role -> spec; image_id None until the image is resolved
    observed: tuple[Observed, ...]
    roles: dict[str, RoleView]
    images_busy: frozenset[str] = frozenset()  # image references being resolved now
    images_due: frozenset[str] = frozenset()  # references to resolve (again) now
    busy_containers: frozenset[str] = frozenset()  # ids with an action in flight (removals)
    rolling: str | None = None  # the role recreated last for a changed spec
    wall_now: float = 0.0
    hands_off: frozenset[str] = frozenset()  # names of singleton roles whose lease is not known yet: left alone
    fenced: frozenset[str] = frozenset()  # names of singleton roles whose lease this host does not hold
    held: frozenset[str] = frozenset()  # roles kept on their old image until its upgrade jobs pass

    def role(self, role: str) -> RoleView:
        return self.roles.get(role, RoleView())

    def holder(self, name: str) -> Observed | None:
        """The container that holds a name, owned or not."""
        return next((o for o in self.observed if o.name == name), None)

    def owns(self, container: Observed) -> bool:
        return container.site == self.site


class Cause(str, Enum):
    EXITED = "exited"
    OOM = "oom_killed"
    UNHEALTHY = "unhealthy"
    REMOVED = "removed"


@dataclass(frozen=True)
class Failure:
    role: str
    run: Run
    cause: Cause
    exit_code: int | None = None
    uptime: float | None = None


# Actions: what the executor is asked to do. Each names the role it is for, so the
# daemon keeps at most one action per role in flight.
@dataclass(frozen=True)
class ResolveImage:
    image: str
    pull: str


@dataclass(frozen=True)
class Create:
    role: str
    spec: ContainerSpec
    replace: Observed | None = None  # stopped and removed first
    reason: str = "missing"


@dataclass(frozen=True)
class Start:
    role: str
    container: Observed


@dataclass(frozen=True)
class Restart:
    role: str
    container: Observed


@dataclass(frozen=True)
class Remove:
    container: Observed
    reason: str = "not in the site file"
    timeout: float | None = None  # None: the role's stop timeout; 0: no grace (a singleton's lost lease)


# The daemon's own: not planned from the picture, but beside the others in the action table.
@dataclass(frozen=True)
class ReopenEvents:
    """Read the engine's event stream afresh: a resync found changes it never reported."""
    containers: tuple[str, ...]


@dataclass(frozen=True)
class Resync:
    """List every container again: catches whatever the event stream missed."""


@dataclass(frozen=True)
class Stop:
    """The daemon's stop: one owned container stopped and removed, in reverse start order."""
    container: Observed
    timeout: float


@dataclass(frozen=True)
class RunUpgrade:
    """The upgrade jobs of a new Indico image, one after the other, as one-shot containers of `role`'s settings."""
    image_id: str
    role: str
    commands: tuple[tuple[str, ...], ...]
    timeout: float  # for each job


Action = ResolveImage | Create | Start | Restart | Remove | Resync | Stop | ReopenEvents | RunUpgrade


@dataclass
class Plan:
    actions: list = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)  # role -> why
    waiting: dict[str, str] = field(default_factory=dict)  # role -> what it waits for (shown in status)


def new_failures(world: World) -> list[Failure]:
    """Runs of wanted containers that ended badly and are not counted yet."""
    failures = []
    for role, spec in world.desired.items():
        view = world.role(role)
        if view.busy or view.failed:
            continue
        holder = world.holder(spec.name)
        if holder is None:
            gone = Run(view.last_container_id, gone=True)
            still_there = any(o.id == view.last_container_id for o in world.observed)  # renamed by a reload
            # Its last run's end already counted (an exit, then `docker rm`): one failure, not two.
            counted_already = view.last_run is not None and view.counted_run == view.last_run
            if view.last_container_id and view.counted_run != gone and not still_there and not counted_already:
                failures.append(Failure(role, gone, Cause.REMOVED))
            continue
        if not world.owns(holder) or holder.role != role or holder.run == view.counted_run:
            continue
        if holder.status in ("exited", "dead"):
            uptime = _uptime(holder, holder.finished_at)
            cause = Cause.OOM if holder.oom_killed else Cause.EXITED
            failures.append(Failure(role, holder.run, cause, holder.exit_code, uptime))
        elif holder.running and (holder.health == "unhealthy" or view.probe_unhealthy_run == holder.run):
            failures.append(Failure(role, holder.run, Cause.UNHEALTHY, None, _uptime(holder, world.wall_now)))
    return failures


def plan(world: World) -> Plan:
    result = Plan()
    wanted_names = {spec.name: role for role, spec in world.desired.items()}
    rollout_open = _rollout_open(world)
    for image, pull in _image_pulls(world).items():
        if image in world.images_due and image not in world.images_busy:
            result.actions.append(ResolveImage(image, pull))
    gaps = unmet_dependencies(world)
    for role, spec in world.desired.items():
        view = world.role(role)
        holder = world.holder(spec.name)
        if holder is not None and not world.owns(holder):
            result.blocked[role] = (f"the name {spec.name} is held by container {holder.id[:12]}, "
                                    f"which indico-supervisor does not own; rename or remove it")
            continue
        if view.busy:
            continue
        if spec.image_id is None:
            result.waiting[role] = f"image {spec.container.image}"
            continue
        if view.failed:
            continue
        if holder is not None and holder.role != role:
            result.waiting[role] = f"{spec.name} to be freed by role {holder.role}"
            continue
        if role in gaps:
            # Nothing is started, restarted or recreated while a dependency does not hold;
            # a container that runs is left running.
            result.waiting[role] = gaps[role]
            continue
        if not view.due:
            continue
        if role in world.held:
            action = _keep_old(role, holder, view)
            if action is not None:
                result.actions.append(action)
            continue
        action = _action_for(role, spec, holder, view, world, rollout_open)
        if action is None:
            continue
        if isinstance(action, Create) and action.reason == "changed" and holder.running:
            rollout_open = False  # one changed container at a time
        result.actions.append(action)
    for container in world.observed:
        if world.owns(container) and container.id not in world.busy_containers:
            if container.name in world.fenced:
                result.actions.append(Remove(container, LEASE_FENCE_REASON, timeout=0.0))
            elif wanted_names.get(container.name) != container.role and container.name not in world.hands_off:
                result.actions.append(Remove(container))
    return result


def _action_for(role: str, spec: ContainerSpec, holder: Observed | None, view: RoleView,
                world: World, rollout_open: bool) -> Action | None:
    if holder is None:
        return Create(role, spec)
    if holder.spec_hash != spec.hash or holder.image_id != spec.image_id:
        # A run counted as failed (unhealthy) serves nothing: replacing it takes nothing down,
        # and waiting could be forever when the rollout waits on this very role.
        if holder.running and not rollout_open and view.counted_run != holder.run:
            return None
        return Create(role, spec, replace=holder, reason="changed")
    if holder.running:
        # A running container whose current run was counted as a failure is unhealthy.
        if view.counted_run == holder.run:
            return Restart(role, holder)
        # A restart is not enough: the engine refuses to start a container whose link names
        # a removed one ("Cannot link to a non running container"); a new one links afresh.
        replaced = _linked_dependency_replaced(spec, holder, world)
        return Create(role, spec, replace=holder, reason=f"linked dependency {replaced} was recreated") if replaced else None
    replaced = _linked_dependency_replaced(spec, holder, world)
    if replaced is not None:  # stopped while its dependency was recreated: a start would fail
        return Create(role, spec, replace=holder, reason=f"linked dependency {replaced} was recreated")
    if holder.status in RESTARTABLE_STATES:
        # A container the engine refused to start may never start again (after a dockerd
        # restart: "task … already exists"); a fresh one from the same spec does.
        if view.refused_container == holder.id:
            return Create(role, spec, replace=holder, reason="refused")
        return Start(role, holder)
    if holder.status == "dead":
        return Create(role, spec, replace=holder, reason="dead")
    return None  # paused, restarting, removing: the engine is busy with it


def _keep_old(role: str, holder: Observed | None, view: RoleView) -> Action | None:
    """A role held for its upgrade: its old container is started or restarted as it is, never replaced.

    None is created on the new image before its upgrade jobs pass; one that is gone waits.
    """
    if holder is None:
        return None
    if holder.running:
        return Restart(role, holder) if view.counted_run == holder.run else None
    if holder.status in RESTARTABLE_STATES and view.refused_container != holder.id:
        return Start(role, holder)
    return None


def _image_pulls(world: World) -> dict[str, str]:
    """Each wanted image once, with the most eager pull setting any container gives it."""
    eagerness = ("never", "missing", "always")
    pulls: dict[str, str] = {}
    for spec in world.desired.values():
        image, pull = spec.container.image, spec.container.pull
        if eagerness.index(pull) > eagerness.index(pulls.get(image, "never")):
            pulls[image] = pull
        pulls.setdefault(image, pull)
    return pulls


def ready(world: World, role: str) -> bool:
    """Running, and healthy if anything checks its health."""
    spec = world.desired.get(role)
    holder = world.holder(spec.name) if spec else None
    if holder is None or not holder.running or not world.owns(holder):
        return False
    view = world.role(role)
    if view.busy:
        return False  # a restart or recreate is under way: what is observed is on its way out
    if holder.health not in (None, "healthy"):
        return False
    return not view.has_probe or view.probe_healthy is True


def unmet_dependencies(world: World) -> dict[str, str]:
    """Roles with a dependency that does not hold now, and which: `{"worker": "db (unhealthy)"}`."""
    gaps = {}
    for role, spec in world.desired.items():
        for dependency, condition in spec.container.depends_on:
            why = _dependency_gap(world, dependency, condition)
            if why is not None:
                gaps[role] = f"{dependency} ({why})"
                break
    return gaps


def _dependency_gap(world: World, role: str, condition: str) -> str | None:
    """Why `role` does not hold `condition` (started or healthy), or None when it does."""
    spec = world.desired.get(role)
    if spec is None:
        return "not enabled"
    holder = world.holder(spec.name)
    if holder is None or not world.owns(holder):
        return "not created"
    if not holder.running:
        return holder.status
    view = world.role(role)
    if view.busy:
        return "restarting"  # being restarted or replaced: what runs now is on its way out
    if condition == "started":
        return None
    if view.counted_run == holder.run or holder.health == "unhealthy" or (view.has_probe and view.probe_healthy is False):
        return "unhealthy"
    if not ready(world, role):
        return "starting"
    return None


def _linked_dependency_replaced(spec: ContainerSpec, holder: Observed, world: World) -> str | None:
    """A dependency reached through a legacy link and created after this container: the link names the old one.

    The engine binds a link when the container is created, and refuses to start it once
    the target is gone ("Cannot link to a non running container"). Level-triggered: it
    holds after a daemon restart too. On a network with DNS, names follow recreated
    containers, so nothing is recreated.
    """
    linked = {name for name, _ in spec.container.network.links}
    for dependency, _ in spec.container.depends_on:
        target = world.desired.get(dependency)
        current = world.holder(target.name) if target else None
        if (target and target.name in linked and current and world.owns(current) and current.created_at
                and holder.created_at and current.created_at > holder.created_at):
            return dependency
    return None


def _rollout_open(world: World) -> bool:
    """A changed container is recreated only once the previous one is ready again.

    A busy role whose container is missing or out of date may be a recreate in
    flight, whether or not `rolling` names it yet: wait for it too.
    """
    for role, spec in world.desired.items():
        holder = world.holder(spec.name)
        if world.role(role).busy and (holder is None or holder.spec_hash != spec.hash
                                      or holder.image_id != spec.image_id):
            return False
    return world.rolling is None or world.rolling not in world.desired or ready(world, world.rolling)


def _uptime(container: Observed, until: float | None) -> float | None:
    if container.started_at is None or until is None:
        return None
    return max(0.0, until - container.started_at)
