"""systemd's Type=notify protocol, as the real daemon speaks it to a real NOTIFY_SOCKET.

The test plays systemd: it binds a unix datagram socket, hands its path to the daemon
in NOTIFY_SOCKET and reads every datagram the daemon sends, with the time it came.
"""
from __future__ import annotations

import signal
import socket
import statistics
import threading
import time
from datetime import datetime

import docker
import pytest

from harness.daemon import site_containers, wait_until

# Ignores SIGTERM, so stopping it takes its whole stop_timeout: STOPPING=1 has to come
# while the containers are plainly still there.
STUBBORN = ["sh", "-c", "trap '' TERM; while :; do sleep 0.2; done"]


class FakeSystemd:
    """The listening end of NOTIFY_SOCKET; `on` runs a check on the thread the moment a datagram arrives."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.received: list[tuple[float, float, dict]] = []  # (wall time, monotonic, fields)
        self.hooks: dict[str, callable] = {}
        self.seen_by_hooks: dict[str, object] = {}
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, name="fake-systemd", daemon=True)
        self._thread.start()

    def on(self, key: str, check) -> None:
        self.hooks[key] = check

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            wall, mono = time.time(), time.monotonic()
            fields = {}
            for line in data.decode("latin-1").split("\n"):
                key, sep, value = line.partition("=")
                if not sep:
                    self.problems.append(f"not KEY=VALUE: {line!r} in {data!r}")
                fields[key] = value
            for key, check in list(self.hooks.items()):
                if key in fields and key not in self.seen_by_hooks:
                    self.seen_by_hooks[key] = check()
            self.received.append((wall, mono, fields))

    def messages(self, key: str | None = None) -> list[tuple[float, float, dict]]:
        return [m for m in list(self.received) if key is None or key in m[2]]

    def wait_for(self, key: str, count: int = 1, timeout: float = 30) -> tuple[float, float, dict]:
        wait_until(lambda: len(self.messages(key)) >= count, timeout=timeout, what=f"{count} datagram(s) with {key}")
        return self.messages(key)[count - 1]

    def index_of(self, message) -> int:
        return next(i for i, m in enumerate(self.received) if m is message)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def systemd(tmp_path):
    fake = FakeSystemd(str(tmp_path / "notify.sock"))
    yield fake
    fake.close()
    assert not fake.problems


def engine_view(site: str):
    """What the engine shows right now, from the listener's thread (its own client)."""
    def look():
        client = docker.from_env(timeout=10)
        try:
            return {name: c.status for name, c in site_containers(client, site).items()}
        finally:
            client.close()
    return look


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def test_ready_status_watchdog_reloading_and_stopping_reach_notify_socket(
        run_daemon, docker_client, site_name, systemd):
    names = {f"{site_name}-worker", f"{site_name}-celery"}
    systemd.on("READY", engine_view(site_name))
    systemd.on("STOPPING", engine_view(site_name))
    daemon = run_daemon({"worker": {}, "celery": {"command": STUBBORN, "stop_timeout": "2s"}},
                        env={"NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": "1000000"}).start()

    # READY=1 comes once, with the STATUS line, after both containers run.
    ready_at, _, ready = systemd.wait_for("READY")
    assert ready == {"READY": "1", "STATUS": "2/2 running"}
    assert systemd.seen_by_hooks["READY"] == {name: "running" for name in names}
    for container in site_containers(docker_client, site_name).values():
        assert epoch(container.attrs["State"]["StartedAt"]) <= ready_at
    before_ready = systemd.received[:systemd.index_of(systemd.messages("READY")[0])]
    assert before_ready and all("READY" not in m for _, _, m in before_ready)
    assert all(m["STATUS"] != "2/2 running" for _, _, m in before_ready if "STATUS" in m)
    daemon.wait_ready()

    # WATCHDOG=1 at half of WATCHDOG_USEC, again and again.
    first_watchdog = len(systemd.messages("WATCHDOG"))
    systemd.wait_for("WATCHDOG", count=first_watchdog + 6, timeout=10)
    beats = [mono for _, mono, m in systemd.messages("WATCHDOG")]
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    assert 0.35 <= statistics.median(gaps) <= 0.7, gaps
    assert max(gaps) < 1.0, gaps  # never as late as the watchdog timeout itself
    assert all(m == {"WATCHDOG": "1"} for _, _, m in systemd.messages("WATCHDOG"))

    # SIGHUP: RELOADING=1 with the current CLOCK_MONOTONIC, then READY=1 again.
    sent_after = time.monotonic_ns() // 1000
    daemon.signal(signal.SIGHUP)
    reloading = systemd.wait_for("RELOADING")
    sent_before = time.monotonic_ns() // 1000
    assert reloading[2]["RELOADING"] == "1"
    assert sent_after <= int(reloading[2]["MONOTONIC_USEC"]) <= sent_before
    ready_again = systemd.wait_for("READY", count=2)
    assert systemd.index_of(reloading) < systemd.index_of(ready_again)
    daemon.wait_event("config_reloaded")

    # SIGTERM: STOPPING=1 while the containers are still there, then they go.
    daemon.signal(signal.SIGTERM)
    stopping = systemd.wait_for("STOPPING")
    assert stopping[2] == {"STOPPING": "1"}
    assert systemd.seen_by_hooks["STOPPING"] == {name: "running" for name in names}
    assert daemon.process.wait(60) == 0
    assert site_containers(docker_client, site_name) == {}
    assert len(systemd.messages("READY")) == 2  # nothing announced readiness while stopping
    statuses = [m["STATUS"] for _, _, m in systemd.messages("STATUS")]
    assert "2/2 running" in statuses
    assert any("stopping" in s or "stopped" in s for s in statuses[statuses.index("2/2 running"):]), statuses


