"""What to do, given what is wanted and what the engine shows.

`new_failures` and `plan` are pure functions of a `World`: these tests build worlds
from real `Container` values and `ContainerSpec`s, with no engine and no clock.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.model import Bind, Container, Network, Probe, Run
from supervisor.plan import (Cause, Create, Failure, Observed, Remove, ResolveImage, Restart, RoleView, Start, World,
                             new_failures, plan, ready)
from supervisor.spec import ContainerSpec

SITE = "events"
IMAGE_ID = "sha256:" + "ab" * 32
OLD_IMAGE_ID = "sha256:" + "cd" * 32


def container(role: str = "worker", *, name: str | None = None, image: str = "indico:latest", pull: str = "missing",
              command: tuple[str, ...] | None = ("run",), probe: Probe | None = None) -> Container:
    return Container(role=role, name=name or f"indico-{role}", image=image, pull=pull, command=command,
                     uid=1000, gid=1000, binds=(Bind("/srv/indico/data", "/opt/indico/data"),),
                     network=Network(), env=(("INDICO_SITE", "events.example.org"),), probe=probe)


def spec(role: str = "worker", image_id: str | None = IMAGE_ID, **kwargs) -> ContainerSpec:
    return ContainerSpec(SITE, container(role, **kwargs), image_id)


def changed(s: ContainerSpec) -> ContainerSpec:
    """The same role after a reload changed its command: a different hash."""
    return replace(s, container=replace(s.container, command=("run", "--changed")))


def seen(s: ContainerSpec, *, id: str | None = None, **fields) -> Observed:
    """The engine's view of an up-to-date, running, owned container for `s`."""
    base = dict(id=id or f"id-{s.role}-" + "0" * 60, name=s.name, site=SITE, role=s.role, spec_hash=s.hash,
                image_id=s.image_id or IMAGE_ID, status="running", started_at=1000.0)
    return Observed(**{**base, **fields})


def foreign(name: str, **fields) -> Observed:
    base = dict(id="f00dfeedbeef" + "1" * 52, name=name, site=None, role=None, spec_hash=None,
                image_id=OLD_IMAGE_ID, status="running", started_at=500.0)
    return Observed(**{**base, **fields})


def world(specs=(), observed=(), roles=None, **fields) -> World:
    return World(site=SITE, desired={s.role: s for s in specs}, observed=tuple(observed), roles=roles or {},
                 **fields)


def targets(action) -> list[Observed]:
    """The containers an action touches."""
    if isinstance(action, Create):
        return [action.replace] if action.replace else []
    if isinstance(action, (Start, Restart, Remove)):
        return [action.container]
    return []


def action_roles(actions) -> list[str]:
    return [a.role for a in actions if isinstance(a, (Create, Start, Restart))]


# new_failures.

def test_an_exited_container_is_a_failure_with_its_exit_code_and_uptime():
    s = spec()
    holder = seen(s, status="exited", started_at=1000.0, finished_at=1012.5, exit_code=3)
    assert new_failures(world([s], [holder])) == [Failure("worker", holder.run, Cause.EXITED, 3, 12.5)]


def test_an_exit_code_zero_is_still_a_failure_for_a_long_running_service():
    s = spec()
    holder = seen(s, status="exited", finished_at=1001.0, exit_code=0)
    assert [f.cause for f in new_failures(world([s], [holder]))] == [Cause.EXITED]


def test_an_oom_killed_container_is_an_oom_failure():
    s = spec()
    holder = seen(s, status="exited", finished_at=1030.0, exit_code=137, oom_killed=True)
    assert new_failures(world([s], [holder])) == [Failure("worker", holder.run, Cause.OOM, 137, 30.0)]


def test_a_dead_container_is_a_failure():
    s = spec()
    holder = seen(s, status="dead", finished_at=1005.0, exit_code=1)
    assert [f.cause for f in new_failures(world([s], [holder]))] == [Cause.EXITED]


