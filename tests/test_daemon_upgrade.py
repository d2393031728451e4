"""A new Indico image's upgrade jobs, with the real daemon and the real engine.

Two builds of the busybox test image that differ by a label stand for an Indico image
and its rebuild; the ref is moved to the second and the daemon reloaded, as an admin
does after `build-image`. The upgrade commands are busybox commands writing to the
bound data directory, so the test sees that they ran, how often and in which order;
the engine's own events say whether they ended before worker and celery were recreated.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import docker.errors
import pytest

from harness.daemon import site_containers, wait_until
from harness.sites import SITE_LABEL, remove_site_containers
from supervisor.spec import LABEL_ONESHOT
from supervisor.upgrade_jobs import LABEL_UPGRADE

ERROR = 3  # syslog priority of an error line
QUIET = 2.0  # long enough for a wrongly planned second upgrade or recreate to show in the log
SECRET = "hunter2-upgrade-secret"
RESYNC_EVERY = 30.0  # supervisor.outcomes.RESYNC_EVERY: the failure must outlast one


@pytest.fixture
def builds(docker_client, busybox, site_name):
    """Two images from busybox differing by a label, and a ref of this site's that points at either."""
    repository = f"indico-supervisor-test/upgrade-{site_name}"
    made = []
    for build in ("1", "2"):
        maker = docker_client.containers.create(busybox, ["true"])
        try:
            made.append(maker.commit(changes=[f"LABEL io.indico-supervisor-test.build={build}"]).id)
        finally:
            maker.remove(force=True)

    def point(image_id: str) -> str:
        docker_client.api.tag(image_id, repository, "latest", force=True)
        return f"{repository}:latest"

    yield made, point
    remove_site_containers(docker_client, site_name)
    for leftover in docker_client.containers.list(all=True, filters={"label": f"{LABEL_ONESHOT}={site_name}"}):
        leftover.remove(force=True, v=True)
    for ref in [f"{repository}:latest", *made]:
        try:
            docker_client.images.remove(ref, force=True)
        except docker.errors.ImageNotFound:
            pass


def writing(word: str) -> list[str]:
    """An upgrade job that says `word` on stdout and appends it to the bound data directory."""
    return ["sh", "-c", f"echo {word}; echo {word} >> /opt/indico/data/upgrades.log"]


def start_site(run_daemon, tmp_path, ref: str, commands: list, timeout: str = "30s", **top):
    daemon = run_daemon({"worker": {}, "celery": {}})
    daemon.write({**daemon.config, "image": ref, "upgrade": {"commands": commands, "timeout": timeout}, **top})
    os.chmod(tmp_path / "data", 0o777)  # the jobs run as the worker's user, 65534
    daemon.start()
    daemon.wait_ready()
    wait_until(lambda: [status for _, _, status in images_of(daemon_client(), daemon.config["site"]).values()]
               == ["running", "running"], timeout=60, what="worker and celery running on the first build")
    return daemon


def daemon_client():
    return docker.from_env()


def images_of(client, site: str) -> dict:
    return {c.name.rsplit("-", 1)[1]: (c.id, c.image.id, c.status) for c in site_containers(client, site).values()}


def engine_events(client, since: float, site: str) -> list[dict]:
    """The engine's container events since `since` for this site's containers and its one-shot jobs."""
    found = []
    for event in client.events(since=since, until=time.time() + 1, decode=True, filters={"type": "container"}):
        labels = event.get("Actor", {}).get("Attributes", {})
        if labels.get(SITE_LABEL) == site or labels.get(LABEL_ONESHOT) == site:
            found.append(event)
    return found


def status_json(daemon) -> dict:
    out = subprocess.run([sys.executable, "-m", "supervisor", "status", "--config", str(daemon.config_path), "--json"],
                         capture_output=True, text=True, env=daemon.env, cwd=Path(__file__).parent.parent, timeout=60)
    assert out.returncode == 0, out.stderr
    return {row["role"]: row for row in json.loads(out.stdout)["containers"]}


