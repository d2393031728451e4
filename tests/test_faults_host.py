"""The host changing under a running daemon: a bound directory disappears, then comes back.

The site file was valid when it was read (the directory existed), so nothing but the
engine's refusal tells the daemon: it must say which container and which path, keep
retrying with backoff, show it in `status`, and leave the other containers alone.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

from harness.daemon import kill_main_process, site_containers, wait_until

ERROR = 3


def status_rows(daemon) -> dict:
    done = subprocess.run([sys.executable, "-m", "supervisor", "status", "--json", "--config", str(daemon.config_path)],
                          capture_output=True, text=True, env=daemon.env, timeout=30)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return {row["role"]: row for row in json.loads(done.stdout)["containers"]}


def started_at(client, name: str) -> tuple[str, str]:
    container = client.containers.get(name)
    return container.id, container.attrs["State"]["StartedAt"]


def test_a_removed_bind_directory_is_a_clear_error_for_its_container_only_and_its_return_is_noticed(
        run_daemon, docker_client, site_name, tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    daemon = run_daemon({"worker": {"volumes": {"extra": [f"{certs}:/etc/certs:ro"]}}, "celery": {}, "cron": {}})
    daemon.start().wait_ready()
    worker, others = f"{site_name}-worker", (f"{site_name}-celery", f"{site_name}-cron")
    before = {name: started_at(docker_client, name) for name in others}

    shutil.rmtree(certs)
    kill_main_process(docker_client, worker)

    refused = daemon.wait_event("container_start_failed", role="worker")
    assert refused["priority"] == ERROR and refused["container"] == worker, refused
    assert str(certs) in refused["reason"] and "does not exist" in refused["reason"], refused
    # Retried with growing delays, never given up: the admin may be restoring a backup.
    daemon.wait_event("container_start_failed", role="worker", count=3, timeout=30)
    retries = [float(e["retry_in"]) for e in daemon.events("container_start_failed", role="worker")[:3]]
    assert retries == sorted(retries) and retries[-1] > retries[0], retries
    # Its old container went because the daemon replaced it, not behind its back.
    assert not daemon.events("container_removed", role="worker")

    def shown_down():
        row = status_rows(daemon)["worker"]
        return row if row["state"] != "running" and str(certs) in row.get("detail", "") else None

    row = wait_until(shown_down, timeout=15, interval=0.2, what="status to show worker down with the missing path")
    assert row["state"] in ("backoff", "starting"), row
    rows = status_rows(daemon)
    assert rows["celery"]["state"] == rows["cron"]["state"] == "running"
    assert {name: started_at(docker_client, name) for name in others} == before
    assert not daemon.events("container_failed") and daemon.process.poll() is None

    certs.mkdir()
    back = daemon.wait_event("container_restarted", role="worker", timeout=30)
    assert back["container"] == worker
    assert wait_until(lambda: status_rows(daemon)["worker"]["state"] == "running", timeout=10, interval=0.2,
                      what="status to show worker running again")
    container = site_containers(docker_client, site_name)[worker]
    assert container.status == "running"
    assert any(m["Source"] == str(certs) and m["Destination"] == "/etc/certs" for m in container.attrs["Mounts"])
    assert status_rows(daemon)["worker"].get("detail", "") == ""
    assert {name: started_at(docker_client, name) for name in others} == before
    assert daemon.stop() == 0
