"""Alerts: the admin's command, run when something needs a person.

Owns: which events alert (`ALERTING`), the engine-away timer (engine_lost not followed
by engine_synced within ENGINE_AWAY), the rate limit per event kind, and the commands
under way: started with Popen from the loop (fork and exec, nothing waited on), polled
each turn, killed (their whole process group) once past `timeout`.
Must not: block the loop, or put a secret in a command's environment: every value
goes through the log's redactor first.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess

from . import logs
from .monitoring import AlertSettings, Published

ENGINE_AWAY = 60.0  # seconds without the engine before a person is asked to look
ALERTING = ("container_failed", "reload_refused", "upgrade_failed", "lease_lost")
ENV_PREFIX = "INDICO_SUPERVISOR_"


class Alerts:
    def __init__(self, settings: AlertSettings, site, log, spawn=subprocess.Popen):
        self.settings = settings
        self.site = site.name
        self.names = {c.role: c.name for c in site.containers}
        self.host = socket.gethostname()
        self.log = log
        self.spawn = spawn
        self.last_sent: dict[str, float] = {}  # event kind -> when its alert last ran (monotonic)
        self.suppressed: dict[str, int] = {}  # event kind -> alerts held back since then
        self.engine_lost: tuple[float, str] | None = None  # since when, and why
        self.running: list[tuple[subprocess.Popen, float, str]] = []  # process, kill deadline, kind

    def event(self, event, mono: float) -> None:
        fields = event.fields
        if event.name == "engine_lost":
            self.engine_lost = self.engine_lost or (mono, str(fields.get("reason", "")))
        elif event.name == "engine_synced":
            self.engine_lost = None
        elif event.name in ALERTING:
            role = event.role or fields.get("role") or ""
            self.send(event.name, mono, role=role, container=fields.get("container") or self.names.get(role, ""),
                      reason=_reason(event.name, fields))

    def published(self, published: Published) -> None:
        if self.engine_lost is not None and published.mono - self.engine_lost[0] >= ENGINE_AWAY:
            since, why = self.engine_lost
            self.engine_lost = (float("inf"), why)  # once per outage: engine_synced resets it
            self.send("engine_lost", published.mono,
                      reason=f"the Docker engine has not answered for {published.mono - since:.0f}s: {why}")
        self.poll(published.mono)

    def send(self, kind: str, mono: float, role: str = "", container: str = "", reason: str = "") -> None:
        last = self.last_sent.get(kind)
        if last is not None and mono - last < self.settings.min_interval:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            self.log.info("alert_suppressed", alert=kind, role=role or None,
                          next_after=round(last + self.settings.min_interval - mono, 1))
            return
        env = {**os.environ, **{ENV_PREFIX + key: logs.scrub(value) for key, value in {
            "EVENT": kind, "ROLE": role, "CONTAINER": container, "REASON": reason, "SITE": self.site,
            "HOST": self.host, "SUPPRESSED": str(self.suppressed.pop(kind, 0))}.items()}}
        self.last_sent[kind] = mono
        try:
            # Its own session, so a timeout kills whatever it started too (curl under a shell).
            process = self.spawn(list(self.settings.command), env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as error:
            self.log.error("alert_failed", alert=kind, command=self.settings.command[0], reason=str(error))
            return
        self.running.append((process, mono + self.settings.timeout, kind))
        self.log.info("alert_sent", alert=kind, role=role or None, pid=process.pid)

    def poll(self, mono: float) -> None:
        still = []
        for process, deadline, kind in self.running:
            code = process.poll()
            if code is None and mono >= deadline:
                _kill_group(process)
                self.log.error("alert_failed", alert=kind, reason=f"killed after {self.settings.timeout:g}s "
                                                                  "(alerts.timeout)")
            elif code is None:
                still.append((process, deadline, kind))
            elif code != 0:
                self.log.error("alert_failed", alert=kind, exit_code=code)
        self.running = still

    def deadline(self) -> float | None:
        """When the loop should look again: a command's timeout, or the engine's minute."""
        found = [deadline for _, deadline, _ in self.running]
        if self.engine_lost is not None:
            found.append(self.engine_lost[0] + ENGINE_AWAY)
        return min(found) if found else None

    def close(self) -> None:
        for process, _, _ in self.running:
            if process.poll() is None:
                _kill_group(process)
        self.running = []


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        process.wait(1)
    except subprocess.TimeoutExpired:
        pass


def _reason(name: str, fields: dict) -> str:
    if name == "container_failed":
        return (f"crash loop: {fields.get('restarts')} restarts within {fields.get('window')}s, "
                f"last {fields.get('cause')} with exit code {fields.get('exit_code')}; no more restarts until a reload")
    if name == "reload_refused":
        return f"{fields.get('problems', 1)} problem(s) in {fields.get('file')}; {fields.get('hint', '')}".strip()
    return str(fields.get("reason") or fields.get("hint") or "")
