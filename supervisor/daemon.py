"""The one loop: `indico-supervisor run`.

Owns: signals, deadlines, the executor and the probe threads, the dispatch of messages
(the table in `Daemon.__init__`) and actions (`actions.ACTIONS`), reload and stop
orchestration, and publishing (systemd's STATUS, the state file, the log).
Must not: decide anything about a role itself. What is known and what to do next is
the ledger's; threads only put messages in the inbox, which this loop applies.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Callable

from . import actions
from . import engine as engine_edge
from . import logs
from .config import load_site
from .health import Prober, ProbeVerdict
from .inbox import (ActionDone, ActionFailed, ContainerDied, ContainerGone, ContainerSeen, EngineBack, EngineLost,
                    Inbox, PullProgress, PullStarted, SignalReceived, SiteResourceCreated)
from .keepers import Keepers
from .lease import LeaseChanged
from .ledger import Event, Ledger, Now
from .model import Site
from .monitoring import Published, observers_for
from .notify import Notifier
from .plan import Stop
from .problems import ConfigError
from .spec import spec_hash
from .status import state_path, state_payload, status_line, write_state
from .watcher import Reopener, watch_engine

MAX_PARALLEL = 8  # engine calls at once: 50 containers start in batches, not one by one
MAX_SLEEP = 10.0
STATE_HEARTBEAT = 10.0  # the state file is rewritten at least this often, so `status` can tell it is fresh


class Clock:
    """The daemon's time; a test may hand the daemon another."""
    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)


