"""The ledger replayed: sequences of the daemon's messages and action outcomes, no engine.

Each scenario feeds the ledger what the loop would (observations, action outcomes,
reloads, stops) in the order that once went wrong or could, and reads what it
decided. Every step also checks that no role changed state outside `TRANSITIONS`.
"""
from __future__ import annotations

from dataclasses import replace
from typing import get_args

import pytest

from supervisor import actions
from supervisor.inbox import Resynced
from supervisor.ledger import Ledger, Now
from supervisor.lifecycle import TRANSITIONS
from supervisor.model import Container, Network, Observed, RestartPolicy, Site
from supervisor.plan import Action, Create, Remove, ResolveImage, Restart, Resync, Start, Stop
from supervisor.spec import ContainerSpec
from supervisor.status import State

IMAGE = "indico-worker:latest"
IMAGE_ID = "sha256:" + "ab" * 32
POLICY = RestartPolicy(backoff=1, max_backoff=8, reset_after=60, max_restarts=3, window=600)


def container(role: str = "worker", **changes) -> Container:
    base = Container(role=role, name=f"indico-{role}", image=IMAGE, pull="missing", command=(role,),
                     uid=1000, gid=1000, binds=(), network=Network(), env=(), restart=POLICY)
    return replace(base, **changes)


def site(*containers: Container, **changes) -> Site:
    return Site(path="site.yaml", name="prod", containers=containers or (container(),), **changes)


class Replay:
    """Drives a ledger the way the daemon's loop does, with a hand-turned clock."""

    def __init__(self, the_site: Site):
        self.t = 1000.0
        self.ledger = Ledger(the_site)
        self.events: list = []
        self.serial = 0

    # Time and reporting.

    def now(self) -> Now:
        return Now(self.t, 1_700_000_000.0 + self.t)

    def later(self, seconds: float) -> None:
        self.t += seconds

    def record(self, events) -> None:
        self.events += events
        statuses, changes = self.ledger.statuses(self.now())
        self.events += changes
        illegal = [e for e in changes if e.name == "state_transition_illegal"]
        assert not illegal, illegal

    def names(self) -> list[str]:
        return [e.name for e in self.events]

    def state(self, role: str = "worker") -> State:
        statuses, events = self.ledger.statuses(self.now())
        self.events += events
        return next(s.state for s in statuses if s.role == role)

    # The loop's steps.

    def tick(self) -> list:
        """What the loop would start now; each is begun, as the loop does."""
        found, events = self.ledger.next_actions(self.now())
        self.record(events)
        for action in found:
            self.record(actions.begin(self.ledger, action, self.now()))
        return found

    def done(self, action, result=None) -> None:
        self.record(actions.finish(self.ledger, action, result, self.now()))

    def fail(self, action, error: str = "refused", unreachable: bool = False) -> None:
        self.record(actions.fail(self.ledger, action, error, unreachable, self.now()))

    def see(self, seen: Observed) -> None:
        self.record(self.ledger.see(seen))

    def gone(self, container_id: str) -> None:
        self.record(self.ledger.container_gone(container_id, self.t))

    # The engine's side, made up.

    def observed(self, c: Container, status: str = "running", spec_site: str = "prod", **changes) -> Observed:
        self.serial += 1
        spec = ContainerSpec(spec_site, c, IMAGE_ID)
        base = Observed(id=changes.pop("id", f"{c.role}-{self.serial:04d}"), name=c.name, site=spec_site,
                        role=c.role, spec_hash=spec.hash, image_id=IMAGE_ID, status=status,
                        started_at=1_700_000_000.0 + self.t, created_at=1_700_000_000.0 + self.t,
                        observed_at=self.t)
        return replace(base, **changes)

    def step(self) -> list:
        """Turns until quiet; a resync (nothing new) and an image resolution answer at once.

        Returns the other actions begun meanwhile, for the test to complete or fail.
        """
        rest = []
        while True:
            answered = False
            for action in self.tick():
                if isinstance(action, Resync):
                    self.done(action, Resynced(tuple(self.ledger.observed.values()), self.t))
                    answered = True
                elif isinstance(action, ResolveImage):
                    self.done(action, (IMAGE_ID, None))
                    answered = True
                else:
                    rest.append(action)
            if not answered:
                return rest

    def start_up(self, *running: Observed) -> list:
        """The first turns: a resync finds `running`, then the image resolves. Returns what comes next."""
        resync = only(self.tick(), Resync)
        self.done(resync, Resynced(tuple(running), self.t))
        return self.step()

    def complete(self, action, c: Container) -> Observed:
        """A create, start or restart that worked: the container it left running."""
        if isinstance(action, Create):
            result = self.observed(action.spec.container)
        else:
            result = replace(action.container, status="running", started_at=1_700_000_000.0 + self.t,
                             observed_at=self.t)
        self.done(action, result)
        return result

    def exited(self, seen: Observed, exit_code: int = 1) -> Observed:
        self.later(0.5)
        dead = replace(seen, status="exited", exit_code=exit_code, observed_at=self.t)
        self.see(dead)
        return dead


