"""Actions as a table: per kind, how it runs against the engine and how its outcome changes the ledger.

`run` blocks on an executor thread with the engine and a `Context`, and returns the
result; `begun`, `done` and `failed` are the ledger's own methods, called on the
loop's thread. The loop goes through `begin`, `run`, `finish` and `fail` below and
nothing else, so a reader (and grep) finds every kind's whole story in one entry,
and a replay test drives the same outcomes without an engine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .inbox import PullProgress, PullStarted, Resynced, SiteResourceCreated
from .ledger import Event, Ledger, Now
from .plan import Create, Remove, ReopenEvents, ResolveImage, Restart, Resync, RunUpgrade, Start, Stop
from .upgrade_jobs import run_upgrade


@dataclass(frozen=True)
class Context:
    """What an action may use on its thread besides the engine."""
    post: Callable[[object], None]  # a message to the loop, e.g. pull progress
    monotonic: Callable[[], float]
    wanted_names: Callable[[], list[str]]
    stop_timeout: Callable[[str | None], float]
    pull_timeout: Callable[[], float] = lambda: 120.0  # the site's, read at each pull: a reload may change it
    reopen_events: Callable[[], None] = lambda: None  # closes the watcher's stream under it
    site: Callable[[], object] = lambda: None  # the site as loaded now (upgrade jobs take the worker's settings)
    stopping: Callable[[], bool] = lambda: False  # the daemon stops: a running upgrade job is killed


@dataclass(frozen=True)
class ActionKind:
    run: Callable[[object, object, Context], object]  # (engine, action, context) -> result
    begun: Callable[[Ledger, object, Now], list[Event]]
    done: Callable[[Ledger, object, object, Now], list[Event]]
    failed: Callable[[Ledger, object, str, bool, Now], list[Event]]  # (…, error, unreachable, now)


def _resync(engine, action: Resync, context: Context) -> Resynced:
    started = context.monotonic()  # what was seen before this moment and is not listed now is gone
    return Resynced(tuple(engine.list(context.wanted_names())), started)


def _resolve_image(engine, action: ResolveImage, context: Context) -> tuple[str, str | None]:
    return engine.resolve_image(action.image, action.pull,
                                lambda progress: context.post(PullProgress(action.image, progress)),
                                on_pull=lambda: context.post(PullStarted(action.image)),
                                pull_timeout=context.pull_timeout())


def _nothing(ledger: Ledger, action, now: Now) -> list[Event]:
    return []


def _nothing_done(ledger: Ledger, action, result, now: Now) -> list[Event]:
    return []


def _nothing_failed(ledger: Ledger, action, error: str, unreachable: bool, now: Now) -> list[Event]:
    return []


ACTIONS: dict[type, ActionKind] = {
    ReopenEvents: ActionKind(
        run=lambda engine, a, context: context.reopen_events(),
        begun=Ledger.events_reopening, done=_nothing_done, failed=_nothing_failed),
    Resync: ActionKind(
        run=_resync,
        begun=_nothing, done=Ledger.resync_done, failed=Ledger.resync_failed),
    ResolveImage: ActionKind(
        run=_resolve_image,
        begun=_nothing, done=Ledger.image_resolved, failed=Ledger.image_unavailable),
    Create: ActionKind(
        run=lambda engine, a, context: engine.create_and_start(
            a.spec, a.replace, a.spec.container.stop_timeout, lambda what: context.post(SiteResourceCreated(what))),
        begun=Ledger.role_action_begun, done=Ledger.role_action_done, failed=Ledger.role_action_failed),
    Start: ActionKind(
        run=lambda engine, a, context: engine.start(a.container.id),
        begun=Ledger.role_action_begun, done=Ledger.role_action_done, failed=Ledger.role_action_failed),
    Restart: ActionKind(
        run=lambda engine, a, context: engine.restart(a.container.id, context.stop_timeout(a.role)),
        begun=Ledger.role_action_begun, done=Ledger.role_action_done, failed=Ledger.role_action_failed),
    Remove: ActionKind(
        run=lambda engine, a, context: engine.remove(
            a.container.id, context.stop_timeout(a.container.role) if a.timeout is None else a.timeout),
        begun=Ledger.removal_begun, done=Ledger.removal_done, failed=Ledger.removal_failed),
    Stop: ActionKind(
        run=lambda engine, a, context: engine.remove(a.container.id, a.timeout),
        begun=Ledger.removal_begun, done=Ledger.removal_done, failed=Ledger.removal_failed),
    RunUpgrade: ActionKind(
        run=lambda engine, a, context: run_upgrade(engine, a, context.site(), context.post, context.stopping),
        begun=Ledger.upgrade_begun, done=Ledger.upgrade_done, failed=Ledger.upgrade_action_failed),
}


def begin(ledger: Ledger, action, now: Now) -> list[Event]:
    ledger.hold(action)
    return ACTIONS[type(action)].begun(ledger, action, now)


def run(engine, action, context: Context):
    return ACTIONS[type(action)].run(engine, action, context)


def finish(ledger: Ledger, action, result, now: Now) -> list[Event]:
    ledger.release(action)
    return ACTIONS[type(action)].done(ledger, action, result, now)


def fail(ledger: Ledger, action, error: str, unreachable: bool, now: Now) -> list[Event]:
    ledger.release(action)
    events = ledger.engine_unreachable(error, now) if unreachable else []
    return events + ACTIONS[type(action)].failed(ledger, action, error, unreachable, now)
