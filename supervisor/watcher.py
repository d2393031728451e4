"""The engine's event stream, followed on its own thread: every event becomes a fresh look.

An event says only that something happened; the container is inspected right
away and the loop gets what is true now, so a late or reordered event cannot
mislead it. When the stream breaks the engine is reported lost and reconnected
with backoff; the stream is open again before the loop is told, so the resync
that follows misses nothing.

A stream can also go quiet without breaking (a stalled connection, a proxy). The
loop finds that out from resyncs (`MissedEvents`) and asks for a fresh stream
(`Reopener`), which is opened at once and counts as no outage.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Callable

from . import engine as engine_edge
from .inbox import ContainerDied, ContainerGone, ContainerSeen, EngineBack, EngineLost
from .model import Observed

RECONNECT_MAX = 10.0  # a ping every 10 s while the engine is down costs nothing
EVENT_GRACE = 5.0  # seconds an event may take to follow the change a resync already saw


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


class MissedEvents:
    """Tells a change the event stream missed from one whose event is still on its way.

    Pure; fed by the loop. Only what the ledger learnt while this stream was open is
    judged (a change before the stream existed is known to be missed, and the resync
    that follows every reconnect takes it in). A resync that lists an owned container
    changed since then, new, or no longer there makes it a suspect; an event about it
    clears it, and if the stream works that event comes within EVENT_GRACE. A suspect
    left after that means the stream has gone quiet: `overdue` names it.
    """

    def __init__(self, grace: float = EVENT_GRACE):
        self.grace = grace
        self.suspects: dict[str, tuple[str, float]] = {}  # container ID -> (name, since when)
        self.opened_at: float | None = None  # monotonic; None while there is no stream
        self.listed_since_open = False

    def stream_opened(self, now: float) -> None:
        self.suspects.clear()
        self.opened_at, self.listed_since_open = now, False

    def stream_lost(self) -> None:
        self.suspects.clear()
        self.opened_at = None

    def heard(self, container_id: str) -> None:
        self.suspects.pop(container_id, None)

    def resynced(self, known: Mapping[str, Observed], listed: Iterable[Observed], started_at: float,
                 now: float) -> None:
        if self.opened_at is None or started_at < self.opened_at:
            return  # listed (partly) before this stream existed
        def judged(before: Observed) -> bool:
            # Learnt while this stream was open, and before this listing began.
            return self.opened_at <= before.observed_at < started_at
        listed_ids = set()
        for container in listed:
            if container.site is None:
                continue  # not ours: the stream carries none of its events
            listed_ids.add(container.id)
            before = known.get(container.id)
            if (self.listed_since_open if before is None else judged(before) and _state(before) != _state(container)):
                self.suspects.setdefault(container.id, (container.name, now))
        for container_id, before in known.items():
            if before.site is not None and container_id not in listed_ids and judged(before):
                self.suspects.setdefault(container_id, (before.name, now))
        self.listed_since_open = True

    def overdue(self, now: float) -> list[str]:
        """The names of suspects no event explained in time; each is named once."""
        late = [cid for cid, (_, since) in self.suspects.items() if now - since >= self.grace]
        return sorted(self.suspects.pop(cid)[0] for cid in late)

    def deadline(self) -> float | None:
        return min((since + self.grace for _, since in self.suspects.values()), default=None)


def _state(container: Observed) -> tuple:
    return container.status, container.started_at, container.health
