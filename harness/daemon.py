"""Runs the real daemon (`python -m supervisor run`) against the real engine, for tests.

A test writes a site file, starts the daemon as a child process, and reads what
it did from its log (parsed back into events) and from the engine itself.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from harness.sites import SITE_LABEL

# Ends promptly on SIGTERM (a bare `sleep` as PID 1 would ignore it until the timeout).
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"]
_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def site_config(site: str, image: str, root: Path, containers: dict, **top) -> dict:
    """A site dict with fast test timings; `containers` maps role -> overrides."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "scratch").mkdir(parents=True, exist_ok=True)
    config = {
        "site": site, "image": image, "pull": "never", "user": "65534:65534",
        "volumes": {"data": str(root / "data"), "scratch": str(root / "scratch")},
        "network": {"links": []},
        "restart": {"backoff": "200ms", "max_backoff": "2s", "reset_after": "30s", "max_restarts": 10, "window": "1m"},
        "stop": {"timeout": "5s"},
        "containers": {role: {"name": f"{site}-{role}", "command": SLEEPER,
                              **({} if role in ("worker", "celery") else {"image": image}), **body}
                       for role, body in containers.items()},
    }
    config.update(top)
    return config


def parse_line(line: str) -> dict | None:
    """One kv log line back into a dict; None for anything else."""
    line = line.strip()
    match = re.match(r"^<(\d)>", line)
    if not match:
        return None
    fields = {"priority": int(match.group(1))}
    for key, raw in _PAIR.findall(line[match.end():]):
        fields[key] = json.loads(raw) if raw.startswith('"') else raw
    return fields


class Daemon:
    def __init__(self, tmp_path: Path, config: dict, env: dict | None = None):
        self.dir = tmp_path
        self.config_path = tmp_path / "site.yaml"
        self.log_path = tmp_path / "daemon.log"
        self.runtime = tmp_path / "run"
        self.env = {**os.environ, "RUNTIME_DIRECTORY": str(self.runtime), **(env or {})}
        self.env.pop("NOTIFY_SOCKET", None) if "NOTIFY_SOCKET" not in (env or {}) else None
        self.process: subprocess.Popen | None = None
        self.write(config)

    def write(self, config: dict | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        self.config_path.write_text(text)
        self.config = config

    def start(self, *extra: str) -> "Daemon":
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run", "--config", str(self.config_path), "--log-level", "debug", *extra],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=Path(__file__).parent.parent)
        log.close()
        return self

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def events(self, name: str | None = None, **fields) -> list[dict]:
        found = [e for e in map(parse_line, self.log_text().splitlines()) if e]
        return [e for e in found if (name is None or e.get("event") == name)
                and all(str(e.get(k)) == str(v) for k, v in fields.items())]

    def wait_event(self, name: str, timeout: float = 30, count: int = 1, **fields) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name, **fields)
            if len(found) >= count:
                return found[count - 1]
            if self.process and self.process.poll() is not None:
                raise AssertionError(f"daemon exited ({self.process.returncode}) waiting for {name}:\n{self.log_text()[-4000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no {name} {fields} x{count} within {timeout}s; log:\n{self.log_text()[-4000:]}")

    def wait_ready(self, timeout: float = 60) -> dict:
        return self.wait_event("daemon_ready", timeout)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 60) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


def site_containers(client, site: str) -> dict:
    """name -> container (attrs fresh) for every container of the site."""
    # ignore_removed: a container the daemon replaces between the listing and its inspect is no error
    return {c.name: c for c in client.containers.list(all=True, filters={"label": f"{SITE_LABEL}={site}"},
                                                      ignore_removed=True)}


def wait_until(predicate, timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout}s")


def kill_main_process(client, name: str) -> None:
    """SIGKILL the container's PID 1 from the host, as an OOM killer or admin would."""
    pid = client.containers.get(name).attrs["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)
