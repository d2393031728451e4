"""The one loop that owns all state: `indico-supervisor run`.

Threads (the event watcher, action executor, probes) only put messages in the
inbox; this loop applies them, asks the pure planner what to do, hands actions
to the executor, and tells systemd and the state file how things stand.
Handlers are found by name: message `ContainerSeen` is handled by `on_container_seen`.
"""
from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from . import engine as engine_edge
from . import logs
from .config import load_site
from .health import Prober, ProbeVerdict
from .inbox import (ActionDone, ActionFailed, ContainerDied, ContainerGone, ContainerSeen, EngineBack, EngineLost, Inbox,
                    PullProgress, Resynced, SignalReceived)
from .model import RestartPolicy, Site
from .notify import Notifier
from .watcher import watch_engine
from .plan import (Create, Observed, Remove, ResolveImage, Restart, RoleView, Start, World,
                   new_failures, plan, ready)
from .policy import RestartTracker
from .problems import ConfigError
from .spec import desired_specs, spec_hash
from .status import SETTLED, RoleStatus, State, state_path, status_line, write_state, state_payload

MAX_PARALLEL = 8  # engine calls at once: 50 containers start in batches, not one by one
RESYNC_EVERY = 30.0  # seconds; events do the work, this only catches what they missed
BLOCKED_RESYNC_EVERY = 2.0
MAX_SLEEP = 10.0
STATE_HEARTBEAT = 10.0  # the state file is rewritten at least this often, so `status` can tell it is fresh
IMAGE_RETRY = RestartPolicy(backoff=5, max_backoff=300)


@dataclass
class RoleRuntime:
    tracker: RestartTracker
    busy: bool = False
    counted_run: tuple | None = None
    last_container_id: str | None = None
    probe_run: tuple | None = None
    probe_healthy: bool | None = None
    probe_unhealthy_run: tuple | None = None
    error: str = ""  # the engine's reason for the last refused create or start
    refused_container: str | None = None  # whose start the engine refused
    last_failure: dict = field(default_factory=dict)  # cause, exit_code, delay: logged with the restart


@dataclass
class ImageRuntime:
    tracker: RestartTracker = field(default_factory=lambda: RestartTracker(IMAGE_RETRY))
    image_id: str | None = None
    busy: bool = False
    stale: bool = True  # resolve (again): at start and after each reload
    error: str = ""


@dataclass(frozen=True)
class _Resync:
    pass


@dataclass(frozen=True)
class _StopContainer:
    container: Observed
    timeout: float


