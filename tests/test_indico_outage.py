"""The outage drill, for real: PostgreSQL, Redis and the Indico worker, all three under the
daemon on a site network it makes, the worker depending on the database being healthy.

The database is paused from outside (it hangs, as a database in trouble does, and the
daemon cannot cure it by a restart) for longer than the worker's crash-loop budget would
last. The worker must end up `waiting`, never `failed`; once the database is back it is
restarted at most once, and Indico answers again. The figures go to an artefact file
($INDICO_SUPERVISOR_ARTEFACTS, else the test's tmp directory) and the test's output.
"""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from harness.daemon import Daemon, wait_until
from harness.sites import remove_site_containers
from tests.indico_images import postgres_image, redis_image, worker_image
from tests.test_indico_e2e import BASE_URL, REPO, edit_config, health, supervisor_exec

UID_GID = "4321:4321"
PAUSE = 80.0  # seconds: past the two unhealthy verdicts (+ restarts) that would fail a worker without waiting


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def user_of(client, image: str) -> str:
    """The numeric UID:GID an image's own USER runs as (the site file wants numbers)."""
    out = client.containers.run(image, ["sh", "-c", "echo $(id -u):$(id -g)"], remove=True, entrypoint=[],
                                network_mode="none")
    return out.decode().strip()


def answers(client, name: str, network: str) -> bool:
    """Indico's front page through uwsgi, asked by the container's address on the site network."""
    ip = client.containers.get(name).attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
    return indico_answers(ip, 8080, BASE_URL.split("//")[1])


def indico_answers(address: str, port: int, host: str | None = None) -> bool:
    """Indico's front page answers at address:port (asked for `host`, else for address:port itself)."""
    connection = http.client.HTTPConnection(address, port, timeout=10)
    try:
        connection.request("GET", "/", headers={"Host": host} if host else {})
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
    except OSError:
        return False
    finally:
        connection.close()
    # A new database has no admin yet: Indico sends every visitor to /bootstrap to make one.
    return (response.status == 200 and "Indico" in body) or (response.status == 302 and "bootstrap" in
                                                             response.getheader("Location", ""))


def health_status(client, name: str) -> str | None:
    """The engine's health verdict, or None while the daemon has not made the container yet."""
    import docker.errors
    try:
        return health(client, name).get("Status")
    except docker.errors.NotFound:
        return None


def worker_row(daemon: Daemon) -> dict:
    done = subprocess.run([sys.executable, "-m", "supervisor", "status", "--json", "--config", str(daemon.config_path)],
                          capture_output=True, text=True, timeout=60, cwd=REPO, env=daemon.env)
    return next(r for r in json.loads(done.stdout)["containers"] if r["role"] == "worker")


