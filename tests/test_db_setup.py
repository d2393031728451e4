"""The database's first-time setup, the one command examples/site.yaml documents, run as
written (`indico-supervisor exec --role db -- sh -ec "..."`) against a PostgreSQL that
starts as the official image does: only the superuser, its password in POSTGRES_PASSWORD.
Afterwards the indico role logs in with INDICO_DB_PASSWORD, owns its database, is no
superuser, and the database has the extensions Indico needs.
"""
from __future__ import annotations

import shlex
import subprocess
import sys

from harness.daemon import Daemon, wait_until
from harness.sites import remove_site_containers
from tests.indico_images import SUPERUSER_PASSWORD, bare_postgres_image
from tests.test_web_front import EXAMPLE, REPO, _health, user_of

INDICO_PASSWORD = "indico-setup-test-password"


def documented_setup_command() -> list[str]:
    """The command as the template's comment gives it, split by a real shell (shlex keeps
    the backslash of a \\$ inside double quotes; sh does not)."""
    lines = EXAMPLE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.rstrip().endswith("indico-supervisor exec --role db -- sh -ec \""))
    command = []
    for line in lines[start:]:
        command.append(line.strip().lstrip("#").strip())
        text = "\n".join(command)
        try:  # complete once its quotes close
            shlex.split(text)
        except ValueError:
            continue
        split = subprocess.run(["sh", "-c", f'set -- {text}\nprintf "%s\\0" "$@"'], capture_output=True, check=True)
        return split.stdout.decode().split("\0")[:-1]
    raise AssertionError("the db setup command in examples/site.yaml never closes its quotes")


def supervisor(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "supervisor", *args[:1], "--config", str(config), *args[1:]],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


def test_the_documented_db_setup_makes_the_indico_role_its_database_and_extensions(docker_client, site_name,
                                                                                    tmp_path):
    client = docker_client
    image = bare_postgres_image(client)
    for name in ("data", "scratch"):
        (tmp_path / name).mkdir()
    db = f"{site_name}-db"
    network = f"{site_name}-net"
    site = {
        "site": site_name, "image": image, "pull": "never", "user": "4321:4321",
        "volumes": {"data": str(tmp_path / "data"), "scratch": str(tmp_path / "scratch")},
        "network": {"name": network},
        "containers": {
            "db": {"image": image, "command": None, "name": db, "user": user_of(client, image),
                   "stop_signal": "SIGINT",
                   "env": {"POSTGRES_PASSWORD": SUPERUSER_PASSWORD, "INDICO_DB_PASSWORD": INDICO_PASSWORD},
                   "healthcheck": {"test": ["/usr/lib/postgresql/15/bin/pg_isready", "-h", "127.0.0.1"],
                                   "interval": "1s", "timeout": "5s", "retries": 5}},
        },
    }
    argv = documented_setup_command()
    assert argv[:6] == ["indico-supervisor", "exec", "--role", "db", "--", "sh"], argv
    script = argv[-1]
    assert "PGHOST=indico-db" in script
    daemon = Daemon(tmp_path, site)
    try:
        daemon.start()
        wait_until(lambda: _health(client, db) == "healthy", 120, 0.5, "database healthy")

        # This test's container name instead of indico-db; the rest as documented.
        done = supervisor(daemon.config_path, "exec", *argv[2:-1], script.replace("PGHOST=indico-db", f"PGHOST={db}"))
        assert done.returncode == 0, done.stdout + done.stderr
        assert SUPERUSER_PASSWORD not in done.stdout + done.stderr
        assert INDICO_PASSWORD not in done.stdout + done.stderr

        check = ("export PGHOST=%s PGUSER=indico PGDATABASE=indico PGPASSWORD=\"$INDICO_DB_PASSWORD\"; "
                 "psql -Atc 'SELECT extname FROM pg_extension ORDER BY 1'; "
                 "psql -Atc 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user'; "
                 "psql -Atc 'SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()'") % db
        seen = supervisor(daemon.config_path, "exec", "--role", "db", "--", "sh", "-ec", check)
        assert seen.returncode == 0, seen.stdout + seen.stderr
        lines = seen.stdout.split()
        assert {"pg_trgm", "unaccent"} <= set(lines), seen.stdout
        assert lines[-2:] == ["f", "indico"], seen.stdout  # no superuser; owns its database
    finally:
        code = daemon.stop(timeout=120)
        remove_site_containers(client, site_name)
        try:
            client.networks.get(network).remove()
        except Exception:  # never made: the test failed before
            pass
    assert code == 0, daemon.log_text()[-3000:]
