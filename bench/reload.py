"""Reload: SIGHUP over a site of 20 running containers.

- same file: no container may be touched (no create, start, stop, kill, die or destroy
  event on any of them); converged = the daemon's `config_reloaded` line (nothing follows).
- one container's env changed: exactly that one is recreated (one create, one destroy,
  no event on the 19 others); converged = the engine's `start` of its new container.

The two kinds alternate; every reload is followed by a quiet SETTLE window in which the
engine's events for the site are counted.
"""
from __future__ import annotations

import copy
import signal
import time

from bench.lab import Lab, log_time, logged, say
from bench.report import Result, median, p95

CONTAINERS = 20
CHANGED = "r07"
SETTLE = 3.0
TOUCHING = {"create", "start", "stop", "kill", "die", "destroy", "restart", "pause"}


def run(lab: Lab, quick: bool) -> Result:
    reps = 2 if quick else 5
    daemon = lab.site({f"r{i:02d}": {} for i in range(CONTAINERS)})
    daemon.start("--log-level", "info")
    daemon.wait_ready(180)
    names = {f"{daemon.site}-r{i:02d}" for i in range(CONTAINERS)}
    changed_name = f"{daemon.site}-{CHANGED}"
    times: dict[str, list[float]] = {"same": [], "changed": []}
    touched: dict[str, list[int]] = {"same": [], "changed": []}  # containers touched per reload
    recreated: list[int] = []
    exact = True
    for rep in range(reps):
        for kind in (("same", "changed") if rep % 2 == 0 else ("changed", "same")):
            time.sleep(1.0)
            config = copy.deepcopy(daemon.config)
            if kind == "changed":
                config["containers"][CHANGED]["env"] = {"BENCH_GENERATION": f"{rep}"}
            daemon.write(config)
            reloads = len(daemon.events("config_reloaded"))
            recreations = len(daemon.events("container_recreated"))
            sent = time.time()
            daemon.signal(signal.SIGHUP)
            reloaded = daemon.wait_event("config_reloaded", count=reloads + 1, timeout=30)
            if kind == "same":
                times[kind].append(log_time(reloaded) - sent)
            else:
                started = lab.events.first(changed_name, "start", sent, timeout=60)
                if started is not None:
                    times[kind].append(started - sent)
            time.sleep(SETTLE)
            events = lab.events.between(sent, time.time(), names=names, actions=TOUCHING)
            hit = {name for _, _, name in events}
            touched[kind].append(len(hit))
            if kind == "changed":
                now = logged(daemon, "container_recreated", recreations + 1) - recreations
                recreated.append(now)
                creates = [e for e in events if e[1] == "create"]
                exact &= hit == {changed_name} and len(creates) == 1 and now == 1
            else:
                exact &= not hit
            say(f"reload {rep + 1}/{reps} {kind}: {times[kind][-1] if times[kind] else float('nan'):.3f}s, "
                f"{len(hit)} container(s) touched")
    return _result(times, touched, recreated, exact, reps)


def _result(times, touched, recreated, exact, reps) -> Result:
    result = Result("reload", f"Reload: SIGHUP over {CONTAINERS} running containers",
                    ("file", "reloads", "converged median s", "p95 s", "max s", "containers touched per reload"))
    result.rows.append(("same", len(times["same"]), median(times["same"]), p95(times["same"]),
                        max(times["same"], default=None), ", ".join(map(str, touched["same"]))))
    result.rows.append((f"one changed ({CHANGED}'s env)", len(times["changed"]), median(times["changed"]),
                        p95(times["changed"]), max(times["changed"], default=None),
                        ", ".join(map(str, touched["changed"]))))
    result.targets.append(("same file: 0 containers touched", not any(touched["same"])))
    result.targets.append(("one changed: exactly that 1 recreated (1 create, no event on the others; "
                           f"daemon logged {', '.join(map(str, recreated))} recreation(s))", exact and
                           all(n == 1 for n in recreated)))
    result.notes.append(f"{reps} reloads of each kind, alternating; touched = containers with any create, start, "
                        f"stop, kill, die or destroy event in the {SETTLE:g} s after the signal")
    result.notes.append("same file: converged = the daemon's `config_reloaded` log line (nothing is left to do); "
                        "one changed: the engine's `start` of the new container (the old one stops first, "
                        "SIGTERM with its trap)")
    return result
