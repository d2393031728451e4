"""Recovery latency: a container's PID 1 SIGKILLed from the host → its replacement running.

Three sides, interleaved kill by kill on the same image and command:
- ours: the daemon's container (engine restart policy `no`; the daemon restarts it);
- engine: the same container under `--restart=unless-stopped` (the engine's restart manager);
- floor: the same container with no policy, started by the client with a bare `docker start`
  once it has died: what any restart costs at least.

Latency is the engine's `start` event (`timeNano`) minus the wall time taken right before
`os.kill` (or, for the floor, before the `start` call): one witness for all sides.

Every kill is a first restart: a container is killed again only after it has run
SPACING seconds, past the engine's reset (its 100 ms doubling delay resets after a run
of 10 s) and ours (`reset_after: 10s` here; the first restart is at once, later ones back
off). Several containers per side take turns, so the kills keep coming without waiting.
"""
from __future__ import annotations

import os
import signal
import time

from bench.lab import Lab, engine_epoch, logged, say, wait_running
from bench.report import Result, median, p95, ratio

SLOTS = 6  # containers per side, killed in turn
SPACING = 12.0  # seconds a container runs before its next kill: beyond both sides' backoff reset
SETTLE = 0.3  # after each replacement, so the next kill does not race its bookkeeping
TARGET = 0.8  # ours' median at most this times the engine's
RESTART = {"backoff": "1s", "max_backoff": "5m", "reset_after": "10s", "max_restarts": 100, "window": "10m"}


def run(lab: Lab, quick: bool) -> Result:
    kills = SLOTS if quick else 4 * SLOTS
    daemon = lab.site({f"r{i}": {} for i in range(SLOTS)}, restart=RESTART)
    daemon.start("--log-level", "info")
    daemon.wait_ready(120)
    sides = {
        "ours": [f"{daemon.site}-r{i}" for i in range(SLOTS)],
        "engine": [lab.peer(daemon, f"r{i}", f"{daemon.site}-engine{i}", "unless-stopped").name for i in range(SLOTS)],
        "floor": [lab.peer(daemon, f"r{i}", f"{daemon.site}-floor{i}", "no").name for i in range(SLOTS)],
    }
    last_start = {name: engine_epoch(wait_running(lab.client, name)["State"]["StartedAt"])
                  for names in sides.values() for name in names}
    samples: dict[str, list[float]] = {side: [] for side in sides}
    deaths: dict[str, list[float]] = {side: [] for side in sides}  # kill → the engine's `die` event
    missed: dict[str, int] = {side: 0 for side in sides}
    floor_call: list[float] = []
    order = list(sides)
    for turn in range(kills):
        slot = turn % SLOTS
        for side in order[turn % 3:] + order[:turn % 3]:  # who goes first rotates
            name = sides[side][slot]
            time.sleep(max(0.0, last_start[name] + SPACING - time.time()))
            if side == "floor":
                latency, started, died, call = _bare_start(lab, name)
                if call is not None:
                    floor_call.append(call)
            else:
                latency, started, died = _kill(lab, name)
            if died is not None:
                deaths[side].append(died)
            if latency is None:
                missed[side] += 1
            else:
                samples[side].append(latency)
                last_start[name] = started
            time.sleep(SETTLE)
        say(f"recovery {turn + 1}/{kills}: " + ", ".join(
            f"{side} {samples[side][-1]:.3f}s" if samples[side] else f"{side} -" for side in order))

    logged(daemon, "container_restarted", len(samples["ours"]))
    restarted = daemon.events("container_restarted")
    delayed = [e for e in restarted if float(e.get("delay") or 0) > 0]
    engine_restarts = sum(lab.client.api.inspect_container(n)["RestartCount"] for n in sides["engine"])
    return _result(samples, deaths, missed, floor_call, kills, len(restarted), len(delayed), engine_restarts)


def _kill(lab: Lab, name: str) -> tuple[float | None, float | None, float | None]:
    """(kill → running, when it started, kill → died) in seconds; None for what never came."""
    pid = wait_running(lab.client, name)["State"]["Pid"]
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    started = lab.events.first(name, "start", killed_at, timeout=30)
    died = lab.events.first(name, "die", killed_at, timeout=1)
    return (None if started is None else started - killed_at, started,
            None if died is None else died - killed_at)


def _bare_start(lab: Lab, name: str) -> tuple[float | None, float | None, float | None, float | None]:
    """(start call → running, when it started, kill → died, how long the start call took)."""
    pid = wait_running(lab.client, name)["State"]["Pid"]
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    died = lab.events.first(name, "die", killed_at, timeout=10)
    if died is None:
        return None, None, None, None
    time.sleep(SETTLE)  # the engine has finished with the death before we ask for the start
    asked_at = time.time()
    lab.client.api.start(name)
    returned = time.time() - asked_at
    started = lab.events.first(name, "start", asked_at, timeout=30)
    return (None if started is None else started - asked_at, started, died - killed_at, returned)


def _result(samples, deaths, missed, floor_call, kills, restarted, delayed, engine_restarts) -> Result:
    engine_median = median(samples["engine"])
    floor_median = median(samples["floor"])
    labels = {"ours": "ours (indico-supervisor)", "engine": "engine --restart=unless-stopped",
              "floor": "floor: bare `docker start`"}
    result = Result("recovery", "Recovery latency: SIGKILL of PID 1 → replacement running",
                    ("side", "kills", "median s", "p95 s", "min s", "max s", "median / engine", "median − floor s",
                     "kill → die median s"))
    for side, values in samples.items():
        m = median(values)
        result.rows.append((labels[side], len(values), m, p95(values), min(values, default=None),
                            max(values, default=None), ratio(m, engine_median),
                            None if m is None or floor_median is None else m - floor_median, median(deaths[side])))
    ours_ratio = ratio(median(samples["ours"]), engine_median)
    result.targets.append((f"ours' median ≤ {TARGET}× the engine's (got "
                           f"{'-' if ours_ratio is None else f'{ours_ratio:.2f}'}×)",
                           ours_ratio is not None and ours_ratio <= TARGET))
    result.targets.append((f"every kill replaced (missed: ours {missed['ours']}, engine {missed['engine']}, "
                           f"floor {missed['floor']})", not any(missed.values())))
    result.notes.append(f"{kills} kills per side, interleaved (the side that goes first rotates); {SLOTS} containers "
                        f"per side in turn, each killed only after running ≥ {SPACING:g} s, so every kill is a first "
                        f"restart on both sides (engine: reset after 10 s of running; ours: reset_after 10s, and the "
                        f"first restart is immediate)")
    result.notes.append(f"checks: the daemon logged {restarted} restarts ({delayed} with a backoff delay); "
                        f"the engine counted {engine_restarts} restarts of its containers")
    result.notes.append("kill → die: the engine's `die` event after the kill, the part of every side's figure "
                        "that no restarter can shorten; the floor's own figure starts at its `start` call instead")
    if floor_call:
        result.notes.append(f"floor: the `start` API call itself returned after {median(floor_call):.3f} s (median); "
                            f"the floor column is to the engine's `start` event, like the other sides")
    return result
