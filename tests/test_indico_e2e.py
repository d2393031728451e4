"""The whole chain, for real: the worker image (image/Dockerfile, Indico 3.2.x) with
PostgreSQL and Redis containers, set up as an admin would with `indico-supervisor
exec`, then run by the daemon: Indico answers on its front page through uwsgi,
celery answers a ping, a killed worker is restarted and serves again.

Everything is built here (tests.indico_images); only PyPI and the Debian mirror
are reached, by the image build.
"""
from __future__ import annotations

import http.client
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.daemon import Daemon, kill_main_process, wait_until
from tests.indico_images import DB_NAME, DB_PASSWORD, DB_USER, postgres_image, redis_image, worker_image

# tests/run runs two test processes: its module fixtures serve one test process.
pytestmark = pytest.mark.xdist_group("indico_e2e")

UID_GID = "4321:4321"
BASE_URL = "http://indico.test"
REPO = Path(__file__).resolve().parent.parent
# The first account, made as `indico user create --admin` would (its prompts, through
# `exec -it`, are test_indico_exec_tty's): until one exists, Indico's front page sends
# every visitor to /bootstrap to create it.
CREATE_ADMIN = """
from indico.core.db import db
from indico.modules.auth import Identity
from indico.modules.users.operations import create_user
from indico.web.flask.app import make_app

with make_app().app_context():
    identity = Identity(provider='indico', identifier='admin', password='e2e-admin-password')
    user = create_user('admin@indico.test', {'first_name': 'Ada', 'last_name': 'Admin', 'affiliation': ''}, identity)
    user.is_admin = True
    db.session.add(user)
    db.session.commit()
    print('created user', user.id)
"""


@pytest.fixture(scope="module")
def images(docker_client) -> dict:
    return {"worker": worker_image(docker_client), "db": postgres_image(docker_client),
            "redis": redis_image(docker_client)}


@pytest.fixture
def services(docker_client, images, site_name):
    """PostgreSQL and Redis for this test, removed afterwards (with their volumes).

    Not labelled with the site: the daemon owns every container that is, and
    would stop and remove them as its own.
    """
    started = {}
    for role in ("db", "redis"):
        name = f"{site_name}-{role}"
        # SIGINT is PostgreSQL's fast shutdown (SIGTERM waits for every client to leave).
        started[role] = docker_client.containers.run(images[role], name=name, detach=True, stop_signal="SIGINT")
    yield {role: c.name for role, c in started.items()}
    for container in started.values():
        container.remove(force=True, v=True)


def wait_for_port(client, name: str, port: int, timeout: float = 60) -> None:
    """Until the service accepts connections on the engine's bridge."""
    import socket

    def accepts():
        ip = client.containers.get(name).attrs["NetworkSettings"]["IPAddress"]
        try:
            with socket.create_connection((ip, port), timeout=1):
                return True
        except OSError:
            return False
    wait_until(accepts, timeout, 0.2, f"{name} accepting on port {port}")


def supervisor_exec(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "supervisor", "exec", "--config", str(config), "--", *args],
                          capture_output=True, text=True, timeout=600, cwd=REPO)


def get_front_page(client, name: str) -> tuple[int, str, str]:
    """GET / as the web container would ask for it: (status, Location, body)."""
    ip = client.containers.get(name).attrs["NetworkSettings"]["IPAddress"]
    connection = http.client.HTTPConnection(ip, 8080, timeout=30)
    try:
        connection.request("GET", "/", headers={"Host": BASE_URL.split("//")[1]})
        response = connection.getresponse()
        return response.status, response.getheader("Location", ""), response.read().decode(errors="replace")
    finally:
        connection.close()


def serves_indico(client, name: str) -> bool:
    try:
        status, location, body = get_front_page(client, name)
    except OSError:
        return False
    return status == 200 and "Indico" in body


def health(client, name: str) -> dict:
    return client.containers.get(name).attrs["State"].get("Health") or {}


def edit_config(conf: Path, db: str, redis: str) -> None:
    """What the admin does after make-config: database, Redis, the site's address."""
    lines = []
    for line in conf.read_text().splitlines():
        key = line.split(" = ", 1)[0]
        replacement = {
            "SQLALCHEMY_DATABASE_URI": f"postgresql://{DB_USER}:{DB_PASSWORD}@{db}/{DB_NAME}",
            "BASE_URL": BASE_URL,
            "CELERY_BROKER": f"redis://{redis}:6379/0",
            "REDIS_CACHE_URL": f"redis://{redis}:6379/1",
        }.get(key)
        lines.append(f"{key} = {replacement!r}" if replacement else line)
    conf.write_text("\n".join(lines) + "\n")


