"""The daemon's own health probes: http, tcp and exec, one thread per probed run.

A prober only reports verdicts (healthy again, or `retries` failures in a row);
what to do about them is the daemon's business.
"""
from __future__ import annotations

import http.client
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .model import Probe, Run


@dataclass(frozen=True)
class ProbeVerdict:
    role: str
    run: Run
    healthy: bool
    detail: str


def check_http(ip: str, port: int, path: str, timeout: float) -> tuple[bool, str]:
    connection = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"User-Agent": "indico-supervisor-probe"})
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as error:
        return False, f"GET http://{ip}:{port}{path}: {error or type(error).__name__}"
    finally:
        connection.close()
    return 200 <= status < 400, f"GET http://{ip}:{port}{path}: HTTP {status}"


def check_tcp(ip: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True, f"connect {ip}:{port}: ok"
    except OSError as error:
        return False, f"connect {ip}:{port}: {error}"


def check_exec(run_exec: Callable[[list[str], float], int | None], command: tuple[str, ...],
               timeout: float) -> tuple[bool, str]:
    """`run_exec(command, timeout)` gives the exit code, or None once the timeout passed (it kills the rest)."""
    shown = " ".join(command)
    try:
        code = run_exec(list(command), timeout)
    except Exception as error:  # the engine refused the exec: the container is not healthy either
        return False, f"{shown}: {error}"
    if code is None:
        return False, f"{shown}: no answer within {timeout:g}s"
    return code == 0, f"{shown}: exit code {code}"


class Prober(threading.Thread):
    """Probes one run of one container until stopped."""

    def __init__(self, role: str, run: Run, probe: Probe, ip: str | None,
                 run_exec: Callable[[list[str], float], int | None], report: Callable[[ProbeVerdict], None]):
        super().__init__(name=f"probe-{role}", daemon=True)
        self.role, self.run_key, self.probe, self.ip = role, run, probe, ip
        self.run_exec, self.report = run_exec, report
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def check(self) -> tuple[bool, str]:
        p = self.probe
        if p.kind == "exec":
            return check_exec(self.run_exec, p.command, p.timeout)
        if not self.ip:
            return False, "the container has no IP address to probe"
        if p.kind == "http":
            return check_http(self.ip, p.port, p.path, p.timeout)
        return check_tcp(self.ip, p.port, p.timeout)

    def run(self) -> None:
        # As the engine's HEALTHCHECK does: during start_period a success counts and a
        # failure does not, so a fast start is seen as ready without waiting it out.
        failures = 0
        verdict: bool | None = None
        begun = time.monotonic()
        while not self._stopped.is_set():
            healthy, detail = self.check()
            if healthy:
                failures = 0
            elif time.monotonic() - begun >= self.probe.start_period:
                failures += 1
            if healthy and verdict is not True:
                verdict = True
                self.report(ProbeVerdict(self.role, self.run_key, True, detail))
            elif failures >= self.probe.retries and verdict is not False:
                verdict = False
                self.report(ProbeVerdict(self.role, self.run_key, False, detail))
            if self._stopped.wait(self.probe.interval):
                return
