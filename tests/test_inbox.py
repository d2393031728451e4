"""The daemon's one queue, with real signals on a real self-pipe.

Every test restores the signal handlers it replaced and unsets the wakeup fd, so
no other test (nor pytest itself) sees a handler or pipe from here.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from supervisor.inbox import Inbox, SignalReceived

CAUGHT = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


@pytest.fixture
def inbox():
    handlers = {signum: signal.getsignal(signum) for signum in CAUGHT}
    try:
        yield Inbox()
    finally:
        signal.set_wakeup_fd(-1)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def collect(inbox: Inbox, count: int, deadline: float = 10.0) -> list[object]:
    """Wait until `count` items came back (a wake-up may bring only part of a burst)."""
    received: list[object] = []
    end = time.monotonic() + deadline
    while len(received) < count and time.monotonic() < end:
        received += inbox.wait(max(0.0, end - time.monotonic()))
    return received


def in_thread(work) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


# Signals.

def test_a_caught_signal_comes_back_as_signal_received(inbox):
    inbox.catch(signal.SIGHUP, signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGUSR1)
    assert inbox.wait(1) == [SignalReceived(signal.SIGUSR1)]


def test_a_caught_sighup_no_longer_terminates_the_process(inbox):
    inbox.catch(signal.SIGHUP)
    os.kill(os.getpid(), signal.SIGHUP)  # its default action would end this test run
    assert inbox.wait(1) == [SignalReceived(signal.SIGHUP)]


def test_signals_come_back_once_each_in_the_order_they_arrived(inbox):
    inbox.catch(signal.SIGHUP, signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGHUP)
    os.kill(os.getpid(), signal.SIGUSR1)
    assert inbox.wait(1) == [SignalReceived(signal.SIGHUP), SignalReceived(signal.SIGUSR1)]
    assert inbox.wait(0) == []


def test_a_signal_from_another_thread_wakes_a_waiting_loop_promptly(inbox):
    inbox.catch(signal.SIGUSR1)
    in_thread(lambda: (time.sleep(0.1), os.kill(os.getpid(), signal.SIGUSR1)))
    started = time.monotonic()
    assert inbox.wait(5) == [SignalReceived(signal.SIGUSR1)]
    assert time.monotonic() - started < 2


def test_signals_come_before_messages_even_when_the_messages_came_first(inbox):
    inbox.catch(signal.SIGUSR1)
    inbox.put("first")
    inbox.put("second")
    os.kill(os.getpid(), signal.SIGUSR1)
    assert inbox.wait(1) == [SignalReceived(signal.SIGUSR1), "first", "second"]


def test_a_signal_is_not_lost_while_a_flood_of_messages_fills_the_pipe(inbox):
    inbox.catch(signal.SIGUSR1)
    for n in range(100_000):  # far more wake-ups than a pipe holds
        inbox.put(n)
    os.kill(os.getpid(), signal.SIGUSR1)
    received = inbox.wait(1)
    assert received[0] == SignalReceived(signal.SIGUSR1)
    assert received[1:] == list(range(100_000))


# Messages.

def test_messages_put_from_another_thread_wake_wait_none_promptly_and_come_back_in_order(inbox):
    received: list[object] = []
    woken_at: list[float] = []

    def loop() -> None:
        while len(received) < 3:
            received.extend(inbox.wait(None))
            woken_at.append(time.monotonic())

    waiter = in_thread(loop)
    time.sleep(0.1)  # the waiter is blocked in wait(None) by now
    put_at = time.monotonic()
    for message in ("one", "two", "three"):
        inbox.put(message)
    waiter.join(5)
    assert not waiter.is_alive(), "wait(None) was not woken by put()"
    assert received == ["one", "two", "three"]
    assert woken_at[0] - put_at < 1


def test_a_message_put_before_waiting_is_returned_at_once(inbox):
    inbox.put({"any": "object"})
    started = time.monotonic()
    assert inbox.wait(5) == [{"any": "object"}]
    assert time.monotonic() - started < 1


def test_every_wait_is_woken_by_the_next_put(inbox):
    for n in range(20):
        in_thread(lambda n=n: (time.sleep(0.01), inbox.put(n)))
        assert collect(inbox, 1, deadline=5) == [n]


def test_messages_work_without_catching_any_signal(inbox):
    inbox.put("x")
    assert inbox.wait(1) == ["x"]


def test_wait_with_nothing_returns_empty_after_about_the_timeout(inbox):
    inbox.catch(signal.SIGUSR1)
    started = time.monotonic()
    assert inbox.wait(0.05) == []
    assert 0.045 <= time.monotonic() - started < 1


@pytest.mark.parametrize("timeout", [0, -5])
def test_wait_with_a_zero_or_negative_timeout_returns_at_once(inbox, timeout):
    started = time.monotonic()
    assert inbox.wait(timeout) == []
    assert time.monotonic() - started < 0.5


def test_a_flood_of_puts_does_not_block_and_every_message_comes_back_in_order(inbox):
    count = 100_000
    putter = in_thread(lambda: [inbox.put(n) for n in range(count)])
    putter.join(30)
    assert not putter.is_alive(), "put() blocked once the wake-up pipe was full"
    assert collect(inbox, count) == list(range(count))


def test_after_a_flood_every_wake_up_is_drained_so_the_next_wait_sleeps(inbox):
    for n in range(100_000):
        inbox.put(n)
    assert len(inbox.wait(1)) == 100_000
    started = time.monotonic()
    assert inbox.wait(0.05) == []
    assert time.monotonic() - started >= 0.045


def test_messages_from_many_threads_all_arrive_each_thread_in_its_own_order(inbox):
    threads, per_thread = 8, 2_000
    putters = [in_thread(lambda t=t: [inbox.put((t, n)) for n in range(per_thread)]) for t in range(threads)]
    received = collect(inbox, threads * per_thread)
    for putter in putters:
        putter.join(5)
    assert len(received) == threads * per_thread
    for t in range(threads):
        assert [n for (sender, n) in received if sender == t] == list(range(per_thread))
