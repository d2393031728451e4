"""A site is a graph: depends_on, waiting instead of failing, cooldown, named volumes. No engine here.

The config checks run through the real CLI (exit status 2, key paths); the runtime
rules replay message sequences through the ledger, as tests/test_ledger.py does.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from supervisor.cli import main
from supervisor.config import load_site
from supervisor.model import Bind, Healthcheck, Network, RestartPolicy, Site
from supervisor.plan import Create, Restart, Start, unmet_dependencies
from supervisor.spec import ContainerSpec, spec_hash
from supervisor.status import State, status_line
from tests.test_ledger import IMAGE_ID, POLICY, Replay, container, only


def write(tmp_path, containers: str, top: str = "") -> str:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "scratch").mkdir(exist_ok=True)
    file = tmp_path / "site.yaml"
    file.write_text(f'user: "1000:1000"\nvolumes: {{data: {tmp_path}/data, scratch: {tmp_path}/scratch}}\n'
                    f"{top}containers:\n{containers}")
    return str(file)


# The site file.

@pytest.mark.parametrize("containers, key, words", [
    ("  worker: {depends_on: {db: healthy}}\n  db: {image: pg, command: [pg], depends_on: [worker]}\n",
     "containers.worker.depends_on.db", "worker -> db -> worker"),
    ("  worker: {depends_on: [nope]}\n", "containers.worker.depends_on.nope", "no such role"),
    ("  worker: {depends_on: [db]}\n  db: {image: pg, command: [pg], enabled: false}\n",
     "containers.worker.depends_on.db", "disabled"),
    ("  worker: {depends_on: {worker: started}}\n", "containers.worker.depends_on.worker", "itself"),
    ("  worker: {depends_on: {db: ready}}\n  db: {image: pg, command: [pg]}\n",
     "containers.worker.depends_on.db", "started"),
])
def test_a_bad_dependency_exits_2_with_its_key_path(tmp_path, capsys, containers, key, words):
    assert main(["check-config", "--config", write(tmp_path, containers)]) == 2
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if key in line)
    assert words in line


def test_check_config_prints_the_start_order(tmp_path, capsys):
    containers = ("  worker: {depends_on: {db: healthy, redis: started}}\n"
                  "  celery: {depends_on: [db, redis]}\n"
                  "  web: {image: nginx, command: [nginx], depends_on: {worker: healthy}}\n"
                  "  redis: {image: redis, command: [redis-server]}\n"
                  "  db: {image: pg, command: [pg]}\n")
    assert main(["check-config", "--config", write(tmp_path, containers)]) == 0
    out = capsys.readouterr().out
    assert "start order: redis -> db -> worker -> celery -> web (stopped in reverse)" in out


def test_a_list_of_roles_means_started_and_a_mapping_says_which(tmp_path):
    site = load_site(write(tmp_path, "  worker: {depends_on: {db: healthy}}\n  celery: {depends_on: [db]}\n"
                                     "  db: {image: pg, command: [pg]}\n"))
    assert site.container("worker").depends_on == (("db", "healthy"),)
    assert site.container("celery").depends_on == (("db", "started"),)


def test_indico_binds_go_only_to_roles_that_run_indico(tmp_path):
    site = load_site(write(tmp_path, "  worker: {}\n  tool: {image: indico-worker:latest, command: [indico, shell]}\n"
                                     "  db: {image: pg, command: [pg], volumes: {extra: [\"pgdata:/var/lib/postgresql/data\"]}}\n"))
    indico = {b.target for b in site.container("worker").binds}
    assert indico == {"/opt/indico/data", "/opt/indico/scratch"}
    assert {b.target for b in site.container("tool").binds} == indico  # the site image: Indico
    assert site.container("db").binds == (Bind("pgdata", "/var/lib/postgresql/data", named=True),)


def test_a_named_volume_is_a_volume_mount_and_hashes_apart_from_a_host_bind():
    db = container("db", binds=(Bind("pgdata", "/var/lib/postgresql/data", named=True),))
    assert ContainerSpec("prod", db, IMAGE_ID).create_kwargs()["mounts"] == [
        {"Type": "volume", "Source": "pgdata", "Target": "/var/lib/postgresql/data", "ReadOnly": False}]
    assert spec_hash(db, IMAGE_ID) != spec_hash(replace(db, binds=(replace(db.binds[0], named=False),)), IMAGE_ID)


def test_depends_on_and_cooldown_change_no_container(tmp_path):
    plain = container()
    assert spec_hash(replace(plain, depends_on=(("db", "healthy"),)), IMAGE_ID) == spec_hash(plain, IMAGE_ID)
    assert spec_hash(replace(plain, restart=replace(POLICY, cooldown=None)), IMAGE_ID) == spec_hash(plain, IMAGE_ID)


def test_cooldown_never_keeps_failed_until_a_reload(tmp_path):
    site = load_site(write(tmp_path, "  worker: {restart: {cooldown: never}}\n  celery: {restart: {cooldown: 30s}}\n"))
    assert site.container("worker").restart.cooldown is None
    assert site.container("celery").restart.cooldown == 30.0
    assert RestartPolicy().cooldown == 600.0


# Waiting for dependencies: the planner and the ledger.

DB = container("db", healthcheck=Healthcheck(("CMD", "pg_isready")))
WORKER = container("worker", depends_on=(("db", "healthy"),))


def graph_site(*containers) -> Site:
    return Site(path="site.yaml", name="prod", containers=containers or (DB, WORKER))


def test_a_dependent_is_not_created_until_its_dependency_is_healthy():
    r = Replay(graph_site())
    create_db = only(r.start_up(), Create)
    assert create_db.role == "db"
    db = r.complete(create_db, DB)
    r.see(replace(db, health="starting", observed_at=r.t))  # its HEALTHCHECK has not passed yet
    assert r.step() == []
    assert r.state("worker") is State.WAITING
    assert unmet_dependencies(r.ledger.world(r.now())) == {"worker": "db (starting)"}
    r.see(replace(db, health="healthy", observed_at=r.t))
    assert only(r.step(), Create).role == "worker"


def test_an_outage_of_the_dependency_is_waited_out_never_failed_and_ends_in_one_restart():
    r = Replay(graph_site())
    db = r.observed(DB, health="healthy")
    worker = r.observed(WORKER)
    assert r.start_up(db, worker) == []
    r.exited(db)  # the database goes away...
    found = r.step()
    assert only(found, Start).role == "db"  # ...and is restarted, but stays down a long while
    r.fail(found[0], "driver failed: no space left on device")
    worker = r.exited(worker)  # Indico cannot live without its database
    for _ in range(POLICY.max_restarts * 3):  # long enough for a crash loop many times over
        for action in r.step():
            assert action.role == "db"
            r.fail(action, "driver failed: no space left on device")
        assert r.state("worker") is State.WAITING
        r.later(POLICY.max_backoff)
    assert r.ledger.roles["worker"].tracker.total == 0
    assert "container_failed" not in r.names()
    assert r.names().count("container_waiting") == 1
    r.later(POLICY.max_backoff)
    (bring_back_db,) = r.step()  # the engine refused to start the old one: a fresh container
    db = r.complete(bring_back_db, DB)
    r.see(replace(db, health="healthy", observed_at=r.t))
    start_worker = only(r.step(), Start)  # at once: no backoff for failures that were not its own
    assert start_worker.role == "worker"
    r.complete(start_worker, WORKER)
    assert r.step() == []
    assert r.state("worker") is State.RUNNING
    assert r.names().count("container_waiting_ended") == 1


def test_a_running_dependent_is_left_running_while_its_dependency_is_down():
    r = Replay(graph_site())
    db, worker = r.observed(DB, health="healthy"), r.observed(WORKER)
    r.start_up(db, worker)
    r.exited(db)
    assert all(a.role == "db" for a in r.step())
    assert r.state("worker") is State.RUNNING


def test_the_status_line_says_what_a_role_waits_for():
    r = Replay(graph_site())
    db = r.complete(only(r.start_up(), Create), DB)
    r.see(replace(db, health="starting", observed_at=r.t))
    r.step()
    statuses, _ = r.ledger.statuses(r.now())
    assert "worker waiting for db (starting)" in status_line(statuses, r.now().wall)
    assert not r.ledger.settled(statuses)  # the db is on its way up: READY=1 waits


def test_a_linked_dependency_recreated_recreates_its_dependent_once_and_dns_touches_nothing():
    linked = replace(WORKER, network=Network(links=(("indico-db", "indico-db"),)))
    for worker_config, restarts in ((linked, 1), (replace(WORKER, network=Network(name="indico")), 0)):
        r = Replay(graph_site(DB, worker_config))
        r.complete(only(r.start_up(), Create), DB)
        r.see(replace(r.ledger.observed[next(iter(r.ledger.observed))], health="healthy", observed_at=r.t))
        r.complete(only(r.step(), Create), worker_config)
        changed_db = replace(DB, env=(("PGTZ", "UTC"),))
        r.later(1)
        r.record(r.ledger.reload(graph_site(changed_db, worker_config)))
        recreate = only(r.step(), Create)
        assert recreate.role == "db"
        new_db = r.complete(recreate, changed_db)
        r.see(replace(new_db, health="healthy", observed_at=r.t))
        found = r.step()
        assert len([a for a in found if isinstance(a, Create) and a.role == "worker"]) == restarts
        for action in found:
            r.complete(action, worker_config)
        assert r.step() == []


def test_a_failed_role_is_tried_again_after_its_cooldown_with_a_fresh_budget():
    policy = replace(POLICY, cooldown=60.0)
    r = Replay(graph_site(container(restart=policy)))
    running = r.observed(container(restart=policy))
    r.start_up(running)
    for _ in range(POLICY.max_restarts + 1):
        r.exited(running)
        found = r.step()
        if not found:
            r.later(POLICY.max_backoff)
            found = r.step()
        if not found:
            break
        running = r.complete(only(found, Start), container())
    assert r.state() is State.FAILED
    failed = next(e for e in r.events if e.name == "container_failed")
    assert failed.fields["next_try_in"] == 60.0
    r.later(60 - POLICY.max_backoff - 1)
    assert r.step() == []
    r.later(1)
    assert only(r.step(), Start).role == "worker"
    assert "container_retrying" in r.names()
    assert r.ledger.roles["worker"].tracker.recent == type(r.ledger.roles["worker"].tracker.recent)()


def test_a_stop_stops_dependents_before_what_they_depend_on():
    r = Replay(graph_site(WORKER, DB))  # the file lists the worker first
    r.start_up(r.observed(DB, health="healthy"), r.observed(WORKER))
    r.record(r.ledger.begin_stop(leave=False, signal_name="SIGTERM", on_exit="stop"))
    (first,) = r.tick()
    assert first.container.role == "worker"
    r.done(first)
    assert r.tick()[0].container.role == "db"


def test_a_dependent_healthy_again_once_its_dependency_is_back_is_not_restarted():
    r = Replay(graph_site())
    db, worker = r.observed(DB, health="healthy"), r.observed(WORKER, health="healthy")
    r.start_up(db, worker)
    r.see(replace(db, status="paused", observed_at=r.t))  # the database hangs
    r.see(replace(worker, health="unhealthy", observed_at=r.t))  # and Indico with it
    assert r.step() == []
    assert r.state("worker") is State.WAITING
    r.see(replace(db, observed_at=r.t))  # back
    r.see(replace(worker, health="healthy", observed_at=r.t))  # and Indico answers again by itself
    assert r.step() == []
    assert r.state("worker") is State.RUNNING
    assert "container_recovered" in r.names()


def test_a_dependent_still_unhealthy_once_its_dependency_is_back_is_restarted_at_once_without_a_check():
    r = Replay(graph_site())
    db, worker = r.observed(DB, health="healthy"), r.observed(WORKER, health="healthy")
    r.start_up(db, worker)
    r.see(replace(db, status="paused", observed_at=r.t))
    r.see(replace(worker, health="unhealthy", observed_at=r.t))
    assert r.step() == []
    r.see(replace(db, observed_at=r.t))
    assert only(r.step(), Restart).role == "worker"
    assert r.ledger.roles["worker"].tracker.total == 0



def test_a_linked_dependent_stopped_while_its_dependency_was_recreated_is_recreated_not_started():
    linked = replace(WORKER, network=Network(links=(("indico-db", "indico-db"),)))
    r = Replay(graph_site(DB, linked))
    db, worker = r.observed(DB, health="healthy"), r.observed(linked)
    r.start_up(db, worker)
    changed_db = replace(DB, env=(("PGTZ", "UTC"),))
    r.record(r.ledger.reload(graph_site(changed_db, linked)))
    recreate_db = only(r.step(), Create)
    r.later(1)
    r.exited(worker)  # it dies while its database is replaced: the outage's, not its own
    assert [a for a in r.step() if a.role == "worker"] == []
    new_db = r.complete(recreate_db, changed_db)
    r.see(replace(new_db, health="healthy", observed_at=r.t))
    action = only(r.step(), Create)
    assert action.role == "worker" and action.reason == "linked dependency db was recreated"
    r.complete(action, linked)
    assert r.step() == []
    assert r.ledger.roles["worker"].tracker.total == 0


def test_a_started_dependency_being_replaced_does_not_hold():
    worker = replace(WORKER, depends_on=(("db", "started"),))
    r = Replay(graph_site(DB, worker))
    r.start_up(r.observed(DB, health="healthy"), r.observed(worker))
    r.record(r.ledger.reload(graph_site(replace(DB, env=(("PGTZ", "UTC"),)), worker)))
    assert only(r.step(), Create).role == "db"
    assert unmet_dependencies(r.ledger.world(r.now())) == {"worker": "db (restarting)"}


def test_links_are_repaired_after_a_daemon_restart_too():
    linked = replace(WORKER, network=Network(links=(("indico-db", "indico-db"),)))
    r = Replay(graph_site(DB, linked))
    worker = r.observed(linked)
    r.later(5)
    newer_db = r.observed(DB, health="healthy")  # recreated by hand, or by the previous daemon, after the worker
    action = only(r.start_up(newer_db, worker), Create)
    assert action.role == "worker" and action.replace == worker


def test_a_failure_seen_as_the_dependency_comes_back_is_the_outages_and_never_fails_the_role():
    r = Replay(graph_site(DB, WORKER))
    db, worker = r.observed(DB, health="healthy"), r.observed(WORKER)
    r.start_up(db, worker)
    r.ledger.roles["worker"].tracker.recent.extend([r.t] * POLICY.max_restarts)  # its budget used up by itself
    r.see(replace(db, status="paused", observed_at=r.t))
    r.step()
    r.see(replace(db, observed_at=r.t))  # back, and in the same batch the worker's removal
    r.gone(worker.id)
    r.step()
    assert r.state("worker") is not State.FAILED
    assert "container_failed" not in r.names()


def test_an_exit_then_a_removal_of_the_same_run_counts_once():
    r = Replay(graph_site(container()))
    running = r.observed(container())
    r.start_up(running)
    r.exited(running)
    start = only(r.step(), Start)
    running = r.complete(start, container())
    r.exited(running)
    assert r.step() == []  # backing off
    r.gone(running.id)
    r.step()
    assert r.ledger.roles["worker"].tracker.total == 2


def test_a_dependent_still_unhealthy_when_its_dependency_is_back_gets_one_verdict_to_recover():
    checked = replace(WORKER, healthcheck=Healthcheck(("CMD", "indico-health"), interval=2.0, retries=3))
    r = Replay(graph_site(DB, checked))
    db, worker = r.observed(DB, health="healthy"), r.observed(checked, health="healthy")
    r.start_up(db, worker)
    r.see(replace(db, status="paused", observed_at=r.t))
    r.see(replace(worker, health="unhealthy", observed_at=r.t))
    r.step()
    r.see(replace(db, observed_at=r.t))
    assert r.step() == []  # 6 s (2 s x 3) to show it recovered
    r.later(3)
    r.see(replace(worker, health="healthy", observed_at=r.t))
    assert r.step() == []
    r.later(10)
    assert r.step() == []
    assert "container_recovered" in r.names() and r.state("worker") is State.RUNNING


def test_a_role_disabled_while_it_starts_is_forgotten_when_the_start_ends():
    r = Replay(graph_site(container("worker"), container("celery")))
    found = r.start_up()
    celery_create = next(a for a in found if a.role == "celery")
    r.record(r.ledger.reload(graph_site(container("worker"), replace(container("celery"), enabled=False))))
    assert "celery" in r.ledger.roles  # busy: kept until its start ends
    r.complete(celery_create, container("celery"))
    assert "celery" not in r.ledger.roles