def test_uptime_is_unknown_when_the_engine_gave_no_times():
    s = spec()
    holder = seen(s, status="exited", started_at=None, finished_at=None, exit_code=1)
    assert new_failures(world([s], [holder]))[0].uptime is None


def test_a_run_already_counted_is_not_counted_twice():
    s = spec()
    holder = seen(s, status="exited", finished_at=1001.0, exit_code=1)
    assert new_failures(world([s], [holder], {"worker": RoleView(counted_run=holder.run)})) == []


def test_a_new_run_of_the_same_container_is_counted_again():
    s = spec()
    first = seen(s, status="exited", started_at=1000.0, finished_at=1001.0, exit_code=1)
    second = replace(first, started_at=2000.0, finished_at=2001.0)
    failures = new_failures(world([s], [second], {"worker": RoleView(counted_run=first.run)}))
    assert [f.run for f in failures] == [second.run]


@pytest.mark.parametrize("view", [RoleView(busy=True), RoleView(failed=True)], ids=["busy", "failed"])
def test_busy_and_failed_roles_are_skipped(view):
    s = spec()
    exited = seen(s, status="exited", finished_at=1001.0, exit_code=1)
    assert new_failures(world([s], [exited], {"worker": view})) == []
    gone = replace(view, last_container_id="old")
    assert new_failures(world([s], [], {"worker": gone})) == []


def test_a_running_container_the_engine_calls_unhealthy_is_an_unhealthy_failure():
    s = spec()
    holder = seen(s, health="unhealthy", started_at=1000.0)
    assert new_failures(world([s], [holder], wall_now=1090.0)) == [
        Failure("worker", holder.run, Cause.UNHEALTHY, None, 90.0)]


def test_a_run_the_daemon_probe_gave_up_on_is_an_unhealthy_failure():
    s = spec(probe=Probe("tcp", port=8000))
    holder = seen(s, health=None)
    view = RoleView(probe_unhealthy_run=holder.run, has_probe=True, probe_healthy=False)
    assert [f.cause for f in new_failures(world([s], [holder], {"worker": view}, wall_now=1100.0))] == [Cause.UNHEALTHY]


def test_a_probe_verdict_on_an_earlier_run_does_not_fail_the_current_run():
    s = spec(probe=Probe("tcp", port=8000))
    holder = seen(s, started_at=2000.0)
    view = RoleView(probe_unhealthy_run=Run(holder.id, 1000.0), has_probe=True)
    assert new_failures(world([s], [holder], {"worker": view})) == []


@pytest.mark.parametrize("health", [None, "starting", "healthy"])
def test_a_running_container_that_is_not_unhealthy_is_no_failure(health):
    s = spec()
    assert new_failures(world([s], [seen(s, health=health)])) == []


@pytest.mark.parametrize("status", ["created", "paused", "restarting", "removing"])
def test_containers_not_running_and_not_ended_are_no_failure(status):
    s = spec()
    assert new_failures(world([s], [seen(s, status=status, exit_code=1)])) == []


def test_a_container_removed_behind_our_back_is_a_removed_failure_once():
    s = spec()
    view = RoleView(last_container_id="abc123")
    failures = new_failures(world([s], [], {"worker": view}))
    assert failures == [Failure("worker", Run("abc123", gone=True), Cause.REMOVED)]
    counted = replace(view, counted_run=failures[0].run)
    assert new_failures(world([s], [], {"worker": counted})) == []


def test_a_container_renamed_by_a_reload_is_not_a_removed_failure_while_the_old_one_exists():
    s = spec(name="indico-worker-2")
    old = seen(spec(), id="old" + "0" * 61)  # still there under the name it had before the reload
    assert new_failures(world([s], [old], {"worker": RoleView(last_container_id=old.id)})) == []


def test_a_container_never_created_is_not_a_removed_failure():
    assert new_failures(world([spec()], [])) == []