def test_a_database_outage_is_waited_out_and_indico_answers_again(docker_client, site_name, tmp_path):
    client = docker_client
    images = {"worker": worker_image(client), "db": postgres_image(client), "redis": redis_image(client)}
    network = f"{site_name}-net"
    uid, gid = map(int, UID_GID.split(":"))
    for name in ("data", "scratch"):
        (tmp_path / name).mkdir()
        os.chown(tmp_path / name, uid, gid)
    db, redis, worker = (f"{site_name}-{role}" for role in ("db", "redis", "worker"))
    pg_isready = ["/usr/lib/postgresql/15/bin/pg_isready", "-h", "127.0.0.1", "-p", "5432"]
    # Probed every second, a hung request fails after 5 s: unhealthy within ~20 s of the outage.
    fast_health = {"test": ["indico-health"], "interval": "1s", "timeout": "5s", "retries": 3, "start_period": "30s"}
    site = {
        "site": site_name, "image": images["worker"], "pull": "never", "user": UID_GID,
        "volumes": {"data": str(tmp_path / "data"), "scratch": str(tmp_path / "scratch")},
        "network": {"name": network},
        "restart": {"backoff": "1s", "max_backoff": "5s", "reset_after": "60s", "max_restarts": 1, "window": "10m"},
        "containers": {
            # command null: the image's own CMD.
            "db": {"image": images["db"], "command": None, "name": db, "user": user_of(client, images["db"]), "stop_signal": "SIGINT",
                   "healthcheck": {"test": pg_isready, "interval": "1s", "timeout": "5s", "retries": 3},
                   # The worker's budget is cut to 1 to make waiting matter; the database keeps a normal one.
                   "restart": {"max_restarts": 10}},
            "redis": {"image": images["redis"], "command": None, "name": redis, "user": user_of(client, images["redis"])},
            "worker": {"name": worker, "healthcheck": fast_health, "stop_timeout": "30s",
                       "depends_on": {"db": "healthy", "redis": "started"}},
        },
    }
    daemon = Daemon(tmp_path, site)
    figures: dict = {}
    try:
        made = supervisor_exec(daemon.config_path, "make-config")  # makes the site network, too
        assert made.returncode == 0, made.stderr
        edit_config(tmp_path / "data" / "etc" / "indico.conf", db, redis)  # names on the site network
        daemon.start()
        wait_until(lambda: health_status(client, db) == "healthy", 120, 0.5, "database healthy")
        prepared = supervisor_exec(daemon.config_path, "indico", "db", "prepare")
        assert prepared.returncode == 0, prepared.stdout[-3000:] + prepared.stderr[-3000:]
        wait_until(lambda: health_status(client, worker) == "healthy", 240, 0.5, "worker healthy")
        attrs = client.containers.get(worker).attrs
        first_ok = min(epoch(p["End"]) for p in attrs["State"]["Health"]["Log"] if p["ExitCode"] == 0)
        figures["worker_boot_s"] = round(first_ok - epoch(attrs["State"]["StartedAt"]), 1)
        started_before = attrs["State"]["StartedAt"]
        assert answers(client, worker, network)
        restarts_before = worker_row(daemon)["restarts"]  # the worker may have crashed while `db prepare` ran

        paused_at = time.time()
        client.containers.get(db).pause()
        try:
            wait_until(lambda: worker_row(daemon)["state"] == "waiting", 90, 0.5, "worker waiting")
            figures["waiting_after_s"] = round(time.time() - paused_at, 1)
            assert worker_row(daemon)["detail"] == "db (paused)"
            time.sleep(max(0.0, PAUSE - (time.time() - paused_at)))
            assert client.containers.get(worker).attrs["State"]["StartedAt"] == started_before  # not restarted
            assert not daemon.events("container_failed")
        finally:
            client.containers.get(db).unpause()
        back_at = time.time()
        figures["outage_s"] = round(back_at - paused_at, 1)
        wait_until(lambda: answers(client, worker, network), 240, 0.2, "Indico answering again")
        figures["answers_again_after_s"] = round(time.time() - back_at, 1)
        db_probes = client.containers.get(db).attrs["State"]["Health"]["Log"]
        ready_after = [epoch(p["End"]) - back_at for p in db_probes if p["ExitCode"] == 0 and epoch(p["End"]) > back_at]
        figures["db_ready_after_s"] = round(min(ready_after), 1) if ready_after else 0.0
        time.sleep(3)
        restarts = [e for e in daemon.events("container_restarted", role="worker") if epoch(e["ts"]) >= paused_at]
        figures["worker_restarts_after_outage"] = len(restarts)
        assert len(restarts) <= 1, restarts
        assert not daemon.events("container_failed")
        assert worker_row(daemon)["restarts"] == restarts_before  # none of it counted against its budget
        figures["target_s"] = round(figures["db_ready_after_s"] + figures["worker_boot_s"] + 5, 1)

        # The database stopped from outside: the daemon brings its own database back at once.
        wait_until(lambda: health_status(client, db) == "healthy", 60, 0.2, "database healthy again")
        wait_until(lambda: health_status(client, worker) == "healthy", 120, 0.2, "worker healthy again")
        stopped_at = time.time()
        client.containers.get(db).stop(timeout=30)
        wait_until(lambda: client.containers.get(db).status == "running"
                   and epoch(client.containers.get(db).attrs["State"]["StartedAt"]) > stopped_at, 60, 0.1,
                   "database started again by the daemon")
        wait_until(lambda: health_status(client, db) == "healthy", 60, 0.1, "database healthy after the stop")
        db_attrs = client.containers.get(db).attrs
        db_started = epoch(db_attrs["State"]["StartedAt"])
        db_ready = min(epoch(p["End"]) for p in db_attrs["State"]["Health"]["Log"]
                       if p["ExitCode"] == 0 and epoch(p["End"]) > db_started)
        wait_until(lambda: answers(client, worker, network), 240, 0.2, "Indico answering after the stop")
        answered_at = time.time()
        figures["stop_db_back_running_s"] = round(db_started - stopped_at, 1)
        figures["stop_db_ready_s"] = round(db_ready - db_started, 1)
        figures["stop_answers_again_after_db_ready_s"] = round(max(0.0, answered_at - db_ready), 1)
        figures["stop_target_s"] = round(figures["stop_db_ready_s"] + figures["worker_boot_s"] + 5, 1)
        time.sleep(3)
        after_stop = [e for e in daemon.events("container_restarted", role="worker") if epoch(e["ts"]) >= stopped_at]
        figures["stop_worker_restarts"] = len(after_stop)
        assert len(after_stop) <= 1, after_stop
        assert not daemon.events("container_failed")
    finally:
        out = Path(os.environ.get("INDICO_SUPERVISOR_ARTEFACTS", tmp_path))
        out.mkdir(parents=True, exist_ok=True)
        (out / "outage-drill.json").write_text(json.dumps(figures, indent=1))
        print(f"outage drill: {figures}")
        code = daemon.stop(timeout=200)
        remove_site_containers(client, site_name)
        try:
            client.networks.get(network).remove()
        except Exception:  # already gone, or the test failed before making it
            pass
    assert code == 0, daemon.log_text()[-3000:]
