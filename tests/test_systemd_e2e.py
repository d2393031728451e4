"""The Debian package under a real systemd: install, start, restarts, reload, watchdog,
stop, journal, upgrade, removal, checked with systemctl and journalctl inside.

Each test gets a fresh Debian machine (systemd as PID 1, tests/systemd_host.py) with the
.deb built from this checkout (tests/deb_package.py, cached) installed by dpkg. The
daemon inside creates the site's busybox containers on the host engine, where the
test looks at them. The site's host directories live under /srv, not /tmp: the unit's
PrivateTmp= would hide a /tmp path from the daemon.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from harness.daemon import SLEEPER, kill_main_process, site_config, site_containers, wait_until
from tests.systemd_host import SYSTEMD, SystemdHost, host_journal

UNIT = "indico-supervisor"
SITE_FILE = "/etc/indico-supervisor/site.yaml"
SHARED_ROOT = Path("/srv/indico-supervisor-e2e")
# systemctl blocks until READY; never let a hung start hang the suite.
START = f"timeout 120 systemctl start {UNIT}"


@pytest.fixture(scope="session")
def deb() -> Path:
    from tests.deb_package import built_deb

    return built_deb()


@pytest.fixture(scope="session")
def systemd_image(docker_client) -> str:
    from tests.debian_images import debian_image

    return debian_image(docker_client, SYSTEMD)


@pytest.fixture
def site_dir(site_name) -> Path:
    """The site's data and scratch, at the same path on the host and in the machine."""
    root = SHARED_ROOT / site_name
    root.mkdir(parents=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)
    try:
        SHARED_ROOT.rmdir()
    except OSError:
        pass  # another run's site is still there


@pytest.fixture
def machine(docker_client, systemd_image, deb, site_dir, tmp_path):
    """A booted systemd machine with the .deb at /debs, not yet installed."""
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir()
    host = SystemdHost(docker_client, systemd_image, journal_dir, [site_dir], {str(deb.parent): "/debs"})
    host.deb = f"/debs/{deb.name}"
    try:
        host.wait_booted()
        yield host
    finally:
        host.remove()  # SIGKILLs systemd and the daemon; site_name then removes the containers


def site_text(site: str, image: str, root: Path, **top) -> str:
    containers = top.pop("containers", {"worker": {}, "celery": {}})
    return yaml.safe_dump(site_config(site, image, root, containers, **top), sort_keys=False)


@pytest.fixture
def installed(machine, site_name, busybox, site_dir):
    """The package installed (its site file not yet edited), then the test's site written."""
    status, machine.install_output = machine.sh(f"dpkg -i {machine.deb}", check=False)
    assert status == 0, machine.install_output
    machine.write(SITE_FILE, site_text(site_name, busybox, site_dir))
    return machine


@pytest.fixture
def running(installed, docker_client, site_name):
    installed.sh(START)
    return installed


def snapshot(client, site: str) -> dict[str, tuple[str, str]]:
    """name -> (container id, StartedAt) of the site's running containers."""
    return {name: (c.id, c.attrs["State"]["StartedAt"])
            for name, c in site_containers(client, site).items() if c.status == "running"}


def journal_entries(machine: SystemdHost, *args: str) -> list[dict]:
    return [json.loads(line) for line in machine.journal("-o", "json", *args).splitlines() if line.startswith("{")]


def events_in(entries: list[dict], name: str) -> list[dict]:
    return [e for e in entries if f"event={name} " in str(e.get("MESSAGE", "")) + " "]


def still_starting_site(site: str, image: str, root: Path) -> str:
    """A site the daemon cannot finish starting: celery waits for an image that is not
    there (pull: never), as it would for a long pull, so the unit stays `activating`
    while the worker runs."""
    celery = {"image": f"indico-supervisor-test/{site}-absent:1", "pull": "never"}
    return site_text(site, image, root, containers={"worker": {}, "celery": celery})


def wait_activating_with_the_worker_up(machine: SystemdHost, client, site: str) -> None:
    wait_until(lambda: f"{site}-worker" in snapshot(client, site), 60, what="the worker running")
    wait_until(lambda: "image_unavailable" in machine.journal("-u", UNIT), 30, what="celery waiting for its image")
    assert machine.unit("ActiveState") == "activating"


