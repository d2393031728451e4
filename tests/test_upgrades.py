"""The upgrade gate replayed: a new Indico image's upgrade jobs run once, before worker and celery are recreated.

No engine: the ledger is driven as the daemon's loop drives it (`test_ledger.Replay`),
with worker and celery found running on an older image than their reference resolves to.
"""
from __future__ import annotations

from dataclasses import replace

from supervisor.inbox import Resynced
from supervisor.plan import Create, ResolveImage, Restart, Resync, RunUpgrade, Start
from supervisor.spec import ContainerSpec
from supervisor.status import State, status_line
from supervisor.upgrade_settings import DEFAULT_COMMANDS, UpgradeSettings
from supervisor.upgrades import UpgradeJobStarted, UpgradeResult
from tests.test_ledger import IMAGE_ID, Replay, container, only, site

OLD_ID = "sha256:" + "01" * 32
NEWER_ID = "sha256:" + "02" * 32


def indico_site(**changes):
    db = container("db", image="postgres:15", command=None)
    return site(container("worker", depends_on=(("db", "healthy"),)), container("celery"), db, **changes)


def on_image(r: Replay, role: str, image_id: str, the_site=None, **changes):
    c = (the_site or indico_site()).container(role)
    return r.observed(c, spec_hash=ContainerSpec("prod", c, image_id).hash, image_id=image_id, **changes)


def old_site_running(r: Replay, **changes) -> list:
    """A daemon (re)start that finds worker and celery on the old image and db running; returns the next actions."""
    the_site = r.ledger.site
    return r.start_up(on_image(r, "worker", OLD_ID, the_site, **changes),
                      on_image(r, "celery", OLD_ID, the_site), r.observed(the_site.container("db")))


def step_resolving(r: Replay, image_id: str) -> list:
    """Like `Replay.step`, but the image reference now resolves to `image_id`."""
    rest = []
    while True:
        answered = False
        for action in r.tick():
            if isinstance(action, Resync):
                r.done(action, Resynced(tuple(r.ledger.observed.values()), r.t))
                answered = True
            elif isinstance(action, ResolveImage):
                r.done(action, (image_id if action.image == "indico-worker:latest" else IMAGE_ID, None))
                answered = True
            else:
                rest.append(action)
        if not answered:
            return rest


def failed(command: str = "indico db upgrade", exit_code: int = 1, **changes) -> UpgradeResult:
    return UpgradeResult(0, command, exit_code, output=("INFO  [alembic] running", "ERROR: relation missing"),
                         **changes)


def test_a_first_start_runs_no_upgrade():
    r = Replay(indico_site())
    found = r.start_up()
    assert not [a for a in found if isinstance(a, RunUpgrade)]
    assert {a.role for a in found if isinstance(a, Create)} == {"db", "celery"}  # the worker waits for db


def test_containers_on_an_older_image_run_the_upgrade_jobs_once_then_worker_and_celery_are_recreated():
    r = Replay(indico_site())
    found = old_site_running(r)
    upgrade = only(found, RunUpgrade)
    assert found == [upgrade]  # nothing is recreated before the jobs pass
    assert (upgrade.image_id, upgrade.role, upgrade.commands) == (IMAGE_ID, "worker", DEFAULT_COMMANDS)
    assert r.state("worker") is State.UPGRADING and r.state("celery") is State.UPGRADING
    assert r.state("db") is State.RUNNING
    r.later(5)
    assert r.step() == []  # one upgrade at a time; the old containers serve meanwhile
    r.done(upgrade, UpgradeResult(2))
    recreated = []
    for _ in range(2):  # one changed container at a time
        create = only(r.step(), Create)
        assert create.reason == "changed" and create.spec.image_id == IMAGE_ID
        recreated.append(create.role)
        r.complete(create, create.spec.container)
    assert sorted(recreated) == ["celery", "worker"]
    r.later(60)
    assert r.step() == []
    assert r.names().count("upgrade_started") == 1 and r.names().count("upgrade_finished") == 1
    assert r.state("worker") is State.RUNNING


