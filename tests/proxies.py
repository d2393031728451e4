"""A proxy that can freeze connections: an engine or a registry that stops answering, on demand.

`FreezingProxy(listen, upstream)` forwards bytes both ways between a client and the
real server (a unix socket path or a (host, port) pair) until told to `freeze(rule)`:
from then on a connection that carries a request matching `rule` (one sent before,
or a later one) forwards nothing more either way and never closes, as a hung server
would not. `freeze()` with no rule freezes every connection, open or new;
`freeze(None)` stops freezing new ones (frozen ones stay frozen); `cut_frozen()`
then closes those, as a stalled TCP connection ends at last (dockerd does not
cancel a stalled layer download when its client goes, so a later pull waits on it).
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import Callable

Rule = Callable[[bytes], bool]
EVERYTHING: Rule = lambda request: True  # noqa: E731


def engine_socket_path() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    return host.removeprefix("unix://") if host.startswith("unix://") else "/var/run/docker.sock"


class _Connection:
    def __init__(self, client: socket.socket, upstream: socket.socket):
        self.client, self.upstream = client, upstream
        self.requests: list[bytes] = []  # the head of each chunk the client sent
        self.frozen = False


class FreezingProxy:
    def __init__(self, listen: str | tuple[str, int], upstream: str | tuple[str, int]):
        self.upstream = upstream
        self.family = socket.AF_UNIX if isinstance(listen, str) else socket.AF_INET
        self.server = socket.socket(self.family, socket.SOCK_STREAM)
        self.server.bind(listen)
        self.server.listen(64)
        self.address = self.server.getsockname()
        self.rule: Rule | None = None
        self.connections: list[_Connection] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    @property
    def docker_host(self) -> str:
        return f"unix://{self.address}"

    @property
    def port(self) -> int:
        return self.address[1]

    def freeze(self, rule: Rule | None = EVERYTHING) -> None:
        with self.lock:
            self.rule = rule
            for connection in self.connections:
                if rule is not None and any(rule(r) for r in connection.requests):
                    connection.frozen = True

    def cut_frozen(self) -> None:
        with self.lock:
            frozen = [c for c in self.connections if c.frozen]
        for connection in frozen:
            for sock in (connection.client, connection.upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()

    def matching(self, rule: Rule) -> int:
        """How many connections so far carried a request matching `rule`."""
        with self.lock:
            return sum(1 for c in self.connections if any(rule(r) for r in c.requests))

    def close(self) -> None:
        self.closed = True
        with self.lock:
            sockets = [self.server] + [s for c in self.connections for s in (c.client, c.upstream)]
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self.closed:
            client = None
            try:
                client, _ = self.server.accept()
                upstream = socket.socket(self.family, socket.SOCK_STREAM)
                upstream.connect(self.upstream)
            except OSError:
                if self.closed:
                    return
                # The server is down: the client sees a closed connection, as it would.
                if client is not None:
                    with contextlib.suppress(OSError):
                        client.close()
                continue
            connection = _Connection(client, upstream)
            with self.lock:
                self.connections.append(connection)
            threading.Thread(target=self._pump, args=(connection, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(connection, False), daemon=True).start()

    def _pump(self, connection: _Connection, from_client: bool) -> None:
        source, target = ((connection.client, connection.upstream) if from_client
                          else (connection.upstream, connection.client))
        try:
            while data := source.recv(65536):
                if from_client:
                    with self.lock:
                        connection.requests.append(data[:1024])
                        if self.rule is not None and self.rule(data):
                            connection.frozen = True
                if not connection.frozen:
                    target.sendall(data)
        except OSError:
            pass
        finally:
            if not connection.frozen:
                with contextlib.suppress(OSError):
                    target.shutdown(socket.SHUT_WR)
