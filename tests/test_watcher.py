"""The event stream's health: changes it missed are found from resyncs, and a fresh stream can be asked for. No engine."""
from __future__ import annotations

import queue
import threading
from dataclasses import replace

from supervisor.inbox import EngineBack, EngineLost
from supervisor.model import Observed
from supervisor.missed import MissedEvents
from supervisor.watcher import Reopener, watch_engine

RUNNING = Observed(id="c1", name="indico-worker", site="indico", role="worker", spec_hash="h", image_id="sha256:1",
                   status="running", started_at=1000.0, observed_at=10.0)
EXITED = replace(RUNNING, status="exited", observed_at=40.0)
FOREIGN = replace(RUNNING, id="f1", name="indico-worker", site=None, role=None, observed_at=10.0)


def audited(grace: float = 5.0) -> MissedEvents:
    """Stream open at 1 and listed once since."""
    missed = MissedEvents(grace)
    missed.stream_opened(1.0)
    missed.resynced({}, [], started_at=2.0, now=2.0)
    return missed


def test_a_change_no_event_reported_is_overdue_after_the_grace():
    missed = audited()
    missed.resynced({"c1": RUNNING}, [EXITED], started_at=39.0, now=40.0)
    assert missed.overdue(44.0) == []
    assert missed.deadline() == 45.0
    assert missed.overdue(45.0) == ["indico-worker"]
    assert missed.overdue(100.0) == []  # named once


def test_a_change_whose_event_follows_within_the_grace_is_not_missed():
    missed = audited()
    missed.resynced({"c1": RUNNING}, [EXITED], started_at=39.0, now=40.0)
    missed.heard("c1")
    assert missed.overdue(100.0) == [] and missed.deadline() is None


def test_an_unchanged_container_or_one_the_ledger_heard_of_during_the_listing_is_no_suspect():
    missed = audited()
    missed.resynced({"c1": RUNNING}, [replace(RUNNING, observed_at=40.0)], started_at=39.0, now=40.0)
    missed.resynced({"c1": replace(RUNNING, observed_at=39.5)}, [EXITED], started_at=39.0, now=40.0)
    assert missed.overdue(100.0) == []


def test_a_container_gone_or_new_without_an_event_is_a_suspect():
    missed = audited()
    missed.resynced({"c1": RUNNING}, [replace(RUNNING, id="c2", name="indico-celery")], started_at=39.0, now=40.0)
    assert missed.overdue(100.0) == ["indico-celery", "indico-worker"]


def test_foreign_containers_are_never_suspects_the_stream_carries_none_of_their_events():
    missed = audited()
    missed.resynced({"f1": FOREIGN}, [replace(FOREIGN, status="exited")], started_at=39.0, now=40.0)
    missed.resynced({}, [FOREIGN], started_at=41.0, now=42.0)
    assert missed.overdue(100.0) == []


def test_what_the_ledger_learnt_before_the_stream_opened_is_not_judged_until_a_resync_refreshes_it():
    missed = MissedEvents(5.0)
    missed.stream_opened(50.0)
    missed.resynced({"c1": RUNNING}, [EXITED], started_at=49.0, now=51.0)  # began before the stream
    # c1 known from before the stream; c2 new, but nothing was listed since the stream opened.
    missed.resynced({"c1": RUNNING}, [EXITED, replace(RUNNING, id="c2")], started_at=51.0, now=52.0)
    assert missed.overdue(100.0) == []
    refreshed = replace(RUNNING, observed_at=51.0)
    missed.resynced({"c1": refreshed}, [replace(EXITED, observed_at=60.0)], started_at=60.0, now=61.0)
    assert missed.overdue(100.0) == ["indico-worker"]


def test_without_a_stream_nothing_is_judged():
    missed = audited()
    missed.resynced({"c1": RUNNING}, [EXITED], started_at=39.0, now=40.0)
    missed.stream_lost()
    missed.resynced({"c1": RUNNING}, [EXITED], started_at=41.0, now=42.0)
    assert missed.overdue(100.0) == []


class QuietStream:
    """An event stream that never says anything until closed, as a stalled connection."""

    def __init__(self):
        self.closed = threading.Event()

    def __iter__(self):
        self.closed.wait(30)
        return iter(())

    def close(self):
        self.closed.set()


class QuietEngine:
    def __init__(self, streams: list):
        self.streams = streams

    def events(self):
        stream = QuietStream()
        self.streams.append(stream)
        return stream


def test_reopen_closes_the_quiet_stream_and_opens_another_at_once_with_no_engine_lost():
    streams, posted, stop, reopener = [], queue.Queue(), threading.Event(), Reopener()
    watcher = threading.Thread(target=watch_engine, args=(lambda: QuietEngine(streams), posted.put, stop, reopener),
                               daemon=True)
    watcher.start()
    assert isinstance(posted.get(timeout=10), EngineBack)

    reopener.reopen()

    assert isinstance(posted.get(timeout=10), EngineBack)  # the next stream, not after a backoff
    assert streams[0].closed.is_set() and len(streams) == 2
    stop.set()
    reopener.reopen()
    watcher.join(timeout=10)
    assert not watcher.is_alive()
    assert not any(isinstance(m, EngineLost) for m in list(posted.queue))
