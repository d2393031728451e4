"""`examples/demo`: the whole Indico site of examples/site.yaml on this machine, with real Indico.

Images are built here, with no registry, as the end-to-end tests build them (cached by
what they are made of: the first run takes minutes, the next ones seconds): the worker
image from image/, PostgreSQL, Redis and nginx from Debian's packages. The site file is
examples/site.yaml's shape on those local images, written to examples/demo-data/site.yaml.
The first run makes the configuration (make-config, then BASE_URL and the database set
for this machine) and prepares the database once the daemon has it running.

The daemon runs in the foreground: Ctrl-C stops it and the site. The data stays: the
data and scratch directories under examples/demo-data/ and the database's named volume,
so the next run starts where this one stopped.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import docker
import docker.errors
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.indico_images import PGDATA, nginx_image, postgres_image, redis_image, worker_image  # noqa: E402
from tests.test_indico_e2e import edit_config  # noqa: E402
from tests.test_indico_outage import indico_answers, user_of  # noqa: E402

SITE = "indico-demo"
# Where the site's data lives between runs ($INDICO_DEMO_DATA: the demo's test keeps it apart).
HERE = Path(os.environ.get("INDICO_DEMO_DATA") or REPO / "examples" / "demo-data" / "indico")
UID_GID = "4321:4321"  # owns data/ and scratch/; any non-root pair works
ADDRESS, PORT = "127.0.0.1", 8080
BASE_URL = f"http://{ADDRESS}:{PORT}"


def say(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


def main() -> int:
    client = docker.from_env(timeout=900)
    say("building or reusing the images (the first run builds Indico: about 10 minutes; later runs: seconds)")
    images = {"worker": worker_image(client, say), "db": postgres_image(client, say), "redis": redis_image(client, say),
              "web": nginx_image(client, say)}
    config = HERE / "site.yaml"
    _directories()
    config.write_text(yaml.safe_dump(site(client, images), sort_keys=False))
    first_run = not (HERE / "data" / "etc" / "indico.conf").exists()
    if first_run:
        _make_config(config)
    # A session of its own: Ctrl-C reaches only us, and the daemon gets one SIGTERM from us
    # (a second stop signal would make it exit at once, leaving the site running).
    daemon = subprocess.Popen([sys.executable, "-m", "supervisor", "run", "--config", str(config)], cwd=REPO,
                              start_new_session=True)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda n, _f: _stop(daemon))
    threading.Thread(target=_first_steps, args=(client, config, daemon), daemon=True).start()
    code = daemon.wait()
    say(f"the daemon stopped (exit {code}); the data stays in {HERE} and the volume {SITE}-pgdata")
    return code


_stopping = []


def _stop(daemon: subprocess.Popen) -> None:
    if not _stopping and daemon.poll() is None:
        _stopping.append(True)
        say("stopping the site (its data stays)")
        daemon.send_signal(signal.SIGTERM)


def site(client, images: dict) -> dict:
    """examples/site.yaml's roles on the local images; web published on 127.0.0.1:8080."""
    template = yaml.safe_load((REPO / "examples" / "site.yaml").read_text())["containers"]
    local = {
        # The test image's cluster, made when it was built (role, database, extensions), kept
        # in a named volume: Docker copies it there on first use.
        "db": {"image": images["db"], "command": None, "env": {}, "user": user_of(client, images["db"]),
               "volumes": {"extra": [f"indico-pgdata:{PGDATA}"]},  # renamed for the site below
               "healthcheck": {"test": ["/usr/lib/postgresql/15/bin/pg_isready", "-h", "127.0.0.1"],
                               "interval": "2s", "timeout": "5s", "retries": 5}},
        "redis": {"image": images["redis"], "command": None, "user": user_of(client, images["redis"]),
                  "volumes": {"extra": []},
                  "healthcheck": {"test": ["redis-cli", "ping"], "interval": "2s", "timeout": "5s", "retries": 5}},
        "worker": {"healthcheck": {"test": ["indico-health"], "interval": "2s", "timeout": "10s", "retries": 3,
                                   "start_period": "180s"}},
        "celery": {},
        "web": {"image": images["web"], "ports": [f"{ADDRESS}:{PORT}:80"]},
    }
    containers = {}
    for role, body in template.items():
        body = {**body, **local[role], "name": f"{SITE}-{role}"}
        if body.get("volumes"):
            body["volumes"] = {"extra": [re.sub(r"^indico-", f"{SITE}-", v).replace("/srv/indico/", f"{HERE}/")
                                         for v in body["volumes"]["extra"]]}
        containers[role] = body
    return {"site": SITE, "image": images["worker"], "pull": "never", "user": UID_GID,
            "volumes": {"data": str(HERE / "data"), "scratch": str(HERE / "scratch")},
            "network": {"name": f"{SITE}-net"}, "containers": containers}


def _directories() -> None:
    uid, gid = map(int, UID_GID.split(":"))
    for name in ("data", "scratch"):
        (HERE / name).mkdir(parents=True, exist_ok=True)
        os.chown(HERE / name, uid, gid)


def _make_config(config: Path) -> None:
    say("first run: making indico.conf and nginx.conf (make-config), set for this machine")
    _exec(config, "make-config")
    etc = HERE / "data" / "etc"
    edit_config(etc / "indico.conf", f"{SITE}-db", f"{SITE}-redis")
    conf = etc / "indico.conf"
    conf.write_text(re.sub(r"^BASE_URL = .*$", f"BASE_URL = {BASE_URL!r}", conf.read_text(), flags=re.M))
    nginx = etc / "nginx.conf"
    nginx.write_text(nginx.read_text().replace("set $indico_worker indico-worker;",
                                               f"set $indico_worker {SITE}-worker;"))


def _first_steps(client, config: Path, daemon: subprocess.Popen) -> None:
    """Once the database runs: `indico db prepare` on the first run; then say where Indico answers."""
    marker = HERE / ".database-prepared"
    if not marker.exists():
        if not _wait(lambda: _health(client, f"{SITE}-db") == "healthy", daemon, 300):
            return
        say("first run: preparing the database (indico db prepare, about a minute)")
        done = _exec(config, "indico", "db", "prepare", check=False)
        if done.returncode != 0:
            say(f"indico db prepare failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
            return
        marker.touch()
    say("waiting for Indico to answer through the web container (the worker starts in about a minute)")
    if _wait(lambda: indico_answers(ADDRESS, PORT), daemon, 600):
        say(f"Indico is up: open {BASE_URL}/ (a new database shows Indico's own first page, where you "
            "create the admin account). Ctrl-C stops the site; its data stays for the next run.")


def _exec(config: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "supervisor", "exec", "--config", str(config), "--", *command],
                          cwd=REPO, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f"demo: {' '.join(command)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done


def _wait(predicate, daemon: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and daemon.poll() is None:
        if predicate():
            return True
        time.sleep(1)
    return False


def _health(client, name: str) -> str | None:
    try:
        return (client.containers.get(name).attrs["State"].get("Health") or {}).get("Status")
    except docker.errors.NotFound:
        return None


if __name__ == "__main__":
    sys.exit(main())
