"""Native journal entries: each event with fields an admin can query (`journalctl ROLE=worker`).

Owns: the journal's native protocol (systemd's "Native Journal Protocol": one datagram
per entry on /run/systemd/journal/socket, `KEY=value` lines, and for a value holding a
newline the key, a newline, its length as 64-bit little-endian and the raw value) and a
structlog logger that sends there. Chosen by `logs.configure` only when stdout is the
journal already (JOURNAL_STREAM), so a non-journal run keeps its key=value lines.
Must not: lose a line. When the socket refuses (journald restarting, an entry too big
for one datagram), the line goes to stdout as before, which also reaches the journal.
"""
from __future__ import annotations

import os
import socket
import struct
from typing import Any, Callable, TextIO

SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "indico-supervisor"
# The fields an admin filters on; everything else stays in MESSAGE, the key=value line.
QUERYABLE = {"event": "EVENT", "role": "ROLE", "container": "CONTAINER"}
_PRIORITIES = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


def available() -> bool:
    return os.path.exists(SOCKET)


def encode(fields: dict[str, str]) -> bytes:
    parts = []
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            parts.append(key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            parts.append(key.encode() + b"=" + data + b"\n")
    return b"".join(parts)


def renderer(line: Callable[[Any, str, dict], str]) -> Callable[[Any, str, dict], tuple]:
    """Wraps a line renderer: the line, plus the entry's journal fields for `JournalLogger`.

    The fields are taken before `line` runs, since a renderer may consume the event dict.
    The values arrive already scrubbed of secrets (logs' `_scrub_fields` runs earlier).
    """
    def render(logger: Any, name: str, event_dict: dict) -> tuple:
        fields = {journal_key: str(event_dict[key]) for key, journal_key in QUERYABLE.items()
                  if event_dict.get(key) is not None}
        priority = str(_PRIORITIES.get(event_dict.get("level", "info"), 6))
        text = line(logger, name, event_dict)
        return (text,), {"fields": {"PRIORITY": priority, "SYSLOG_IDENTIFIER": IDENTIFIER, **fields,
                                    "MESSAGE": _without_prefix(text)}}
    return render


def _without_prefix(text: str) -> str:
    # The "<N>" prefix is for journald's stdout reader; here PRIORITY says it.
    if text.startswith("<") and text[2:3] == ">":
        return text[3:]
    return text


class JournalLogger:
    def __init__(self, stream: TextIO):
        self.stream = stream
        self.path = SOCKET  # read now, not at import: a test points it elsewhere
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def msg(self, line: str, fields: dict[str, str] | None = None) -> None:
        if fields is not None:
            try:
                self.socket.sendto(encode(fields), self.path)
                return
            except OSError:
                pass  # the line is not lost: stdout reaches the journal too, without the fields
        self.stream.write(line + "\n")
        self.stream.flush()

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


class JournalLoggerFactory:
    def __init__(self, stream: TextIO):
        self.logger = JournalLogger(stream)

    def __call__(self, *args: Any) -> JournalLogger:
        return self.logger