# dpkg runs maintainer scripts with /usr/local/sbin first on PATH: this systemctl makes
# the daemon go (SIGUSR1: containers left running) just before the script's kill runs.
RACING_SYSTEMCTL = f"""#!/bin/sh
if [ "$1" = kill ]; then
    /bin/systemctl kill --kill-who=main --signal=SIGUSR1 {UNIT}
    while [ "$(/bin/systemctl show -P MainPID {UNIT})" != 0 ]; do sleep 0.1; done
fi
exec /bin/systemctl "$@"
"""


def race_the_kill(machine: SystemdHost) -> None:
    machine.write("/usr/local/sbin/systemctl", RACING_SYSTEMCTL)
    machine.sh("chmod 755 /usr/local/sbin/systemctl")


def test_install_enables_the_unit_but_starts_nothing_until_the_site_file_is_edited(machine, docker_client, site_name):
    status, output = machine.sh(f"dpkg -i {machine.deb}", check=False)

    assert status == 0, output
    assert "enabled but not started" in output and "user: missing" in output, output
    assert machine.sh(f"systemctl is-enabled {UNIT}")[1].strip() == "enabled"
    assert machine.unit("ActiveState") == "inactive"
    assert machine.sh(f"indico-supervisor check-config --config {SITE_FILE}", check=False)[0] == 2
    assert site_containers(docker_client, site_name) == {}


def test_the_package_installs_a_venv_on_debians_python_the_unit_and_a_conffile(machine):
    machine.sh(f"dpkg -i {machine.deb}")

    assert machine.sh("command -v indico-supervisor")[1].strip() == "/usr/bin/indico-supervisor"
    assert machine.sh("readlink -f /opt/indico-supervisor/bin/python")[1].strip().startswith("/usr/bin/python3")
    assert machine.sh("dpkg-query -W -f='${Conffiles}' indico-supervisor")[1].split()[0] == SITE_FILE
    assert machine.sh(f"stat -c %a {SITE_FILE}")[1].strip() == "640"
    machine.sh("test -f /lib/systemd/system/indico-supervisor.service && test -d /usr/share/indico-supervisor/image"
               " && test -f /usr/share/indico-supervisor/site.yaml")


def test_install_starts_the_daemon_when_the_site_file_already_passes_check_config(
        machine, docker_client, site_name, busybox, site_dir):
    machine.write(SITE_FILE, site_text(site_name, busybox, site_dir))

    status, output = machine.sh(f"dpkg -i --force-confold {machine.deb}", check=False)

    assert status == 0 and "passes check-config: starting" in output, output
    assert "journalctl -u indico-supervisor -f" in output and "systemctl status indico-supervisor" in output
    wait_until(lambda: machine.unit("ActiveState") == "active", 60, what="the unit active")
    assert set(snapshot(docker_client, site_name)) == {f"{site_name}-worker", f"{site_name}-celery"}


def test_install_does_not_wait_for_a_first_start_that_takes_long(machine, docker_client, site_name, busybox,
                                                                  site_dir):
    machine.write(SITE_FILE, still_starting_site(site_name, busybox, site_dir))

    # The unit's own start timeout is 15 minutes: a blocking start would hit this one.
    status, output = machine.sh(f"timeout 60 dpkg -i --force-confold {machine.deb}", check=False)

    assert status == 0 and "passes check-config: starting" in output, output
    assert "journalctl -u indico-supervisor -f" in output, output
    wait_activating_with_the_worker_up(machine, docker_client, site_name)
    assert machine.sh("dpkg-query -W -f='${Status}' indico-supervisor")[1] == "install ok installed"


def test_start_returns_after_ready_with_worker_and_celery_running_and_a_status_line(installed, docker_client,
                                                                                   site_name):
    installed.sh(START)

    # Type=notify: `systemctl start` came back only once the daemon said READY=1.
    assert set(snapshot(docker_client, site_name)) == {f"{site_name}-worker", f"{site_name}-celery"}
    assert installed.unit("ActiveState") == "active"
    status = installed.sh(f"systemctl status --no-pager {UNIT}")[1]
    assert 'Status: "2/2 running"' in status, status


