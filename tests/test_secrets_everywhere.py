"""One redactor, fed from the whole site, masks every output: secrets are not only in `env`.

A site gives secrets in env values (by name, and URI passwords), in log options
(`splunk-token`), and in commands (`env PGPASSWORD=… psql`, `--password X`, a URI).
Pure tests here; tests/test_daemon_secret_outputs.py runs the real daemon.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
import yaml

from supervisor import logs
from supervisor.cli import main
from supervisor.config import parse_site
from supervisor.status import process_started


def secret() -> str:
    return "s3cr3t" + uuid.uuid4().hex


@pytest.mark.parametrize("name", ["DB_PASS", "LDAP_PASSWD", "MYSQL_PWD", "AUTH_HEADER", "GOOGLE_CREDENTIALS",
                                  "PRIVATE_KEY_PEM", "splunk-token", "DB_PASSWORD", "INDICO_SECRET_KEY"])
def test_secret_names_are_recognised(name):
    assert logs.is_secret_key(name)


@pytest.mark.parametrize("name", ["PWD", "OLDPWD", "INDICO_LANG", "TZ", "max-size", "tag"])
def test_ordinary_names_are_not(name):
    assert not logs.is_secret_key(name)


def test_the_shell_s_working_directory_is_not_masked_as_a_secret():
    # PWD holds a path; masking it would hide that path in every line of the log.
    assert logs.mask_env({"PWD": "/opt/indico", "DB_PASS": "hunter22"}) == {"PWD": "/opt/indico", "DB_PASS": "***"}


def test_secrets_are_found_in_commands_log_options_probes_and_healthchecks(tmp_path):
    s = {key: secret() for key in ("pg", "flag", "uri", "splunk", "shell", "probe_uri", "check", "env")}
    tree = {
        "user": "1000:1000", "volumes": {"data": str(tmp_path), "scratch": str(tmp_path)},
        "containers": {"worker": {
            "command": ["env", f"PGPASSWORD={s['pg']}", "reports", "--db-password", s["flag"],
                        f"--url=https://indico:{s['uri']}@example.org/"],
            "log_driver": "splunk", "log_options": {"splunk-token": s["splunk"], "splunk-url": "https://splunk:8088"},
            "health": {"exec": ["sh", "-c", f"MYSQL_PWD='{s['shell']}' check postgres://u:{s['probe_uri']}@db/x"]},
            "healthcheck": {"test": f"curl --fail -H 'X-Auth: 1' http://localhost/ && API_TOKEN={s['check']} x"},
            "env": {"LDAP_PASSWD": s["env"], "INDICO_LANG": "en_GB", "PWD": "/opt/indico"},
        }}}

    found = logs.secrets_of_site(parse_site(tree, str(tmp_path / "site.yaml"), check_paths=False))

    assert set(s.values()) <= found
    assert not {"en_GB", "/opt/indico", "reports", "https://splunk:8088", "--db-password"} & found


def test_check_config_masks_commands_probes_healthchecks_and_log_options(tmp_path, capsys):
    s = {key: secret() for key in ("pg", "uri", "splunk", "probe", "check")}
    (tmp_path / "data").mkdir()
    tree = {
        "user": "1000:1000", "volumes": {"data": str(tmp_path / "data"), "scratch": str(tmp_path / "data")},
        "containers": {"worker": {
            "command": ["sh", "-c", f"PGPASSWORD={s['pg']} exec run --db postgresql://indico:{s['uri']}@db/indico"],
            "log_driver": "splunk", "log_options": {"splunk-token": s["splunk"]},
            "health": {"exec": ["env", f"PGPASSWORD={s['probe']}", "pg_isready"]},
            "healthcheck": {"test": ["CMD", "check", f"--password={s['check']}"]},
        }}}
    file = tmp_path / "site.yaml"
    file.write_text(yaml.safe_dump(tree))

    assert main(["check-config", "--config", str(file)]) == 0
    out, err = capsys.readouterr()

    assert [name for name, value in s.items() if value in out + err] == []
    assert "PGPASSWORD=***" in out and "postgresql://indico:***@db/indico" in out
    assert "'splunk-token': '***'" in out and "--password=***" in out


def test_status_masks_what_the_state_file_and_engine_say(tmp_path, capsys, monkeypatch):
    engine_said = secret()
    (tmp_path / "data").mkdir()
    tree = {"site": "t" + uuid.uuid4().hex[:10], "user": "1000:1000",
            "volumes": {"data": str(tmp_path / "data"), "scratch": str(tmp_path / "data")},
            "containers": {"worker": {"command": [f"PGPASSWORD={engine_said}", "psql"]}}}
    file = tmp_path / "site.yaml"
    file.write_text(yaml.safe_dump(tree))
    runtime = tmp_path / "run"
    runtime.mkdir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(runtime))
    # A state file as an older daemon (or any writer) left it, with the engine's refusal quoted as is.
    detail = f'exec: "PGPASSWORD={engine_said}": executable file not found in $PATH'
    (runtime / f"{tree['site']}.state.json").write_text(json.dumps({
        # This process stands in for the daemon: its PID and start time, so `status` trusts the file.
        "site": tree["site"], "config": str(file), "pid": os.getpid(), "daemon": "running",
        "pid_started": process_started(os.getpid()),
        "updated_at": 0, "containers": [{"role": "worker", "name": "indico-worker", "state": "backoff",
                                         "detail": detail, "restarts": 3, "image": "indico-worker:latest"}]}))

    for extra in ([], ["--json"]):
        assert main(["status", "--config", str(file), *extra]) == 0
        out, err = capsys.readouterr()
        assert "executable file not found" in out
        assert engine_said not in out + err, out


def test_the_state_file_is_written_scrubbed():
    hidden = secret()
    logs.add_secrets([hidden])
    payload = {"containers": [{"detail": f"refused: {hidden}", "restarts": 2, "started_at": None}]}

    assert logs.scrub_value(payload) == {"containers": [{"detail": "refused: ***", "restarts": 2, "started_at": None}]}


def test_redactor_learns_nothing_from_short_values(tmp_path):
    tree = {"user": "1000:1000", "volumes": {"data": str(tmp_path), "scratch": str(tmp_path)},
            "containers": {"worker": {"command": ["env", "KEY=1", "AUTH=on", "run"]}}}
    assert logs.secrets_of_site(parse_site(tree, str(Path(tmp_path) / "s.yaml"), check_paths=False)) >= {"1", "on"}
    redactor = logs.Redactor()
    redactor.add_secrets({"1", "on"})
    assert redactor.scrub("container on port 1 restarted") == "container on port 1 restarted"
