"""`status --check`: one line and the Nagios plugin exit status, from the daemon's state file.

0 OK: every role running, and healthy where something checks it. 1 WARNING: something
on its way (starting, pulling, restarting after a backoff, a health check not passed yet
or failing). 2 CRITICAL: a role `failed`, `blocked` or `upgrade_failed` (a person must act), a refused
reload still outstanding, or the daemon down or no longer writing its state.
Reads the state file only: a check runs every minute and must not need the engine.
"""
from __future__ import annotations

import glob
import os
import time

OK, WARNING, CRITICAL = 0, 1, 2
LABELS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL"}
# The daemon rewrites its state at least every 10 s (daemon.STATE_HEARTBEAT); a file much
# older than that is a loop that hangs, even if its PID still lives.
STALE_AFTER = 60.0
NEEDS_A_PERSON = ("failed", "blocked", "upgrade_failed")


def check(state: dict | None, alive: bool, now: float | None = None) -> tuple[int, str]:
    now = time.time() if now is None else now
    if not alive:
        return CRITICAL, "daemon not running"
    age = now - float(state.get("updated_at") or 0)
    if age > STALE_AFTER:
        return CRITICAL, f"daemon state not updated for {age:.0f}s (loop hung?)"
    rows = state.get("containers") or []
    critical = [f"{r['role']} {r['state']}" for r in rows if r.get("state") in NEEDS_A_PERSON]
    if state.get("reload_refused"):
        critical.append("last reload refused (check-config, then reload)")
    warning = [f"{r['role']} {r['state']}" for r in rows
               if r.get("state") != "running" and r.get("state") not in NEEDS_A_PERSON and not _standing_by(r)]
    warning += [f"{r['role']} {r['health']}" for r in rows
                if r.get("state") == "running" and r.get("health") not in ("", None, "healthy")]
    running = sum(1 for r in rows if r.get("state") == "running")
    summary = f"{running}/{len(rows)} running"
    code = CRITICAL if critical else WARNING if warning else OK
    return code, "; ".join([summary, *critical, *warning])


def _standing_by(row: dict) -> bool:
    """A singleton another host runs: as it should be. Standby with no holder is a celery running nowhere."""
    return row.get("state") == "standby" and bool(row.get("lease_holder"))


def render(code: int, text: str, site: str) -> str:
    return f"{LABELS[code]}: indico-supervisor {site}: {text}"


def run_check(config_path: str) -> tuple[int, str]:
    """The check for the site file at `config_path`, rendered; a broken file still gives one line.

    A broken file is when the check matters most (a refused reload): the site's name is
    then taken from the state file of the daemon that runs this file.
    """
    from .config import load_site
    from .problems import ConfigError
    from .status import daemon_alive, read_state, runtime_dir, state_path

    try:
        site_name = load_site(config_path, check_paths=False).name
        broken = None
    except ConfigError as error:
        broken = f"site file {config_path}: {len(error.problems)} problem(s) (check-config)"
        site_name = _site_running(config_path, runtime_dir())
        if site_name is None:
            return CRITICAL, render(CRITICAL, broken, "?")
    state = read_state(state_path(site_name))
    code, text = check(state, daemon_alive(state))
    if broken:
        code, text = CRITICAL, f"{text}; {broken}"
    return code, render(code, text, site_name)


def _site_running(config_path: str, directory: str) -> str | None:
    from .status import read_state

    wanted = os.path.realpath(config_path)
    for path in sorted(glob.glob(os.path.join(directory, "*.state.json"))):
        state = read_state(path) or {}
        if state.get("config") and os.path.realpath(state["config"]) == wanted and state.get("site"):
            return str(state["site"])
    return None
