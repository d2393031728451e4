"""sd_notify messages for a Type=notify service; silent when systemd is not listening."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

import sdnotify


class Notifier:
    """Sends state changes to systemd's NOTIFY_SOCKET through sdnotify.

    sdnotify reads NOTIFY_SOCKET from the process environment and encodes as
    Latin-1, so status text is kept to that range here rather than dropped there.

    Sending never blocks: a listener that does not drain its queue would otherwise
    hold the daemon's loop, and every restart with it. A message that does not fit
    is dropped (the next STATUS or WATCHDOG supersedes it) and `on_dropped` is told
    of the first drop of each run of drops.
    """

    def __init__(self, pid: int | None = None, on_dropped: Callable[[str], None] | None = None) -> None:
        env = os.environ  # where sdnotify looks, so the two can never disagree
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._systemd = _connect() if self._address else None
        self.watchdog_interval = _watchdog_interval(env, os.getpid() if pid is None else pid)
        self._last_status: str | None = None
        self._on_dropped = on_dropped
        self._dropping = False

    def ready(self, status: str | None = None) -> None:
        lines = ["READY=1"]
        if status is not None:
            lines.append(self._status_line(status))
        self._send(*lines)

    def reloading(self) -> None:
        # Type=notify-reload requires MONOTONIC_USEC to tell this reload from an older one.
        self._send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def status(self, text: str) -> None:
        # Called on every loop turn; only changes are worth a datagram.
        if _one_line(text) != self._last_status:
            self._send(self._status_line(text))

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        self._send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def _status_line(self, text: str) -> str:
        self._last_status = _one_line(text)
        return f"STATUS={self._last_status}"

    def _send(self, *lines: str) -> None:
        if self._systemd is None:
            return
        message = "\n".join(lines).encode("latin-1", "replace").decode("latin-1")
        try:
            self._systemd.notify(message)
        except BlockingIOError:
            if not self._dropping and self._on_dropped is not None:
                self._on_dropped(message)
            self._dropping = True
            return
        except OSError:
            return  # systemd gone or restarting must not stop the daemon
        self._dropping = False


def _connect() -> sdnotify.SystemdNotifier | None:
    try:
        # debug=True: sdnotify raises instead of swallowing, so a full queue can be told apart.
        systemd = sdnotify.SystemdNotifier(debug=True)
    except OSError:
        return None  # nobody listens (yet): silent, as sdnotify would be
    systemd.socket.setblocking(False)
    return systemd


def _socket_address(value: str) -> str | None:
    if value.startswith("@"):
        # Abstract namespace socket, spelled with a leading NUL on Linux.
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # Empty, or a transport this daemon does not speak (e.g. vsock:).
    return None


def _watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Half of WATCHDOG_USEC, following sd_watchdog_enabled()'s rules."""
    try:
        usec = int(env["WATCHDOG_USEC"])
        owner = int(env.get("WATCHDOG_PID", pid))
    except (KeyError, ValueError):
        return None
    if usec <= 0 or owner != pid:
        return None
    return usec / 2 / 1_000_000


def _one_line(text: str) -> str:
    # A newline would start a new KEY=VALUE assignment in the datagram.
    return " ".join(text.splitlines())