def test_a_new_image_runs_the_upgrade_jobs_once_in_order_then_recreates_worker_and_celery(
        docker_client, site_name, builds, run_daemon, tmp_path):
    (first, second), point = builds
    daemon = start_site(run_daemon, tmp_path, point(first), [writing("one"), writing("two")])
    log = tmp_path / "data" / "upgrades.log"
    assert not log.exists()  # a first start runs no upgrade
    assert {image for _, image, _ in images_of(docker_client, site_name).values()} == {first}
    since = time.time() - 1
    point(second)
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("upgrade_finished", timeout=60)
    wait_until(lambda: all(image == second and status == "running"
                           for _, image, status in images_of(docker_client, site_name).values()),
               timeout=60, what="worker and celery recreated on the second build")
    time.sleep(QUIET)
    assert log.read_text() == "one\ntwo\n"
    assert len(daemon.events("upgrade_started")) == 1
    assert [e["line"] for e in daemon.events("upgrade_output")] == ["one", "two"]
    assert [e["command"] for e in daemon.events("upgrade_job_started")] == [
        "sh -c 'echo one; echo one >> /opt/indico/data/upgrades.log'",
        "sh -c 'echo two; echo two >> /opt/indico/data/upgrades.log'"]
    events = engine_events(docker_client, since, site_name)
    jobs_died = [e["timeNano"] for e in events if e["Action"] == "die" and LABEL_ONESHOT in e["Actor"]["Attributes"]]
    new_ids = {container_id for container_id, _, _ in images_of(docker_client, site_name).values()}
    recreated = [e["timeNano"] for e in events if e["Action"] == "create" and e["id"] in new_ids]
    assert len(jobs_died) == 2 and len(recreated) == 2
    assert max(jobs_died) < min(recreated)  # both jobs ended before either container was recreated
    assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL_ONESHOT}={site_name}"})
    assert daemon.stop() == 0


def test_a_failing_upgrade_job_leaves_the_old_worker_serving_until_a_reload_runs_it_again(
        docker_client, site_name, builds, run_daemon, tmp_path):
    (first, second), point = builds
    failing = ["sh", "-c", "echo migrating; echo 'relation indico.events missing' >&2; exit 3"]
    daemon = start_site(run_daemon, tmp_path, point(first), [writing("before"), failing, writing("never")])
    old = images_of(docker_client, site_name)
    point(second)
    daemon.signal(signal.SIGHUP)
    failure = daemon.wait_event("upgrade_failed", timeout=60)
    assert failure["priority"] == ERROR
    assert "exited 3" in failure["reason"]
    time.sleep(RESYNC_EVERY + QUIET)  # a resync, and no second try
    assert len(daemon.events("upgrade_started")) == 1
    assert images_of(docker_client, site_name) == old  # the same containers, on the first build, running
    shown = status_json(daemon)
    for role in ("worker", "celery"):
        assert shown[role]["state"] == "upgrade_failed"
        assert shown[role]["upgrade"]["exit_code"] == 3
        # stdout and stderr come through apart: their order in the tail is the engine's
        assert set(shown[role]["upgrade"]["output"]) == {"migrating", "relation indico.events missing"}
        assert "last lines" in shown[role]["detail"]
    assert (tmp_path / "data" / "upgrades.log").read_text() == "before\n"

    daemon.write({**daemon.config, "upgrade": {"commands": [writing("fixed")], "timeout": "30s"}})
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("upgrade_finished", timeout=60)
    wait_until(lambda: all(image == second and status == "running"
                           for _, image, status in images_of(docker_client, site_name).values()),
               timeout=60, what="worker and celery recreated once the upgrade passed")
    assert (tmp_path / "data" / "upgrades.log").read_text() == "before\nfixed\n"
    assert daemon.stop() == 0