def test_a_foreign_container_holding_the_name_is_never_a_failure():
    s = spec()
    squatter = foreign(s.name, status="exited", exit_code=1, finished_at=600.0)
    assert new_failures(world([s], [squatter], {"worker": RoleView(last_container_id="old")})) == []


def test_a_container_of_another_role_holding_the_name_is_not_this_role_failure():
    s = spec()
    other = seen(s, role="celery", status="exited", exit_code=1, finished_at=1001.0)
    assert new_failures(world([s], [other])) == []


def test_owned_containers_of_roles_no_longer_wanted_are_no_failure():
    old = spec("old")
    assert new_failures(world([spec()], [seen(old, status="exited", exit_code=1, finished_at=1001.0)])) == []


def test_failures_of_several_roles_are_all_reported():
    web, worker = spec("web"), spec("worker")
    observed = [seen(web, status="exited", exit_code=1, finished_at=1001.0), seen(worker, health="unhealthy")]
    assert {f.role: f.cause for f in new_failures(world([web, worker], observed))} == {
        "web": Cause.EXITED, "worker": Cause.UNHEALTHY}


# plan: adoption and creation.

def test_an_adopted_running_container_with_matching_hash_and_image_needs_no_action():
    s = spec()
    result = plan(world([s], [seen(s)]))
    assert result.actions == [] and result.blocked == {} and result.waiting == {}


def test_an_adopted_running_container_with_a_healthcheck_verdict_needs_no_action():
    s = spec()
    assert plan(world([s], [seen(s, health="healthy")])).actions == []
    assert plan(world([s], [seen(s, health="starting")])).actions == []


def test_a_missing_container_is_created():
    s = spec()
    assert plan(world([s], [])).actions == [Create("worker", s)]
    assert plan(world([s], [])).actions[0].reason == "missing"


def test_every_missing_container_is_created_at_once():
    specs = [spec("web"), spec("worker"), spec("celery")]
    assert plan(world(specs, [])).actions == [Create(s.role, s) for s in specs]


def test_a_container_with_a_different_spec_hash_is_recreated_as_changed():
    s = spec()
    old = seen(s, spec_hash="0" * 24)
    assert plan(world([s], [old])).actions == [Create("worker", s, replace=old, reason="changed")]


def test_a_container_on_a_different_image_id_is_recreated_as_changed():
    s = spec()
    old = seen(s, image_id=OLD_IMAGE_ID)
    assert plan(world([s], [old])).actions == [Create("worker", s, replace=old, reason="changed")]


def test_a_container_without_a_hash_label_is_recreated_as_changed():
    s = spec()
    old = seen(s, spec_hash=None)
    assert plan(world([s], [old])).actions == [Create("worker", s, replace=old, reason="changed")]


# plan: one changed running container at a time.

def test_only_one_changed_running_container_is_recreated_at_a_time():
    specs = [spec("web"), spec("worker"), spec("celery")]
    observed = [seen(s, spec_hash="stale") for s in specs]
    actions = plan(world(specs, observed)).actions
    assert actions == [Create("web", specs[0], replace=observed[0], reason="changed")]


def test_changed_containers_that_are_not_running_are_all_recreated_at_once():
    specs = [spec("web"), spec("worker"), spec("celery")]
    observed = [seen(s, spec_hash="stale", status="exited", exit_code=0) for s in specs]
    views = {s.role: RoleView(counted_run=o.run) for s, o in zip(specs, observed)}
    actions = plan(world(specs, observed, views)).actions
    assert [(a.role, a.reason) for a in actions] == [("web", "changed"), ("worker", "changed"), ("celery", "changed")]


def test_a_changed_running_container_waits_while_the_last_recreated_one_is_not_running():
    web, worker = spec("web"), spec("worker")
    observed = [seen(web, status="exited", exit_code=1), seen(worker, spec_hash="stale")]
    views = {"web": RoleView(counted_run=observed[0].run, due=False)}
    assert plan(world([web, worker], observed, views, rolling="web")).actions == []


