"""`indico-supervisor exec -i/-t`: stdin and a terminal for the job, under a real
pseudo-terminal (harness/ptys.py) and through pipes, against the real engine."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import termios
import threading

import pytest

from harness.daemon import wait_until
from supervisor.attach import STDERR, STDOUT, Demuxer, relay
from harness.ptys import Terminal
from tests.test_exec import ROOT, jobs, running_job, site_file  # noqa: F401 (fixtures)


# Pure: the engine's multiplexed stream, cut anywhere.

def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def test_demuxer_passes_each_streams_bytes_on_however_the_frames_are_cut():
    wire = frame(STDOUT, b"hello ") + frame(STDERR, b"oops\n") + frame(STDOUT, b"") + frame(STDOUT, b"world\n")
    for size in (1, 3, 7, 8, 9, len(wire)):
        demux, got = Demuxer(), {STDOUT: b"", STDERR: b""}
        for start in range(0, len(wire), size):
            for stream, piece in demux.feed(wire[start:start + size]):
                got[stream] += piece
        assert got == {STDOUT: b"hello world\n", STDERR: b"oops\n"}, size


def test_demuxer_passes_a_partial_payload_on_before_its_frame_is_complete():
    wire = frame(STDOUT, b"0123456789")
    assert Demuxer().feed(wire[:12]) == [(STDOUT, b"0123")]


# The relay over a real socket pair, the test playing the engine.

def test_relay_half_closes_at_the_end_of_stdin_and_still_passes_the_output_on():
    ours, engine = socket.socketpair()
    ours.setblocking(False)
    stdin, feeder = os.pipe()
    os.write(feeder, b"abc")
    os.close(feeder)

    def answer_once_the_input_has_ended():
        received = b""
        while chunk := engine.recv(100):  # b"" only once we half-closed
            received += chunk
        engine.sendall(frame(STDOUT, received.upper()) + frame(STDERR, b"done"))
        engine.close()
    answering = threading.Thread(target=answer_once_the_input_has_ended)
    answering.start()
    output = {STDOUT: b"", STDERR: b""}
    relay(ours, False, lambda stream, data: output.update({stream: output[stream] + data}), stdin)
    answering.join()
    assert output == {STDOUT: b"ABC", STDERR: b"done"}
    ours.close()
    os.close(stdin)


# Through the CLI, against the engine.

def exec_argv(config, *command: str, flags: str) -> list[str]:
    return [sys.executable, "-m", "supervisor", "exec", "--config", str(config), flags, "--", *command]


@pytest.fixture
def terminal():
    opened = []

    def open_(argv: list[str], **size) -> Terminal:
        opened.append(Terminal(argv, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, **size))
        return opened[-1]
    yield open_
    for term in opened:
        term.close()


class Shell:
    """The job's interactive `sh`, driven by typing; a marker the shell computes (the
    typed line echoes only its formula) says where a command's output ends."""

    def __init__(self, term: Terminal):
        self.term, self.count = term, 0

    def run(self, line: str) -> str:
        self.count += 1
        self.term.send(f"{line}; echo =$((1000+{self.count}))=\r")
        return self.term.expect(f"={1000 + self.count}=")


def interactive_shell(terminal, site_file, **size) -> Shell:
    term = terminal(exec_argv(site_file(), "sh", flags="-it"), **size)
    shell = Shell(term)
    shell.run("true")  # the prompt answers: the job runs and our keys reach it
    return shell


def test_an_interactive_shell_runs_typed_commands_and_passes_its_exit_status_on(terminal, site_file, jobs):
    shell = interactive_shell(terminal, site_file)
    assert "42" in shell.run("echo $((6*7))").split()
    assert shell.run("[ -t 0 ] && [ -t 1 ] && echo on-a-tty").split()[-1] == "on-a-tty"
    shell.term.send("exit 7\r")
    assert shell.term.process.wait(timeout=60) == 7
    assert jobs() == []


def test_ctrl_p_ctrl_q_reaches_the_job_instead_of_detaching_from_it(terminal, site_file, jobs):
    shell = interactive_shell(terminal, site_file)
    shell.term.send("\x10\x11\x03")  # the engine's default detach keys, then Ctrl-C to drop the line
    assert shell.run("echo still-$((6*7))").split()[-1] == "still-42"
    shell.term.send("exit 4\r")
    assert shell.term.process.wait(timeout=60) == 4


def test_the_terminal_is_back_in_its_cooked_mode_after_the_job(terminal, site_file, jobs):
    shell = interactive_shell(terminal, site_file)
    raw = shell.term.modes()
    assert not raw[3] & (termios.ICANON | termios.ECHO | termios.ISIG)  # raw while the job runs
    shell.term.send("exit\r")
    assert shell.term.process.wait(timeout=60) == 0
    assert shell.term.modes() == shell.term.cooked


