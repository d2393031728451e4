"""What every benchmark stands on: a real daemon on a unique site, peer containers, the engine's clock.

Both sides of a comparison are timed by the same witness: the engine's own event
stream (`timeNano` of `start`, `die`, … events), never by a log line of ours or a
poll that one side would pay for and the other not. Everything a run creates
carries either its site label or this run's bench label, and only that is removed.
"""
from __future__ import annotations

import shlex
import shutil
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import docker
import docker.errors

from supervisor.config import load_site
from supervisor.spec import ContainerSpec
from harness.sites import SITE_LABEL, remove_site_containers
from harness.daemon import Daemon, site_config

# Peer containers (the engine's restart policy, the bare-start floor, the `docker run` loop) carry this.
BENCH_LABEL = "io.indico-supervisor.bench"
RUN_ID = "b" + uuid.uuid4().hex[:8]


def say(message: str) -> None:
    """Progress, so a run of minutes is never silent."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def new_site_name() -> str:
    return f"{RUN_ID}{uuid.uuid4().hex[:4]}"


def log_time(event: dict) -> float:
    """Epoch seconds of a daemon log event (its `ts`, ISO in UTC)."""
    return datetime.fromisoformat(event["ts"]).timestamp()


class EngineEvents:
    """The engine's container events, followed on a thread and kept by container name.

    Other agents' containers share the engine: only `names` we asked about are kept.
    """

    def __init__(self, client: docker.DockerClient):
        self._stream = client.events(decode=True, filters={"type": "container"})
        self._names: set[str] = set()
        self._seen: list[tuple[float, str, str]] = []  # (epoch seconds, action, name)
        self._changed = threading.Condition()
        threading.Thread(target=self._follow, name="engine-events", daemon=True).start()

    def watch(self, *names: str) -> None:
        with self._changed:
            self._names.update(names)

    def _follow(self) -> None:
        try:
            for event in self._stream:
                name = (event.get("Actor") or {}).get("Attributes", {}).get("name")
                action = event.get("Action") or ""
                if name in self._names and not action.startswith("exec_"):
                    with self._changed:
                        self._seen.append((event["timeNano"] / 1e9, action, name))
                        self._changed.notify_all()
        except Exception:  # the stream is closed at the end of a run
            pass

    def first(self, name: str, action: str, after: float, timeout: float) -> float | None:
        """Engine time of the first `action` on `name` later than `after`; None if none within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for at, seen_action, seen_name in self._seen:
                    if at > after and seen_name == name and seen_action == action:
                        return at
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def between(self, after: float, before: float, names=None, actions=None) -> list[tuple[float, str, str]]:
        with self._changed:
            return [e for e in self._seen if after < e[0] <= before
                    and (names is None or e[2] in names) and (actions is None or e[1] in actions)]

    def close(self) -> None:
        self._stream.close()


class Lab:
    """One benchmark run's engine client, event witness, image, and everything it created."""

    def __init__(self, client: docker.DockerClient, image: str):
        self.client = client
        self.image = image
        self.events = EngineEvents(client)
        self.sites: list[str] = []
        self.daemons: list[Daemon] = []
        self.dirs: list[Path] = []

    def site(self, containers: dict, **top) -> Daemon:
        """A daemon (not started) for a fresh site; `containers` maps role -> overrides."""
        name = new_site_name()
        root = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        root.chmod(0o755)
        daemon = Daemon(root, site_config(name, self.image, root, containers, **top))
        daemon.site = name  # the harness's Daemon keeps only the file; every benchmark needs the name
        self.sites.append(name)
        self.daemons.append(daemon)
        self.dirs.append(root)
        self.events.watch(*(f"{name}-{role}" for role in containers))
        return daemon

    def peer(self, daemon: Daemon, role: str, name: str, restart: str) -> docker.models.containers.Container:
        """The container the daemon would create for `role`, but named `name` and under the engine's
        restart policy `restart`: same image, command, user, binds, env."""
        kwargs = ContainerSpec(daemon.site, self._resolved(daemon, role)).create_kwargs()
        kwargs.update(name=name, labels={BENCH_LABEL: RUN_ID}, restart_policy={"Name": restart})
        self.events.watch(name)
        container = self.client.containers.create(**kwargs)
        container.start()
        return container

    def docker_run_line(self, daemon: Daemon, role: str, name: str) -> str:
        """The `docker run -d` an admin types today for the same container."""
        c = self._resolved(daemon, role)
        words = ["docker", "run", "-d", "--name", name, "--label", f"{BENCH_LABEL}={RUN_ID}", "--user", c.user]
        for bind in c.binds:
            words += ["--mount", f"type=bind,src={bind.host},dst={bind.target}" + (",readonly" if bind.read_only else "")]
        for key, value in c.env:
            words += ["--env", f"{key}={value}"]
        words += [c.image, *c.command]
        return shlex.join(words)

    def _resolved(self, daemon: Daemon, role: str):
        site = load_site(str(daemon.config_path))
        return next(c for c in site.containers if c.role == role)

    def remove_site(self, daemon: Daemon) -> None:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.kill()
        remove_site_containers(self.client, daemon.site)

    def remove_peers(self) -> None:
        containers = self.client.containers.list(all=True, filters={"label": f"{BENCH_LABEL}={RUN_ID}"})
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda c: _force_remove(c), containers))

    def close(self) -> None:
        for daemon in self.daemons:
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.kill()
        with ThreadPoolExecutor(4) as pool:
            for site in self.sites:
                containers = self.client.containers.list(all=True, filters={"label": f"{SITE_LABEL}={site}"})
                list(pool.map(_force_remove, containers))
        self.remove_peers()
        self.events.close()
        for root in self.dirs:
            shutil.rmtree(root, ignore_errors=True)


def _force_remove(container) -> None:
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass


def logged(daemon: Daemon, event: str, expected: int, timeout: float = 10, **fields) -> int:
    """How many `event`s the daemon logged, once it logged `expected` or `timeout` passed: its log
    line comes after the engine's event we timed, so counting at once would race it."""
    try:
        daemon.wait_event(event, timeout=timeout, count=max(1, expected), **fields)
    except AssertionError:
        pass
    return len(daemon.events(event, **fields))


def wait_running(client: docker.DockerClient, name: str, timeout: float = 30) -> dict:
    """The container's attrs once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            attrs = client.api.inspect_container(name)
            if attrs["State"]["Running"] and attrs["State"]["Pid"]:
                return attrs
        except docker.errors.NotFound:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{name} is not running after {timeout}s")


def engine_epoch(stamp: str) -> float:
    """The engine's RFC 3339 nanosecond stamps, to epoch seconds."""
    head, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(fraction + '000000')[:6]}+00:00").timestamp()
