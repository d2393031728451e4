"""The daemon's life: converge, adopt after a crash, restart the dead, stop in order, status."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from harness.daemon import kill_main_process, site_containers, wait_until


def running_names(client, site):
    return {name for name, c in site_containers(client, site).items() if c.status == "running"}


def test_daemon_starts_every_enabled_container_and_reports_ready(run_daemon, docker_client, site_name):
    daemon = run_daemon({"worker": {}, "celery": {}, "spare": {"enabled": False}}).start()
    daemon.wait_ready()
    assert running_names(docker_client, site_name) == {f"{site_name}-worker", f"{site_name}-celery"}
    worker = site_containers(docker_client, site_name)[f"{site_name}-worker"]
    assert worker.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert worker.attrs["Config"]["User"] == "65534:65534"


def test_daemon_killed_with_sigkill_and_started_again_adopts_running_containers(run_daemon, docker_client, site_name):
    first = run_daemon({"worker": {}, "celery": {}}).start()
    first.wait_ready()
    before = {n: (c.id, c.attrs["State"]["StartedAt"]) for n, c in site_containers(docker_client, site_name).items()}
    first.kill()

    second = run_daemon({"worker": {}, "celery": {}}).start()
    second.wait_ready()
    second.wait_event("daemon_ready", count=2)  # the second daemon's own READY (same log file)
    after = {n: (c.id, c.attrs["State"]["StartedAt"]) for n, c in site_containers(docker_client, site_name).items()}
    assert after == before
    assert len(second.events("container_started")) == 2  # the first daemon's two starts, none since
    assert not second.events("container_recreated") and not second.events("container_restarted")


def test_kill_9_of_a_container_main_process_is_restarted_and_logged(run_daemon, docker_client, site_name):
    daemon = run_daemon({"worker": {}, "celery": {}}).start()
    daemon.wait_ready()
    celery_before = site_containers(docker_client, site_name)[f"{site_name}-celery"].attrs["State"]["StartedAt"]
    name = f"{site_name}-worker"
    old_started = site_containers(docker_client, site_name)[name].attrs["State"]["StartedAt"]

    kill_main_process(docker_client, name)

    restarted = daemon.wait_event("container_restarted", role="worker")
    assert restarted["exit_code"] == "137" and restarted["delay"] == "0.0" and restarted["cause"] == "exited"
    exited = daemon.events("container_exited", role="worker")[0]
    assert exited["exit_code"] == "137" and exited["restart_in"] == "0.0"
    worker = site_containers(docker_client, site_name)[name]
    assert worker.status == "running" and worker.attrs["State"]["StartedAt"] != old_started
    celery_after = site_containers(docker_client, site_name)[f"{site_name}-celery"].attrs["State"]["StartedAt"]
    assert celery_after == celery_before  # one container's trouble touches no other


def test_sigterm_stops_containers_in_reverse_start_order_and_exits_zero(run_daemon, docker_client, site_name):
    daemon = run_daemon({"first": {}, "second": {}, "third": {}}).start()
    daemon.wait_ready()
    assert daemon.stop() == 0
    order = [e["role"] for e in daemon.events("container_stopping")]
    assert order == ["third", "second", "first"]
    assert site_containers(docker_client, site_name) == {}
    assert daemon.events("daemon_stopped", exit_code=0)


def test_on_exit_leave_keeps_containers_running(run_daemon, docker_client, site_name):
    daemon = run_daemon({"worker": {}, "celery": {}}, stop={"timeout": "5s", "on_exit": "leave"}).start()
    daemon.wait_ready()
    assert daemon.stop() == 0
    assert running_names(docker_client, site_name) == {f"{site_name}-worker", f"{site_name}-celery"}


def test_status_shows_daemon_and_engine_views_and_says_when_the_daemon_is_down(run_daemon, site_name):
    daemon = run_daemon({"worker": {}}).start()
    daemon.wait_ready()

    def status(*extra):
        return subprocess.run([sys.executable, "-m", "supervisor", "status", "--config", str(daemon.config_path), *extra],
                              capture_output=True, text=True, env=daemon.env, timeout=30)

    shown = json.loads(wait_until(lambda: (s := status("--json")).returncode == 0 and s.stdout, what="status"))
    assert shown["daemon"] == "running"
    [row] = shown["containers"]
    assert (row["role"], row["name"], row["state"], row["engine"]) == ("worker", f"{site_name}-worker", "running", "running")
    table = status().stdout
    assert "daemon running" in table and f"{site_name}-worker" in table and "RESTARTS" in table

    daemon.stop()
    down = status()
    assert down.returncode == 0
    assert "daemon not running" in down.stdout and "absent" in down.stdout


def test_a_second_daemon_for_the_same_site_is_refused_and_touches_nothing(run_daemon, docker_client, site_name):
    first = run_daemon({"worker": {}}).start()
    first.wait_ready()
    before = {n: c.id for n, c in site_containers(docker_client, site_name).items()}
    second = run_daemon({"worker": {}}).start()
    assert second.process.wait(30) == 2
    refused = second.wait_event("daemon_not_started")
    assert refused["priority"] == 3 and "already runs site" in refused["hint"]
    assert {n: c.id for n, c in site_containers(docker_client, site_name).items()} == before
    assert first.process.poll() is None


def test_sigusr1_exits_and_leaves_containers_running(run_daemon, docker_client, site_name):
    # What the package's prerm sends on removal: the daemon goes, Indico stays up.
    daemon = run_daemon({"worker": {}, "celery": {}}).start()
    daemon.wait_ready()
    before = {n: c.id for n, c in site_containers(docker_client, site_name).items()}
    daemon.signal(signal.SIGUSR1)
    assert daemon.process.wait(30) == 0
    assert daemon.events("daemon_stopping", signal="SIGUSR1", on_exit="leave")
    assert not daemon.events("container_stopping")
    assert {n: c.id for n, c in site_containers(docker_client, site_name).items()} == before
    assert running_names(docker_client, site_name) == set(before)


def test_sigusr2_reexecs_under_the_same_pid_and_adopts_without_a_bounce(run_daemon, docker_client, site_name):
    # What the package's postinst sends on upgrade: new code, same PID, containers untouched.
    daemon = run_daemon({"worker": {}, "celery": {}}).start()
    daemon.wait_ready()
    before = {n: (c.id, c.attrs["State"]["StartedAt"]) for n, c in site_containers(docker_client, site_name).items()}
    pid = daemon.process.pid
    daemon.signal(signal.SIGUSR2)
    daemon.wait_event("daemon_reexec")
    started = daemon.wait_event("daemon_started", count=2)
    assert int(started["pid"]) == pid and daemon.process.poll() is None
    daemon.wait_event("daemon_ready", count=2)
    after = {n: (c.id, c.attrs["State"]["StartedAt"]) for n, c in site_containers(docker_client, site_name).items()}
    assert after == before
    assert not daemon.events("container_stopping") and not daemon.events("container_recreated")

    # The fresh daemon holds the site lock and still supervises.
    kill_main_process(docker_client, f"{site_name}-worker")
    daemon.wait_event("container_restarted", role="worker")
    assert daemon.stop() == 0
    assert site_containers(docker_client, site_name) == {}


def test_sigusr2_reexec_never_imports_a_supervisor_package_from_the_working_directory(run_daemon, docker_client,
                                                                                       site_name, tmp_path):
    # systemd starts the installed entry point; an admin may have a checkout (or worse) in the daemon's cwd.
    decoy = tmp_path / "cwd"
    (decoy / "supervisor").mkdir(parents=True)
    marker = tmp_path / "decoy-imported"
    (decoy / "supervisor" / "__init__.py").write_text(
        f"import pathlib, sys\npathlib.Path({str(marker)!r}).write_text('imported')\nsys.exit(99)\n")
    (decoy / "supervisor" / "__main__.py").write_text("")
    daemon = run_daemon({"worker": {}})
    entry_point = os.path.join(os.path.dirname(sys.executable), "indico-supervisor")
    with open(daemon.log_path, "a") as log:
        daemon.process = subprocess.Popen([entry_point, "run", "--config", str(daemon.config_path), "--log-level", "debug"],
                                          stdout=log, stderr=subprocess.STDOUT, env=daemon.env, cwd=decoy)
    daemon.wait_ready()

    daemon.signal(signal.SIGUSR2)
    started = daemon.wait_event("daemon_started", count=2)
    assert int(started["pid"]) == daemon.process.pid
    daemon.wait_event("daemon_ready", count=2)
    assert not marker.exists()
    assert daemon.process.poll() is None
    assert daemon.stop() == 0