def test_indico_runs_under_the_daemon_with_its_database_and_redis(docker_client, images, services, site_name,
                                                                   tmp_path):
    client = docker_client
    db, redis = services["db"], services["redis"]

    uid, gid = map(int, UID_GID.split(":"))
    for name in ("data", "scratch"):
        (tmp_path / name).mkdir()
        os.chown(tmp_path / name, uid, gid)
    worker, celery = f"{site_name}-worker", f"{site_name}-celery"
    # The image's own HEALTHCHECK command, probed every second instead of every 15 s.
    fast_health = {"test": ["indico-health"], "interval": "1s", "timeout": "10s", "retries": 3, "start_period": "120s"}
    site = {
        "site": site_name, "image": images["worker"], "pull": "never", "user": UID_GID,
        "volumes": {"data": str(tmp_path / "data"), "scratch": str(tmp_path / "scratch")},
        # Unique container names, the host names indico.conf expects.
        "network": {"links": [f"{db}:indico-db", f"{redis}:indico-redis"]},
        "restart": {"backoff": "1s", "max_backoff": "5s", "reset_after": "60s", "max_restarts": 10, "window": "10m"},
        "stop": {"timeout": "30s"},
        "containers": {
            "worker": {"name": worker, "healthcheck": fast_health, "stop_timeout": "60s"},
            "celery": {"name": celery, "healthcheck": fast_health, "stop_timeout": "60s"},
        },
    }
    daemon = Daemon(tmp_path, site)

    made = supervisor_exec(daemon.config_path, "make-config")
    assert made.returncode == 0, made.stderr
    conf = tmp_path / "data" / "etc" / "indico.conf"
    assert conf.stat().st_uid == uid
    again = supervisor_exec(daemon.config_path, "make-config")
    assert again.returncode != 0 and "already there" in again.stderr, again.stderr

    edit_config(conf, "indico-db", "indico-redis")
    wait_for_port(client, db, 5432)
    wait_for_port(client, redis, 6379)
    prepared = supervisor_exec(daemon.config_path, "indico", "db", "prepare")
    assert prepared.returncode == 0, prepared.stdout[-3000:] + prepared.stderr[-3000:]

    created = supervisor_exec(daemon.config_path, "python", "-c", CREATE_ADMIN)
    assert created.returncode == 0 and "created user" in created.stdout, created.stdout + created.stderr[-3000:]

    # Where no uwsgi answers, the worker's health check fails.
    idle = supervisor_exec(daemon.config_path, "indico-health", "worker")
    assert idle.returncode == 1 and "port 8080" in idle.stdout, idle.stdout + idle.stderr

    daemon.start()
    try:
        daemon.wait_ready(timeout=120)
        wait_until(lambda: health(client, worker).get("Status") == "healthy", 180, 0.5, "worker healthy")
        status, location, body = get_front_page(client, worker)
        assert status == 200 and "Indico" in body, (status, location, body[:500])
        # Healthy only once Indico answered: every probe before the first success failed,
        # and the first success is an HTTP answer from Indico through uwsgi.
        log = health(client, worker)["Log"]
        first_ok = next(i for i, probe in enumerate(log) if probe["ExitCode"] == 0)
        assert all(probe["ExitCode"] != 0 for probe in log[:first_ok])
        assert "HTTP 200" in log[first_ok]["Output"], log[first_ok]

        wait_until(lambda: health(client, celery).get("Status") == "healthy", 180, 0.5, "celery healthy")
        ping = client.containers.get(celery).exec_run(["indico-health", "celery"], user=UID_GID)
        assert ping.exit_code == 0 and b"pong" in ping.output, ping.output

        started_before = client.containers.get(worker).attrs["State"]["StartedAt"]
        kill_main_process(client, worker)
        daemon.wait_event("container_restarted", timeout=60, role="worker")
        wait_until(lambda: client.containers.get(worker).attrs["State"]["StartedAt"] != started_before,
                   60, 0.2, "worker started again")
        wait_until(lambda: serves_indico(client, worker), 180, 0.5, "worker serving again")
        wait_until(lambda: health(client, worker).get("Status") == "healthy", 180, 0.5, "worker healthy again")
    finally:
        code = daemon.stop(timeout=200)
    assert code == 0, daemon.log_text()[-3000:]