@pytest.mark.parametrize("health", ["starting", "unhealthy"])
def test_a_changed_running_container_waits_while_the_last_recreated_one_is_not_healthy(health):
    web, worker = spec("web"), spec("worker")
    observed = [seen(web, health=health), seen(worker, spec_hash="stale")]
    views = {"web": RoleView(due=False)}
    assert action_roles(plan(world([web, worker], observed, views, rolling="web")).actions) == []


@pytest.mark.parametrize("probe_healthy", [None, False])
def test_a_changed_running_container_waits_while_the_last_recreated_one_fails_its_probe(probe_healthy):
    web, worker = spec("web", probe=Probe("tcp", port=8000)), spec("worker")
    observed = [seen(web), seen(worker, spec_hash="stale")]
    views = {"web": RoleView(has_probe=True, probe_healthy=probe_healthy)}
    assert plan(world([web, worker], observed, views, rolling="web")).actions == []


def test_a_changed_running_container_waits_while_the_last_recreated_one_is_missing():
    web, worker = spec("web"), spec("worker")
    observed = [seen(worker, spec_hash="stale")]
    views = {"web": RoleView(due=False, last_container_id="x", counted_run=Run("x", gone=True))}
    assert plan(world([web, worker], observed, views, rolling="web")).actions == []


@pytest.mark.parametrize("health, has_probe, probe_healthy", [
    (None, False, None), ("healthy", False, None), (None, True, True), ("healthy", True, True)])
def test_the_next_changed_container_is_recreated_once_the_last_one_is_ready(health, has_probe, probe_healthy):
    web, worker = spec("web"), spec("worker")
    observed = [seen(web, health=health), seen(worker, spec_hash="stale")]
    views = {"web": RoleView(has_probe=has_probe, probe_healthy=probe_healthy)}
    assert plan(world([web, worker], observed, views, rolling="web")).actions == [
        Create("worker", worker, replace=observed[1], reason="changed")]


def test_a_rollout_is_not_held_up_by_a_role_no_longer_in_the_site_file():
    worker = spec("worker")
    old = seen(worker, spec_hash="stale")
    assert plan(world([worker], [old], rolling="gone-role")).actions == [
        Create("worker", worker, replace=old, reason="changed")]


def test_missing_and_stopped_containers_are_not_held_up_by_a_rollout():
    web, worker, celery = spec("web"), spec("worker"), spec("celery")
    stopped = seen(celery, status="exited", exit_code=0)
    observed = [seen(web, health="starting"), stopped]
    views = {"celery": RoleView(counted_run=stopped.run)}
    actions = plan(world([web, worker, celery], observed, views, rolling="web")).actions
    assert actions == [Create("worker", worker), Start("celery", stopped)]


def test_a_changed_container_waits_while_another_changed_one_is_being_recreated():
    """The daemon marks `rolling` only once a recreate is done; until then the role is busy."""
    web, worker = spec("web"), spec("worker")
    old_web, old_worker = seen(web, spec_hash="stale"), seen(worker, spec_hash="stale")
    first = plan(world([web, worker], [old_web, old_worker])).actions
    assert action_roles(first) == ["web"]
    busy = {"web": RoleView(busy=True)}
    # The old web container is still there (being stopped), then gone (being replaced).
    assert plan(world([web, worker], [old_web, old_worker], busy)).actions == []
    assert plan(world([web, worker], [old_worker], busy)).actions == []


def test_a_busy_rolling_role_is_not_ready_even_while_its_old_container_still_runs():
    web, worker = spec("web"), spec("worker")
    old_web, old_worker = seen(web, spec_hash="stale"), seen(worker, spec_hash="stale")
    views = {"web": RoleView(busy=True)}
    assert not ready(world([web, worker], [old_web, old_worker], views), "web")
    assert plan(world([web, worker], [old_web, old_worker], views, rolling="web")).actions == []


