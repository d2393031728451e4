"""A unix-socket proxy in front of the engine that can be told to hang: an engine that stops answering.

Clients given DOCKER_HOST=unix://<proxy.path> talk to the real engine until `hang()`;
from then on every byte either way is swallowed, on open connections and new ones,
so a request in flight or sent later waits for an answer that never comes.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading


def engine_socket_path() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    return host.removeprefix("unix://") if host.startswith("unix://") else "/var/run/docker.sock"


class HangingEngineProxy:
    def __init__(self, path: str, upstream: str | None = None):
        self.path = path
        self.upstream = upstream or engine_socket_path()
        self.hung = threading.Event()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(16)
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def hang(self) -> None:
        self.hung.set()

    def close(self) -> None:
        self.closed.set()
        for sock in [self.server, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.upstream)
            self.sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True, name="proxy-pump").start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.hung.is_set():
                    target.sendall(data)
        except OSError:
            pass
        finally:
            if not self.hung.is_set():  # a hung engine never closes a connection either
                with contextlib.suppress(OSError):
                    target.shutdown(socket.SHUT_WR)