def test_sighup_before_the_first_ready_sends_no_ready(run_daemon, docker_client, site_name, systemd):
    daemon = run_daemon({"worker": {}, "celery": {"image": "indico-supervisor-test/not-here:1"}},
                        env={"NOTIFY_SOCKET": systemd.path})
    good = daemon.config
    daemon.start()
    daemon.wait_event("image_unavailable")
    wait_until(lambda: any("celery pulling" in m.get("STATUS", "") for _, _, m in systemd.messages("STATUS")),
               timeout=10, what="a STATUS line saying celery waits for its image")

    daemon.signal(signal.SIGHUP)  # the same file: its image is still missing
    daemon.wait_event("config_reloaded")
    assert not systemd.messages("READY") and not systemd.messages("RELOADING")

    fixed = {**good, "containers": {**good["containers"], "celery": {**good["containers"]["celery"]}}}
    del fixed["containers"]["celery"]["image"]
    daemon.write(fixed)
    daemon.signal(signal.SIGHUP)
    _, _, ready = systemd.wait_for("READY")
    assert ready == {"READY": "1", "STATUS": "2/2 running"}
    assert {n: c.status for n, c in site_containers(docker_client, site_name).items()} == {
        f"{site_name}-worker": "running", f"{site_name}-celery": "running"}
    assert len(systemd.messages("READY")) == 1
    assert daemon.stop() == 0


def test_without_notify_socket_the_daemon_behaves_the_same(run_daemon, docker_client, site_name):
    daemon = run_daemon({"worker": {}, "celery": {}}, env={"WATCHDOG_USEC": "1000000"})
    assert "NOTIFY_SOCKET" not in daemon.env
    daemon.start()
    ready = daemon.wait_ready()
    assert ready["status"] == "2/2 running"
    assert {c.status for c in site_containers(docker_client, site_name).values()} == {"running"}
    before = {n: c.id for n, c in site_containers(docker_client, site_name).items()}
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("config_reloaded")
    assert daemon.stop() == 0
    assert daemon.events("daemon_stopped", exit_code=0)
    assert site_containers(docker_client, site_name) == {}
    assert len(before) == 2