def test_a_changed_container_waits_while_the_rolling_role_is_being_restarted():
    web, worker = spec("web"), spec("worker")
    observed = [seen(web, health="healthy"), seen(worker, spec_hash="stale")]
    assert plan(world([web, worker], observed, {"web": RoleView(busy=True)}, rolling="web")).actions == []


def test_a_changed_container_of_the_rolling_role_that_is_counted_unhealthy_is_recreated():
    """A reload that fixes the last rolled-out container must not wait for that very container."""
    web, worker = spec("web"), spec("worker")
    broken = seen(web, spec_hash="stale", health="unhealthy")
    views = {"web": RoleView(counted_run=broken.run)}
    actions = plan(world([web, worker], [broken, seen(worker)], views, rolling="web")).actions
    assert actions == [Create("web", web, replace=broken, reason="changed")]


def test_a_changed_unhealthy_container_is_recreated_without_waiting_for_the_rollout():
    web, worker = spec("web"), spec("worker")
    broken = seen(worker, spec_hash="stale", health="unhealthy")
    observed = [seen(web, health="starting"), broken]
    views = {"worker": RoleView(counted_run=broken.run)}
    assert plan(world([web, worker], observed, views, rolling="web")).actions == [
        Create("worker", worker, replace=broken, reason="changed")]


# plan: starts and restarts.

@pytest.mark.parametrize("status", ["exited", "created"])
def test_an_exited_or_created_container_is_started(status):
    s = spec()
    holder = seen(s, status=status, exit_code=1)
    assert plan(world([s], [holder], {"worker": RoleView(counted_run=holder.run)})).actions == [Start("worker", holder)]


def test_a_container_the_engine_refused_to_start_is_replaced_not_started_again():
    s = spec()
    holder = seen(s, status="exited", exit_code=0)
    refused = RoleView(counted_run=holder.run, refused_container=holder.id)
    assert plan(world([s], [holder], {"worker": refused})).actions == [Create("worker", s, replace=holder, reason="refused")]
    other = RoleView(counted_run=holder.run, refused_container="some-older-container")
    assert plan(world([s], [holder], {"worker": other})).actions == [Start("worker", holder)]


def test_a_running_container_whose_run_was_counted_is_restarted():
    s = spec()
    holder = seen(s, health="unhealthy")
    assert plan(world([s], [holder], {"worker": RoleView(counted_run=holder.run)})).actions == [
        Restart("worker", holder)]


def test_a_running_container_whose_earlier_run_was_counted_is_left_alone():
    s = spec()
    holder = seen(s, started_at=2000.0)
    assert plan(world([s], [holder], {"worker": RoleView(counted_run=Run(holder.id, 1000.0))})).actions == []


def test_a_dead_container_is_recreated():
    s = spec()
    holder = seen(s, status="dead")
    assert plan(world([s], [holder], {"worker": RoleView(counted_run=holder.run)})).actions == [
        Create("worker", s, replace=holder, reason="dead")]


@pytest.mark.parametrize("status", ["paused", "restarting", "removing"])
def test_a_container_the_engine_is_busy_with_is_left_alone(status):
    s = spec()
    assert plan(world([s], [seen(s, status=status)])).actions == []


@pytest.mark.parametrize("view", [RoleView(due=False), RoleView(failed=True), RoleView(busy=True)],
                         ids=["backing-off", "failed", "busy"])
@pytest.mark.parametrize("observed", ["missing", "exited", "unhealthy", "dead", "changed"])
def test_nothing_is_done_for_a_role_backing_off_failed_or_busy(view, observed):
    s = spec()
    holder = {"missing": None, "exited": seen(s, status="exited", exit_code=1),
              "unhealthy": seen(s, health="unhealthy"), "dead": seen(s, status="dead"),
              "changed": seen(s, spec_hash="stale")}[observed]
    if holder is not None:
        view = replace(view, counted_run=holder.run)
    result = plan(world([s], [holder] if holder else [], {"worker": view}))
    assert result.actions == [] and result.blocked == {}


