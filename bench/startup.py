"""Start to READY with N containers, against a shell loop of `docker run -d` for the same N.

ours: from spawning `indico-supervisor run` (interpreter start and imports included) to its
`daemon_ready` log line, when every container runs (the daemon starts them concurrently,
8 engine calls at once). Also its own `seconds` field (from the daemon's start, imports
excluded).

shell: `docker run -d …` for each container in turn, as admins do today: same image,
command, user, binds, env; done when the loop ends (each `docker run -d` returns once its
container has started). The two sides alternate, and everything is removed between runs.
"""
from __future__ import annotations

import subprocess
import time

from bench.lab import Lab, log_time, say
from bench.report import Result, median, ratio
from supervisor.daemon import MAX_PARALLEL
from harness.sites import SITE_LABEL

FULL = {1: 3, 10: 3, 50: 2}  # N -> repetitions
QUICK = {1: 1, 10: 1}


def run(lab: Lab, quick: bool) -> Result:
    plan = QUICK if quick else FULL
    ours: dict[int, list[float]] = {n: [] for n in plan}
    inner: dict[int, list[float]] = {n: [] for n in plan}
    shell: dict[int, list[float]] = {n: [] for n in plan}
    for n, reps in plan.items():
        for rep in range(reps):
            for side in (("ours", "shell") if rep % 2 == 0 else ("shell", "ours")):
                if side == "ours":
                    total, seconds = _ours(lab, n)
                    ours[n].append(total)
                    inner[n].append(seconds)
                else:
                    shell[n].append(_shell(lab, n))
                say(f"startup N={n} {rep + 1}/{reps} {side}: {(ours if side == 'ours' else shell)[n][-1]:.3f}s")
    return _result(ours, inner, shell, plan)


def _roles(n: int) -> dict:
    return {f"c{i:03d}": {} for i in range(n)}


def _ours(lab: Lab, n: int) -> tuple[float, float]:
    daemon = lab.site(_roles(n))
    spawned = time.time()
    daemon.start("--log-level", "info")
    ready = daemon.wait_ready(300)
    total = log_time(ready) - spawned
    _concurrency.setdefault(n, []).append(_overlap(lab, daemon.site, n, spawned, log_time(ready)))
    running = lab.client.containers.list(filters={"label": f"{SITE_LABEL}={daemon.site}", "status": "running"})
    if len(running) != n:
        raise RuntimeError(f"READY with {len(running)} of {n} containers running")
    lab.remove_site(daemon)
    return total, float(ready["seconds"])


_concurrency: dict[int, list[int]] = {}  # N -> the most containers between create and start at once, per run


def _overlap(lab: Lab, site: str, n: int, after: float, before: float) -> int:
    """From the engine's events: how many containers were being created/started at the same moment."""
    names = {f"{site}-c{i:03d}" for i in range(n)}
    marks = sorted((at, +1 if action == "create" else -1)
                   for at, action, _ in lab.events.between(after, before + 1, names=names, actions={"create", "start"}))
    most = level = 0
    for _, step in marks:
        level += step
        most = max(most, level)
    return most


def _shell(lab: Lab, n: int) -> float:
    model = lab.site(_roles(n))  # never started: only resolves the same containers' settings
    lines = [lab.docker_run_line(model, role, f"{model.site}-shell-{role}") for role in _roles(n)]
    script = "set -e\n" + "\n".join(lines) + "\n"
    began = time.time()
    subprocess.run(["bash", "-c", script], check=True, stdout=subprocess.DEVNULL)
    took = time.time() - began
    running = [c for c in lab.client.containers.list(filters={"status": "running"})
               if c.name.startswith(f"{model.site}-shell-")]
    if len(running) != n:
        raise RuntimeError(f"the shell loop left {len(running)} of {n} containers running")
    lab.remove_peers()
    return took


def _result(ours, inner, shell, plan) -> Result:
    result = Result("startup", "Start to READY, N containers: daemon vs a `docker run -d` loop",
                    ("N", "runs", "ours median s", "ours (daemon's own) s", "shell loop median s",
                     "ours / shell", "ours per container s", "shell per container s", "ours at once (max)"))
    for n in plan:
        o, s = median(ours[n]), median(shell[n])
        result.rows.append((n, len(ours[n]), o, median(inner[n]), s, ratio(o, s),
                            None if o is None else o / n, None if s is None else s / n,
                            max(_concurrency.get(n, []), default=None)))
    sizes = sorted(plan)
    if len(sizes) > 1:
        low, high = sizes[0], sizes[-1]
        grow = {side: (median(values[high]) - median(values[low])) / (high - low)
                for side, values in (("ours", ours), ("shell", shell))}
        result.notes.append(f"cost of each extra container (N {low} → {high}): ours {grow['ours']:.3f} s, "
                            f"shell loop {grow['shell']:.3f} s")
    result.notes.append(f"ours at once = the most of its containers between their engine `create` and `start` "
                        f"events at one moment (the daemon's bound: {MAX_PARALLEL} engine calls at once)")
    result.notes.append("ours = spawning the daemon (Python start and imports included) → its `daemon_ready` "
                        "line, all N running; the daemon's own figure leaves out interpreter start")
    return result
