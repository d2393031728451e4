"""A singleton role in the ledger, replayed without engine or Redis: the keeper's views go in, actions come out."""
from __future__ import annotations

from dataclasses import replace

from supervisor.cluster import Cluster
from supervisor.inbox import Resynced
from supervisor.leasing import HELD, RELEASED, STANDBY, UNKNOWN, YIELD_REASON, LeaseView, lease_value
from supervisor.plan import Create, Remove, Resync, Start
from supervisor.spec import LABEL_LEASE_TOKEN
from supervisor.status import State, status_line
from supervisor.check import OK, WARNING, check
from tests.test_ledger import Replay, container, only, site

CLUSTER = Cluster(redis="redis://:pw@10.0.0.5:6379/0", lease=15.0, host="host-a")


def celery_site():
    return site(container("worker"), container("celery", singleton=True), cluster=CLUSTER)


def held(r: Replay, token: int = 5, data_lost: bool = False) -> LeaseView:
    value = lease_value("host-a", token, 1_700_000_000.0)
    return LeaseView("celery", HELD, token, value, "host-a", 1_700_000_000.0, fence_at=r.t + 10.0,
                     start_at=r.t + (15.0 if data_lost else 0.0), data_lost=data_lost)


def standby(holder: str = "host-b", token: int = 4) -> LeaseView:
    return LeaseView("celery", STANDBY, token, lease_value(holder, token, 1_700_000_000.0), holder, 1_700_000_000.0)


def tell(r: Replay, view: LeaseView) -> None:
    r.record(r.ledger.lease_changed(view, r.now()))


def creates(found) -> dict:
    return {a.role: a for a in found if isinstance(a, Create)}


def test_a_singleton_is_created_only_once_its_lease_is_held_and_carries_the_token_and_env():
    r = Replay(celery_site())
    assert set(creates(r.start_up())) == {"worker"}
    assert r.state("celery") is State.STARTING  # no answer from Redis yet: READY waits for one
    view = held(r)
    tell(r, view)
    create = creates(r.step())["celery"]
    env = dict(create.spec.container.env)
    assert env["INDICO_SUPERVISOR_LEASE_VALUE"] == view.value
    assert env["INDICO_SUPERVISOR_LEASE_KEY"] == "indico-supervisor:prod:celery:lease"
    assert env["INDICO_SUPERVISOR_LEASE_MS"] == "15000"
    assert env["INDICO_SUPERVISOR_LEASE_REDIS"] == CLUSTER.redis
    assert create.spec.labels()[LABEL_LEASE_TOKEN] == "5"
    assert "lease_acquired" in r.names()


def test_standby_shows_the_holder_and_is_ok_for_the_check_but_no_holder_is_a_warning():
    r = Replay(celery_site())
    r.start_up()
    tell(r, standby())
    statuses, _ = r.ledger.statuses(r.now())
    celery = next(s for s in statuses if s.role == "celery")
    assert celery.state is State.STANDBY and (celery.lease_holder, celery.lease_token) == ("host-b", 4)
    assert "celery standby (held by host-b since " in status_line(statuses, r.now().wall)
    rows = [{"role": s.role, "state": s.state.value, "lease_holder": s.lease_holder, "health": s.health}
            for s in statuses]
    state = {"updated_at": r.now().wall, "containers": [dict(row, state="running") if row["role"] == "worker"
                                                        else row for row in rows]}
    assert check(state, True, r.now().wall)[0] == OK
    tell(r, LeaseView("celery", UNKNOWN, reason="Redis unreachable: ConnectionError"))
    state["containers"][1].update(lease_holder="")
    assert check(state, True, r.now().wall)[0] == WARNING
    assert r.names().count("lease_standby") == 1 and "lease_unknown" in r.names()


def test_losing_the_lease_removes_the_container_at_once_with_no_grace_and_counts_no_failure():
    r = Replay(celery_site())
    r.start_up()
    view = held(r)
    tell(r, view)
    running = r.complete(creates(r.step())["celery"], None)
    tell(r, LeaseView("celery", UNKNOWN, reason="lost: the key is gone or names another holder", fenced=True))
    remove = only(r.step(), Remove)
    assert remove.container == running and remove.timeout == 0.0
    r.done(remove)
    tell(r, standby("host-b", 6))
    assert r.step() == []
    assert r.state("celery") is State.STANDBY
    tell(r, held(r, token=7))
    create = creates(r.step())["celery"]
    assert create.replace is None and r.ledger.roles["celery"].tracker.total == 0
    assert r.names().count("lease_lost") == 1 and "container_removed" in r.names()


def test_the_ledger_fences_by_itself_when_the_keeper_is_silent_past_the_deadline():
    r = Replay(celery_site())
    r.start_up()
    tell(r, held(r))
    running = r.complete(creates(r.step())["celery"], None)
    assert r.ledger.deadlines(r.t) and min(d for d in r.ledger.deadlines(r.t) if d > r.t) <= r.t + 10.0
    r.later(10.0)  # no renew answered: the fence deadline passes with no message at all
    remove = only(r.step(), Remove)
    assert remove.container == running and remove.timeout == 0.0


