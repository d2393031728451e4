"""Stdin in, output out, between this process and a job attached through the engine.

One select loop, no threads: output is passed on as it arrives, stdin is sent as the
job takes it (never blocking on a job that is busy writing, so a large `psql < dump.sql`
cannot deadlock against its own output), and at stdin's end the connection is
half-closed, which the engine turns into EOF on the job's stdin (the job is created
with StdinOnce). The loop ends when the engine closes the output: the job ended.
"""
from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
from typing import BinaryIO, Callable

from . import terminal

STDOUT, STDERR = 1, 2
CHUNK = 65536
# The engine's default detach keys are Ctrl-P Ctrl-Q: it would hold back every Ctrl-P
# (readline's "previous line" in psql and `indico shell`) and detaching would leave us
# waiting on a job nobody can reach. A job is not meant to be detached from: a sequence
# nobody types.
DETACH_KEYS = "ctrl-],ctrl-],ctrl-],ctrl-]"
_HEADER = struct.Struct(">BxxxL")


def attach_socket(api, container_id: str, stdin: bool) -> socket.socket:
    """The raw connection of an attach (made before start, so no output is missed)."""
    params = {"stdout": 1, "stderr": 1, "stream": 1, "logs": 1, "stdin": int(stdin), "detachKeys": DETACH_KEYS}
    return raw_connection(api.attach_socket(container_id, params=params))


def raw_connection(wrapped) -> socket.socket:
    """The socket under what the SDK hands back from an attach or exec_start(socket=True)."""
    raw = getattr(wrapped, "_sock", wrapped)  # a unix socket comes wrapped in a SocketIO
    raw.settimeout(None)  # a job may be silent for hours; select does the waiting
    raw.setblocking(False)
    return raw


class Demuxer:
    """Splits the engine's multiplexed stream (no TTY): frames of an 8-byte header
    (stream, size) and a payload. A payload is passed on piece by piece as it arrives,
    not once its frame is complete, so output stays live."""

    def __init__(self) -> None:
        self._header = b""
        self._stream = STDOUT
        self._left = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        pieces = []
        while data:
            if self._left == 0:
                need = _HEADER.size - len(self._header)
                self._header, data = self._header + data[:need], data[need:]
                if len(self._header) == _HEADER.size:
                    self._stream, self._left = _HEADER.unpack(self._header)
                    self._header = b""
                continue
            piece, data = data[:self._left], data[self._left:]
            self._left -= len(piece)
            pieces.append((STDERR if self._stream == STDERR else STDOUT, piece))
        return pieces


class Output:
    """Our stdout and stderr for a job's output, as bytes, flushed at once. A reader that
    left (`exec … | head`: EPIPE) or a terminal that hung up (EIO) only silences that
    stream: the job still runs to its end and its exit status is still ours."""

    def __init__(self, out: BinaryIO, err: BinaryIO):
        self._streams = {STDOUT: out, STDERR: err}

    def write(self, stream: int, data: bytes | None) -> None:
        key = STDERR if stream == STDERR else STDOUT  # stream 0 (stdin) is never echoed back here
        target = self._streams[key]
        if not data or target is None:
            return
        try:
            target.write(data)
            target.flush()
        except OSError:
            self._streams[key] = None


def attend(conn: socket.socket, write: Callable[[int, bytes], None], stdin_fd: int | None,
           terminal_fd: int | None, start: Callable[[], None], resize: Callable[[int, int], None]) -> None:
    """`relay` with our terminal joined to the job's: `start()` runs once the terminal is set
    (raw, if it is also our stdin), then `resize(rows, columns)` now and at each SIGWINCH."""
    def size_as_ours() -> None:
        try:
            rows, columns = terminal.window_size(terminal_fd)
        except OSError:  # the terminal hung up: SIGHUP is on its way
            return
        resize(rows, columns)

    with contextlib.ExitStack() as terminal_use:
        wakers = {}
        if terminal_fd is not None:
            # Watched before the first resize, so a change in between is not lost.
            changes = terminal_use.enter_context(terminal.WindowChanges())
            wakers[changes.fileno()] = lambda: (changes.drain(), size_as_ours())
            if stdin_fd is not None:
                terminal_use.enter_context(terminal.raw_mode(stdin_fd))
        start()
        if terminal_fd is not None:
            size_as_ours()
        relay(conn, terminal_fd is not None, write, stdin_fd, wakers)


def relay(conn: socket.socket, tty: bool, write: Callable[[int, bytes], None], stdin_fd: int | None,
          wakers: dict[int, Callable[[], None]] | None = None) -> None:
    """Until the job's output ends. `write(stream, data)` gets its output; `wakers` maps a
    readable fd (a window change) to what to do about it."""
    wakers = wakers or {}
    demux = None if tty else Demuxer()
    reading_stdin = stdin_fd is not None
    pending = b""
    while True:
        readers = [conn, *wakers]
        if reading_stdin and not pending:
            readers.append(stdin_fd)
        readable, writable, _ = select.select(readers, [conn] if pending else [], [])
        if conn in readable:
            try:
                data = conn.recv(CHUNK)
            except BlockingIOError:
                data = None
            except ConnectionResetError:
                data = b""
            if data == b"":
                return
            if data:
                for stream, piece in [(STDOUT, data)] if tty else demux.feed(data):
                    write(stream, piece)
        # Asked again, not taken from `readable`: a SIGWINCH that came before the keys now
        # read wrote its byte after select returned, and the resize must go first.
        for fd in select.select(list(wakers), [], [], 0)[0] if wakers else ():
            wakers[fd]()
        if stdin_fd is not None and stdin_fd in readable:
            pending = _read_input(stdin_fd)
            if not pending:
                reading_stdin = False
        if pending and conn in writable:
            try:
                pending = pending[conn.send(pending):]
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):  # the engine stopped listening: output says why
                pending, reading_stdin = b"", False
        if stdin_fd is not None and not reading_stdin and not pending:
            stdin_fd = None  # once: the end of stdin is said once
            _half_close(conn)


def _read_input(fd: int) -> bytes:
    try:
        return os.read(fd, CHUNK)
    except OSError:  # a terminal that hung up (EIO): its end, like a pipe's
        return b""


def _half_close(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_WR)
    except OSError:  # already gone: the output side will say so
        pass
