"""The engine's event stream, followed on its own thread: every event becomes a fresh look.

An event says only that something happened; the container is inspected right
away and the loop gets what is true now, so a late or reordered event cannot
mislead it. When the stream breaks the engine is reported lost and reconnected
with backoff; the stream is open again before the loop is told, so the resync
that follows misses nothing.

A stream can also go quiet without breaking (a stalled connection, a proxy). The
ledger finds that out from resyncs (`missed.MissedEvents`) and the loop asks for a
fresh stream (`Reopener`), which is opened at once and counts as no outage.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from . import engine as engine_edge
from .inbox import ContainerDied, ContainerGone, ContainerSeen, EngineBack, EngineLost

RECONNECT_MAX = 10.0  # a ping every 10 s while the engine is down costs nothing


class Reopener:
    """The loop's way to make the watcher read a fresh stream: the one it reads is closed under it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stream = None
        self._asked = False

    def reopen(self) -> None:
        with self._lock:
            self._asked = True
            stream = self._stream
        if stream is not None:
            try:
                stream.close()  # the watcher's read returns, on its own thread
            except Exception:
                pass  # already closed or broken: the watcher reconnects either way

    def opened(self, stream) -> None:
        with self._lock:
            self._stream, self._asked = stream, False  # opened after any request: fresh already

    def ended_on_request(self) -> bool:
        with self._lock:
            asked, self._asked, self._stream = self._asked, False, None
        return asked


def watch_engine(connect: Callable[[], engine_edge.Engine], post: Callable[[object], None],
                 stop: threading.Event, reopener: Reopener | None = None) -> None:
    """Follow the site's events until `stop`; `connect` gives a fresh engine client at each (re)connect."""
    reopener = reopener or Reopener()
    delay = 1.0
    while not stop.is_set():
        try:
            watcher = connect()
            stream = watcher.events()
            reopener.opened(stream)
            post(EngineBack())
            delay = 1.0
            oom_killed: set[str] = set()  # the engine says `oom` just before the `die` it causes
            # A `kill` event means someone asked the engine (stop, kill, rm -f): not a crash
            # to race, and maybe a removal, so that death waits for the inspect.
            killed_on_request: set[str] = set()
            for event in stream:
                action = (event.get("Action") or "").split(":")[0]
                if action not in engine_edge.INTERESTING_EVENTS:
                    continue  # our own exec probes, attach, resize: nothing to look at
                at = time.monotonic()
                if action == "oom":
                    oom_killed.add(event["id"])
                elif action == "kill":
                    killed_on_request.add(event["id"])
                elif action == "die" and event["id"] not in killed_on_request:
                    post(ContainerDied(event["id"], _exit_code(event), event["id"] in oom_killed, at))
                if action in ("die", "start", "destroy"):  # what an oom or kill said is used up
                    oom_killed.discard(event["id"])
                    killed_on_request.discard(event["id"])
                seen = watcher.inspect(event["id"], at)
                post(ContainerSeen(seen) if seen else ContainerGone(event["id"], at))
            raise ConnectionError("the engine closed the event stream")
        except Exception as error:
            if stop.is_set():
                return
            if reopener.ended_on_request():
                continue  # closed by us, the engine is fine: open the next at once
            post(EngineLost(engine_edge.reason(error)))
            stop.wait(delay)
            delay = min(delay * 2, RECONNECT_MAX)


def _exit_code(event: dict) -> int | None:
    try:
        return int(event["Actor"]["Attributes"]["exitCode"])
    except (KeyError, TypeError, ValueError):
        return None
