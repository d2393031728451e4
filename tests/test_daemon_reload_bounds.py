"""SIGHUP with a site file that would take minutes to read: refused at once, nothing touched, the loop still answers.

The daemon reads the file inside its one loop; a read that hung (a FIFO) or ran for
minutes (an alias bomb) would stop the loop past systemd's WatchdogSec. The waits
below are the harness's usual 30 s: far past what a refusal takes, far short of
what the bomb took before.
"""
from __future__ import annotations

import os
import signal

from harness.daemon import site_containers
from tests.test_config_bounds import ALIAS_BOMB
from tests.test_daemon_reload import reload, snapshot


def bomb_for(daemon) -> str:
    volumes = daemon.config["volumes"]
    return ALIAS_BOMB.replace("@DATA@", volumes["data"]).replace("@SCRATCH@", volumes["scratch"])


def test_sighup_with_an_alias_bomb_is_refused_and_keeps_pid_and_containers(run_daemon, docker_client, site_name):
    daemon = run_daemon({"worker": {}, "celery": {}}).start()
    daemon.wait_ready()
    before = snapshot(docker_client, site_name)
    pid = daemon.process.pid
    good = daemon.config

    daemon.write(bomb_for(daemon))
    daemon.signal(signal.SIGHUP)
    refused = daemon.wait_event("reload_refused")

    assert refused["file"] == str(daemon.config_path) and refused["priority"] == 3
    problem = daemon.wait_event("config_problem")["problem"]
    assert "expand to more than 100,000 values" in problem
    assert daemon.process.poll() is None and daemon.process.pid == pid
    assert snapshot(docker_client, site_name) == before
    # The loop is free: the next reload is read and applied.
    reloaded = reload(daemon, good)
    assert reloaded["unchanged"] == "2"
    assert snapshot(docker_client, site_name) == before


def test_sighup_with_a_fifo_in_place_of_the_file_is_refused_without_waiting_for_a_writer(run_daemon, docker_client,
                                                                                       site_name):
    daemon = run_daemon({"worker": {}}).start()
    daemon.wait_ready()
    before = snapshot(docker_client, site_name)
    good = daemon.config

    os.unlink(daemon.config_path)
    os.mkfifo(daemon.config_path)
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("reload_refused")

    assert "not a regular file" in daemon.wait_event("config_problem")["problem"]
    os.unlink(daemon.config_path)
    reload(daemon, good)
    assert daemon.process.poll() is None
    assert snapshot(docker_client, site_name) == before
    assert set(site_containers(docker_client, site_name)) == {f"{site_name}-worker"}
