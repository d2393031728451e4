"""The site file's `upgrade` section, through `indico-supervisor check-config`: exit 2 with the key path, or its values."""
from __future__ import annotations

import pytest

from supervisor.config import load_site
from supervisor.upgrade_settings import DEFAULT_COMMANDS, upgraded_roles
from tests.test_config import HEAD, check_config, problem_lines, write_site

CONTAINERS = """\
containers:
  worker: {}
  celery: {}
  db: {image: "postgres:15", command: [postgres]}
"""


@pytest.mark.parametrize("section, path, shown", [
    ("upgrade: {timeout: ten minutes}", "upgrade.timeout", "'ten minutes'"),
    ("upgrade: {timeout: 0}", "upgrade.timeout", "0"),
    ("upgrade: {commands: indico db upgrade}", "upgrade.commands", "'indico db upgrade'"),
    ("upgrade: {commands: [indico, db, upgrade]}", "upgrade.commands[0]", "'indico'"),
    ("upgrade: {commands: [[indico, 3]]}", "upgrade.commands[0][1]", "3"),
    ("upgrade: {commands: [[]]}", "upgrade.commands[0]", "[]"),
    ("upgrade: {comands: [[indico, db, upgrade]]}", "upgrade.comands", None),
    ("upgrade: [[indico, db, upgrade]]", "upgrade", None),
])
def test_a_wrong_upgrade_section_exits_2_naming_the_key_path(tmp_path, capsys, section, path, shown):
    status, out, err = check_config(write_site(tmp_path, HEAD + section + "\n" + CONTAINERS), capsys)
    assert status == 2
    assert "site.yaml" in err
    lines = problem_lines(err, path)
    if shown is not None:
        assert any(shown in line for line in lines), lines


def test_without_an_upgrade_section_the_database_upgrades_run_with_a_ten_minute_timeout(tmp_path):
    site = load_site(str(write_site(tmp_path, HEAD + CONTAINERS)))
    assert site.upgrade.commands == DEFAULT_COMMANDS
    assert site.upgrade.timeout == 600.0
    assert upgraded_roles(site) == ("worker", "celery")  # the roles with the worker's image; db has its own


def test_the_upgrade_section_is_read(tmp_path):
    site = load_site(str(write_site(tmp_path, HEAD + "upgrade: {commands: [[indico, db, upgrade]], timeout: 90s}\n"
                                    + CONTAINERS)))
    assert site.upgrade.commands == (("indico", "db", "upgrade"),) and site.upgrade.timeout == 90.0


def test_no_commands_switch_upgrades_off(tmp_path):
    site = load_site(str(write_site(tmp_path, HEAD + "upgrade: {commands: []}\n" + CONTAINERS)))
    assert upgraded_roles(site) == ()