def test_a_killed_worker_is_restarted_and_the_journal_says_so_at_its_own_priority(running, docker_client, site_name):
    worker = f"{site_name}-worker"
    before = snapshot(docker_client, site_name)[worker]

    kill_main_process(docker_client, worker)

    wait_until(lambda: snapshot(docker_client, site_name).get(worker, before) != before, 30, what="worker restarted")
    wait_until(lambda: events_in(journal_entries(running, "-u", UNIT), "container_restarted"), 10,
               what="container_restarted in the journal")
    entries = journal_entries(running, "-u", UNIT)
    (exited,) = events_in(entries, "container_exited")
    assert f"container={worker}" in exited["MESSAGE"] and exited["PRIORITY"] == "4"
    assert events_in(entries, "container_restarted")[0]["PRIORITY"] == "6"
    # The syslog prefix sets each line's priority: warnings and info stay out of -p err.
    errors = running.journal("-u", UNIT, "-p", "err")
    assert "event=" not in errors, errors


def test_the_journal_filters_events_by_role_and_metrics_and_check_work_inside_the_unit(installed, docker_client,
                                                                                       site_name, busybox, site_dir):
    installed.write(SITE_FILE, site_text(site_name, busybox, site_dir, metrics={"listen": "127.0.0.1:9150"}))
    installed.sh(START)
    worker = f"{site_name}-worker"
    before = snapshot(docker_client, site_name)[worker]
    kill_main_process(docker_client, worker)
    wait_until(lambda: snapshot(docker_client, site_name).get(worker, before) != before, 30, what="worker restarted")
    wait_until(lambda: events_in(journal_entries(installed, "-u", UNIT, "ROLE=worker"), "container_restarted"), 10,
               what="container_restarted under ROLE=worker")

    entries = journal_entries(installed, "-u", UNIT, "ROLE=worker")
    assert {e["ROLE"] for e in entries} == {"worker"}
    (exited,) = [e for e in entries if e.get("EVENT") == "container_exited"]  # one entry: not also via stdout
    assert exited["CONTAINER"] == worker and exited["PRIORITY"] == "4"
    assert exited["MESSAGE"].startswith("event=container_exited role=worker ")
    assert {"container_started", "container_exited", "container_restarted"} <= {e["EVENT"] for e in entries}
    assert {e["ROLE"] for e in journal_entries(installed, "-u", UNIT, "ROLE=celery")} == {"celery"}
    assert events_in(journal_entries(installed, "-u", UNIT, "EVENT=daemon_ready"), "daemon_ready")

    scrape = ("/opt/indico-supervisor/bin/python -c 'import urllib.request; print(urllib.request.urlopen("
              "\"http://127.0.0.1:9150/metrics\", timeout=10).read().decode())'")
    metrics = installed.sh(scrape)[1]
    assert 'indico_supervisor_container_restarts_total{cause="exited",role="worker"} 1.0' in metrics, metrics
    wait_until(lambda: installed.sh("indico-supervisor status --check", check=False)[0] == 0, 30,
               what="status --check OK")


def test_reload_with_an_edited_site_recreates_only_the_changed_container(running, docker_client, site_name,
                                                                          busybox, site_dir):
    before = snapshot(docker_client, site_name)
    worker, celery = f"{site_name}-worker", f"{site_name}-celery"
    running.write(SITE_FILE, site_text(site_name, busybox, site_dir,
                                       containers={"worker": {}, "celery": {"env": {"E2E_RELOADED": "1"}}}))

    running.sh(f"systemctl reload {UNIT}")

    def celery_recreated():
        now = snapshot(docker_client, site_name)
        return now if now.get(celery, before[celery])[0] != before[celery][0] else None

    after = wait_until(celery_recreated, 30, what="celery recreated")
    assert after[worker] == before[worker]
    wait_until(lambda: running.unit("ActiveState") == "active", 30, what="unit active after the reload")
    assert events_in(journal_entries(running, "-u", UNIT), "config_reloaded")


def test_reload_with_a_broken_site_keeps_everything_running_and_logs_errors(running, docker_client, site_name,
                                                                            busybox, site_dir):
    before = snapshot(docker_client, site_name)
    pid = running.unit("MainPID")
    running.write(SITE_FILE, site_text(site_name, busybox, site_dir, user="0:0", pull="sometimes"))

    running.sh(f"systemctl reload {UNIT}")

    wait_until(lambda: "event=reload_refused" in running.journal("-u", UNIT, "-p", "err"), 30, what="reload refused")
    errors = running.journal("-u", UNIT, "-p", "err")
    assert "event=config_problem" in errors and "key=user" in errors and "key=pull" in errors, errors
    wait_until(lambda: running.unit("ActiveState") == "active", 30, what="unit active after the refused reload")
    assert running.unit("MainPID") == pid
    assert snapshot(docker_client, site_name) == before