def test_the_terminal_is_restored_when_exec_is_stopped_by_sigterm(terminal, site_file, jobs):
    shell = interactive_shell(terminal, site_file)
    shell.term.process.send_signal(signal.SIGTERM)
    assert shell.term.process.wait(timeout=60) == 143
    assert shell.term.modes() == shell.term.cooked
    assert "Traceback" not in shell.term.text()
    assert jobs() == []


def test_a_terminal_that_hangs_up_stops_and_removes_the_job_and_exits_129(terminal, site_file, jobs):
    shell = interactive_shell(terminal, site_file)
    job = running_job(jobs)
    shell.term.hang_up()
    assert shell.term.process.wait(timeout=60) == 129
    assert job.id not in [c.id for c in jobs()]


def test_a_job_removed_from_outside_ends_exec_with_125_and_says_so(terminal, site_file, jobs):
    shell = interactive_shell(terminal, site_file)
    job = running_job(jobs)
    # Held still while the container goes, so exec finds it gone, not merely killed.
    shell.term.process.send_signal(signal.SIGSTOP)
    job.remove(force=True)
    shell.term.process.send_signal(signal.SIGCONT)
    assert shell.term.process.wait(timeout=60) == 125
    assert f"{job.name} is gone: its container was removed by someone else" in shell.term.text()
    assert "Traceback" not in shell.term.text()
    assert shell.term.modes() == shell.term.cooked


def test_under_nohup_a_sighup_leaves_the_job_running_to_its_end(site_file, jobs, tmp_path):
    argv = exec_argv(site_file(), "sh", "-c", "while [ ! -e /opt/indico/scratch/go ]; do sleep 0.1; done; exit 6",
                     flags="--role=worker")
    ignoring_hup = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
                                          "os.execv(sys.argv[1], sys.argv[1:])", *argv]
    process = subprocess.Popen(ignoring_hup, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    running_job(jobs)
    process.send_signal(signal.SIGHUP)
    (tmp_path / "scratch" / "go").touch()
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 6, errors
    assert jobs() == []


def test_the_jobs_terminal_has_our_size_and_follows_a_resize(terminal, site_file, jobs):
    shell = interactive_shell(terminal, site_file, rows=33, columns=101)
    assert shell.run("stty size").split()[-2:] == ["33", "101"]
    shell.term.resize(41, 132)
    assert shell.run("stty size").split()[-2:] == ["41", "132"]
    shell.term.send("exit\r")
    assert shell.term.process.wait(timeout=60) == 0


def test_ctrl_c_interrupts_the_jobs_program_and_the_shell_survives(terminal, site_file, jobs):
    shell = interactive_shell(terminal, site_file)
    shell.term.send("sleep 3600\r")
    job = running_job(jobs)
    wait_until(lambda: any("sleep" in " ".join(p) for p in job.top()["Processes"]), 60, what="the sleep to run")
    shell.term.send("\x03")
    assert shell.run("echo status=$?").split()[-1] == "status=130"  # sleep died of SIGINT; sh answers
    shell.term.send("exit 3\r")
    assert shell.term.process.wait(timeout=60) == 3


def test_t_alone_gives_the_job_a_terminal_and_passes_the_status_on(terminal, site_file, jobs):
    term = terminal(exec_argv(site_file(), "sh", "-c", "[ -t 1 ] || exit 1; exit 5", flags="-t"))
    assert term.process.wait(timeout=120) == 5, term.text()
    assert term.modes() == term.cooked
    assert jobs() == []


def test_interactive_stdin_from_a_pipe_is_fed_and_ends_at_eof(site_file, jobs):
    done = subprocess.run(exec_argv(site_file(), "sh", "-c", "wc -l; exit 4", flags="-i"),
                          input="one\ntwo\nthree\n", capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 4, done.stderr
    assert done.stdout.split() == ["3"]
    assert jobs() == []


def test_a_large_input_is_echoed_back_whole_while_both_directions_flow(site_file, jobs):
    data = os.urandom(3 * 1024 * 1024)  # more than the engine and the pipes buffer: no deadlock
    done = subprocess.run(exec_argv(site_file(), "cat", flags="-i"), input=data, capture_output=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == data


def test_without_i_the_job_gets_no_stdin(site_file, jobs):
    done = subprocess.run(exec_argv(site_file(), "sh", "-c", "cat; echo end", flags="--role=worker"),
                          input="not for the job\n", capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "end\n"


def test_t_without_a_terminal_is_refused_with_exit_2_and_a_way_out(site_file, jobs):
    done = subprocess.run(exec_argv(site_file(), "sh", flags="-it"), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.strip() == ("indico-supervisor exec: -t needs a terminal, and stdin is not one; drop -t "
                                   "(keep -i to feed the command from a pipe or file) or run from a terminal")
    assert jobs() == []
