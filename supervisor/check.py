"""`status --check`: one line and the Nagios plugin exit status, from the daemon's state file.

0 OK: every role running, and healthy where something checks it. 1 WARNING: something
on its way (starting, pulling, restarting after a backoff, a health check not passed yet
or failing). 2 CRITICAL: a role `failed` or `blocked` (a person must act), a refused
reload still outstanding, or the daemon down or no longer writing its state.
Reads the state file only: a check runs every minute and must not need the engine.
"""
from __future__ import annotations

import time

OK, WARNING, CRITICAL = 0, 1, 2
LABELS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL"}
# The daemon rewrites its state at least every 10 s (daemon.STATE_HEARTBEAT); a file much
# older than that is a loop that hangs, even if its PID still lives.
STALE_AFTER = 60.0
NEEDS_A_PERSON = ("failed", "blocked")


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
               if r.get("state") != "running" and r.get("state") not in NEEDS_A_PERSON]
    warning += [f"{r['role']} {r['health']}" for r in rows
                if r.get("state") == "running" and r.get("health") not in ("", None, "healthy")]
    running = sum(1 for r in rows if r.get("state") == "running")
    summary = f"{running}/{len(rows)} running"
    code = CRITICAL if critical else WARNING if warning else OK
    return code, "; ".join([summary, *critical, *warning])


def render(code: int, text: str, site: str) -> str:
    return f"{LABELS[code]}: indico-supervisor {site}: {text}"