class Daemon:
    def __init__(self, config_path: str, site: Site, notifier: Notifier | None = None):
        self.config_path = config_path
        self.site = site
        self.log = logs.get_logger()
        self.notifier = notifier or Notifier()
        self.inbox = Inbox()
        self.engine = engine_edge.Engine(site.site)
        self.executor = ThreadPoolExecutor(max_workers=MAX_PARALLEL, thread_name_prefix="action")
        self.observed: dict[str, Observed] = {}
        self.roles: dict[str, RoleRuntime] = {}
        self.images: dict[str, ImageRuntime] = {}
        self.busy_containers: set[str] = set()
        self.probers: dict[str, Prober] = {}
        self.rolling: str | None = None
        self.blocked: dict[str, str] = {}
        self.states: dict[str, RoleStatus] = {}
        self.engine_up = False
        self.ready_sent = False
        self.started = time.monotonic()
        self.stopping = False
        self.stop_queue: list[_StopContainer] = []
        self.exit_code: int | None = None
        self.reexec = False  # set by SIGUSR2: after the loop, the caller execs a fresh daemon
        self.next_resync = 0.0
        self.written_off: dict[str, str] = {}  # container ID -> role: a replaced container whose create failed
        self.last_tick_at = float("-inf")  # no turn yet: every deadline is still to be seen
        self.next_watchdog = time.monotonic()
        self.resync_busy = False
        self.written_state: tuple | None = None
        self.written_at = 0.0
        self.watcher_stop = threading.Event()
        self._adopt_site(site)

    # The loop.

    def run(self) -> int:
        self.inbox.catch(signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
        self.log.info("daemon_started", site=self.site.site, config=self.config_path, pid=os.getpid(),
                      containers=len(self.site.enabled()))
        threading.Thread(target=watch_engine, args=(self.site.site, self.inbox.put, self.watcher_stop),
                         name="engine-events", daemon=True).start()
        while self.exit_code is None:
            for message in self.inbox.wait(self._sleep_time()):
                handler = getattr(self, "on_" + _snake(type(message).__name__))
                handler(message)
            self._tick()
        self._shutdown()
        return self.exit_code

    def _tick(self) -> None:
        now = self.last_tick_at = time.monotonic()
        if self.notifier.watchdog_interval and now >= self.next_watchdog:
            self.notifier.watchdog()
            self.next_watchdog = now + self.notifier.watchdog_interval
        if self.stopping:
            self._drain_stops()
        else:
            if now >= self.next_resync and not self.resync_busy:
                self.resync_busy = True
                self._submit(_Resync(), self._list_containers)
            if self.engine_up:
                self._reconcile()
        self._publish()

    def _sleep_time(self) -> float:
        # Only deadlines the last turn did not see pass: one it saw was acted on then, or
        # waits for work under way (a resync, a start) whose message will wake us.
        # Counting it again would spin the loop for as long as that work takes.
        now = time.monotonic()
        deadlines = [now + MAX_SLEEP, self.next_resync]
        if self.notifier.watchdog_interval:
            deadlines.append(self.next_watchdog)
        deadlines += [r.tracker.next_start_at for r in self.roles.values() if r.tracker.next_start_at]
        deadlines += [i.tracker.next_start_at for i in self.images.values() if i.tracker.next_start_at]
        return max(0.0, min(d for d in deadlines if d > self.last_tick_at) - now)

    # Planning and acting.

    def world(self) -> World:
        now = time.monotonic()
        ids = {ref: img.image_id for ref, img in self.images.items() if img.image_id}
        desired = desired_specs(self.site, ids)
        runs: dict[str, tuple] = {}
        for seen in self.observed.values():
            runs.setdefault(seen.name, seen.run)  # the holder World.holder() finds: the first of that name
        # A probe's verdict holds for the run it probed only: a recreated container has none yet.
        probed = {role: rt.probe_healthy if role in desired and rt.probe_run == runs.get(desired[role].name) else None
                  for role, rt in self.roles.items()}
        views = {role: RoleView(busy=rt.busy, failed=rt.tracker.failed, due=rt.tracker.due(now),
                                counted_run=rt.counted_run, last_container_id=rt.last_container_id,
                                probe_unhealthy_run=rt.probe_unhealthy_run, probe_healthy=probed[role],
                                has_probe=desired[role].container.probe is not None if role in desired else False,
                                refused_container=rt.refused_container)
                 for role, rt in self.roles.items()}
        due = frozenset(ref for ref, img in self.images.items()
                        if img.stale and not img.busy and img.tracker.due(now))
        return World(site=self.site.site, desired=desired, observed=tuple(self.observed.values()), roles=views,
                     images_busy=frozenset(r for r, i in self.images.items() if i.busy), images_due=due,
                     busy_containers=frozenset(self.busy_containers), rolling=self.rolling, wall_now=time.time())

    def _reconcile(self) -> None:
        for failure in new_failures(self.world()):
            if _container_of(failure.run) in self.written_off:
                self.roles[failure.role].counted_run = failure.run  # its end was ours, already counted
                continue
            self._record_failure(failure)
        world = self.world()
        result = plan(world)
        for role, why in result.blocked.items():
            if self.blocked.get(role) != why:
                self.log.error("container_blocked", role=role, reason=why)
        self.blocked = result.blocked
        if self.blocked:
            # Events carry only our label, so a foreign container leaving a name we want
            # is seen only by looking: look often while a role waits for that.
            self.next_resync = min(self.next_resync, time.monotonic() + BLOCKED_RESYNC_EVERY)
        for action in result.actions:
            self._start_action(action)
        self._sync_probers(world)

    def _record_failure(self, failure) -> None:
        rt = self.roles[failure.role]
        name = self.site_container(failure.role).name
        delay = rt.tracker.delay_after_failure(time.monotonic(), failure.uptime)
        rt.counted_run = failure.run
        rt.last_failure = {"cause": failure.cause.value, "exit_code": failure.exit_code, "delay": delay}
        if delay is None:
            policy = rt.tracker.policy
            self.log.error("container_failed", role=failure.role, container=name, cause=failure.cause.value,
                           exit_code=failure.exit_code, restarts=len(rt.tracker.recent), window=policy.window,
                           hint=f"more than {policy.max_restarts} restarts within {policy.window:g}s; no more restarts. "
                                f"Look at `docker logs {name}`, fix the cause, then `systemctl reload indico-supervisor`")
        else:
            self.log.warning("container_" + {"exited": "exited", "oom_killed": "oom_killed", "unhealthy": "unhealthy",
                                              "removed": "removed"}[failure.cause.value],
                             role=failure.role, container=name, exit_code=failure.exit_code,
                             uptime=None if failure.uptime is None else round(failure.uptime, 3),
                             restart_in=_seconds(delay), restarts=rt.tracker.total)

    def _start_action(self, action) -> None:
        if isinstance(action, ResolveImage):
            image = self.images[action.image]
            image.busy = True
            self._submit(action, lambda: self._resolve_image(action))
        elif isinstance(action, Remove):
            self.busy_containers.add(action.container.id)
            timeout = self._stop_timeout(action.container.role)
            self.log.info("container_removing", container=action.container.name, role=action.container.role,
                          reason=action.reason)
            self._submit(action, lambda: self.engine.remove(action.container.id, timeout))
        else:
            rt = self.roles[action.role]
            rt.busy = True
            timeout = self.site_container(action.role).stop_timeout
            if isinstance(action, Create):
                if _rolls(action):
                    self.rolling = action.role  # from now, not once done: its old container may still look ready
                if action.replace is not None:
                    self.log.info("container_recreating", role=action.role, container=action.spec.name,
                                  reason=action.reason)
                self._submit(action, lambda: self.engine.create_and_start(action.spec, action.replace, timeout))
            elif isinstance(action, Start):
                self._submit(action, lambda: self.engine.start(action.container.id))
            elif isinstance(action, Restart):
                self._submit(action, lambda: self.engine.restart(action.container.id, timeout))

    def _submit(self, action, work) -> None:
        def run() -> None:
            try:
                self.inbox.put(ActionDone(action, work()))
            except Exception as error:  # reported to the loop, which decides; never lost on a thread
                self.inbox.put(ActionFailed(action, engine_edge.reason(error), engine_edge.is_unreachable(error)))
        self.executor.submit(run)

    def _list_containers(self) -> Resynced:
        started = time.monotonic()
        return Resynced(tuple(self.engine.list(self._wanted_names())), started)

    def _resolve_image(self, action: ResolveImage) -> str:
        image_id, pull_failure = self.engine.resolve_image(
            action.image, action.pull, lambda progress: self.inbox.put(PullProgress(action.image, progress)),
            on_pull=lambda: self.log.info("image_pulling", image=action.image))
        if pull_failure:
            # The registry is away but the image is here: Indico keeps running on it.
            self.log.warning("image_pull_failed", image=action.image, reason=pull_failure,
                             using="the image already on this host")
        return image_id

    # Messages.

    def on_signal_received(self, message: SignalReceived) -> None:
        if message.signum == signal.SIGHUP and not self.stopping:
            self.reload()
        elif message.signum in (signal.SIGTERM, signal.SIGINT):
            self.begin_stop(signal.Signals(message.signum).name)
        elif message.signum == signal.SIGUSR1:
            # The package's prerm on removal: the daemon goes, Indico stays up.
            self.begin_stop("SIGUSR1", leave=True)
        elif message.signum == signal.SIGUSR2 and not self.stopping:
            # The package's postinst on upgrade: the new code takes over under the same PID
            # (systemd sees one unit, never stopped) and adopts every container.
            self.reexec = True
            self.notifier.reloading()
            self.begin_stop("SIGUSR2", leave=True)

    def on_container_seen(self, message: ContainerSeen) -> None:
        self._see(message.container)

    def on_container_died(self, message: ContainerDied) -> None:
        known = self.observed.get(message.container_id)
        if known is None or not known.running or known.observed_at > message.observed_at:
            return  # the inspect that follows every event tells the rest
        self._see(replace(known, status="exited", exit_code=message.exit_code, oom_killed=message.oom_killed,
                          finished_at=time.time(), health=None, observed_at=message.observed_at))

    def on_container_gone(self, message: ContainerGone) -> None:
        known = self.observed.get(message.container_id)
        if known is not None and known.observed_at <= message.observed_at:
            del self.observed[message.container_id]

    def on_resynced(self, message: Resynced) -> None:
        fresh = {c.id for c in message.containers}
        for container_id, known in list(self.observed.items()):
            if container_id not in fresh and known.observed_at < message.started_at:
                del self.observed[container_id]
        for container in message.containers:
            self._see(container)
        if not self.engine_up:
            self.log.info("engine_synced", containers=len(message.containers))
        self.engine_up = True

    def on_engine_lost(self, message: EngineLost) -> None:
        if self.engine_up:
            self.log.error("engine_lost", reason=message.error, hint="reconnecting with backoff; containers are left as they are")
        self.engine_up = False

    def on_engine_back(self, message: EngineBack) -> None:
        self.log.info("engine_connected")
        self.next_resync = 0.0

    def on_probe_verdict(self, verdict: ProbeVerdict) -> None:
        rt = self.roles.get(verdict.role)
        if rt is None or rt.probe_run != verdict.run:
            return  # a verdict on a run that is already gone
        rt.probe_healthy = verdict.healthy
        if verdict.healthy:
            self.log.info("probe_passed", role=verdict.role, detail=verdict.detail)
        else:
            rt.probe_unhealthy_run = verdict.run
            self.log.warning("probe_failed", role=verdict.role, detail=verdict.detail)

    def on_pull_progress(self, message: PullProgress) -> None:
        self.log.info("image_pull_progress", image=message.image, **message.progress)
        if not self.ready_sent:
            self.notifier.extend_timeout(60)

    def on_action_done(self, message: ActionDone) -> None:
        action = message.action
        if isinstance(action, _Resync):
            self.resync_busy = False
            self.next_resync = time.monotonic() + RESYNC_EVERY
            self.on_resynced(message.result)
        elif isinstance(action, ResolveImage):
            image = self.images[action.image]
            if image.image_id != message.result:
                self.log.info("image_resolved", image=action.image, image_id=message.result[:19])
            image.image_id, image.busy, image.stale, image.error = message.result, False, False, ""
            image.tracker.started()
        elif isinstance(action, (Remove, _StopContainer)):
            self.busy_containers.discard(action.container.id)
            self.observed.pop(action.container.id, None)
            self.log.info("container_removed", container=action.container.name, role=action.container.role)
        else:
            self._finish_role_action(action, message.result)

    def _finish_role_action(self, action, container: Observed) -> None:
        rt = self.roles.get(action.role)
        if isinstance(action, Create) and action.replace is not None:
            self.observed.pop(action.replace.id, None)
        self._see(container)
        if rt is None:
            return
        rt.busy, rt.error, rt.refused_container = False, "", None
        self.written_off = {cid: role for cid, role in self.written_off.items() if role != action.role}
        rt.tracker.started()
        rt.last_container_id = container.id
        fields = {"role": action.role, "container": container.name, "container_id": container.id[:12]}
        if rt.last_failure:
            self.log.info("container_restarted", **fields, **rt.last_failure, restarts=rt.tracker.total)
            rt.last_failure = {}
        elif isinstance(action, Create):
            self.log.info("container_recreated" if action.replace else "container_started", **fields)

    def on_action_failed(self, message: ActionFailed) -> None:
        action = message.action
        now = time.monotonic()
        if message.unreachable:
            # Planning stops until a resync succeeds: retrying against an engine that is
            # gone would only spin. The watcher's reconnect, or the next resync, resumes it.
            self.on_engine_lost(EngineLost(message.error))
            self.next_resync = min(self.next_resync, now + 2.0)
        if isinstance(action, _Resync):
            self.resync_busy = False
            self.next_resync = now + RESYNC_EVERY  # the watcher's reconnect brings one sooner
            self.log.debug("resync_failed", reason=message.error)
        elif isinstance(action, ResolveImage):
            image = self.images[action.image]
            image.busy, image.error = False, message.error
            delay = image.tracker.delay_after_failure(now, None, counted=False)
            self.log.error("image_unavailable", image=action.image, reason=message.error, retry_in=_seconds(delay))
        elif isinstance(action, (Remove, _StopContainer)):
            self.busy_containers.discard(action.container.id)
            self.log.error("container_remove_failed", container=action.container.name, reason=message.error)
        else:
            rt = self.roles.get(action.role)
            if rt is None:
                return
            rt.busy = False
            if isinstance(action, Create) and action.replace is not None:
                # We replaced the old one (removed, or failing that, refused by the engine): its
                # absence, or a late description of it as exited, is no failure of its own.
                rt.counted_run = ("gone", action.replace.id)
                self.written_off[action.replace.id] = action.role
            if message.unreachable:
                return  # the engine went away; its return brings a resync, not a penalty
            rt.error = message.error
            if isinstance(action, (Start, Restart)):
                rt.refused_container = action.container.id
            delay = rt.tracker.delay_after_failure(now, None, counted=False)
            self.log.error("container_start_failed", role=action.role, container=self.site_container(action.role).name,
                           reason=message.error, retry_in=_seconds(delay))
            self.next_resync = 0.0  # a create may have left a container behind: look

    # Observations and probes.

    def _see(self, container: Observed) -> None:
        known = self.observed.get(container.id)
        if known is not None and known.observed_at > container.observed_at:
            return
        self.observed[container.id] = container
        if known is not None and known.health != container.health and container.health:
            self.log.info("container_health", container=container.name, role=container.role, health=container.health)
        rt = self.roles.get(container.role or "")
        if rt is not None and container.site and container.name == self.site_container(container.role).name:
            rt.last_container_id = container.id

    def _sync_probers(self, world: World) -> None:
        for role, spec in world.desired.items():
            holder = world.holder(spec.name)
            probe = spec.container.probe
            run = holder.run if probe and holder and holder.running and world.owns(holder) else None
            current = self.probers.get(role)
            # A new run, or a reload that changed the probe: the old prober goes.
            if current is not None and (current.run_key != run or current.probe != probe):
                current.stop()
                del self.probers[role]
            if run is not None and role not in self.probers:
                rt = self.roles[role]
                rt.probe_run, rt.probe_healthy = run, None
                container_id = holder.id
                prober = Prober(role, run, probe, holder.ip,
                                lambda command: self.engine.exec_exit_code(container_id, command), self.inbox.put)
                self.probers[role] = prober
                prober.start()
        for role in [r for r in self.probers if r not in world.desired]:
            self.probers.pop(role).stop()

    # Reload and stop.

    def reload(self) -> None:
        # Before the first READY=1 systemd is still waiting for the start: a READY=1 here would end it early.
        done = self.notifier.ready if self.ready_sent else (lambda: None)
        if self.ready_sent:
            self.notifier.reloading()
        try:
            site = load_site(self.config_path)
        except ConfigError as error:
            logs.add_secrets(logs.secrets_in_file(error.file))  # problems echo values; its secrets are new
            for problem in error.problems:
                self.log.error("config_problem", file=error.file, key=problem.path, problem=problem.render())
            self.log.error("reload_refused", file=error.file, problems=len(error.problems),
                           hint="the running configuration and containers are kept as they are")
            done()
            return
        if site.site != self.site.site:
            self.log.error("reload_refused", file=self.config_path, key="site", value=site.site,
                           hint=f"the site name cannot change on reload (running: {self.site.site}); restart the daemon")
            done()
            return
        before = {c.role: spec_hash(c, None) for c in self.site.enabled()}
        after = {c.role: spec_hash(c, None) for c in site.enabled()}
        self.log.info("config_reloaded", file=self.config_path,
                      added=sorted(set(after) - set(before)), removed=sorted(set(before) - set(after)),
                      changed=sorted(r for r in after if r in before and after[r] != before[r]),
                      unchanged=len([r for r in after if before.get(r) == after[r]]))
        self._adopt_site(site)
        for image in self.images.values():
            image.stale = True  # `always` pulls again; a retagged local image is noticed
            image.tracker.forgive(IMAGE_RETRY)
        done()

    def _adopt_site(self, site: Site) -> None:
        self.site = site
        for container in site.containers:
            logs.add_secrets(logs.secrets_of_env(dict(container.env)))
        for container in site.enabled():
            rt = self.roles.setdefault(container.role, RoleRuntime(RestartTracker(container.restart)))
            if rt.tracker.failed:
                self.log.info("container_forgiven", role=container.role, hint="failed before the reload; trying again")
                rt.last_failure["delay"] = 0.0  # the restart it gets now is immediate
            rt.tracker.forgive(container.restart)
            self.images.setdefault(container.image, ImageRuntime())
        enabled = {c.role for c in site.enabled()}
        for role in [r for r, rt in self.roles.items() if r not in enabled and not rt.busy]:
            del self.roles[role]

    def begin_stop(self, signal_name: str, leave: bool = False) -> None:
        if self.stopping:
            self.log.warning("stop_abandoned", signal=signal_name, hint="second stop signal: exiting at once")
            sys.stdout.flush()
            os._exit(1)
        self.stopping = True
        for prober in self.probers.values():
            prober.stop()
        self.probers.clear()
        if leave or self.site.stop_on_exit == "leave":
            if not self.reexec:
                self.notifier.stopping()
            self.log.info("daemon_stopping", signal=signal_name, on_exit="reexec" if self.reexec else "leave",
                          containers_left_running=sum(1 for c in self.observed.values() if c.site and c.running))
            self.exit_code = 0
            return
        order = [c.role for c in self.site.containers]
        owned = [c for c in self.observed.values() if c.site and c.status in ("running", "created", "exited", "paused")]
        # Reverse start order; containers of roles no longer configured go first.
        owned.sort(key=lambda c: -order.index(c.role) if c.role in order else -len(order) - 1)
        self.notifier.stopping()
        self.stop_queue = [_StopContainer(c, self._stop_timeout(c.role)) for c in owned]
        self.log.info("daemon_stopping", signal=signal_name, on_exit="stop", containers=len(self.stop_queue))

    def _drain_stops(self) -> None:
        in_flight = any(rt.busy for rt in self.roles.values()) or self.busy_containers
        if in_flight:
            return  # let a start under way finish, so nothing comes up after we stopped
        if not self.stop_queue:
            self.exit_code = 0
            return
        stop = self.stop_queue.pop(0)
        self.busy_containers.add(stop.container.id)
        self.notifier.extend_timeout(stop.timeout + 15)
        self.log.info("container_stopping", container=stop.container.name, role=stop.container.role, timeout=stop.timeout)
        self._submit(stop, lambda: self.engine.remove(stop.container.id, stop.timeout))

    def _shutdown(self) -> None:
        self.watcher_stop.set()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._publish(daemon="stopped")
        self.log.info("daemon_stopped", exit_code=self.exit_code)

    # Reporting.

    def _publish(self, daemon: str = "running") -> None:
        world = self.world()
        statuses = [self._role_status(world, c.role) for c in self.site.enabled()]
        for status in statuses:
            before = self.states.get(status.role)
            if before is None or before.state != status.state:
                self.log.debug("state_changed", role=status.role, before=before.state.value if before else None,
                               after=status.state.value, detail=status.detail)
        self.states = {s.role: s for s in statuses}
        line = status_line(statuses, time.time())
        if not self.ready_sent and self.engine_up and all(s.state in SETTLED for s in statuses):
            self.ready_sent = True
            self.notifier.ready(line)
            self.log.info("daemon_ready", status=line, seconds=round(time.monotonic() - self.started, 3))
        self.notifier.status(line)
        payload = state_payload(self.site.site, self.config_path, statuses, daemon)
        content = (payload["daemon"], payload["containers"])
        if content == self.written_state and time.monotonic() - self.written_at < STATE_HEARTBEAT:
            return
        try:
            write_state(state_path(self.site.site), payload)
            self.written_state, self.written_at = content, time.monotonic()
        except OSError as error:
            self.log.debug("state_file_unwritable", reason=str(error))

    def _role_status(self, world: World, role: str) -> RoleStatus:
        spec = world.desired.get(role)
        container = self.site_container(role)
        rt = self.roles[role]
        holder = world.holder(container.name)
        ours = holder if holder is not None and world.owns(holder) else None
        health = ""
        if ours is not None and ours.running:
            health = ours.health or ("" if container.probe is None else
                                     {True: "healthy", False: "unhealthy", None: "starting"}[rt.probe_healthy])
        next_at = rt.tracker.next_start_at
        wall_next = time.time() + (next_at - time.monotonic()) if next_at else None
        state, detail = State.STARTING, rt.error
        if role in self.blocked:
            state, detail = State.BLOCKED, self.blocked[role]
        elif rt.tracker.failed:
            state, detail = State.FAILED, "crash loop: reload (systemctl reload indico-supervisor) to try again"
        elif self.stopping:
            state = State.STOPPING if ours is not None else State.STOPPED
        elif spec is None or spec.image_id is None:
            state, detail = State.PULLING, self.images[container.image].error
        elif rt.busy:
            state = State.STARTING
        elif ours is not None and ours.running and rt.counted_run != ours.run:
            state = State.RUNNING
        elif next_at is not None and next_at > time.monotonic():
            state = State.BACKOFF
        return RoleStatus(role=role, name=container.name, state=state, detail=detail, health=health,
                          restarts=rt.tracker.total, started_at=ours.started_at if ours else None,
                          image=container.image, next_restart_at=wall_next,
                          container_id=ours.id[:12] if ours else "")

    # Small lookups.

    def site_container(self, role: str):
        return next(c for c in self.site.containers if c.role == role)

    def _stop_timeout(self, role: str | None) -> float:
        known = next((c for c in self.site.containers if c.role == role), None)
        return known.stop_timeout if known else 30.0

    def _wanted_names(self) -> list[str]:
        return [c.name for c in self.site.enabled()]


def _rolls(action) -> bool:
    """A running container recreated for a changed spec: part of the one-at-a-time rollout."""
    return isinstance(action, Create) and action.reason == "changed" and action.replace is not None \
        and action.replace.running


def _container_of(run: tuple) -> str:
    """The container ID in a run: (ID, started_at), or ("gone", ID) for a container gone."""
    return run[1] if run[0] == "gone" else run[0]


def _seconds(delay: float | None) -> float | None:
    return None if delay is None else round(delay, 3)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
