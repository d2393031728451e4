"""Credentials inside URIs, under keys that do not look secret, never reach the log in either format.

test_daemon_secrets.py plants plain URI passwords; here they are spelt the ways Indico
admins write them: an unencoded "/" (SQLAlchemy takes it), a percent-encoded "@",
libpq's `?password=`. The daemon is taken through start, a restart, a refused reload
that echoes a URI, an applied reload that rotates the password, and a stop.
"""
from __future__ import annotations

import copy
import signal
import uuid
from urllib.parse import quote

import pytest

from harness.daemon import kill_main_process, site_containers
from tests.test_daemon_secrets import check_config, env_of, events, wait_for


def password(shape: str) -> str:
    return shape.format(uuid.uuid4().hex[:12])


@pytest.fixture
def planted():
    return {"slash": password("S3cr/{}"), "at": password("p@ss{}"), "query": password("Qry{}"),
            "rotated": password("R0t/{}"), "refused": password("Ref{}")}


def uri_config(config: dict, s: dict) -> dict:
    config = copy.deepcopy(config)
    config["env"] = {"DATABASE_URI": f"postgresql://indico:{s['slash']}@indico-db/indico",
                     "CACHE_URI": f"redis://:{quote(s['at'], safe='')}@indico-redis:6379/0"}
    config["containers"]["worker"]["env"] = {"REPORTS_DB": f"postgresql:///reports?host=db&password={s['query']}"}
    return config


@pytest.mark.parametrize("fmt", ["kv", "json"])
def test_uri_credentials_never_reach_the_log(run_daemon, docker_client, site_name, planted, fmt):
    s = planted
    daemon = run_daemon({"worker": {}, "celery": {}})
    good = uri_config(daemon.config, s)
    daemon.write(good)
    shown = check_config(daemon.config_path)
    assert shown.returncode == 0, shown.stderr
    outputs = [shown.stdout + shown.stderr]
    assert "postgresql://indico:***@indico-db/indico" in outputs[0] and "password=***" in outputs[0]

    daemon.start("--log-format", fmt)
    wait_for(daemon, "daemon_ready", timeout=60)
    worker = env_of(docker_client, f"{site_name}-worker")
    assert worker["DATABASE_URI"] == good["env"]["DATABASE_URI"] and s["query"] in worker["REPORTS_DB"]

    kill_main_process(docker_client, f"{site_name}-worker")
    wait_for(daemon, "container_restarted", role="worker")

    # A refused reload whose problems echo URIs carrying a password the daemon never saw.
    bad = copy.deepcopy(good)
    bad["containers"]["worker"]["pull"] = f"postgresql://indico:{s['refused']}@indico-db/indico"
    bad["containers"]["celery"]["stop_signal"] = f"postgresql:///x?password={s['refused']}"
    daemon.write(bad)
    shown = check_config(daemon.config_path)
    assert shown.returncode == 2 and "containers.worker.pull" in shown.stderr, shown.stderr
    outputs.append(shown.stdout + shown.stderr)
    daemon.signal(signal.SIGHUP)
    wait_for(daemon, "reload_refused")
    assert {p["key"] for p in events(daemon, "config_problem")} == {"containers.worker.pull",
                                                                    "containers.celery.stop_signal"}

    rotated = copy.deepcopy(good)
    rotated["env"]["DATABASE_URI"] = f"postgresql://indico:{s['rotated']}@indico-db/indico"
    daemon.write(rotated)
    daemon.signal(signal.SIGHUP)
    wait_for(daemon, "config_reloaded")
    wait_for(daemon, "container_recreated", role="worker", timeout=60)
    wait_for(daemon, "container_recreated", role="celery", timeout=60)
    assert s["rotated"] in env_of(docker_client, f"{site_name}-celery")["DATABASE_URI"]

    assert daemon.stop() == 0
    assert site_containers(docker_client, site_name) == {}
    log = daemon.log_text()
    for where, text in [("log", log), *(("check-config", out) for out in outputs)]:
        leaked = sorted(name for name, value in s.items() if value in text or quote(value, safe="") in text)
        assert leaked == [], f"{leaked} in the {fmt} {where}:\n{text[-4000:]}"
