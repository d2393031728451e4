"""The whole Indico site from nothing to all healthy: ours against Debian's docker-compose 1.29.

Both sides start the same containers from the same local images with the same
settings (command, user, binds, engine healthcheck) and the same dependency graph
(`worker` and `celery` wait for `db` and `redis` healthy; `web` waits for `worker`
healthy): ours as `depends_on: {db: healthy, ...}` in the
site file, compose as `depends_on: {db: {condition: service_healthy}}` in a
version 2.4 file, which 1.29 honours. Nothing is pulled: every image is local.

From nothing: no container, no network. Time runs from spawning the command
(`indico-supervisor run`, `docker-compose up -d`) to the last container ready: its
first `health_status: healthy` event, or for web (nginx, no healthcheck, started only
once the worker is healthy) its `start`; both read from the engine's own event stream. The database comes from an image committed once per
bench run with Indico's schema already in it (`indico db prepare` is a first-install
step, timed by neither side), so the worker can turn healthy.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker.errors
import yaml

from bench.lab import Lab, RUN_ID, BENCH_LABEL, new_site_name, say
from bench.report import Result, median, ratio
from harness.daemon import Daemon
from harness.sites import remove_site_containers
from tests.indico_images import PGDATA, nginx_image, postgres_image, redis_image, worker_image
from tests.test_indico_e2e import edit_config
from tests.test_indico_outage import user_of

FULL, QUICK = 3, 1  # repetitions per side
UID_GID = "4321:4321"
HEALTHY = "health_status: healthy"


@dataclass(frozen=True)
class Role:
    image: str
    user: str
    health: list[str]
    command: list[str] | None = None  # None: the image's own CMD
    indico: bool = False  # binds the data and scratch volumes
    depends: dict[str, str] = field(default_factory=dict)  # role -> "healthy"
    stop_signal: str = "SIGTERM"
    mounts: tuple[str, ...] = ()  # more binds; {root} is the run's directory, {prefix} its names' prefix
    # Ready is its first healthy, or for a role without a healthcheck (web) its start.



HEALTH_TIMING = {"interval": "1s", "timeout": "8s", "retries": 3, "start_period": "120s"}
ASSETS = "{prefix}-assets:/opt/indico/assets"
NGINX = ["nginx", "-c", "/opt/indico/data/etc/nginx.conf", "-e", "stderr", "-g", "daemon off;"]


def site_roles(client) -> dict[str, Role]:
    """The production template's shape, on the images the tests build."""
    images = {"worker": worker_image(client), "db": _prepared_database(client), "redis": redis_image(client),
              "web": nginx_image(client)}
    needs = {"db": "healthy", "redis": "healthy"}
    return {
        "db": Role(images["db"], user_of(client, images["db"]),
                   ["/usr/lib/postgresql/15/bin/pg_isready", "-h", "127.0.0.1"], stop_signal="SIGINT"),
        "redis": Role(images["redis"], user_of(client, images["redis"]), ["redis-cli", "ping"]),
        "worker": Role(images["worker"], UID_GID, ["indico-health", "worker"], ["run"], True, needs, mounts=(ASSETS,)),
        "celery": Role(images["worker"], UID_GID, ["indico-health", "celery"], ["celery"], True, needs),
        # As examples/site.yaml has it: nginx.conf from make-config, the worker's static files.
        "web": Role(images["web"], UID_GID, [], NGINX, depends={"worker": "healthy"}, stop_signal="SIGQUIT",
                    mounts=("{root}/data:/opt/indico/data:ro", "{root}/scratch:/opt/indico/scratch:ro",
                            ASSETS + ":ro")),
    }