def test_the_status_line_shows_the_job_that_runs():
    r = Replay(indico_site())
    upgrade = only(old_site_running(r), RunUpgrade)
    statuses, _ = r.ledger.statuses(r.now())
    assert "worker upgrading: indico db upgrade" in status_line(statuses, r.now().wall)
    r.record(r.ledger.upgrade_job_started(UpgradeJobStarted(upgrade.image_id, 1, DEFAULT_COMMANDS[1])))
    statuses, _ = r.ledger.statuses(r.now())
    worker = next(s for s in statuses if s.role == "worker")
    assert worker.detail == "upgrading: indico db --all-plugins upgrade"
    assert worker.upgrade == {"image_id": IMAGE_ID, "state": "running", "command": "indico db --all-plugins upgrade"}


def test_a_failed_upgrade_job_keeps_the_old_containers_and_is_not_tried_again_across_resyncs():
    r = Replay(indico_site())
    upgrade = only(old_site_running(r), RunUpgrade)
    r.done(upgrade, failed())
    error = next(e for e in r.events if e.name == "upgrade_failed")
    assert error.level == "error" and "ERROR: relation missing" in error.fields["output"]
    for _ in range(5):
        r.later(40)  # past the resync period each time
        assert r.step() == []
    assert r.state("worker") is State.UPGRADE_FAILED and r.state("celery") is State.UPGRADE_FAILED
    statuses, _ = r.ledger.statuses(r.now())
    worker = next(s for s in statuses if s.role == "worker")
    assert "`indico db upgrade` exited 1" in worker.detail and "ERROR: relation missing" in worker.detail
    assert worker.upgrade["output"][-1] == "ERROR: relation missing" and worker.upgrade["exit_code"] == 1
    assert worker.container_id  # the old container is the one shown: it still serves


def test_a_reload_tries_a_failed_upgrade_again():
    r = Replay(indico_site())
    r.done(only(old_site_running(r), RunUpgrade), failed())
    r.record(r.ledger.reload(indico_site()))
    again = only(r.step(), RunUpgrade)
    assert again.image_id == IMAGE_ID


def test_a_newer_image_after_a_failed_upgrade_runs_its_own_upgrade():
    r = Replay(indico_site())
    r.done(only(old_site_running(r), RunUpgrade), failed())
    r.ledger.images["indico-worker:latest"].stale = True  # as `pull: always` at the next resolution
    upgrade = only(step_resolving(r, NEWER_ID), RunUpgrade)
    assert upgrade.image_id == NEWER_ID
    assert r.state("worker") is State.UPGRADING


def test_a_timed_out_job_is_a_failed_upgrade_that_says_so():
    r = Replay(indico_site(upgrade=UpgradeSettings(commands=(("sleep", "1000"),), timeout=2.0)))
    upgrade = only(old_site_running(r), RunUpgrade)
    assert upgrade.timeout == 2.0 and upgrade.commands == (("sleep", "1000"),)
    r.done(upgrade, failed("sleep 1000", exit_code=137, timed_out=True))
    statuses, _ = r.ledger.statuses(r.now())
    worker = next(s for s in statuses if s.role == "worker")
    assert worker.state is State.UPGRADE_FAILED and "timed out after 2s (killed)" in worker.detail


def test_an_old_container_that_exits_while_held_is_started_again_as_it_is():
    r = Replay(indico_site())
    found = old_site_running(r)
    upgrade = only(found, RunUpgrade)
    r.done(upgrade, failed())
    worker = next(c for c in r.ledger.observed.values() if c.role == "worker")
    r.exited(worker)
    start = only(r.step(), Start)
    assert start.container.id == worker.id and start.container.image_id == OLD_ID
    r.complete(start, r.ledger.site.container("worker"))
    assert not [a for a in r.step() if isinstance(a, (Create, RunUpgrade))]


def test_an_unhealthy_old_container_while_held_is_restarted_not_recreated():
    r = Replay(indico_site())
    r.done(only(old_site_running(r), RunUpgrade), failed())
    worker = next(c for c in r.ledger.observed.values() if c.role == "worker")
    r.later(1)
    r.see(replace(worker, health="unhealthy", observed_at=r.t))
    assert only(r.step(), Restart).container.id == worker.id


