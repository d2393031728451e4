"""Unhealthy → restarted: a health check starts failing → the new run of the container is up.

Two kinds, interleaved: the daemon's own exec probe (`health: exec: …`) and the engine's
HEALTHCHECK (`healthcheck:`), each testing for a file in the container's data bind.
The bench deletes that file on the host (at a random phase of the check interval):
that is the failure's start; the engine's next `start` event for the container is its
end. The file comes back as soon as the new run is up, so the new run passes.

The engine never restarts an unhealthy container; the yardstick is interval × retries,
the earliest a checker can call it unhealthy (an autoheal-style poller adds its period).
"""
from __future__ import annotations

import random
import time

from bench.lab import Lab, engine_epoch, log_time, logged, say, wait_running
from bench.report import Result, median, p95

INTERVAL, RETRIES = 1.0, 3
AUTOHEAL_PERIOD = 5.0  # autoheal's default AUTOHEAL_INTERVAL
SPACING = 12.0  # a failure only after the container ran this long: beyond reset_after, so no backoff
RESTART = {"backoff": "1s", "max_backoff": "5m", "reset_after": "10s", "max_restarts": 100, "window": "10m"}
TIMINGS = {"interval": f"{INTERVAL:g}s", "timeout": "1s", "retries": RETRIES}
DATA = "/opt/indico/data"


def run(lab: Lab, quick: bool) -> Result:
    rounds = 2 if quick else 6
    daemon = lab.site({
        "probe": {"health": {"exec": ["test", "-f", f"{DATA}/ok-probe"], **TIMINGS}},
        "check": {"healthcheck": {"test": ["test", "-f", f"{DATA}/ok-check"], **TIMINGS}},
    }, restart=RESTART)
    flags = {kind: daemon.dir / "data" / f"ok-{kind}" for kind in ("probe", "check")}
    for flag in flags.values():
        flag.touch()
    daemon.start("--log-level", "info")
    daemon.wait_ready(120)
    names = {kind: f"{daemon.site}-{kind}" for kind in flags}
    last_start = {kind: engine_epoch(wait_running(lab.client, name)["State"]["StartedAt"])
                  for kind, name in names.items()}
    samples: dict[str, list[float]] = {kind: [] for kind in flags}
    missed = {kind: 0 for kind in flags}
    for turn in range(rounds):
        for kind in (("probe", "check") if turn % 2 == 0 else ("check", "probe")):
            time.sleep(max(0.0, last_start[kind] + SPACING - time.time()))
            _wait_healthy(lab, daemon, kind, names[kind], last_start[kind])
            time.sleep(random.uniform(0, INTERVAL))  # a random phase of the check cycle
            failing_from = time.time()
            flags[kind].unlink()
            started = lab.events.first(names[kind], "start", failing_from, timeout=60)
            flags[kind].touch()
            if started is None:
                missed[kind] += 1
                last_start[kind] = time.time()
            else:
                samples[kind].append(started - failing_from)
                last_start[kind] = started
            say(f"health {turn + 1}/{rounds} {kind}: "
                + (f"{samples[kind][-1]:.3f}s" if started else "not restarted within 60 s"))

    restarted = logged(daemon, "container_restarted", sum(map(len, samples.values())), cause="unhealthy")
    return _result(samples, missed, rounds, restarted)


def _wait_healthy(lab: Lab, daemon, kind: str, name: str, since: float, timeout: float = 60) -> None:
    """The current run passes its check, so the failure we cause is the only one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if kind == "check":
            state = lab.client.api.inspect_container(name)["State"]
            if (state.get("Health") or {}).get("Status") == "healthy":
                return
        elif any(log_time(e) > since for e in daemon.events("probe_passed", role="probe")):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not turn healthy within {timeout}s")


def _result(samples, missed, rounds, restarted) -> Result:
    bound = INTERVAL * RETRIES
    labels = {"probe": "daemon exec probe (`health: exec`)", "check": "engine HEALTHCHECK (`healthcheck:`)"}
    result = Result("health", f"Unhealthy → restarted (interval {INTERVAL:g} s × retries {RETRIES})",
                    ("check", "failures", "median s", "p95 s", "min s", "max s", "interval × retries s",
                     "median − interval × retries s"))
    for kind, values in samples.items():
        m = median(values)
        result.rows.append((labels[kind], len(values), m, p95(values), min(values, default=None),
                            max(values, default=None), bound, None if m is None else m - bound))
    result.targets.append((f"every failure ends in a restart (missed: probe {missed['probe']}, "
                           f"HEALTHCHECK {missed['check']})", not any(missed.values())))
    result.notes.append(f"the engine never restarts an unhealthy container (∞); an autoheal-style poller "
                        f"would take interval × retries + up to its period ({AUTOHEAL_PERIOD:g} s by default): "
                        f"≈ {bound:g}–{bound + AUTOHEAL_PERIOD:g} s plus its restart")
    result.notes.append(f"a failure starts at a random phase of the check cycle, so detection alone takes "
                        f"between (retries − 1) × interval and retries × interval (≈ {bound - INTERVAL / 2:g} s on "
                        f"average); the figures add the restart itself (stop, then start)")
    result.notes.append(f"{rounds} failures per kind, interleaved; each only after the container ran ≥ {SPACING:g} s "
                        f"(reset_after 10s: no backoff); the daemon logged {restarted} restarts for unhealthiness")
    return result
