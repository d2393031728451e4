"""The admin's interactive commands against the real Indico worker image: `indico user
create --admin` answered at its prompts through `exec -it` under a real pseudo-terminal
(the password is asked with echo off, so the job must really have a terminal), and the
new account then read back by a Python script fed through `exec -i`.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from harness.ptys import Terminal
from tests.test_indico_e2e import (REPO, UID_GID, edit_config, images, services,  # noqa: F401 (fixtures)
                                   supervisor_exec, wait_for_port)

PASSWORD = "tty-admin-password-9"
READ_BACK = """
from indico.modules.users import User
from indico.web.flask.app import make_app

with make_app().app_context():
    user = User.query.filter(User.all_emails == 'grace@example.org').one()
    print('found', user.first_name, user.last_name, 'admin' if user.is_admin else 'not admin')
"""


def prepared_site(tmp_path: Path, site_name: str, worker_image: str, db: str, redis: str, client) -> Path:
    """A site file, indico.conf made and pointed at this test's database, the database prepared."""
    uid, gid = map(int, UID_GID.split(":"))
    for name in ("data", "scratch"):
        (tmp_path / name).mkdir()
        os.chown(tmp_path / name, uid, gid)
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({
        "site": site_name, "image": worker_image, "pull": "never", "user": UID_GID,
        "volumes": {"data": str(tmp_path / "data"), "scratch": str(tmp_path / "scratch")},
        "network": {"links": [f"{db}:indico-db", f"{redis}:indico-redis"]},
        # Indico checks an email's domain in DNS, out of reach here, unless it believes it runs
        # under pytest (email_validator's test environment): the only concession to the sandbox.
        "containers": {"worker": {"name": f"{site_name}-worker", "env": {"PYTEST_CURRENT_TEST": "exec-tty"}}},
    }))
    made = supervisor_exec(config, "make-config")
    assert made.returncode == 0, made.stderr
    edit_config(tmp_path / "data" / "etc" / "indico.conf", "indico-db", "indico-redis")
    wait_for_port(client, db, 5432)
    wait_for_port(client, redis, 6379)
    prepared = supervisor_exec(config, "indico", "db", "prepare")
    assert prepared.returncode == 0, prepared.stdout[-3000:] + prepared.stderr[-3000:]
    return config


def answer(term: Terminal, prompt: str, reply: str) -> None:
    term.expect(prompt, timeout=180)
    term.send(reply + "\r")


def test_indico_user_create_is_answered_at_its_prompts_through_exec_it(docker_client, images, services,
                                                                       site_name, tmp_path):
    config = prepared_site(tmp_path, site_name, images["worker"], services["db"], services["redis"], docker_client)
    term = Terminal([sys.executable, "-m", "supervisor", "exec", "--config", str(config), "-it", "--",
                     "indico", "user", "create", "--admin"], cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        answer(term, "Email: ", "grace@example.org")
        answer(term, "First name: ", "Grace")
        answer(term, "Last name: ", "Hopper")
        answer(term, "Affiliation", "")
        answer(term, "Enter username: ", "grace")
        answer(term, "Password: ", PASSWORD)
        answer(term, "Repeat for confirmation: ", PASSWORD)
        answer(term, "Create the new admin?", "y")
        term.expect("New admin created successfully", timeout=180)
        assert term.process.wait(timeout=120) == 0, term.text()[-3000:]
        assert PASSWORD not in term.text()  # asked with echo off: a real terminal on the job's side
        assert term.modes() == term.cooked
    finally:
        term.close()

    read = subprocess.run([sys.executable, "-m", "supervisor", "exec", "--config", str(config), "-i", "--",
                           "python", "-"], input=READ_BACK, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert read.returncode == 0, read.stdout[-3000:] + read.stderr[-3000:]
    assert "found Grace Hopper admin" in read.stdout