def only(found: list, kind: type):
    matching = [a for a in found if isinstance(a, kind)]
    assert len(matching) == 1, found
    return matching[0]


def test_every_action_kind_has_one_entry_in_the_table():
    assert set(actions.ACTIONS) == set(get_args(Action))


def test_every_state_has_its_transitions_written_down():
    assert set(TRANSITIONS) == set(State) | {None}


def test_a_refused_recreate_and_a_late_description_of_the_old_container_count_no_restart():
    # The flake of commits 667b843, 1107e8f and 08927c5: a reload changes the worker, the
    # replacement's create is refused after the old container was removed; the watcher's
    # late inspect of the old one (exited), then its destroy, must not count as failures.
    r = Replay(site())
    old = r.observed(container())
    assert r.start_up(old) == []
    r.record(r.ledger.reload(site(container(env=(("A", "1"),)))))
    r.later(1)
    recreate = only(r.step(), Create)
    assert recreate.replace == old and recreate.reason == "changed"
    r.fail(recreate, "driver failed programming external connectivity: port is already allocated")
    r.exited(old, exit_code=143)  # the late inspect
    r.step()
    r.gone(old.id)  # its destroy
    r.step()
    assert r.ledger.roles["worker"].tracker.total == 0
    assert not {"container_exited", "container_removed"} & set(r.names())
    assert r.names().count("container_start_failed") == 1


def test_a_daemon_restart_adopts_a_running_container_and_starts_nothing():
    r = Replay(site())
    running = r.observed(container())
    assert r.start_up(running) == []
    r.later(60)
    assert r.step() == []
    assert r.state() is State.RUNNING
    assert "container_started" not in r.names()


def test_a_container_removed_behind_our_back_is_counted_once_and_created_again():
    r = Replay(site())
    running = r.observed(container())
    r.start_up(running)
    r.gone(running.id)
    create = only(r.step(), Create)
    assert create.replace is None
    assert r.step() == []  # one action per role in flight
    r.complete(create, container())
    assert r.names().count("container_removed") == 1
    assert "container_restarted" in r.names()
    assert r.ledger.roles["worker"].tracker.total == 1
    assert r.state() is State.RUNNING


def test_an_engine_that_goes_away_mid_start_costs_no_restart_and_planning_waits_for_a_resync():
    r = Replay(site())
    create = only(r.start_up(), Create)
    r.record(r.ledger.engine_lost("connection refused"))
    r.fail(create, "connection aborted", unreachable=True)
    r.later(5)
    found = r.tick()
    assert [a for a in found if not isinstance(a, Resync)] == []  # nothing against an engine that is gone
    r.fail(only(found, Resync), "connection refused", unreachable=True)
    assert r.ledger.roles["worker"].tracker.total == 0
    assert "container_start_failed" not in r.names()
    r.record(r.ledger.engine_back(r.now()))
    resync = only(r.tick(), Resync)
    r.done(resync, Resynced((), r.t))
    assert isinstance(only(r.tick(), Create), Create)


def test_a_crash_loop_ends_in_failed_and_a_reload_forgives_it():
    r = Replay(site())
    running = r.observed(container())
    r.start_up(running)
    for attempt in range(POLICY.max_restarts):
        dead = r.exited(running)
        found = r.step()  # the exit is counted; the first restart is immediate
        if not found:
            assert r.state() is State.BACKOFF
            r.later(POLICY.max_backoff)
            found = r.step()
        start = only(found, Start)
        assert start.container.id == dead.id
        running = r.complete(start, container())
    r.exited(running)
    assert r.step() == []
    r.later(POLICY.max_backoff)
    assert r.step() == []
    assert r.state() is State.FAILED
    assert r.names().count("container_failed") == 1
    assert r.ledger.roles["worker"].tracker.total == POLICY.max_restarts
    r.record(r.ledger.reload(site()))
    assert "container_forgiven" in r.names()
    assert isinstance(only(r.step(), Start), Start)


def test_a_reload_during_a_rolling_recreate_still_replaces_one_container_at_a_time():
    worker, celery = container("worker"), container("celery")
    r = Replay(site(worker, celery))
    assert r.start_up(r.observed(worker), r.observed(celery)) == []
    changed = (("LANG", "C.UTF-8"),)
    r.record(r.ledger.reload(site(container("worker", env=changed), container("celery", env=changed))))
    first = only(r.step(), Create)
    assert first.role == "worker" and first.reason == "changed"
    # A second reload while the first recreate runs: still one at a time.
    again = (("LANG", "C.UTF-8"), ("TZ", "UTC"))
    r.record(r.ledger.reload(site(container("worker", env=again), container("celery", env=again))))
    assert r.step() == []
    r.complete(first, container("worker", env=changed))
    # The worker came up from the first reload's spec: it is recreated again, still before celery.
    second = only(r.step(), Create)
    assert second.role == "worker" and second.spec.container.env == again
    assert r.step() == []
    r.complete(second, container("worker", env=again))
    third = only(r.step(), Create)
    assert third.role == "celery" and third.spec.container.env == again


