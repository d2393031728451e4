"""`status --check`: one line, and exit 0 / 1 / 2 (the Nagios plugin convention) from the real daemon."""
from __future__ import annotations

import signal
import subprocess
import sys

from harness.daemon import wait_until


def check(daemon) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "supervisor", "status", "--check", "--config",
                           str(daemon.config_path)], capture_output=True, text=True, env=daemon.env, timeout=30)
    assert len(done.stdout.splitlines()) == 1, done.stdout + done.stderr
    return done.returncode, done.stdout.strip()


def wait_check(daemon, code: int, timeout: float = 30) -> str:
    return wait_until(lambda: (found := check(daemon))[0] == code and found[1], timeout=timeout, interval=0.2,
                      what=f"status --check to exit {code} (last: {check(daemon)})")


def test_all_running_and_healthy_is_ok(run_daemon):
    daemon = run_daemon({"worker": {"health": {"exec": ["true"], "interval": "500ms"}}, "celery": {}}).start()
    daemon.wait_ready()
    line = wait_check(daemon, 0)
    assert line.startswith("OK: ") and "2/2 running" in line


def test_a_role_restarting_after_a_backoff_is_a_warning(run_daemon):
    slow = {"backoff": "1m", "max_backoff": "1m", "max_restarts": 10, "window": "10m"}
    daemon = run_daemon({"worker": {"command": ["sh", "-c", "exit 3"], "restart": slow}, "celery": {}}).start()
    daemon.wait_event("container_exited", role="worker", count=2)  # the second exit waits out the minute
    line = wait_check(daemon, 1)
    assert line.startswith("WARNING: ") and "worker backoff" in line


def test_a_health_check_not_passed_yet_is_a_warning(run_daemon):
    # Failing, but short of `retries` failures in a row: running, its health still "starting".
    daemon = run_daemon({"worker": {"health": {"exec": ["false"], "interval": "500ms", "retries": 1000}}}).start()
    daemon.wait_ready()
    line = wait_check(daemon, 1)
    assert line.startswith("WARNING: ") and "worker starting" in line


def test_a_failed_role_is_critical(run_daemon):
    policy = {"backoff": "100ms", "max_backoff": "200ms", "max_restarts": 2, "window": "1m"}
    daemon = run_daemon({"worker": {"command": ["sh", "-c", "exit 5"], "restart": policy}}).start()
    daemon.wait_event("container_failed", role="worker")
    line = wait_check(daemon, 2)
    assert line.startswith("CRITICAL: ") and "worker failed" in line


def test_a_refused_reload_is_critical_until_a_reload_applies(run_daemon):
    daemon = run_daemon({"worker": {}}).start()
    daemon.wait_ready()
    wait_check(daemon, 0)
    good = daemon.config
    daemon.write("user: root\ncontainers: {worker: {}}\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("reload_refused")
    assert "reload refused" in wait_check(daemon, 2)
    daemon.write(good)
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("config_reloaded")
    wait_check(daemon, 0)


def test_a_daemon_that_is_down_is_critical(run_daemon):
    daemon = run_daemon({"worker": {}}).start()
    daemon.wait_ready()
    wait_check(daemon, 0)
    daemon.kill()
    code, line = check(daemon)
    assert code == 2 and "daemon not running" in line
