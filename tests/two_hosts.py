"""Two hosts on one machine: the main engine and a second dockerd of our own, and a watcher
that holds them to "never two of the singleton role running at once".

`SecondEngine` is a dockerd with its own socket, data root, exec root (and so its own
containerd), pid file, configuration file, address pool and default bridge, and no
iptables rules, so it never touches what the shared main engine set up. Not
`--bridge=none`: a dockerd started so deletes the interface `docker0`, which is the
main engine's. Its default bridge is an interface made here with an address of its
own; its gateway routes containers to this machine's addresses, where the Redis links
listen. It is the only engine a test may stop, and it is never started again on the
same data: a dockerd restarting on its own data root clears its stale default bridge
network, and deleted the interface docker0 (the main engine's!) doing so. A test that
stopped it takes a new one. `start()` checks that docker0 is still there, loudly.
`load_images` copies test images into it through the SDK (save, then load).

`SingletonWatcher` samples both engines every 50 ms for running containers of the
site's singleton role and follows both engines' event streams, draining them all the
time; `check()` raises if two ever ran at once, by either the samples or the engines'
own event times (every `start` after the previous holder's `die`).

Run as a script to start a second engine, print its socket and wait (for bench/ or a
look by hand): python -m tests.two_hosts
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness.sites import SITE_LABEL

ROLE_LABEL = "io.indico-supervisor.role"
# Short paths: a unix socket's path must stay under 108 bytes, containerd's included.
RUN_ROOT = Path("/run/indico-supervisor-test")
DATA_ROOT = Path("/var/tmp/indico-supervisor-test-engines")
# Far from the main engine's 172.17-31.x and 192.168.x pools; a /16 per engine, /24 per network.
ADDRESS_POOL = "base=10.213.0.0/16,size=24"
START_SECONDS = 60


class MainBridgeGone(RuntimeError):
    pass


class SecondEngine:
    def __init__(self, name: str | None = None):
        self.name = name or "e" + uuid.uuid4().hex[:8]
        self.run_dir = RUN_ROOT / self.name
        self.data_root = DATA_ROOT / self.name
        self.socket = self.run_dir / "docker.sock"
        self.log_path = self.data_root.with_suffix(".log")
        self.bridge = "isb" + self.name[-8:]  # an interface name has at most 15 bytes
        self.process: subprocess.Popen | None = None
        self._client = None

    def _make_bridge(self) -> None:
        if Path(f"/sys/class/net/{self.bridge}").exists():
            return
        subnet = _free_subnet()
        # A fixed address, as dockerd gives its bridges: a bridge left to choose takes the lowest of
        # its ports' addresses, which changes as containers come and go, and stale ARP entries
        # then cut containers off their gateway for seconds.
        mac = "02:42:" + ":".join(f"{random.randrange(256):02x}" for _ in range(4))
        subprocess.run(["ip", "link", "add", "name", self.bridge, "address", mac, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", f"{subnet}.1/24", "dev", self.bridge], check=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> "SecondEngine":
        if self.process is not None:
            raise RuntimeError("a second engine is started once (see the module's docstring): take a new one")
        main_bridge = Path("/sys/class/net/docker0").exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        self._make_bridge()
        config = self.run_dir / "daemon.json"
        config.write_text("{}\n")  # never /etc/docker/daemon.json, which is the main engine's
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            ["dockerd", "--config-file", str(config), "-H", self.docker_host,
             "--data-root", str(self.data_root), "--exec-root", str(self.run_dir / "exec"),
             "--pidfile", str(self.run_dir / "docker.pid"), "--default-address-pool", ADDRESS_POOL,
             f"--bridge={self.bridge}", "--iptables=false", "--ip-masq=false", "--ip-forward=false"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the second dockerd exited ({self.process.returncode}):\n{self.log_tail()}")
            answered = False
            with contextlib.suppress(Exception):
                answered = self.client().ping()
            if answered:
                if main_bridge and not Path("/sys/class/net/docker0").exists():
                    raise MainBridgeGone("starting the second dockerd deleted docker0, the main engine's bridge: "
                                         "recreate it (ip link add docker0 ...) and fix tests/two_hosts.py")
                return self
            time.sleep(0.2)
        raise RuntimeError(f"the second dockerd did not answer within {START_SECONDS}s:\n{self.log_tail()}")

    def client(self):
        import docker

        if self._client is None:
            self._client = docker.DockerClient(base_url=self.docker_host, timeout=120)
        return self._client

    def stop(self, timeout: float = 60) -> None:
        """Stopped as systemd would stop it (its containers stop with it): a host going down, for good."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def remove(self) -> None:
        """Stop it and remove all it had: it was this test session's alone."""
        if self.running:
            client = self.client()
            for container in client.containers.list(all=True):
                with contextlib.suppress(Exception):
                    container.remove(force=True)
        self.stop()
        subprocess.run(["ip", "link", "del", self.bridge], check=False, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(self.data_root, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.log_path.unlink()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        return ""

    def network(self, name: str):
        """A user-defined bridge on this engine (from its own pool), made once."""
        import docker.errors

        client = self.client()
        try:
            return client.networks.get(name)
        except docker.errors.NotFound:
            return client.networks.create(name, driver="bridge")


def _free_subnet() -> str:
    """A 10.214.N.0/24 that no route of this machine covers yet (other engines' bridges)."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    for n in random.sample(range(256), 256):
        if f"10.214.{n}." not in routes:
            return f"10.214.{n}"
    raise RuntimeError("no free 10.214.N.0/24 for a second engine's bridge")


def load_images(source, target, references: Iterable[str]) -> None:
    """Copy images from one engine to another (save, load), skipping those it has."""
    import docker.errors

    for ref in references:
        with contextlib.suppress(docker.errors.ImageNotFound):
            target.images.get(ref)
            continue
        stream = source.images.get(ref).save(named=True)  # named by only one of its tags
        repository, tag = ref.rsplit(":", 1)
        for image in target.images.load(b"".join(stream)):
            image.tag(repository, tag)


@dataclass(frozen=True)
class Sighting:
    engine: str
    container: str  # the id
    at: float  # seconds since the epoch (the engine's own time for events; ours for samples)


@dataclass
class Record:
    samples: int = 0
    overlaps: list[tuple[Sighting, Sighting]] = field(default_factory=list)
    # (engine, id, action, time): every start and die of the role, as the engines said.
    events: list[tuple[str, str, str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class SingletonWatcher:
    """Never two running: sampled every 50 ms on all engines, and by the engines' events."""

    PERIOD = 0.05

    def __init__(self, engines: dict, site: str, role: str = "celery"):
        self.engines, self.site, self.role = engines, site, role
        self.filters = {"label": [f"{SITE_LABEL}={site}", f"{ROLE_LABEL}={role}"]}
        self.record = Record()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._sample, daemon=True, name="watch-sample")]
        self.threads += [threading.Thread(target=self._follow, args=(name,), daemon=True, name=f"watch-{name}")
                         for name in engines]

    def __enter__(self) -> "SingletonWatcher":
        self.since = time.time()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()

    def running_now(self) -> list[Sighting]:
        found = []
        for name, client in list(self.engines.items()):
            try:
                for container in client.containers.list(filters=self.filters, ignore_removed=True):
                    found.append(Sighting(name, container.id, time.time()))
            except Exception as error:  # an engine stopped on purpose answers nothing: not an overlap
                with self.lock:
                    self.record.errors.append(f"{name}: {type(error).__name__}")
        return found

    def _sample(self) -> None:
        while not self.stopping.is_set():
            found = self.running_now()
            with self.lock:
                self.record.samples += 1
                if len(found) > 1:
                    self.record.overlaps.append((found[0], found[1]))
            self.stopping.wait(self.PERIOD)

    def _follow(self, name: str) -> None:
        """Drains the engine's event stream all the time; reconnects when the engine went away."""
        since = self.since
        while not self.stopping.is_set():
            try:
                stream = self.engines[name].events(decode=True, since=since, filters={
                    "type": "container", "event": ["start", "die"], "label": self.filters["label"]})
                for event in stream:
                    at = event["timeNano"] / 1e9
                    since = at
                    with self.lock:
                        self.record.events.append((name, event["id"], event["Action"], at))
                    if self.stopping.is_set():
                        break
            except Exception:
                pass  # the engine is down or restarting: reconnected from `since`
            self.stopping.wait(0.2)

    def events(self) -> list[tuple[str, str, str, float]]:
        with self.lock:
            unique = sorted(set(self.record.events), key=lambda e: (e[3], e[2] != "die"))
        return unique

    def check(self) -> None:
        """Raises AssertionError if two ran at once, by samples or by the engines' event times."""
        with self.lock:
            overlaps = list(self.record.overlaps)
        assert not overlaps, f"two {self.role} containers running at once: {overlaps[:3]}"
        running: dict[str, tuple[str, float]] = {}
        for engine, container, action, at in self.events():
            if action == "start":
                others = {c: v for c, v in running.items() if c != container}
                assert not others, (f"{self.role} {container[:12]} started on {engine} at {at:.3f} while "
                                    f"{others} still ran (no die before it)")
                running[container] = (engine, at)
            else:
                running.pop(container, None)

    def starts(self) -> list[tuple[str, str, float]]:
        return [(engine, container, at) for engine, container, action, at in self.events() if action == "start"]

    def wait_running(self, count: int = 1, timeout: float = 60, engine: str | None = None) -> list[Sighting]:
        """Until exactly `count` of the role run (on `engine`, if given)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.running_now()
            if engine is not None:
                found = [s for s in found if s.engine == engine] if len(found) == count else []
            if len(found) == count:
                return found
            time.sleep(self.PERIOD)
        raise AssertionError(f"not {count} {self.role} running within {timeout}s: {self.running_now()}")


def _main() -> None:
    engine = SecondEngine().start()
    print(json.dumps({"docker_host": engine.docker_host, "log": str(engine.log_path), "pid": os.getpid()}))
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        engine.remove()


if __name__ == "__main__":
    _main()
