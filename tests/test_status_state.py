"""`status` reads a state file it cannot trust: keys may be missing and the PID in it may be another process's now."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
import yaml

from harness.daemon import site_config
from supervisor.cli import main
from supervisor.status import daemon_alive, process_started


@pytest.fixture
def stranger():
    """A live process that is not a daemon: the PID a state file may name after the daemon died and PIDs wrapped."""
    process = subprocess.Popen(["sleep", "300"])
    yield process.pid
    process.kill()
    process.wait()


@pytest.fixture
def status_of(tmp_path, monkeypatch, capsys):
    """Runs `status --json` in-process on a site whose state file holds exactly `state`."""
    site = "t" + uuid.uuid4().hex[:10]
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump(site_config(site, "busybox:latest", tmp_path, {"worker": {}})))
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()

    def run(state: dict) -> dict:
        (tmp_path / "run" / f"{site}.state.json").write_text(json.dumps(state))
        assert main(["status", "--config", str(config), "--json"]) == 0
        return json.loads(capsys.readouterr().out)
    return run


def test_status_of_a_state_file_without_updated_at_or_containers_does_not_crash(status_of):
    me = os.getpid()
    shown = status_of({"daemon": "running", "pid": me, "pid_started": process_started(me)})
    assert shown["daemon"] == "running"
    [row] = shown["containers"]
    assert row["role"] == "worker" and row["restarts"] == 0


def test_status_of_a_state_file_with_rows_missing_their_role_shows_the_site_file_roles(status_of):
    me = os.getpid()
    shown = status_of({"daemon": "running", "pid": me, "pid_started": process_started(me),
                       "containers": [{"state": "running"}, "junk"]})
    assert [row["role"] for row in shown["containers"]] == ["worker"]


def test_status_does_not_trust_a_pid_recycled_by_another_process(status_of, stranger):
    recorded_start = process_started(stranger) - 1  # the daemon that wrote the file started earlier
    shown = status_of({"daemon": "running", "pid": stranger, "pid_started": recorded_start, "updated_at": 1.0,
                       "containers": [{"role": "worker", "state": "running"}]})
    assert shown["daemon"] == "not running"
    assert shown["containers"][0]["state"] == "absent"  # the engine's view, not the dead daemon's


def test_a_state_file_without_a_start_time_counts_only_a_process_running_the_daemon(stranger):
    assert not daemon_alive({"daemon": "running", "pid": stranger})
    # Popen returns once exec has begun, which is before the kernel sets the new argv: under load a
    # read of /proc/PID/cmdline at that moment is empty. The line on stdout says the program runs.
    lookalike = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(300)",
                                  "supervisor", "run"], stdout=subprocess.PIPE, text=True)
    try:
        assert lookalike.stdout.readline() == "up\n"
        assert daemon_alive({"daemon": "running", "pid": lookalike.pid})
    finally:
        lookalike.kill()
        lookalike.wait()


def test_the_daemon_that_wrote_the_file_is_alive_by_pid_and_start_time():
    me = os.getpid()
    assert daemon_alive({"daemon": "running", "pid": me, "pid_started": process_started(me)})
    assert not daemon_alive({"daemon": "stopped", "pid": me, "pid_started": process_started(me)})
    assert not daemon_alive({"daemon": "running", "pid": "soon"})
