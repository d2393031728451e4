"""A real Redis for the lease tests, and one link to it per host that a test can cut.

`RedisServer` is harness.redis_server's (Debian's redis-server on 127.0.0.1, a free
port, no persistence, a password: the URL's password is a secret the tests check is
never printed), with `restart()`: Redis coming back with its data lost.

`RedisLink` is one host's way to that server: a TCP proxy (tests.proxies) listening on
the main engine's bridge gateway, an address of this machine that the host itself and
the containers of both engines (through their own gateways) reach. `url` is what that
host's daemon and containers are given. `cut()` is a partition: every open and new
connection stops forwarding and hangs, as dropped packets would; `restore()` ends the
hung connections and lets new ones through.
"""
from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import harness.redis_server

from tests.proxies import FreezingProxy


def bridge_gateway(docker_client) -> str:
    """An address of this machine that containers on the engine's default bridge reach."""
    config = docker_client.networks.get("bridge").attrs["IPAM"]["Config"]
    return config[0]["Gateway"]


class RedisServer(harness.redis_server.RedisServer):
    """harness.redis_server's, with a password of its own per server (checked never to be printed)."""

    def __init__(self, directory: Path):
        super().__init__(directory, password="lease-" + secrets.token_hex(8))

    def stop(self) -> None:
        self.kill()  # no shutdown save: whatever it held is gone

    def restart(self) -> None:
        """Redis back on the same port, with none of its data."""
        self.kill()
        self.start()


class RedisLink:
    """The proxy runs in a process of its own: a busy test process (the watcher's threads,
    the harness) must not delay the lease's renewals, whose socket timeout is L/10."""

    def __init__(self, server: RedisServer, address: str):
        self.server = server
        self.address = address
        self.process = subprocess.Popen([sys.executable, "-m", "tests.lease_redis", address, str(server.port)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        cwd=Path(__file__).resolve().parent.parent)
        self.port = int(self.process.stdout.readline())

    @property
    def url(self) -> str:
        return f"redis://:{self.server.password}@{self.address}:{self.port}/0"

    def _tell(self, command: str) -> None:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        assert answer == command, f"the Redis proxy answered {answer!r} to {command!r}"

    def cut(self) -> None:
        self._tell("cut")

    def restore(self) -> None:
        self._tell("restore")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _serve(address: str, upstream_port: int) -> None:
    """The proxy process: prints its port, then obeys `cut` and `restore` lines, answering each."""
    proxy = FreezingProxy((address, 0), ("127.0.0.1", upstream_port))
    print(proxy.port, flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "cut":
            proxy.freeze()  # every open and new connection hangs, as dropped packets would
        elif command == "restore":
            proxy.freeze(None)
            proxy.cut_frozen()
        print(command, flush=True)


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
