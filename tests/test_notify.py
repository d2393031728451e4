import contextlib
import os
import socket
import threading
import time
import uuid

import pytest

from supervisor.notify import Notifier


@pytest.fixture
def systemd(tmp_path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    listener.bind(path)
    listener.settimeout(2)
    yield path, listener
    listener.close()


@pytest.fixture
def notifier_for(monkeypatch):
    """A Notifier in a process environment holding exactly these systemd variables."""
    def make(env, pid=None, on_dropped=None):
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return Notifier(pid=pid, on_dropped=on_dropped)
    return make


def assert_nothing_sent(listener):
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):
        listener.recv(4096)


def test_each_message_is_one_exact_datagram(systemd, notifier_for):
    path, listener = systemd
    notifier = notifier_for({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})

    notifier.ready()
    assert listener.recv(4096) == b"READY=1"
    notifier.ready("2 containers running")
    assert listener.recv(4096) == b"READY=1\nSTATUS=2 containers running"
    notifier.stopping()
    assert listener.recv(4096) == b"STOPPING=1"
    notifier.watchdog()
    assert listener.recv(4096) == b"WATCHDOG=1"
    notifier.extend_timeout(1.5)
    assert listener.recv(4096) == b"EXTEND_TIMEOUT_USEC=1500000"
    notifier.status("reloading config")
    assert listener.recv(4096) == b"STATUS=reloading config"
    assert_nothing_sent(listener)


def test_reloading_carries_current_monotonic_time(systemd, notifier_for):
    path, listener = systemd
    notifier = notifier_for({"NOTIFY_SOCKET": path})
    before = time.monotonic_ns() // 1000
    notifier.reloading()
    after = time.monotonic_ns() // 1000

    first, second = listener.recv(4096).decode().split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_status_is_sent_only_when_it_changes(systemd, notifier_for):
    path, listener = systemd
    notifier = notifier_for({"NOTIFY_SOCKET": path})

    notifier.ready("running")
    assert listener.recv(4096) == b"READY=1\nSTATUS=running"
    notifier.status("running")
    notifier.status("degraded: worker restarting")
    notifier.status("degraded: worker restarting")
    notifier.status("running")
    assert listener.recv(4096) == b"STATUS=degraded: worker restarting"
    assert listener.recv(4096) == b"STATUS=running"
    assert_nothing_sent(listener)


def test_status_newlines_cannot_inject_assignments(systemd, notifier_for):
    path, listener = systemd
    notifier_for({"NOTIFY_SOCKET": path}).status("bad\nREADY=1")
    assert listener.recv(4096) == b"STATUS=bad READY=1"


def test_status_outside_latin1_is_replaced_not_dropped(systemd, notifier_for):
    path, listener = systemd
    notifier_for({"NOTIFY_SOCKET": path}).status("worker → restarting")
    assert listener.recv(4096) == b"STATUS=worker ? restarting"


def test_watchdog_interval_is_half_of_watchdog_usec(notifier_for):
    assert notifier_for({"WATCHDOG_USEC": "2000000"}).watchdog_interval == 1.0


def test_watchdog_interval_honours_watchdog_pid(notifier_for):
    env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert notifier_for(env).watchdog_interval == 1.0
    assert notifier_for(env | {"WATCHDOG_PID": "4242"}, pid=4242).watchdog_interval == 1.0
    assert notifier_for(env | {"WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_interval is None


@pytest.mark.parametrize("env", [{}, {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "soon"}])
def test_no_watchdog_without_a_valid_watchdog_usec(env, notifier_for):
    assert notifier_for(env).watchdog_interval is None


def test_without_notify_socket_every_method_is_a_silent_no_op(notifier_for):
    notifier = notifier_for({})
    notifier.ready("up")
    notifier.reloading()
    notifier.stopping()
    notifier.status("up")
    notifier.watchdog()
    notifier.extend_timeout(10)


def test_vanished_socket_does_not_raise(systemd, notifier_for):
    path, listener = systemd
    notifier = notifier_for({"NOTIFY_SOCKET": path})
    listener.close()
    os.unlink(path)
    notifier.ready()
    notifier.status("still alive")


def test_abstract_socket_name(notifier_for):
    name = f"indico-supervisor-test-{uuid.uuid4().hex}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind("\0" + name)
    listener.settimeout(2)
    try:
        notifier_for({"NOTIFY_SOCKET": "@" + name}).ready()
        assert listener.recv(4096) == b"READY=1"
    finally:
        listener.close()


def test_a_listener_that_never_reads_cannot_block_the_sender_and_the_drop_is_reported_once(systemd, notifier_for):
    path, listener = systemd  # bound, never read: its queue fills after a few hundred datagrams
    drops = []
    notifier = notifier_for({"NOTIFY_SOCKET": path}, on_dropped=drops.append)

    def send_many():
        for n in range(5000):
            notifier.status(f"turn {n}")
            notifier.watchdog()
    sender = threading.Thread(target=send_many, daemon=True)
    sender.start()
    sender.join(timeout=30)

    assert not sender.is_alive(), "the sender blocked on a full notify socket"
    assert len(drops) == 1
    assert drops[0].startswith(("STATUS=turn", "WATCHDOG=1"))
    assert listener.recv(4096) == b"STATUS=turn 0"  # what fitted was delivered, in order


def test_after_the_listener_drains_a_new_drop_is_reported_again(systemd, notifier_for):
    path, listener = systemd
    drops = []
    notifier = notifier_for({"NOTIFY_SOCKET": path}, on_dropped=drops.append)
    while not drops:
        notifier.watchdog()
    listener.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            listener.recv(4096)
    notifier.status("drained")
    while len(drops) < 2:
        notifier.watchdog()
    assert drops == ["WATCHDOG=1", "WATCHDOG=1"]
