"""Which changes a resync found that the engine's event stream never reported: a stream gone quiet.

Pure: no engine, no clock of its own, no logging; the ledger owns one and feeds it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from .model import Observed

EVENT_GRACE = 5.0  # seconds an event may take to follow the change a resync already saw


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
