"""`indico-supervisor exec --running`: a command in the role's running container (docker
exec), with -i/-t, under a real pseudo-terminal and through pipes, against the real engine.

The role's container is made here from the daemon's own spec (`ContainerSpec`), labelled
for the test's site, so these tests need no daemon.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import pytest

from harness.daemon import wait_until
from harness.ptys import Terminal
from supervisor.config import load_site
from supervisor.spec import ContainerSpec
from tests.test_exec import ROOT, jobs, site_file  # noqa: F401 (fixtures)

FOREIGN_LABEL = "io.indico-supervisor.test-foreign"


def exec_argv(config, *command: str, flags: str) -> list[str]:
    return [sys.executable, "-m", "supervisor", "exec", "--config", str(config), "--running", flags, "--", *command]


@pytest.fixture
def running_worker(site_file, docker_client):
    """The site file and the worker's container, created as the daemon would and started."""
    config = site_file()
    worker = next(c for c in load_site(str(config)).containers if c.role == "worker")
    site = load_site(str(config)).name
    container = docker_client.containers.create(**ContainerSpec(site, worker).create_kwargs())
    container.start()
    return config, container


def test_an_interactive_shell_runs_in_the_running_container_sized_like_ours(running_worker, jobs):
    config, worker = running_worker
    term = Terminal(exec_argv(config, "sh", flags="-it"), rows=29, columns=97, cwd=ROOT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        term.send("cat /etc/hostname; echo =$((1000+1))=\r")
        assert worker.id[:12] in term.expect("=1001=").split()  # its hostname: the very container
        term.send("stty size; echo =$((1000+2))=\r")
        assert term.expect("=1002=").split()[-2:] == ["29", "97"]
        term.send("exit 7\r")
        assert term.process.wait(timeout=60) == 7
        assert term.modes() == term.cooked
    finally:
        term.close()
    worker.reload()
    assert worker.status == "running"
    assert jobs() == []  # no one-shot container was made


def test_ctrl_c_interrupts_the_command_and_sigterm_leaves_with_143_saying_it_may_run_on(running_worker):
    config, worker = running_worker
    term = Terminal(exec_argv(config, "sh", flags="-it"), cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        term.send("sleep 3600\r")
        wait_until(lambda: any("3600" in " ".join(p) for p in worker.top()["Processes"]), 60, what="the sleep")
        term.send("\x03")
        term.send("echo status=$?; echo =$((1000+1))=\r")
        assert term.expect("=1001=").split()[-1] == "status=130"
        term.process.send_signal(signal.SIGTERM)
        assert term.process.wait(timeout=60) == 143
        assert "SIGTERM: leaving; sh may still run in" in term.text()
        assert term.modes() == term.cooked
    finally:
        term.close()


def test_stdin_from_a_pipe_reaches_the_command_and_ends_at_eof(running_worker):
    config, _ = running_worker
    done = subprocess.run(exec_argv(config, "sh", "-c", "wc -l; exit 4", flags="-i"), input="a\nb\nc\n",
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 4, done.stderr
    assert done.stdout.split() == ["3"]


def test_without_i_or_t_stdout_and_stderr_come_apart_and_the_status_is_ours(running_worker):
    config, _ = running_worker
    done = subprocess.run(exec_argv(config, "sh", "-c", "echo out; echo err >&2; exit 3", flags="--role=worker"),
                          input="not for the command\n", capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "out\n"
    assert done.stderr.splitlines()[-1] == "err"


def test_a_role_without_its_container_is_refused_with_exit_2(site_file, jobs):
    done = subprocess.run(exec_argv(site_file(), "true", flags="-i"), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2
    assert "does not exist" in done.stderr and "drop --running" in done.stderr
    assert jobs() == []


def test_a_container_we_do_not_own_is_refused_and_left_untouched(site_file, site_name, docker_client, busybox):
    mark = uuid.uuid4().hex
    stranger = docker_client.containers.run(busybox, ["sleep", "3600"], name=f"{site_name}-worker", detach=True,
                                            labels={FOREIGN_LABEL: mark})
    try:
        done = subprocess.run(exec_argv(site_file(), "true", flags="-i"), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert done.returncode == 2
        assert "refusing to run a command in a container we do not own" in done.stderr
        stranger.reload()
        assert stranger.status == "running" and not stranger.attrs.get("ExecIDs")
    finally:
        stranger.remove(force=True)


def test_a_stopped_container_is_refused_with_exit_2(running_worker):
    config, worker = running_worker
    worker.stop(timeout=5)
    done = subprocess.run(exec_argv(config, "true", flags="-i"), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2
    assert "is exited, not running" in done.stderr