def test_an_upgrade_job_past_its_timeout_is_killed_and_the_old_worker_keeps_serving(
        docker_client, site_name, builds, run_daemon, tmp_path):
    (first, second), point = builds
    job = ["sh", "-c", "echo connecting with $DB_PASSWORD; sleep 300"]
    daemon = start_site(run_daemon, tmp_path, point(first), [job], timeout="1s", env={"DB_PASSWORD": SECRET})
    old = images_of(docker_client, site_name)
    point(second)
    daemon.signal(signal.SIGHUP)
    failure = daemon.wait_event("upgrade_failed", timeout=60)
    assert "timed out after 1s (killed)" in failure["reason"]
    assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL_ONESHOT}={site_name}"})
    time.sleep(QUIET)
    assert images_of(docker_client, site_name) == old
    shown = status_json(daemon)
    assert shown["worker"]["upgrade"]["timed_out"] is True
    # The job's output reaches the journal and `status`, its secrets do not.
    assert [e["line"].startswith("connecting with") for e in daemon.events("upgrade_output")] == [True]
    assert shown["worker"]["upgrade"]["output"][0].startswith("connecting with")
    assert SECRET not in daemon.log_text() and SECRET not in json.dumps(shown)
    assert daemon.stop() == 0


def test_a_stop_during_an_upgrade_kills_the_job_and_leaves_no_container_behind(
        docker_client, site_name, builds, run_daemon, tmp_path):
    (first, second), point = builds
    daemon = start_site(run_daemon, tmp_path, point(first), [["sleep", "300"]], timeout="10m")
    point(second)
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("upgrade_job_started", timeout=60)
    wait_until(lambda: docker_client.containers.list(filters={"label": f"{LABEL_ONESHOT}={site_name}"}),
               timeout=30, what="the upgrade job running")
    assert daemon.stop(timeout=60) == 0  # well before the job's 10 minutes
    assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL_ONESHOT}={site_name}"})
    assert not site_containers(docker_client, site_name)


def test_a_daemon_started_on_containers_of_an_older_image_upgrades_them_and_a_first_start_does_not(
        docker_client, site_name, builds, run_daemon, tmp_path):
    (first, second), point = builds
    daemon = start_site(run_daemon, tmp_path, point(first), [writing("upgraded")])
    assert not (tmp_path / "data" / "upgrades.log").exists()
    daemon.signal(signal.SIGUSR1)  # exits, leaving its containers running (a package upgrade)
    assert daemon.process.wait(60) == 0
    point(second)
    daemon.start()
    daemon.wait_event("upgrade_finished", timeout=60)
    wait_until(lambda: all(image == second and status == "running"
                           for _, image, status in images_of(docker_client, site_name).values()),
               timeout=60, what="worker and celery recreated on the second build")
    assert (tmp_path / "data" / "upgrades.log").read_text() == "upgraded\n"
    assert daemon.stop() == 0


def test_an_upgrade_job_left_running_by_an_earlier_daemon_is_removed_before_the_jobs_run_again(
        docker_client, site_name, builds, run_daemon, tmp_path, busybox):
    (first, second), point = builds
    daemon = start_site(run_daemon, tmp_path, point(first), [writing("upgraded")])
    leftover = docker_client.containers.run(busybox, ["sleep", "300"], detach=True, name=f"{site_name}-exec-upgrade-old",
                                            labels={LABEL_ONESHOT: site_name, LABEL_UPGRADE: second})
    admins_job = docker_client.containers.run(busybox, ["sleep", "300"], detach=True, name=f"{site_name}-exec-admin",
                                              labels={LABEL_ONESHOT: site_name})
    point(second)
    daemon.signal(signal.SIGHUP)
    removed = daemon.wait_event("upgrade_job_removed", timeout=60)
    assert removed["container"] == leftover.name
    daemon.wait_event("upgrade_finished", timeout=60)
    with pytest.raises(docker.errors.NotFound):
        leftover.reload()
    admins_job.reload()  # an admin's own `exec` job is left alone
    assert admins_job.status == "running"
    admins_job.remove(force=True)
    assert daemon.stop() == 0