def test_a_role_is_acted_on_again_once_its_backoff_is_due():
    s = spec()
    holder = seen(s, status="exited", exit_code=1)
    assert plan(world([s], [holder], {"worker": RoleView(counted_run=holder.run, due=True)})).actions == [
        Start("worker", holder)]


# plan: names held by others.

def test_a_foreign_container_holding_the_name_blocks_the_role_with_a_message_naming_the_name():
    s = spec()
    squatter = foreign(s.name)
    result = plan(world([s], [squatter]))
    assert list(result.blocked) == ["worker"]
    assert s.name in result.blocked["worker"]
    assert squatter.id[:12] in result.blocked["worker"]
    assert result.actions == []


@pytest.mark.parametrize("status", ["running", "exited", "created", "dead", "paused"])
def test_a_foreign_container_is_never_acted_on_whatever_its_state(status):
    s = spec()
    squatter = foreign(s.name, status=status, exit_code=1, health="unhealthy")
    view = RoleView(counted_run=squatter.run, last_container_id="old")
    result = plan(world([s], [squatter, foreign("someone-else", id="e" * 64)], {"worker": view}))
    assert result.actions == []
    assert "worker" in result.blocked


def test_a_container_of_another_site_is_foreign():
    s = spec()
    other = seen(s, site="other-site")
    result = plan(world([s], [other]))
    assert result.actions == [] and "worker" in result.blocked


def test_a_blocked_role_is_reported_even_while_busy_or_failed():
    s = spec()
    for view in (RoleView(busy=True), RoleView(failed=True), RoleView(due=False)):
        assert "worker" in plan(world([s], [foreign(s.name)], {"worker": view})).blocked


def test_a_name_held_by_an_owned_container_of_another_role_waits_for_it_to_be_removed():
    web = spec("web", name="indico-app")
    mislabelled = seen(web, role="old-web")
    result = plan(world([web], [mislabelled]))
    assert result.actions == [Remove(mislabelled)]
    assert "indico-app" in result.waiting["web"]


# plan: removals.

def test_an_owned_container_of_a_role_no_longer_in_the_site_file_is_removed():
    worker, gone = spec("worker"), spec("celery")
    stale = seen(gone)
    assert plan(world([worker], [seen(worker), stale])).actions == [Remove(stale)]


@pytest.mark.parametrize("status", ["running", "exited", "created", "dead"])
def test_owned_containers_of_undesired_roles_are_removed_in_any_state(status):
    stale = seen(spec("celery"), status=status)
    assert plan(world([], [stale])).actions == [Remove(stale)]


def test_an_owned_container_under_a_wrong_name_is_removed_and_the_right_one_created():
    s = spec()
    renamed = seen(s, name="indico-worker-old")
    assert plan(world([s], [renamed])).actions == [Create("worker", s), Remove(renamed)]


def test_an_owned_container_already_being_removed_is_not_removed_again():
    stale = seen(spec("celery"))
    assert plan(world([], [stale], busy_containers=frozenset({stale.id}))).actions == []


def test_a_foreign_container_is_never_removed():
    strangers = [foreign("postgres", id="a" * 64), foreign("indico-celery", id="b" * 64, role="celery"),
                 foreign("x", id="c" * 64, site="another-site", role="worker")]
    assert plan(world([spec()], [seen(spec())] + strangers)).actions == []


# plan: images.

def test_each_image_is_resolved_once_with_the_most_eager_pull_policy():
    specs = [spec("web", image="indico:3.3", pull="never"), spec("worker", image="indico:3.3", pull="always"),
             spec("celery", image="indico:3.3", pull="missing"), spec("redis", image="redis:7", pull="missing")]
    due = frozenset({"indico:3.3", "redis:7"})
    resolves = [a for a in plan(world(specs, [seen(s) for s in specs], images_due=due)).actions
                if isinstance(a, ResolveImage)]
    assert sorted(resolves, key=lambda a: a.image) == [ResolveImage("indico:3.3", "always"),
                                                        ResolveImage("redis:7", "missing")]