def run(lab: Lab, quick: bool) -> Result:
    roles = site_roles(lab.client)
    data = _configured_data(lab)
    ours: list[float] = []
    compose: list[float] = []
    reps = QUICK if quick else FULL
    for rep in range(reps):
        for side in (("ours", "compose") if rep % 2 == 0 else ("compose", "ours")):
            took = _ours(lab, roles, data) if side == "ours" else _compose(lab, roles, data)
            (ours if side == "ours" else compose).append(took)
            say(f"site {rep + 1}/{reps} {side}: all {len(roles)} ready after {took:.1f}s")
    result = Result("site", "site: the whole Indico site from nothing to all healthy, against docker-compose 1.29",
                    ("side", "runs", "median s", "min s", "max s", "ratio to compose"))
    for name, values in (("ours", ours), ("docker-compose", compose)):
        result.rows.append((name, len(values), median(values), min(values), max(values),
                            ratio(median(values), median(compose))))
    result.notes.append(f"roles: {', '.join(roles)}; healthchecks every {HEALTH_TIMING['interval']} on both sides "
                        "(web, which has none, is ready at its start); the sides alternate and who goes first rotates")
    result.notes.append(f"docker-compose: {_compose_version()}")
    return result


def _ours(lab: Lab, roles: dict[str, Role], data: Path) -> float:
    site = new_site_name()
    root = _side_dir(lab, data, site)
    names = {role: f"{site}-{role}" for role in roles}
    _configure(root, names)
    config = {
        "site": site, "image": roles["worker"].image, "pull": "never", "user": UID_GID,
        "volumes": {"data": str(root / "data"), "scratch": str(root / "scratch")},
        "network": {"name": f"{site}-net"},
        "containers": {role: {"name": names[role], "image": r.image, "command": r.command, "user": r.user,
                              "stop_signal": r.stop_signal,
                              **({"healthcheck": {"test": r.health, **HEALTH_TIMING}} if r.health else {}),
                              **({"volumes": {"extra": _mounts(r, root, site)}} if r.mounts else {}),
                              **({"depends_on": r.depends} if r.depends else {})}
                       for role, r in roles.items()},
    }
    daemon = Daemon(root, config)
    lab.daemons.append(daemon)
    lab.events.watch(*names.values())
    spawned = time.time()
    daemon.start("--log-level", "info")
    try:
        return _all_ready(lab, roles, names, spawned) - spawned
    finally:
        daemon.stop(120)
        remove_site_containers(lab.client, site)
        _remove_network(lab.client, f"{site}-net")
        _remove_volume(lab.client, f"{site}-assets")


