"""The daemon's one queue: messages from threads, and signals, wake the main loop.

Signals arrive through `signal.set_wakeup_fd` on a self-pipe: the C-level handler
writes the signal number there and the Python handler does nothing, so no work
ever runs inside a signal handler. Threads write a byte to a second pipe after
queueing a message: a flood of messages may fill that one (the loop wakes anyway),
but can never crowd a signal number out of the first.
"""
from __future__ import annotations

import os
import queue
import select
import signal
from dataclasses import dataclass

from .model import Observed


@dataclass(frozen=True)
class SignalReceived:
    signum: int


@dataclass(frozen=True)
class ContainerSeen:
    container: Observed


@dataclass(frozen=True)
class ContainerDied:
    """Straight from a `die` event, before any inspect: the fast path to a restart.

    Inspecting a container that just died waits for the engine to finish cleaning it
    up; a `start` sent at once waits for the same lock and then runs, so posting the
    death first takes that wait out of the recovery time.
    """
    container_id: str
    exit_code: int | None
    oom_killed: bool
    observed_at: float


@dataclass(frozen=True)
class ContainerGone:
    container_id: str
    observed_at: float


@dataclass(frozen=True)
class Resynced:
    """A resync's result: every container of the site, listed after `started_at` (monotonic)."""
    containers: tuple[Observed, ...]
    started_at: float


@dataclass(frozen=True)
class EngineLost:
    error: str


@dataclass(frozen=True)
class EngineBack:
    pass


@dataclass(frozen=True)
class ActionDone:
    action: object
    result: object = None  # the action kind's own: a container, an image ID, a resync


@dataclass(frozen=True)
class ActionFailed:
    action: object
    error: str
    unreachable: bool = False  # the engine was gone, not refusing


@dataclass(frozen=True)
class SiteResourceCreated:
    what: str  # "network NAME" or "volume NAME"


@dataclass(frozen=True)
class PullStarted:
    image: str


@dataclass(frozen=True)
class PullProgress:
    image: str
    progress: dict


class Inbox:
    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._signals, self._signals_write = os.pipe()
        os.set_blocking(self._signals, False)
        os.set_blocking(self._signals_write, False)
        self._messages: queue.SimpleQueue = queue.SimpleQueue()

    def catch(self, *signums: int) -> None:
        """Route these signals to the loop. Call from the main thread."""
        signal.set_wakeup_fd(self._signals_write, warn_on_full_buffer=False)
        for signum in signums:
            signal.signal(signum, _ignore)

    def put(self, message: object) -> None:
        self._messages.put(message)
        try:
            os.write(self._write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already: the loop will wake

    def wait(self, timeout: float | None) -> list[object]:
        """Signals first, then messages in arrival order; [] when the timeout passed."""
        select.select([self._signals, self._read], [], [], None if timeout is None else max(0.0, timeout))
        _drain(self._read)  # wake-ups only: the messages themselves are in the queue
        received: list[object] = [SignalReceived(b) for b in _drain(self._signals) if b]
        while True:
            try:
                received.append(self._messages.get_nowait())
            except queue.Empty:
                return received


def _drain(fd: int) -> bytes:
    woken = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return woken
        if not chunk:
            return woken
        woken += chunk


def _ignore(signum: int, frame: object) -> None:
    """The wakeup fd carries the signal; the handler exists only to replace the default action."""