@pytest.mark.parametrize("pulls, eager", [(("never", "missing"), "missing"), (("missing", "never"), "missing"),
                                          (("never", "never"), "never"), (("always", "never"), "always")])
def test_the_most_eager_pull_wins_whatever_the_order(pulls, eager):
    specs = [spec(f"r{i}", image="indico:3.3", pull=p) for i, p in enumerate(pulls)]
    actions = plan(world(specs, [seen(s) for s in specs], images_due=frozenset({"indico:3.3"}))).actions
    assert actions == [ResolveImage("indico:3.3", eager)]


def test_an_image_is_not_resolved_while_it_is_being_resolved():
    s = spec(image="indico:3.3")
    w = world([s], [seen(s)], images_due=frozenset({"indico:3.3"}), images_busy=frozenset({"indico:3.3"}))
    assert plan(w).actions == []


def test_an_image_is_not_resolved_unless_due():
    s = spec(image="indico:3.3")
    assert plan(world([s], [seen(s)])).actions == []


def test_roles_wait_while_their_image_is_not_resolved():
    s = spec(image="indico:3.3", image_id=None)
    result = plan(world([s], [], images_due=frozenset({"indico:3.3"})))
    assert result.actions == [ResolveImage("indico:3.3", "missing")]
    assert "indico:3.3" in result.waiting["worker"]


def test_a_running_container_is_left_alone_while_its_image_is_re_resolved():
    s = spec(image="indico:3.3", image_id=None)
    running = seen(spec(image="indico:3.3"))
    result = plan(world([s], [running], images_busy=frozenset({"indico:3.3"})))
    assert result.actions == []
    assert "worker" in result.waiting


# ready.

def test_ready_means_running_owned_and_healthy_by_every_check():
    s = spec(probe=Probe("tcp", port=8000))
    holder = seen(s)
    checked = {"worker": RoleView(has_probe=True, probe_healthy=True)}
    assert ready(world([s], [holder], checked), "worker")
    assert ready(world([s], [replace(holder, health="healthy")], checked), "worker")
    assert not ready(world([s], [replace(holder, health="starting")], checked), "worker")
    assert not ready(world([s], [replace(holder, status="exited")], checked), "worker")
    assert not ready(world([s], [replace(holder, site=None)], checked), "worker")
    assert not ready(world([s], [holder], {"worker": RoleView(has_probe=True, probe_healthy=None)}), "worker")
    assert not ready(world([s], [], checked), "worker")
    assert not ready(world([s], [holder], checked), "unknown-role")


# Properties.

ROLES = ("web", "worker", "celery")
NAMES = ("indico-web", "indico-worker", "indico-celery", "indico-old", "postgres")
STATUSES = ("created", "running", "exited", "dead", "paused", "restarting", "removing")
SPECS = {role: spec(role) for role in ROLES}


@st.composite
def observed_sets(draw):
    names = draw(st.lists(st.sampled_from(NAMES), unique=True))
    containers = []
    for i, name in enumerate(names):
        role = draw(st.sampled_from((None, "old") + ROLES))
        matching = SPECS.get(role)
        containers.append(Observed(
            id=f"{i:02d}" + "c" * 62, name=name,
            site=draw(st.sampled_from((SITE, SITE, None, "other-site"))), role=role,
            spec_hash=draw(st.sampled_from((matching.hash if matching else None, "stale", None))),
            image_id=draw(st.sampled_from((IMAGE_ID, OLD_IMAGE_ID))), status=draw(st.sampled_from(STATUSES)),
            started_at=draw(st.sampled_from((None, 1000.0, 2000.0))), health=draw(
                st.sampled_from((None, "starting", "healthy", "unhealthy"))),
            exit_code=draw(st.sampled_from((None, 0, 1, 137))), oom_killed=draw(st.booleans())))
    return containers


