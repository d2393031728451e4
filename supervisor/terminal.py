"""The admin's terminal during `exec -t`: raw mode, its window size, and word of a resize.

Raw mode hands every key to the job's own terminal (Ctrl-C reaches the program in the
container, not us); it is undone on every way out of the `with`, errors and the stop
signals (raised as exceptions) included. SIGWINCH only writes a byte to a pipe: the
relay loop sees the pipe readable and asks the engine to resize, outside the handler.
"""
from __future__ import annotations

import contextlib
import os
import signal
import termios
import tty
from typing import Iterator


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        # TCSADRAIN: the job's last output is written under the mode it was meant for.
        # A terminal that hung up has no mode left to restore.
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def window_size(fd: int) -> tuple[int, int]:
    """(rows, columns), as the engine's resize takes them."""
    size = os.get_terminal_size(fd)
    return size.lines, size.columns


class WindowChanges:
    """A pipe that turns readable when the window changed; `drain()` before resizing."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous = None

    def fileno(self) -> int:
        return self._read

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 512):
                pass

    def _wake(self, signum, frame) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe already says "changed"
            os.write(self._write, b"w")

    def __enter__(self) -> WindowChanges:
        self._previous = signal.signal(signal.SIGWINCH, self._wake)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGWINCH, self._previous)
        os.close(self._read)
        os.close(self._write)
