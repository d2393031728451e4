"""A real pseudo-terminal for tests: a process runs with the slave as its controlling
terminal (stdin, stdout, stderr), as under an admin's terminal emulator; the test plays
the emulator on the master.

The master is drained on a thread all the time, so the process never blocks writing to
a full terminal. The slave stays open here too: after the process has gone, its modes
(raw or cooked) can still be read.
"""
from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import threading
import time


class Terminal:
    def __init__(self, argv: list[str], rows: int = 24, columns: int = 80, **popen):
        self.master, self.slave = os.openpty()
        self.resize(rows, columns)
        self.cooked = termios.tcgetattr(self.slave)  # as a terminal starts, for comparing afterwards
        self._output = bytearray()
        self._seen = 0
        self._changed = threading.Condition()
        self._closing = False
        self.process = subprocess.Popen(argv, stdin=self.slave, stdout=self.slave, stderr=self.slave,
                                        start_new_session=True, preexec_fn=_take_controlling_terminal, **popen)
        self._drainer = threading.Thread(target=self._drain, daemon=True, name="pty-drain")
        self._drainer.start()

    def send(self, data: bytes | str) -> None:
        os.write(self.master, data.encode() if isinstance(data, str) else data)

    def resize(self, rows: int, columns: int) -> None:
        """As an emulator does: the kernel then sends SIGWINCH to the terminal's foreground group."""
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def expect(self, text: str, timeout: float = 60) -> str:
        """Waits for `text` after what was already matched; returns what came before it."""
        wanted = text.encode()
        deadline = time.monotonic() + timeout
        with self._changed:
            while (at := self._output.find(wanted, self._seen)) < 0:
                left = deadline - time.monotonic()
                if left <= 0 or not self._changed.wait(left):
                    if self._output.find(wanted, self._seen) >= 0:
                        continue
                    raise AssertionError(f"{text!r} not on the terminal within {timeout}s; it shows:\n"
                                         f"{self._output[self._seen:].decode(errors='replace')}")
            before = self._output[self._seen:at].decode(errors="replace")
            self._seen = at + len(wanted)
            return before

    def text(self) -> str:
        with self._changed:
            return self._output.decode(errors="replace")

    def modes(self) -> list:
        return termios.tcgetattr(self.slave)

    def hang_up(self) -> None:
        """As when an ssh session drops: the master closes, the kernel sends SIGHUP to the
        process, and the terminal answers its reads and writes with EIO from then on."""
        self._stop_draining()
        os.close(self.master)
        self.master = None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.master is not None:
            self._stop_draining()
            os.close(self.master)
        os.close(self.slave)

    def _stop_draining(self) -> None:
        self._closing = True
        self._drainer.join()

    def _drain(self) -> None:
        while not self._closing:
            if not select.select([self.master], [], [], 0.1)[0]:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            with self._changed:
                self._output += chunk
                self._changed.notify_all()


def _take_controlling_terminal() -> None:
    # In the child, after setsid: stdin (the slave) becomes the session's terminal.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
