"""Secrets outside `env` never reach any output: the log (kv and json), check-config, status, the state file, exec.

Planted in a real site run by the real daemon against the real engine: a database
password in env (`DB_PASS`), a URI password in a command, a `splunk-token` log option
(under the splunk driver, which the engine accepts with verification off), an exec
probe's `PGPASSWORD=…` (the probe runs and fails), and a `PGPASSWORD=…` in a command
the engine cannot run, so the engine's own error text carries it into the state file.
"""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from harness.daemon import SLEEPER
from tests.test_daemon_secrets import check_config, events, wait_for


def secret() -> str:
    return "s3cr3t" + uuid.uuid4().hex


@pytest.fixture
def planted() -> dict:
    return {name: secret() for name in ("db_pass", "uri", "splunk_token", "probe", "engine_error")}


def secret_site(run_daemon, s: dict):
    daemon = run_daemon({
        "worker": {
            "command": ["sh", "-c", f"trap 'exit 0' TERM; DSN=postgresql://indico:{s['uri']}@indico-db/indico; "
                                    "while :; do sleep 0.2; done"],
            # Verification off: the token is never sent anywhere the test depends on.
            "log_driver": "splunk",
            "log_options": {"splunk-token": s["splunk_token"], "splunk-url": "http://127.0.0.1:9",
                            "splunk-verify-connection": "false"},
        },
        "probed": {"command": SLEEPER,
                   "health": {"exec": ["env", f"PGPASSWORD={s['probe']}", "false"], "interval": "200ms",
                              "timeout": "2s", "retries": 1}},
        # The engine refuses to start it and says why, quoting the command.
        "broken": {"command": [f"PGPASSWORD={s['engine_error']}", "psql"]},
    })
    daemon.write({**daemon.config, "env": {"DB_PASS": s["db_pass"], "INDICO_LANG": "en_GB"}})
    return daemon


def status(daemon, *extra: str) -> str:
    done = subprocess.run([sys.executable, "-m", "supervisor", "status", "--config", str(daemon.config_path), *extra],
                          capture_output=True, text=True, timeout=60, env=daemon.env)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def leaked(s: dict, text: str) -> list[str]:
    return sorted(name for name, value in s.items() if value in text)


@pytest.mark.parametrize("fmt", ["kv", "json"])
def test_no_secret_of_the_site_reaches_any_output(run_daemon, docker_client, site_name, planted, fmt):
    s = planted
    daemon = secret_site(run_daemon, s)

    shown = check_config(daemon.config_path)
    assert shown.returncode == 0, shown.stderr
    assert leaked(s, shown.stdout + shown.stderr) == [], shown.stdout
    assert "splunk-token" in shown.stdout and "PGPASSWORD=***" in shown.stdout  # shown, masked

    daemon.start("--log-format", fmt)
    wait_for(daemon, "daemon_ready", timeout=60)
    # The probe ran with its password in the command, and failed.
    assert "PGPASSWORD=***" in wait_for(daemon, "probe_failed", role="probed")["detail"]
    # The engine refused the broken command, quoting it.
    refusal = wait_for(daemon, "container_start_failed", role="broken")
    assert "PGPASSWORD=***" in json.dumps(refusal)
    env = dict(item.partition("=")[::2] for item in
               docker_client.containers.get(f"{site_name}-worker").attrs["Config"]["Env"])
    assert env["DB_PASS"] == s["db_pass"]  # masking is for outputs; the container has it
    config = docker_client.containers.get(f"{site_name}-worker").attrs["HostConfig"]["LogConfig"]
    assert config["Config"]["splunk-token"] == s["splunk_token"]

    state_file = daemon.runtime / f"{site_name}.state.json"
    state = state_file.read_text()
    table, as_json = status(daemon), status(daemon, "--json")
    assert "broken" in table and json.loads(as_json)["daemon"] == "running"

    assert daemon.stop() == 0
    log = daemon.log_text()
    if fmt == "json":
        assert all(line.startswith("{") for line in log.splitlines())
    for name, text in {"log": log, "state file": state, "status": table, "status --json": as_json}.items():
        assert leaked(s, text) == [], f"{name} holds {leaked(s, text)}:\n{text[-4000:]}"
    assert events(daemon, "probe_failed") and "DB_PASS" in shown.stdout


def test_exec_masks_its_own_messages(run_daemon, planted):
    s = planted
    daemon = run_daemon({"worker": {}})
    daemon.write({**daemon.config, "env": {"DB_PASS": s["db_pass"]}})

    done = subprocess.run([sys.executable, "-m", "supervisor", "exec", "--config", str(daemon.config_path), "--",
                           "env", f"PGPASSWORD={s['probe']}", "true"],
                          capture_output=True, text=True, timeout=120, env=daemon.env)

    assert done.returncode == 0, done.stderr
    assert "running env PGPASSWORD=*** true in" in done.stderr
    assert leaked(s, done.stdout + done.stderr) == [], done.stderr