def test_a_hung_daemon_is_restarted_by_the_watchdog_and_adopts_the_containers(installed, docker_client, site_name):
    # The shipped WatchdogSec is 30s; a drop-in makes the test wait seconds, not minutes.
    installed.write(f"/etc/systemd/system/{UNIT}.service.d/e2e-watchdog.conf",
                    "[Service]\nWatchdogSec=2s\nRestartSec=1s\n")
    installed.sh(f"systemctl daemon-reload && {START}")
    before = snapshot(docker_client, site_name)
    pid = installed.unit("MainPID")

    installed.sh(f"kill -STOP {pid}")

    wait_until(lambda: installed.unit("MainPID") not in ("0", pid) and installed.unit("ActiveState") == "active",
               60, interval=0.5, what="a new daemon, active")
    assert "Watchdog timeout" in installed.journal("-u", UNIT)
    assert snapshot(docker_client, site_name) == before  # adopted: same containers, never restarted
    assert events_in(journal_entries(installed, "-u", UNIT), "daemon_ready")[-1]["_PID"] != pid


def test_http_tcp_and_exec_probes_pass_from_inside_the_units_sandbox(installed, docker_client, site_name, busybox,
                                                                    site_dir):
    # The hardened unit must still let the daemon reach containers at their IPs (http,
    # tcp) and run execs through the socket; a probe it could not make would fail.
    def serving(script: str) -> list[str]:
        return ["sh", "-c", f"trap 'exit 0' TERM\n{script}\nwhile :; do sleep 0.2; done"]
    timings = {"interval": "1s", "timeout": "3s", "retries": 3, "start_period": "10s"}
    containers = {
        "worker": {"command": serving("mkdir -p /tmp/www && echo ok > /tmp/www/ok.html && httpd -p 8080 -h /tmp/www"),
                   "health": {"http": {"port": 8080, "path": "/ok.html"}, **timings}},
        "celery": {"command": serving("nc -ll -p 9000 -e true &"), "health": {"tcp": {"port": 9000}, **timings}},
        "probed": {"command": serving("touch /tmp/ok"), "health": {"exec": ["test", "-f", "/tmp/ok"], **timings}},
    }
    installed.write(SITE_FILE, site_text(site_name, busybox, site_dir, containers=containers))

    installed.sh(START)

    wait_until(lambda: {"worker healthy", "celery healthy", "probed healthy"}
               <= set(installed.unit("StatusText").split("; ")), 60, what="every probe passed")
    entries = journal_entries(installed, "-u", UNIT)
    passed = " ".join(str(e["MESSAGE"]) for e in events_in(entries, "probe_passed")) + " "
    assert all(f"role={role} " in passed for role in containers), passed
    assert not events_in(entries, "probe_failed") and not events_in(entries, "container_restarted")


def test_stop_stops_the_containers_and_start_brings_them_back(running, docker_client, site_name):
    names = {f"{site_name}-worker", f"{site_name}-celery"}

    running.sh(f"timeout 300 systemctl stop {UNIT}")

    assert running.unit("ActiveState") == "inactive" and running.unit("Result") == "success"
    assert {n for n, c in site_containers(docker_client, site_name).items() if c.status == "running"} == set()

    running.sh(START)

    assert set(snapshot(docker_client, site_name)) == names


def test_container_output_reaches_the_journal_with_the_journald_log_driver(installed, docker_client, site_name,
                                                                          busybox, site_dir):
    marker = f"hello-from-{site_name}"
    worker = {"command": ["sh", "-c", f"echo {marker}; " + SLEEPER[2]]}
    installed.write(SITE_FILE, site_text(site_name, busybox, site_dir, log_driver="journald",
                                         containers={"worker": worker, "celery": {}}))

    with host_journal(installed.journal_dir) as where:
        installed.sh(START)
        query = [f"CONTAINER_NAME={site_name}-worker", "-o", "cat"]

        def worker_output() -> str:
            if where == "container":
                return installed.journal(*query)
            import subprocess
            return subprocess.run(["journalctl", "--no-pager", *query], capture_output=True, text=True).stdout

        wait_until(lambda: marker in worker_output(), 30, what=f"{marker} in journalctl CONTAINER_NAME=…")