def test_a_stop_during_an_in_flight_start_waits_for_it_then_stops_what_it_started():
    r = Replay(site())
    create = only(r.start_up(), Create)
    r.record(r.ledger.begin_stop(leave=False, signal_name="SIGTERM", on_exit="stop"))
    assert r.tick() == []  # nothing stopped while the start is under way
    started = r.complete(create, container())
    stop = only(r.tick(), Stop)  # what the start brought up is stopped too
    assert stop.container.id == started.id
    assert not r.ledger.finished
    r.done(stop)
    r.tick()
    assert r.ledger.finished
    assert r.state() is State.STOPPED


def test_a_stop_goes_in_reverse_start_order_and_tries_a_refused_removal_once():
    worker, celery = container("worker"), container("celery")
    r = Replay(site(worker, celery))
    r.start_up(r.observed(worker), r.observed(celery))
    r.record(r.ledger.begin_stop(leave=False, signal_name="SIGTERM", on_exit="stop"))
    first = only(r.tick(), Stop)
    assert first.container.role == "celery"
    r.fail(first, "tried to kill container, but did not receive an exit event")
    second = only(r.tick(), Stop)
    assert second.container.role == "worker"
    r.done(second)
    assert r.tick() == [] and r.ledger.finished
    assert r.names().count("container_remove_failed") == 1


def test_a_stop_that_leaves_containers_running_finishes_at_once():
    r = Replay(site())
    r.start_up(r.observed(container()))
    r.record(r.ledger.begin_stop(leave=True, signal_name="SIGUSR1", on_exit="leave"))
    assert r.tick() == [] and r.ledger.finished
    stopping = next(e for e in r.events if e.name == "daemon_stopping")
    assert stopping.fields["containers_left_running"] == 1


def test_an_exit_restarts_at_once_then_backs_off():
    r = Replay(site())
    running = r.observed(container())
    r.start_up(running)
    dead = r.exited(running)
    start = only(r.step(), Start)
    running = r.complete(start, container())
    r.exited(running)
    assert r.step() == []  # the second restart waits for the backoff
    assert r.state() is State.BACKOFF
    r.later(POLICY.backoff)
    assert only(r.step(), Start).container.id == dead.id


def test_a_probe_verdict_on_a_run_that_is_gone_changes_nothing():
    r = Replay(site())
    running = r.observed(container())
    r.start_up(running)
    r.ledger.probe_started("worker", running.run)
    r.record(r.ledger.probe_verdict("worker", replace(running, started_at=1.0).run, False, "GET /: refused"))
    assert r.ledger.roles["worker"].probe_unhealthy_run is None
    r.record(r.ledger.probe_verdict("worker", running.run, False, "GET /: refused"))
    assert isinstance(only(r.step(), Restart), Restart)


def test_an_orphan_of_a_removed_role_is_removed_and_counted_nowhere():
    r = Replay(site(container("worker"), container("celery")))
    worker, celery = r.observed(container("worker")), r.observed(container("celery"))
    r.start_up(worker, celery)
    r.record(r.ledger.reload(site(container("worker"))))
    remove = only(r.step(), Remove)
    assert remove.container.id == celery.id
    r.done(remove)
    assert "celery" not in r.ledger.roles
    assert r.ledger.roles["worker"].tracker.total == 0


@pytest.mark.parametrize("before", [s for s in TRANSITIONS if s is not None])
def test_no_state_is_left_for_itself(before):
    assert before not in TRANSITIONS[before]


def test_an_action_that_finds_the_engine_gone_logs_engine_lost_once():
    r = Replay(site())
    create = only(r.start_up(), Create)
    r.fail(create, "Connection aborted: No such file or directory", unreachable=True)
    r.record(r.ledger.engine_lost("the engine closed the event stream"))  # the watcher's word comes later
    assert r.names().count("engine_lost") == 1


def test_a_resync_reports_a_health_change_it_finds():
    r = Replay(site())
    running = r.observed(container(), health="starting")
    r.start_up(running)
    r.later(60)
    resync = only(r.tick(), Resync)
    r.done(resync, Resynced((replace(running, health="healthy", observed_at=r.t),), r.t))
    assert [e.fields["health"] for e in r.events if e.name == "container_health"] == ["healthy"]


def test_a_change_no_event_reported_asks_for_a_fresh_event_stream_once():
    from supervisor.plan import ReopenEvents
    r = Replay(site())
    running = r.observed(container())
    r.record(r.ledger.engine_back(r.now()))
    r.start_up(running)
    r.later(60)
    resync = only(r.tick(), Resync)  # lists the worker exited: the stream said nothing of it
    r.done(resync, Resynced((replace(running, status="exited", exit_code=1, observed_at=r.t),), r.t))
    assert [a for a in r.tick() if isinstance(a, ReopenEvents)] == []  # its event may still come
    r.later(5)
    reopen = only(r.tick(), ReopenEvents)
    assert reopen.containers == ("indico-worker",)
    assert r.names().count("events_reopened") == 1
    r.later(5)
    assert [a for a in r.tick() if isinstance(a, ReopenEvents)] == []  # named once
