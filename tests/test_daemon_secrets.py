"""Secrets in the site file reach the containers and never the log, in either log format.

Random values are planted in the site env and a container env (by key name, and as the
password of a database URL), then the daemon is taken through start, a restart, a
refused reload, an applied reload and a stop, and its whole output is searched for them.
"""
from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
import uuid

import pytest

from harness.daemon import kill_main_process, parse_line, site_containers

PRIORITIES = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


def secret() -> str:
    return "s3cr3t" + uuid.uuid4().hex


def parse_any(line: str) -> dict | None:
    """A kv line or a JSON line back into a dict (values as strings, as kv gives them)."""
    line = line.strip()
    if line.startswith("{"):
        fields = json.loads(line)
        fields["priority"] = PRIORITIES[fields["level"]]
        return fields
    return parse_line(line)


def events(daemon, name: str, **fields) -> list[dict]:
    found = [e for e in map(parse_any, daemon.log_text().splitlines()) if e]
    return [e for e in found if e.get("event") == name and all(str(e.get(k)) == str(v) for k, v in fields.items())]


def wait_for(daemon, name: str, timeout: float = 30, count: int = 1, **fields) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = events(daemon, name, **fields)
        if len(found) >= count:
            return found[count - 1]
        if daemon.process.poll() is not None:
            raise AssertionError(f"daemon exited ({daemon.process.returncode}) waiting for {name}:\n"
                                 f"{daemon.log_text()[-4000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no {name} {fields} x{count} within {timeout}s; log:\n{daemon.log_text()[-4000:]}")


def env_of(client, name: str) -> dict:
    return dict(item.partition("=")[::2] for item in client.containers.get(name).attrs["Config"]["Env"])


@pytest.fixture
def planted():
    return {"db": secret(), "token": secret(), "url": secret(), "signing": secret(), "broker": secret(),
            "rotated_db": secret(), "bad_only_token": secret(), "bad_only_url": secret(), "bad_only_env": secret()}


def secret_config(daemon_config: dict, s: dict) -> dict:
    config = copy.deepcopy(daemon_config)
    config["env"] = {"DB_PASSWORD": s["db"], "API_TOKEN": s["token"],
                     "DATABASE_URL": f"postgresql://indico:{s['url']}@db/indico", "INDICO_LANG": "en_GB"}
    config["containers"]["worker"]["env"] = {"INDICO_SECRET_KEY": s["signing"],
                                             "CELERY_BROKER": f"redis://:{s['broker']}@redis:6379/0"}
    return config


@pytest.mark.parametrize("fmt", ["kv", "json"])
def test_secrets_reach_the_containers_but_never_the_log(run_daemon, docker_client, site_name, planted, fmt):
    s = planted
    daemon = run_daemon({"worker": {}, "celery": {}})
    good = secret_config(daemon.config, s)
    daemon.write(good)
    daemon.start("--log-format", fmt)
    wait_for(daemon, "daemon_ready", timeout=60)
    if fmt == "json":
        assert all(line.startswith("{") for line in daemon.log_text().splitlines())

    # The secrets are really in the containers: masking is for the log only.
    worker = env_of(docker_client, f"{site_name}-worker")
    assert worker["DB_PASSWORD"] == s["db"] and worker["API_TOKEN"] == s["token"]
    assert worker["DATABASE_URL"] == f"postgresql://indico:{s['url']}@db/indico"
    assert worker["INDICO_SECRET_KEY"] == s["signing"] and s["broker"] in worker["CELERY_BROKER"]
    assert env_of(docker_client, f"{site_name}-celery")["DB_PASSWORD"] == s["db"]

    # A restart.
    kill_main_process(docker_client, f"{site_name}-worker")
    wait_for(daemon, "container_restarted", role="worker")

    # A refused reload whose problems sit next to (and one of them inside) the env,
    # and whose echoed values are secrets, known ones and new ones.
    bad = copy.deepcopy(good)
    bad["restart"]["backoff"] = "soon"
    bad["env"]["API_TOKEN"] = s["bad_only_token"]
    bad["env"]["BAD-NAME"] = "x"
    bad["containers"]["worker"]["env"]["DB_PASSWORD"] = [s["bad_only_env"]]
    bad["containers"]["worker"]["stop_signal"] = s["token"]  # echoed back by the problem
    bad["containers"]["celery"]["stop_signal"] = s["bad_only_token"]  # echoed, and known from this file only
    bad["containers"]["celery"]["pull"] = f"postgresql://indico:{s['bad_only_url']}@db/indico"  # echoed too
    daemon.write(bad)
    daemon.signal(signal.SIGHUP)
    refused = wait_for(daemon, "reload_refused")
    assert refused["priority"] == 3
    keys = {p["key"] for p in events(daemon, "config_problem")}
    assert {"restart.backoff", "env.BAD-NAME", "containers.worker.env.DB_PASSWORD",
            "containers.worker.stop_signal", "containers.celery.pull"} <= keys
    for key in ("containers.worker.stop_signal", "containers.celery.stop_signal"):
        assert "***" in events(daemon, "config_problem", key=key)[0]["problem"]
    assert "***" in events(daemon, "config_problem", key="containers.celery.pull")[0]["problem"]

    # An applied reload that rotates the database password: both containers recreated with it.
    rotated = copy.deepcopy(good)
    rotated["env"]["DB_PASSWORD"] = s["rotated_db"]
    daemon.write(rotated)
    daemon.signal(signal.SIGHUP)
    wait_for(daemon, "config_reloaded")
    wait_for(daemon, "container_recreated", role="worker", timeout=60)
    wait_for(daemon, "container_recreated", role="celery", timeout=60)
    assert env_of(docker_client, f"{site_name}-celery")["DB_PASSWORD"] == s["rotated_db"]

    assert daemon.stop() == 0
    wait_for(daemon, "daemon_stopped")
    assert site_containers(docker_client, site_name) == {}

    log = daemon.log_text()
    assert "env.BAD-NAME" in log and "DB_PASSWORD" in log  # the keys are named, only values are hidden
    leaked = sorted(name for name, value in s.items() if value in log)
    assert leaked == [], f"secrets {leaked} in the {fmt} log:\n{log[-4000:]}"


