"""sd_notify messages for a Type=notify service; silent when systemd is not listening."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

import sdnotify


class Notifier:
    """Sends state changes to systemd's NOTIFY_SOCKET through sdnotify.

    sdnotify reads NOTIFY_SOCKET from the process environment and encodes as
    Latin-1, so status text is kept to that range here rather than dropped there.
    """

    def __init__(self, pid: int | None = None) -> None:
        env = os.environ  # where sdnotify looks, so the two can never disagree
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._systemd = sdnotify.SystemdNotifier() if self._address else None
        self.watchdog_interval = _watchdog_interval(env, os.getpid() if pid is None else pid)
        self._last_status: str | None = None

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
        # sdnotify swallows send errors: systemd gone or restarting must not stop the daemon.
        message = "\n".join(lines).encode("latin-1", "replace").decode("latin-1")
        self._systemd.notify(message)


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