def test_redis_data_lost_holds_back_the_container_for_one_full_lease():
    r = Replay(celery_site())
    r.start_up()
    view = held(r, token=1, data_lost=True)
    tell(r, view)
    assert "celery" not in creates(r.step())
    assert r.state("celery") is State.STARTING
    for _ in range(5):  # renewed meanwhile
        r.later(3.0)
        view = replace(view, fence_at=r.t + 10.0)
        tell(r, view)
    assert "celery" in creates(r.step())


def test_an_unknown_lease_at_start_leaves_a_running_container_alone():
    r = Replay(celery_site())
    guarded = r.observed(container("celery", singleton=True), lease_value="x")
    assert all(not isinstance(a, Remove) for a in r.start_up(guarded))


def test_a_restarted_daemon_adopts_the_container_carrying_the_keys_value():
    r = Replay(celery_site())
    value = lease_value("host-a", 9, 1_700_000_000.0)
    view = LeaseView("celery", HELD, 9, value, "host-a", 1_700_000_000.0, fence_at=r.t + 10, start_at=r.t)
    from supervisor.singletons import leased_spec
    from supervisor.spec import ContainerSpec
    spec = leased_spec(ContainerSpec("prod", container("celery", singleton=True)), CLUSTER,
                       "indico-supervisor:prod:celery:lease", value)
    ours = r.observed(spec.container, lease_value=value)
    r.start_up(ours)
    tell(r, LeaseView("celery", STANDBY, 9, value, "host-a", 1_700_000_000.0))
    assert r.ledger.adoptions() == {"celery": value}
    assert all(not isinstance(a, (Remove, Create)) for a in r.step())
    tell(r, view)
    r.later(1)
    assert [a for a in r.step() if not isinstance(a, Resync)] == []
    assert r.state("celery") is State.RUNNING


def test_a_container_with_another_value_of_ours_is_not_adopted_but_removed():
    r = Replay(celery_site())
    stale = r.observed(container("celery", singleton=True), lease_value=lease_value("host-a", 8, 1.0))
    r.start_up(stale)
    tell(r, LeaseView("celery", STANDBY, 9, lease_value("host-a", 9, 1.0), "host-a", 1.0))
    assert r.ledger.adoptions() == {}
    assert only(r.step(), Remove).container == stale


def test_a_release_is_logged_once():
    r = Replay(celery_site())
    r.start_up()
    tell(r, held(r))
    tell(r, LeaseView("celery", RELEASED, reason="released"))
    tell(r, LeaseView("celery", RELEASED, reason="released"))
    assert r.names().count("lease_released") == 1 and "lease_lost" not in r.names()


def test_a_lease_lapsed_while_the_engine_was_away_is_asked_again_before_its_container_is_touched():
    r = Replay(celery_site())
    value = lease_value("host-a", 5, 1_700_000_000.0)
    from supervisor.singletons import leased_spec
    from supervisor.spec import ContainerSpec
    spec = leased_spec(ContainerSpec("prod", container("celery", singleton=True)), CLUSTER,
                       "indico-supervisor:prod:celery:lease", value)
    guarded = r.observed(spec.container, lease_value=value)
    r.start_up(guarded)
    tell(r, LeaseView("celery", UNKNOWN, reason="fence deadline passed while the engine was unreachable"))
    assert all(not isinstance(a, Remove) for a in r.step())
    tell(r, LeaseView("celery", STANDBY, 5, value, "host-a", 1_700_000_000.0))  # the guard kept it
    assert r.ledger.adoptions() == {"celery": value}
    assert all(not isinstance(a, (Remove, Create)) for a in r.step())


def test_a_crash_looping_singleton_yields_its_lease_once_nothing_of_it_runs():
    r = Replay(celery_site())
    r.start_up()
    view = held(r)
    tell(r, view)
    running = r.complete(creates(r.step())["celery"], None)
    assert r.ledger.crash_looping_singletons() == set()
    for attempt in range(3):  # max_restarts 3, as in test_ledger's crash loop
        dead = r.exited(running)
        found = r.step()
        if not found:
            r.later(8)
            tell(r, replace(view, fence_at=r.t + 10))  # renewed meanwhile
            found = r.step()
        start = only(found, Start)
        running = r.complete(start, None)
    r.exited(running)
    r.step()
    r.later(8)
    tell(r, replace(view, fence_at=r.t + 10))
    assert r.step() == []
    assert r.state("celery") is State.FAILED
    assert r.ledger.crash_looping_singletons() == {"celery"}
    tell(r, LeaseView("celery", STANDBY, reason=YIELD_REASON))
    assert "lease_released" in r.names() and "lease_lost" not in r.names()
    tell(r, LeaseView("celery", STANDBY, 6, lease_value("host-b", 6, 1.0), "host-b", 1.0, reason=YIELD_REASON))
    statuses, _ = r.ledger.statuses(r.now())
    celery = next(s for s in statuses if s.role == "celery")
    assert celery.state is State.STANDBY and celery.lease_holder == "host-b" and "crash loop" in celery.detail