@st.composite
def worlds(draw):
    observed = draw(observed_sets())
    runs = [o.run for o in observed] + [None, Run("x", gone=True)]
    desired = {}
    for role in draw(st.lists(st.sampled_from(ROLES), unique=True)):
        desired[role] = replace(SPECS[role], image_id=draw(st.sampled_from((IMAGE_ID, IMAGE_ID, None))))
    roles = {role: RoleView(busy=draw(st.booleans()), failed=draw(st.booleans()), due=draw(st.booleans()),
                            counted_run=draw(st.sampled_from(runs)), last_container_id=draw(st.sampled_from((None, "x"))),
                            probe_unhealthy_run=draw(st.sampled_from(runs)),
                            probe_healthy=draw(st.sampled_from((None, True, False))), has_probe=draw(st.booleans()))
             for role in draw(st.lists(st.sampled_from(ROLES), unique=True))}
    return World(site=SITE, desired=desired, observed=tuple(observed), roles=roles,
                 busy_containers=frozenset(draw(st.lists(st.sampled_from([o.id for o in observed] or ["none"])))),
                 rolling=draw(st.sampled_from((None,) + ROLES + ("gone",))), wall_now=5000.0,
                 images_due=frozenset(draw(st.lists(st.just("indico:latest")))))


@settings(max_examples=500, deadline=None)
@given(worlds())
def test_no_action_ever_targets_a_container_whose_site_is_not_ours(w):
    for action in plan(w).actions:
        for target in targets(action):
            assert target.site == SITE, action


@settings(max_examples=250, deadline=None)
@given(worlds())
def test_every_role_gets_at_most_one_action_and_busy_or_blocked_roles_none(w):
    result = plan(w)
    roles = action_roles(result.actions)
    assert len(roles) == len(set(roles))
    for role in roles:
        assert not w.role(role).busy and not w.role(role).failed and w.role(role).due
        assert role not in result.blocked
    for role, s in w.desired.items():
        holder = w.holder(s.name)
        assert (role in result.blocked) == (holder is not None and not w.owns(holder))


@settings(max_examples=250, deadline=None)
@given(worlds())
def test_a_plan_takes_down_at_most_one_serving_container_for_a_change(w):
    """Serving: running, and its run not counted as a failure (an unhealthy run serves nothing)."""
    recreated = [a for a in plan(w).actions if isinstance(a, Create) and a.reason == "changed"
                 and a.replace.running and w.role(a.role).counted_run != a.replace.run]
    assert len(recreated) <= 1


@settings(max_examples=250, deadline=None)
@given(worlds())
def test_no_serving_container_is_recreated_for_a_change_while_a_role_is_busy_being_replaced(w):
    in_flight = any(w.role(r).busy and (w.holder(s.name) is None or w.holder(s.name).spec_hash != s.hash
                                        or w.holder(s.name).image_id != s.image_id)
                    for r, s in w.desired.items())
    if in_flight:
        assert not [a for a in plan(w).actions if isinstance(a, Create) and a.reason == "changed"
                    and a.replace.running and w.role(a.role).counted_run != a.replace.run]


@settings(max_examples=250, deadline=None)
@given(worlds())
def test_removals_never_touch_containers_already_busy_and_actions_name_the_role_container(w):
    for action in plan(w).actions:
        if isinstance(action, Remove):
            assert action.container.id not in w.busy_containers
        elif isinstance(action, (Start, Restart)):
            assert action.container.name == w.desired[action.role].name
            assert action.container.role == action.role
        elif isinstance(action, Create):
            assert action.spec == w.desired[action.role] and action.spec.image_id is not None


@settings(max_examples=250, deadline=None)
@given(worlds())
def test_failures_are_only_found_for_owned_containers_of_free_roles(w):
    for failure in new_failures(w):
        view = w.role(failure.role)
        assert not view.busy and not view.failed and failure.run != view.counted_run
        holder = w.holder(w.desired[failure.role].name)
        if failure.cause is Cause.REMOVED:
            assert holder is None
        else:
            assert holder is not None and w.owns(holder) and holder.run == failure.run
