"""Exec probes against the real engine: a probe that times out leaves no thread and no process behind."""
from __future__ import annotations

import threading

import pytest

from supervisor.engine import Engine
from supervisor.health import check_exec
from harness.daemon import wait_until
from harness.sites import SITE_LABEL

PROBES = 15


@pytest.fixture
def probed(docker_client, busybox, site_name):
    """A running container of the test's site, as the daemon would probe it."""
    container = docker_client.containers.run(busybox, ["sleep", "600"], name=f"{site_name}-probed", detach=True,
                                              labels={SITE_LABEL: site_name})
    return container


def sleepers(container) -> list[str]:
    return [p[-1] for p in container.top()["Processes"] if "sleep 3600" in p[-1]]


def test_timed_out_exec_probes_leave_no_thread_and_no_process_behind(probed, site_name):
    engine = Engine(site_name)
    run_exec = lambda command, timeout: engine.exec_exit_code(probed.id, command, timeout)  # noqa: E731
    assert check_exec(run_exec, ("true",), 5) == (True, "true: exit code 0")  # warms the client's pool
    before = threading.active_count()

    verdicts = [check_exec(run_exec, ("sleep", "3600"), 0.3) for _ in range(PROBES)]

    assert verdicts == [(False, "sleep 3600: no answer within 0.3s")] * PROBES
    assert threading.active_count() <= before, [t.name for t in threading.enumerate()]
    wait_until(lambda: not sleepers(probed), timeout=20, what="the timed-out probes' processes to be killed")


def test_an_exec_probe_reports_the_exit_code_of_a_command_that_ends(probed, site_name):
    engine = Engine(site_name)
    run_exec = lambda command, timeout: engine.exec_exit_code(probed.id, command, timeout)  # noqa: E731
    assert check_exec(run_exec, ("sh", "-c", "exit 3"), 5) == (False, "sh -c exit 3: exit code 3")
    assert check_exec(run_exec, ("true",), 5) == (True, "true: exit code 0")