def test_upgrade_reexecs_the_daemon_under_the_same_pid_and_restarts_no_container(running, docker_client, site_name):
    before = snapshot(docker_client, site_name)
    pid = running.unit("MainPID")
    edited = running.sh(f"cat {SITE_FILE}")[1]

    status, output = running.sh(f"dpkg -i {running.deb}", check=False)  # same version: dpkg's upgrade path

    assert status == 0 and "handing over to the new version" in output, output
    assert running.unit("MainPID") == pid and running.unit("ActiveState") == "active"
    assert events_in(journal_entries(running, "-u", UNIT), "daemon_reexec")
    assert snapshot(docker_client, site_name) == before
    assert running.sh(f"cat {SITE_FILE}")[1] == edited  # a conffile: the admin's edits survive


def test_upgrade_while_the_daemon_is_still_starting_hands_over_too(installed, docker_client, site_name,
                                                                    busybox, site_dir):
    installed.write(SITE_FILE, still_starting_site(site_name, busybox, site_dir))
    installed.sh(f"systemctl --no-block start {UNIT}")
    wait_activating_with_the_worker_up(installed, docker_client, site_name)
    before = snapshot(docker_client, site_name)
    pid = installed.unit("MainPID")

    status, output = installed.sh(f"timeout 120 dpkg -i {installed.deb}", check=False)

    assert status == 0 and "handing over to the new version" in output, output
    assert "still starting" in output and "journalctl -u indico-supervisor -f" in output, output
    wait_until(lambda: events_in(journal_entries(installed, "-u", UNIT), "daemon_reexec"), 30,
               what="daemon_reexec in the journal")
    assert installed.unit("MainPID") == pid and installed.unit("ActiveState") == "activating"
    assert snapshot(docker_client, site_name) == before


def test_upgrade_whose_new_daemon_dies_says_so_and_leaves_the_package_configured(running, docker_client, site_name,
                                                                                busybox, site_dir):
    before = snapshot(docker_client, site_name)
    # Edited but never reloaded: the re-exec'd daemon reads it and refuses to start.
    running.write(SITE_FILE, site_text(site_name, busybox, site_dir, user="0:0"))

    status, output = running.sh(f"timeout 120 dpkg -i --force-confold {running.deb}", check=False)

    assert status == 0, output
    (error,) = [line for line in output.splitlines() if line.startswith("indico-supervisor: ERROR: ")]
    assert "did not start" in error and "journalctl -u indico-supervisor" in error, output
    assert running.unit("ActiveState") == "failed"
    assert running.sh("dpkg-query -W -f='${Status}' indico-supervisor")[1] == "install ok installed"
    assert snapshot(docker_client, site_name) == before  # the dead daemon left them running


def test_upgrade_survives_the_daemon_stopping_between_the_check_and_the_signal(running, docker_client, site_name):
    before = snapshot(docker_client, site_name)
    race_the_kill(running)

    status, output = running.sh(f"dpkg -i {running.deb}", check=False)

    assert status == 0 and "stopped before the handover" in output, output
    assert running.unit("ActiveState") == "inactive"
    assert snapshot(docker_client, site_name) == before


def test_remove_survives_the_daemon_stopping_between_the_check_and_the_signal(running, docker_client, site_name):
    before = snapshot(docker_client, site_name)
    race_the_kill(running)

    status, output = running.sh("dpkg -r indico-supervisor", check=False)

    assert status == 0 and "had stopped already" in output, output
    assert running.sh("dpkg-query -W -f='${Status}' indico-supervisor")[1] == "deinstall ok config-files"
    assert snapshot(docker_client, site_name) == before


def test_remove_and_purge_leave_the_containers_and_the_data(running, docker_client, site_name, site_dir):
    before = snapshot(docker_client, site_name)
    (site_dir / "data" / "attachment").write_text("kept")

    status, output = running.sh("dpkg -r indico-supervisor", check=False)

    assert status == 0 and "containers keep running" in output, output
    assert running.unit("ActiveState") == "inactive" and running.unit("Result") == "success"
    assert snapshot(docker_client, site_name) == before

    running.sh("dpkg -P indico-supervisor")

    assert running.sh("test -e /etc/indico-supervisor", check=False)[0] != 0  # purge: dpkg removes the conffile
    assert running.sh("test -e /opt/indico-supervisor", check=False)[0] != 0
    assert snapshot(docker_client, site_name) == before
    assert (site_dir / "data" / "attachment").read_text() == "kept"