def _compose(lab: Lab, roles: dict[str, Role], data: Path) -> float:
    project = new_site_name()
    root = _side_dir(lab, data, project)
    names = {role: f"{project}-{role}" for role in roles}
    _configure(root, names)
    services = {}
    for role, r in roles.items():
        service = {"image": r.image, "container_name": names[role], "user": r.user, "stop_signal": r.stop_signal,
                   "labels": {BENCH_LABEL: RUN_ID}}
        if r.health:
            service["healthcheck"] = {"test": ["CMD", *r.health], **HEALTH_TIMING}
        if r.command is not None:
            service["command"] = r.command
        if r.indico or r.mounts:
            service["volumes"] = ([f"{root / 'data'}:/opt/indico/data", f"{root / 'scratch'}:/opt/indico/scratch"]
                                  if r.indico else []) + _mounts(r, root, project)
        if r.depends:
            service["depends_on"] = {other: {"condition": f"service_{state}"} for other, state in r.depends.items()}
        services[role] = service
    compose_file = root / "docker-compose.yml"
    volumes = {f"{project}-assets": {"name": f"{project}-assets"}}
    compose_file.write_text(yaml.safe_dump({"version": "2.4", "services": services, "volumes": volumes},
                                           sort_keys=False))
    lab.events.watch(*names.values())
    command = ["docker-compose", "--no-ansi", "-f", str(compose_file), "-p", project]
    spawned = time.time()
    up = subprocess.Popen([*command, "up", "-d"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ready = _all_ready(lab, roles, names, spawned)
    finally:
        output = up.communicate(timeout=600)[0]
        if up.returncode:
            say(f"docker-compose up said:\n{output[-2000:]}")
        subprocess.run([*command, "down", "--volumes", "--timeout", "30"], capture_output=True, timeout=600)
    return ready - spawned


def _all_ready(lab: Lab, roles: dict[str, Role], names: dict[str, str], after: float, timeout: float = 600) -> float:
    """The engine's time of the last role to be ready: its first healthy event, or its start (web)."""
    times = []
    for role, r in roles.items():
        at = lab.events.first(names[role], HEALTHY if r.health else "start", after, timeout)
        if at is None:
            raise RuntimeError(f"{names[role]} not ready within {timeout:.0f}s")
        times.append(at)
    return max(times)


def _mounts(role: Role, root: Path, prefix: str) -> list[str]:
    return [m.format(root=root, prefix=prefix) for m in role.mounts]


def _configure(root: Path, names: dict[str, str]) -> None:
    """What the admin edits after make-config: indico.conf's database and Redis, nginx.conf's worker."""
    etc = root / "data" / "etc"
    edit_config(etc / "indico.conf", names["db"], names["redis"])
    nginx = etc / "nginx.conf"
    nginx.write_text(nginx.read_text().replace("set $indico_worker indico-worker;",
                                               f"set $indico_worker {names['worker']};"))


def _configured_data(lab: Lab) -> Path:
    """One data directory with make-config's indico.conf, copied for each run."""
    root = Path(tempfile.mkdtemp(prefix=f"bench-site-{RUN_ID}-"))
    lab.dirs.append(root)
    data = root / "data"
    data.mkdir()
    _chown(data)
    lab.client.containers.run(worker_image(lab.client), ["make-config"], user=UID_GID, remove=True,
                              volumes={str(data): {"bind": "/opt/indico/data", "mode": "rw"}},
                              labels={BENCH_LABEL: RUN_ID})
    return data


def _side_dir(lab: Lab, data: Path, name: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    root.chmod(0o755)
    lab.dirs.append(root)
    shutil.copytree(data, root / "data")
    (root / "scratch").mkdir()
    for path in [root / "data", root / "scratch", *(root / "data").rglob("*")]:
        _chown(path)
    return root


def _chown(path: Path) -> None:
    uid, gid = map(int, UID_GID.split(":"))
    os.chown(path, uid, gid)


def _prepared_database(client) -> str:
    """The test PostgreSQL image with Indico's schema in it, committed once per worker and database image."""
    worker, base = worker_image(client), postgres_image(client)
    tag = f"indico-supervisor-bench/postgres-prepared:{_short(base)}-{_short(worker)}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    say(f"preparing Indico's schema once for {tag} (about a minute)")
    name = f"{RUN_ID}-prepare"
    network = client.networks.create(f"{name}-net", labels={BENCH_LABEL: RUN_ID})
    db = client.containers.run(base, name=f"{name}-db", detach=True, network=network.name,
                               labels={BENCH_LABEL: RUN_ID}, stop_signal="SIGINT")
    try:
        data = Path(tempfile.mkdtemp(prefix=f"bench-prepare-{RUN_ID}-"))
        try:
            (data / "data").mkdir()
            _chown(data / "data")
            volumes = {str(data / "data"): {"bind": "/opt/indico/data", "mode": "rw"}}
            client.containers.run(worker, ["make-config"], user=UID_GID, remove=True, volumes=volumes)
            edit_config(data / "data" / "etc" / "indico.conf", f"{name}-db", "127.0.0.1")
            _wait_ready(db)
            out = client.containers.run(worker, ["indico", "db", "prepare"], user=UID_GID, remove=True,
                                        volumes=volumes, network=network.name, labels={BENCH_LABEL: RUN_ID})
            say(f"indico db prepare: {out.decode(errors='replace').strip().splitlines()[-1:]}")
        finally:
            shutil.rmtree(data, ignore_errors=True)
        db.stop(timeout=60)  # a clean shutdown: the committed cluster needs no recovery
        db.commit(*tag.split(":"), changes=[f'LABEL io.indico-supervisor.bench.pgdata="{PGDATA}"'])
    finally:
        db.remove(force=True)
        network.remove()
    return tag


def _wait_ready(db, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exec_run(["/usr/lib/postgresql/15/bin/pg_isready", "-h", "127.0.0.1"]).exit_code == 0:
            return
        time.sleep(0.5)
    raise RuntimeError("the database to prepare never answered")


def _short(image: str) -> str:
    return image.split(":")[-1][:12]


def _remove_volume(client, name: str) -> None:
    try:
        client.volumes.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass


def _remove_network(client, name: str) -> None:
    try:
        client.networks.get(name).remove()
    except docker.errors.NotFound:
        pass


def _compose_version() -> str:
    done = subprocess.run(["docker-compose", "version", "--short"], capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip()
