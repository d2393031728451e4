"""What each container is doing, said for people: states, the STATUS line, the state file.

States are derived from the daemon's picture each turn, never stored, so they
cannot drift from it; the daemon logs each change of state with its cause.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from enum import Enum


class State(str, Enum):
    PULLING = "pulling"  # waiting for its image
    STARTING = "starting"  # an action is under way, or not yet started
    RUNNING = "running"
    BACKOFF = "backoff"  # exited or unhealthy; restarting after a delay
    FAILED = "failed"  # crash loop: no more restarts until its cooldown passes, or a reload
    WAITING = "waiting"  # for a dependency to hold (started, or healthy): not its own fault
    BLOCKED = "blocked"  # its name is held by a container we do not own
    STOPPING = "stopping"
    STOPPED = "stopped"
    STANDBY = "standby"  # a singleton whose lease another host holds (or nobody, for a moment): no container here


SETTLED = (State.RUNNING, State.BACKOFF, State.FAILED, State.BLOCKED, State.STANDBY)


@dataclass(frozen=True)
class RoleStatus:
    role: str
    name: str
    state: State
    detail: str = ""
    health: str = ""  # healthy, unhealthy, starting, or "" when nothing checks it
    restarts: int = 0
    started_at: float | None = None  # epoch seconds of the current run
    image: str = ""
    next_restart_at: float | None = None  # epoch seconds
    container_id: str = ""
    lease_holder: str = ""  # singleton roles: the host holding the lease, "" when none or unknown
    lease_token: int | None = None


def status_line(statuses: list[RoleStatus], now: float) -> str:
    """One line for systemctl status, e.g. `2/2 running; worker healthy; celery restarting in 4s`."""
    running = sum(1 for s in statuses if s.state is State.RUNNING)
    parts = [f"{running}/{len(statuses)} running"]
    for s in statuses:
        if s.state is State.RUNNING:
            if s.health:
                parts.append(f"{s.role} {s.health}")
        elif s.state is State.BACKOFF and s.next_restart_at is not None:
            parts.append(f"{s.role} restarting in {max(0, round(s.next_restart_at - now))}s")
        elif s.state is State.WAITING:
            parts.append(f"{s.role} waiting for {s.detail}")
        elif s.state is State.STANDBY:
            parts.append(f"{s.role} standby ({s.detail})")
        else:
            parts.append(f"{s.role} {s.state.value}")
    return "; ".join(parts)


def runtime_dir() -> str:
    return os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or "/run/indico-supervisor"


def state_path(site: str) -> str:
    return os.path.join(runtime_dir(), f"{site}.state.json")


def write_state(path: str, payload: dict) -> None:
    """Atomically, so `status` never reads half a file."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".state-")
    with os.fdopen(handle, "w") as stream:
        json.dump(payload, stream, indent=1, default=str)
    os.replace(temporary, path)


def state_payload(site: str, config: str, statuses: list[RoleStatus], daemon: str,
                  reload_refused: bool = False) -> dict:
    # reload_refused: the last reload was refused and none applied since (`status --check` is critical).
    return {"site": site, "config": config, "pid": os.getpid(), "pid_started": process_started(os.getpid()),
            "daemon": daemon, "updated_at": time.time(), "reload_refused": reload_refused,
            "containers": [{**asdict(s), "state": s.state.value} for s in statuses]}


def read_state(path: str) -> dict | None:
    """The state file, or None; rows that are not a role's mapping are left out, never a KeyError later."""
    try:
        with open(path) as stream:
            state = json.load(stream)
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    rows = state.get("containers")
    state["containers"] = [r for r in rows if isinstance(r, dict) and r.get("role")] if isinstance(rows, list) else []
    return state


def daemon_alive(state: dict | None) -> bool:
    """Whether the daemon that wrote `state` still runs: its PID alive and not recycled by another process."""
    if not state or state.get("daemon") != "running":
        return False
    try:
        pid = int(state["pid"])
    except (TypeError, ValueError, KeyError):
        return False
    started = process_started(pid)
    if started is None:
        return False
    if state.get("pid_started") is not None:  # a re-exec keeps PID and start time: still ours
        return started == state["pid_started"]
    return _runs_our_daemon(pid)  # a state file written before start times were recorded


def process_started(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat's 22nd field), or None if none runs."""
    try:
        with open(f"/proc/{pid}/stat") as stream:
            stat = stream.read()
        # The command name (field 2) may hold spaces and parentheses: count fields after its last ")".
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _runs_our_daemon(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            argv = stream.read().decode(errors="replace").split("\0")
    except OSError:
        return False
    return "run" in argv and any("supervisor" in arg for arg in argv)


def render_table(rows: list[dict], now: float) -> str:
    header = ("ROLE", "NAME", "STATE", "HEALTH", "RESTARTS", "UPTIME", "IMAGE", "NEXT TRY")
    lines = [header]
    for row in rows:
        started = row.get("started_at")
        uptime = _span(now - started) if started and row.get("state") == "running" else "-"
        next_at = row.get("next_restart_at")
        lines.append((row.get("role", "-"), row.get("name", "-"), row.get("state", "-"), row.get("health") or "-",
                      str(row.get("restarts", 0)), uptime, row.get("image") or "-",
                      f"in {_span(next_at - now)}" if next_at else "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    text += [f"  {row['role']}: {row['detail']}" for row in rows if row.get("detail")]
    text += [f"  {row['role']}: lease held by {row['lease_holder']}, token {row.get('lease_token')}"
             for row in rows if row.get("lease_holder")]
    return "\n".join(text)


def _span(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60}s"
    return f"{seconds}s"
