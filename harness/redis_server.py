"""A real Redis for the lease tests: Debian's `redis-server` on loopback, a free port, no persistence.

`tests/tools/ensure-redis-server` (run by `tests/run`) installs the binary when missing.
The server can be killed (a partition's stand-in, or Redis losing its data) and
started again on the same port.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    def __init__(self, directory: Path, password: str = "lease-test-secret-pw"):
        binary = shutil.which("redis-server")
        if binary is None:  # fail, never skip: the lease tests are the point
            raise AssertionError("redis-server is not installed: run tests/tools/ensure-redis-server (tests/run does)")
        self.binary, self.dir, self.password = binary, directory, password
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        log = open(self.dir / "redis.log", "a")
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--requirepass", self.password],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server did not listen on {self.port}: {(self.dir / 'redis.log').read_text()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def client(self):
        import redis
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=2)
