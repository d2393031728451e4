"""Native journal entries: what the daemon sends to journald when its stdout is the journal."""
from __future__ import annotations

import os
import socket
import struct

import pytest
import structlog

from supervisor import journal, logs


@pytest.fixture
def journald(tmp_path, monkeypatch):
    """A datagram socket standing in for /run/systemd/journal/socket, and stdout "connected" to the journal."""
    path = str(tmp_path / "socket")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(5)
    monkeypatch.setattr(journal, "SOCKET", path)
    monkeypatch.setattr(logs, "_redactor", logs.Redactor())
    stdout = open(tmp_path / "stdout", "w")
    status = os.fstat(stdout.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{status.st_dev}:{status.st_ino}")
    yield listener, stdout, tmp_path / "stdout"
    structlog.reset_defaults()
    stdout.close()
    listener.close()


def parse(datagram: bytes) -> dict[str, str]:
    """The native protocol back into fields, both forms (KEY=value, and KEY\\n<u64 length><value>\\n)."""
    fields, rest = {}, datagram
    while rest:
        line, _, after = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            rest = after
        else:
            (length,) = struct.unpack("<Q", after[:8])
            fields[line.decode()] = after[8:8 + length].decode()
            assert after[8 + length:9 + length] == b"\n"
            rest = after[9 + length:]
    return fields


def test_an_event_is_one_entry_with_queryable_fields_and_nothing_on_stdout(journald):
    listener, stdout, stdout_path = journald
    logs.configure("kv", stream=stdout)
    logs.get_logger().bind(role="worker", container="indico-worker").warning("container_exited", exit_code=137)
    entry = parse(listener.recv(65536))
    assert entry == {"PRIORITY": "4", "SYSLOG_IDENTIFIER": "indico-supervisor", "EVENT": "container_exited",
                     "ROLE": "worker", "CONTAINER": "indico-worker",
                     "MESSAGE": "event=container_exited role=worker container=indico-worker exit_code=137"}
    stdout.flush()
    assert stdout_path.read_text() == ""  # once in the journal, not twice


def test_a_value_with_a_newline_uses_the_length_prefixed_form(journald):
    listener, stdout, _ = journald
    logs.configure("json", stream=stdout)
    logs.get_logger().error("config_problem", role="a\nb")
    entry = parse(listener.recv(65536))
    assert entry["ROLE"] == "a\nb" and entry["PRIORITY"] == "3" and entry["MESSAGE"].startswith('{"event": ')


def test_secrets_are_masked_in_every_field(journald):
    listener, stdout, _ = journald
    logs.add_secrets(["hunter2-secret"])
    logs.configure("kv", stream=stdout)
    logs.get_logger().error("reload_refused", role="hunter2-secret", reason="pw hunter2-secret")
    datagram = listener.recv(65536)
    assert b"hunter2" not in datagram and parse(datagram)["ROLE"] == "***"


def test_a_journal_that_refuses_gets_the_line_on_stdout_instead(journald, monkeypatch):
    listener, stdout, stdout_path = journald
    logs.configure("kv", stream=stdout)
    listener.close()  # journald restarting: nobody at the socket
    logs.get_logger().info("container_started", role="worker")
    assert stdout_path.read_text() == "<6>event=container_started role=worker\n"


def test_without_the_journal_stdout_keeps_its_key_value_lines(journald, monkeypatch):
    listener, stdout, stdout_path = journald
    monkeypatch.delenv("JOURNAL_STREAM")
    logs.configure("kv", stream=stdout)
    logs.get_logger().info("container_started", role="worker")
    stdout.flush()
    assert "event=container_started role=worker" in stdout_path.read_text()
    listener.settimeout(0.2)
    with pytest.raises(socket.timeout):
        listener.recv(65536)
