"""Alerts: the admin's command run by the real daemon, and the rules it runs by (rate limit, timeout, masking)."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from harness.daemon import wait_until
from supervisor import logs
from supervisor.alerts import ENGINE_AWAY, Alerts
from supervisor.lifecycle import Event
from supervisor.model import Site
from supervisor.monitoring import AlertSettings, Published

CRASH_LOOP = {"backoff": "100ms", "max_backoff": "200ms", "max_restarts": 2, "window": "1m"}


def recorder(tmp_path: Path) -> tuple[list[str], Path]:
    """A shell script that appends its INDICO_SUPERVISOR_ environment to a file, one alert per block."""
    tmp_path.mkdir(exist_ok=True)
    record = tmp_path / "alerts.txt"
    script = tmp_path / "alert.sh"
    script.write_text(f'#!/bin/sh\n{{ env | grep ^INDICO_SUPERVISOR_ | sort; echo --; }} >> "{record}"\n')
    script.chmod(0o755)
    return [str(script)], record


def alerts_in(record: Path) -> list[dict]:
    if not record.exists():
        return []
    blocks = record.read_text().split("--\n")
    return [dict(line.split("=", 1) for line in block.splitlines()) for block in blocks if block.strip()]


def test_a_role_entering_failed_alerts_once_per_min_interval(run_daemon, site_name, tmp_path):
    command, record = recorder(tmp_path / "alert")
    daemon = run_daemon({"worker": {"command": ["sh", "-c", "exit 5"], "restart": CRASH_LOOP}},
                        alerts={"command": command, "min_interval": "1h", "timeout": "10s"}).start()
    daemon.wait_event("container_failed", role="worker")
    daemon.wait_event("alert_sent", alert="container_failed")
    sent = wait_until(lambda: alerts_in(record), what="the alert command's record")
    assert sent == [{"INDICO_SUPERVISOR_EVENT": "container_failed", "INDICO_SUPERVISOR_ROLE": "worker",
                     "INDICO_SUPERVISOR_CONTAINER": f"{site_name}-worker",
                     "INDICO_SUPERVISOR_REASON": sent[0]["INDICO_SUPERVISOR_REASON"],
                     "INDICO_SUPERVISOR_SITE": site_name, "INDICO_SUPERVISOR_HOST": sent[0]["INDICO_SUPERVISOR_HOST"],
                     "INDICO_SUPERVISOR_SUPPRESSED": "0"}]
    assert "exit code 5" in sent[0]["INDICO_SUPERVISOR_REASON"] and sent[0]["INDICO_SUPERVISOR_HOST"]

    daemon.signal(signal.SIGHUP)  # forgiven, it fails a second time within the hour
    daemon.wait_event("container_failed", role="worker", count=2)
    daemon.wait_event("alert_suppressed", alert="container_failed")
    assert len(alerts_in(record)) == 1


# The rules, on the observer itself: a fake clock, real processes.

SITE = Site(path="site.yaml", name="demo", containers=())


def published(mono: float) -> Published:
    return Published(mono=mono, wall=time.time(), statuses=[], engine_up=True)


def test_secrets_in_an_alert_are_masked(tmp_path):
    command, record = recorder(tmp_path)
    logs.add_secrets(["s3cr3t-db-password"])
    alerts = Alerts(AlertSettings(tuple(command), min_interval=0, timeout=10), SITE, logs.get_logger())
    alerts.event(Event("error", "upgrade_failed", None, {"reason": "db at postgresql://indico:s3cr3t-db-password@db/x "
                                                                   "refused"}), 0.0)
    wait_until(lambda: alerts_in(record), what="the alert")
    reason = alerts_in(record)[0]["INDICO_SUPERVISOR_REASON"]
    assert "s3cr3t" not in reason and "***" in reason


def test_a_hung_alert_command_is_killed_after_its_timeout(tmp_path):
    marker = tmp_path / "survived"
    alerts = Alerts(AlertSettings(("sh", "-c", f"sleep 5; touch {marker}"), min_interval=0, timeout=0.2),
                    SITE, logs.get_logger())
    alerts.event(Event("error", "lease_lost", None, {}), 0.0)
    process = alerts.running[0][0]
    alerts.published(published(0.1))
    assert process.poll() is None  # within its timeout: left alone
    alerts.published(published(0.3))
    assert process.poll() is not None and not alerts.running
    time.sleep(5.5)
    assert not marker.exists()  # its child was killed too


def test_an_engine_away_for_a_minute_alerts_once_and_a_quick_return_not_at_all():
    spawned = []
    alerts = Alerts(AlertSettings(("true",), min_interval=0, timeout=10), SITE, logs.get_logger(),
                    spawn=lambda args, env, **_: spawned.append(env) or subprocess.Popen(["true"]))
    alerts.event(Event("error", "engine_lost", None, {"reason": "connection refused"}), 0.0)
    alerts.published(published(ENGINE_AWAY - 1))
    alerts.event(Event("info", "engine_synced", None, {}), ENGINE_AWAY - 1)
    alerts.published(published(ENGINE_AWAY + 5))
    assert spawned == []
    alerts.event(Event("error", "engine_lost", None, {"reason": "connection refused"}), 100.0)
    alerts.published(published(100 + ENGINE_AWAY))
    alerts.published(published(200 + ENGINE_AWAY))
    assert [env["INDICO_SUPERVISOR_EVENT"] for env in spawned] == ["engine_lost"]
    assert "connection refused" in spawned[0]["INDICO_SUPERVISOR_REASON"]