def test_the_upgrade_waits_until_the_workers_dependencies_hold():
    r = Replay(indico_site())
    the_site = r.ledger.site
    found = r.start_up(on_image(r, "worker", OLD_ID), on_image(r, "celery", OLD_ID))  # no db yet
    assert not [a for a in found if isinstance(a, RunUpgrade)]
    db_create = only(found, Create)
    assert db_create.role == "db"
    assert r.state("worker") is State.UPGRADING
    assert r.ledger.statuses(r.now())[0][0].detail == "upgrade due; waiting for db (not created)"
    r.complete(db_create, the_site.container("db"))
    assert only(r.step(), RunUpgrade).image_id == IMAGE_ID


def test_no_upgrade_commands_recreate_on_the_new_image_at_once():
    r = Replay(indico_site(upgrade=UpgradeSettings(commands=())))
    found = old_site_running(r)
    assert not [a for a in found if isinstance(a, RunUpgrade)]
    assert only(found, Create).reason == "changed"


def test_an_engine_refusing_the_job_fails_the_upgrade_but_an_engine_gone_does_not():
    r = Replay(indico_site())
    upgrade = only(old_site_running(r), RunUpgrade)
    r.fail(upgrade, "engine away", unreachable=True)
    assert r.state("worker") is State.UPGRADING and "upgrade_failed" not in r.names()
    r.later(3)
    upgrade = only(r.step(), RunUpgrade)  # the resync that follows brings it again
    r.fail(upgrade, "No such image: sha256:…")
    assert r.state("worker") is State.UPGRADE_FAILED
    assert "No such image" in next(e for e in r.events if e.name == "upgrade_failed").fields["reason"]


def test_a_role_with_its_own_image_is_not_held():
    other = container("celery", image="indico-celery:custom")
    r = Replay(site(container("worker"), other))
    the_site = r.ledger.site
    found = r.start_up(on_image(r, "worker", OLD_ID, the_site), on_image(r, "celery", OLD_ID, the_site))
    assert only(found, RunUpgrade).image_id == IMAGE_ID
    assert only(found, Create).role == "celery"


def test_a_failed_upgrade_makes_the_monitoring_check_critical():
    from supervisor.check import CRITICAL, check

    rows = [{"role": "worker", "state": "upgrade_failed"}, {"role": "celery", "state": "upgrading"}]
    code, text = check({"updated_at": 1000.0, "containers": rows}, alive=True, now=1001.0)
    assert code == CRITICAL and "worker upgrade_failed" in text


def test_a_held_role_whose_container_is_gone_waits_instead_of_being_created_on_the_new_image():
    r = Replay(indico_site())
    r.done(only(old_site_running(r), RunUpgrade), failed())
    celery = next(c for c in r.ledger.observed.values() if c.role == "celery")
    r.gone(celery.id)
    assert not [a for a in r.step() if isinstance(a, Create)]
    assert r.state("celery") is State.UPGRADE_FAILED
    r.record(r.ledger.reload(indico_site()))
    upgrade = only(r.step(), RunUpgrade)
    r.done(upgrade, UpgradeResult(2))
    creates = [a for a in r.step() if isinstance(a, Create)]
    assert {(a.role, a.spec.image_id) for a in creates} >= {("celery", IMAGE_ID)}


def test_a_cluster_upgrade_waiting_its_turn_says_for_whom_and_one_done_elsewhere_counts_as_passed():
    r = Replay(indico_site())
    upgrade = only(old_site_running(r), RunUpgrade)
    r.record(r.ledger.upgrade_waiting(upgrade.image_id, "waiting for the upgrade host-a runs"))
    statuses, _ = r.ledger.statuses(r.now())
    assert "worker upgrading: waiting for the upgrade host-a runs" in status_line(statuses, r.now().wall)
    r.done(upgrade, UpgradeResult(0, done_by="host-a"))  # host-a ran the jobs for this image
    assert only(r.step(), Create).spec.image_id == IMAGE_ID
    [finished] = [e for e in r.events if e.name == "upgrade_finished"]
    assert finished.fields["done_by"] == "host-a"