def check_config(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "supervisor", "check-config", "--config", str(path)],
                          capture_output=True, text=True, timeout=30)


def test_check_config_masks_secrets(run_daemon, planted):
    s = planted
    daemon = run_daemon({"worker": {}, "celery": {}})
    daemon.write(secret_config(daemon.config, s))

    shown = check_config(daemon.config_path)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout + shown.stderr
    assert "DB_PASSWORD=***" in out and "API_TOKEN=***" in out and "INDICO_SECRET_KEY=***" in out
    assert "DATABASE_URL=postgresql://indico:***@db/indico" in out
    assert "INDICO_LANG=en_GB" in out  # ordinary values stay readable
    assert [name for name, value in s.items() if value in out] == []


def test_check_config_of_a_bad_file_echoes_no_secret(run_daemon, planted):
    s = planted
    daemon = run_daemon({"worker": {}, "celery": {}})
    bad = secret_config(daemon.config, s)
    bad["containers"]["worker"]["stop_signal"] = s["token"]
    bad["containers"]["celery"]["pull"] = f"postgresql://indico:{s['url']}@db/indico"
    bad["containers"]["worker"]["env"]["DB_PASSWORD"] = [s["db"]]
    daemon.write(bad)

    shown = check_config(daemon.config_path)
    assert shown.returncode == 2
    out = shown.stdout + shown.stderr
    assert "containers.worker.stop_signal" in out and "containers.celery.pull" in out
    assert "containers.worker.env.DB_PASSWORD" in out
    assert [name for name, value in s.items() if value in out] == [], out


@pytest.mark.parametrize("fmt", ["kv", "json"])
def test_a_daemon_refusing_to_start_on_a_bad_file_logs_no_secret(run_daemon, docker_client, site_name, planted, fmt):
    s = planted
    daemon = run_daemon({"worker": {}, "celery": {}})
    bad = secret_config(daemon.config, s)
    bad["containers"]["worker"]["stop_signal"] = s["token"]
    bad["containers"]["celery"]["pull"] = f"postgresql://indico:{s['url']}@db/indico"
    daemon.write(bad)
    daemon.start("--log-format", fmt)
    assert daemon.process.wait(30) == 2
    assert events(daemon, "daemon_not_started")
    assert {p["key"] for p in events(daemon, "config_problem")} == {"containers.worker.stop_signal",
                                                                    "containers.celery.pull"}
    log = daemon.log_text()
    assert [name for name, value in s.items() if value in log] == [], log
    assert site_containers(docker_client, site_name) == {}