class Daemon:
    def __init__(self, config_path: str, site: Site, engine: engine_edge.Engine | None = None,
                 clock: Clock | None = None, notifier: Notifier | None = None,
                 connect_watcher: Callable[[], engine_edge.Engine] | None = None):
        self.config_path = config_path
        self.site = site
        self.engine = engine or engine_edge.Engine(site.name)
        self.clock = clock or Clock()
        self.notifier = notifier or Notifier(on_dropped=self._notify_dropped)
        # The event stream gets a client of its own, made afresh at each reconnect.
        self.connect_watcher = connect_watcher or (lambda: engine_edge.Engine(self.site.name, timeout=30))
        self.log = logs.get_logger()
        self.role_logs: dict[tuple[str, str | None], object] = {}
        self.inbox = Inbox()
        self.ledger = Ledger(site)
        self.reopener = Reopener()  # the loop's way to have the watcher read a fresh stream
        self.executor = ThreadPoolExecutor(max_workers=MAX_PARALLEL, thread_name_prefix="action")
        self.context = actions.Context(post=self.inbox.put, monotonic=self.clock.monotonic,
                                       wanted_names=lambda: self.ledger.wanted_names(),
                                       stop_timeout=lambda role: self.ledger.stop_timeout(role),
                                       pull_timeout=lambda: self.site.pull_timeout,
                                       reopen_events=self.reopener.reopen)
        self.probers: dict[str, Prober] = {}
        self.ready_sent = False
        self.started = self.clock.monotonic()
        self.exit_code: int | None = None
        self.reexec = False  # set by SIGUSR2: after the loop, the caller execs a fresh daemon
        self.last_tick_at = float("-inf")  # no turn yet: every deadline is still to be seen
        self.next_watchdog = self.clock.monotonic()
        self.written_state: tuple | None = None
        self.written_at = 0.0
        self.watcher_stop = threading.Event()
        self.reload_refused = False  # until a reload applies: `status --check` is critical meanwhile
        self._learn_secrets(site)
        self.observers = observers_for(site, self.log)  # metrics, alerts: fed from this thread only
        self.keepers = Keepers(self.inbox.put, self.clock.monotonic, self.clock.time)  # singleton leases
        self.leaving = False  # the stop leaves containers running: their leases are kept, not released
        # Every message the inbox carries, and what it changes. Each returns the events to log.
        self.handlers: dict[type, Callable[[object], list[Event] | None]] = {
            SignalReceived: self.on_signal,
            ContainerSeen: lambda m: self.ledger.see(m.container),
            ContainerDied: lambda m: self.ledger.container_died(m.container_id, m.exit_code, m.oom_killed,
                                                                m.observed_at, self.now()),
            ContainerGone: lambda m: self.ledger.container_gone(m.container_id, m.observed_at),
            EngineLost: lambda m: self.ledger.engine_lost(m.error),
            EngineBack: lambda m: self.ledger.engine_back(self.now()),
            ProbeVerdict: lambda m: self.ledger.probe_verdict(m.role, m.run, m.healthy, m.detail),
            PullStarted: self.on_pull_started,
            PullProgress: self.on_pull_progress,
            SiteResourceCreated: lambda m: self.log.info("site_resource_created", created=m.what,
                                                         hint="labelled with the site; never removed by us"),
            LeaseChanged: lambda m: self.ledger.lease_changed(m.view, self.now()),
            ActionDone: lambda m: actions.finish(self.ledger, m.action, m.result, self.now()),
            ActionFailed: lambda m: actions.fail(self.ledger, m.action, m.error, m.unreachable, self.now()),
        }

    def now(self) -> Now:
        return Now(self.clock.monotonic(), self.clock.time())

    # The loop.

    def run(self) -> int:
        self.inbox.catch(signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
        self.log.info("daemon_started", site=self.site.name, config=self.config_path, pid=os.getpid(),
                      containers=len(self.site.enabled()))
        threading.Thread(target=watch_engine, args=(self.connect_watcher, self.inbox.put, self.watcher_stop,
                                                    self.reopener),
                         name="engine-events", daemon=True).start()
        self.keepers.follow(self.site, self.ledger.singleton_roles())
        while self.exit_code is None:
            for message in self.inbox.wait(self._sleep_time()):
                self._log(self.handlers[type(message)](message))
            self._tick()
        self._shutdown()
        return self.exit_code

    def _tick(self) -> None:
        now = self.now()
        self.last_tick_at = now.mono
        self.keepers.tick(self.ledger)
        if self.notifier.watchdog_interval and now.mono >= self.next_watchdog:
            self.notifier.watchdog()
            self.next_watchdog = now.mono + self.notifier.watchdog_interval
        found, events = self.ledger.next_actions(now)
        self._log(events)
        for action in found:
            self._start(action, now)
        if not self.ledger.stopping and self.ledger.engine_up:
            self._sync_probers(now)
        self._publish()
        if self.ledger.finished:
            self.exit_code = 0

    def _sleep_time(self) -> float:
        # Only deadlines the last turn did not see pass: one it saw was acted on then, or
        # waits for work under way (a resync, a start) whose message will wake us.
        # Counting it again would spin the loop for as long as that work takes.
        now = self.clock.monotonic()
        deadlines = [now + MAX_SLEEP, *self.ledger.deadlines(now)]
        if self.notifier.watchdog_interval:
            deadlines.append(self.next_watchdog)
        deadlines += [d for d in self._tell_observers(lambda o: o.deadline()) if d is not None]
        return max(0.0, min(d for d in deadlines if d > self.last_tick_at) - now)

    def _start(self, action, now: Now) -> None:
        self._log(actions.begin(self.ledger, action, now))
        if isinstance(action, Stop):  # systemd's stop timeout grows with each container's own
            self.notifier.extend_timeout(action.timeout + 15)

        def work() -> None:
            try:
                self.inbox.put(ActionDone(action, actions.run(self.engine, action, self.context)))
            except Exception as error:  # reported to the loop, which decides; never lost on a thread
                self.inbox.put(ActionFailed(action, engine_edge.reason(error), engine_edge.is_unreachable(error)))
        self.executor.submit(work)

    def _sync_probers(self, now: Now) -> None:
        targets = self.ledger.probe_targets(now)
        for role, prober in list(self.probers.items()):
            target = targets.get(role)
            # A new run, or a reload that changed the probe: the old prober goes.
            if target is None or prober.run_key != target.run or prober.probe != target.probe:
                prober.stop()
                del self.probers[role]
        for role, target in targets.items():
            if role not in self.probers:
                self.ledger.probe_started(role, target.run)
                container_id = target.container_id
                prober = Prober(role, target.run, target.probe, target.ip,
                                lambda command, timeout: self.engine.exec_exit_code(container_id, command, timeout),
                                self.inbox.put)
                self.probers[role] = prober
                prober.start()

    # Messages the ledger does not take.

    def on_signal(self, message: SignalReceived) -> None:
        if message.signum == signal.SIGHUP and not self.ledger.stopping:
            self.reload()
        elif message.signum in (signal.SIGTERM, signal.SIGINT):
            self.begin_stop(signal.Signals(message.signum).name)
        elif message.signum == signal.SIGUSR1:
            # The package's prerm on removal: the daemon goes, Indico stays up.
            self.begin_stop("SIGUSR1", leave=True)
        elif message.signum == signal.SIGUSR2 and not self.ledger.stopping:
            # The package's postinst on upgrade: the new code takes over under the same PID
            # (systemd sees one unit, never stopped) and adopts every container.
            self.reexec = True
            self.notifier.reloading()
            self.begin_stop("SIGUSR2", leave=True)

    def on_pull_started(self, message: PullStarted) -> None:
        self._log([Event("info", "image_pulling", None, {"image": message.image})])

    def on_pull_progress(self, message: PullProgress) -> None:
        self._log([Event("info", "image_pull_progress", None, {"image": message.image, **message.progress})])
        if not self.ready_sent:
            self.notifier.extend_timeout(60)

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
            self.reload_refused = True
            self._log([Event("error", "reload_refused", None, {
                "file": error.file, "problems": len(error.problems),
                "hint": "the running configuration and containers are kept as they are"})])
            done()
            return
        if site.name != self.site.name:
            self.reload_refused = True
            self._log([Event("error", "reload_refused", None, {
                "file": self.config_path, "key": "site", "value": site.name,
                "hint": f"the site name cannot change on reload (running: {self.site.name}); restart the daemon"})])
            done()
            return
        before = {c.role: spec_hash(c, None) for c in self.site.enabled()}
        after = {c.role: spec_hash(c, None) for c in site.enabled()}
        self.reload_refused = False
        self._log([Event("info", "config_reloaded", None, {
            "file": self.config_path, "added": sorted(set(after) - set(before)),
            "removed": sorted(set(before) - set(after)),
            "changed": sorted(r for r in after if r in before and after[r] != before[r]),
            "unchanged": len([r for r in after if before.get(r) == after[r]])})])
        if site.cluster != self.site.cluster and self.site.cluster is not None:
            self.log.warning("cluster_not_reloaded", hint="the cluster section (redis, lease, host) is read at "
                                                          "start; it applies at the next daemon restart")
            site = replace(site, cluster=self.site.cluster)
        if site.monitoring != self.site.monitoring:
            self.log.warning("monitoring_not_reloaded", hint="metrics and alerts settings are read at start; "
                                                            "they apply at the next daemon restart")
        self.site = site
        self._learn_secrets(site)
        self._log(self.ledger.reload(site))
        self.keepers.follow(site, self.ledger.singleton_roles())
        done()

    def begin_stop(self, signal_name: str, leave: bool = False) -> None:
        if self.ledger.stopping:
            self.log.warning("stop_abandoned", signal=signal_name, hint="second stop signal: exiting at once")
            sys.stdout.flush()
            os._exit(1)
        for prober in self.probers.values():
            prober.stop()
        self.probers.clear()
        leave = leave or self.site.stop_on_exit == "leave"
        self.leaving = leave
        if not (leave and self.reexec):  # a re-exec is a reload to systemd, not a stop
            self.notifier.stopping()
        self._log(self.ledger.begin_stop(leave, signal_name, on_exit="reexec" if self.reexec else "leave"))

    def _shutdown(self) -> None:
        self.watcher_stop.set()
        self.keepers.finish(self.ledger, release=not self.leaving)  # containers are gone: hand the leases over
        self._log(self._drain_lease_news())
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._publish(daemon="stopped")
        self._tell_observers(lambda o: o.close())
        self.log.info("daemon_stopped", exit_code=self.exit_code)

    # Reporting.

    def _publish(self, daemon: str = "running") -> None:
        now = self.now()
        statuses, events = self.ledger.statuses(now)
        self._log(events)
        line = status_line(statuses, now.wall)
        if not self.ready_sent and self.ledger.settled(statuses):
            self.ready_sent = True
            self.notifier.ready(line)
            self.log.info("daemon_ready", status=line, seconds=round(now.mono - self.started, 3))
        self.notifier.status(line)
        if self.observers:
            shown = Published(now.mono, now.wall, statuses, self.ledger.engine_up, reload_refused=self.reload_refused,
                              images={ref: i.image_id for ref, i in self.ledger.images.items() if i.image_id})
            self._tell_observers(lambda o: o.published(shown))
        payload = state_payload(self.site.name, self.config_path, statuses, daemon, reload_refused=self.reload_refused)
        content = (payload["daemon"], payload["containers"], payload["reload_refused"])
        if content == self.written_state and now.mono - self.written_at < STATE_HEARTBEAT:
            return
        try:
            write_state(state_path(self.site.name), logs.scrub_value(payload))
            self.written_state, self.written_at = content, now.mono
        except OSError as error:
            self.log.debug("state_file_unwritable", reason=str(error))

    def _log(self, events: list[Event] | None) -> None:
        for event in events or ():
            logger = self._role_log(event.role) if event.role else self.log
            getattr(logger, event.level)(event.name, **event.fields)
            self._tell_observers(lambda o: o.event(event, self.clock.monotonic()))

    def _tell_observers(self, call: Callable[[object], object]) -> list:
        """Each observer's answer; one that raises is dropped and logged, never the loop's end.

        Metrics and alerts are there to report on supervision: a bug in them must not stop it.
        """
        answers = []
        for observer in list(self.observers):
            try:
                answers.append(call(observer))
            except Exception as error:
                self.observers.remove(observer)
                self.log.error("observer_failed", observer=type(observer).__name__, reason=repr(error),
                               hint="its reports stop until the daemon restarts; supervision goes on")
        return answers

    def _role_log(self, role: str):
        configured = self.site.container(role)
        key = (role, configured.name if configured else None)
        if key not in self.role_logs:
            bound = {"role": role, "container": key[1]} if key[1] else {"role": role}
            self.role_logs[key] = self.log.bind(**bound)
        return self.role_logs[key]

    def _drain_lease_news(self) -> list[Event]:
        """The keepers' last words (lease_released) after the loop ended: logged, not lost."""
        events = []
        for message in self.inbox.wait(0):
            if isinstance(message, LeaseChanged):
                events += self.ledger.lease_changed(message.view, self.now())
        return events

    def _notify_dropped(self, message: str) -> None:
        self.log.warning("notify_dropped", message=message.split("\n")[0],
                         hint="the notify socket is full: its reader is slow; later messages supersede this one")

    def _learn_secrets(self, site: Site) -> None:
        logs.learn_site(site)
