"""The daemon's own cost: idle footprint, and a bounded soak of random kills.

Both read the daemon process from /proc: VmRSS from /proc/PID/status, CPU as the growth
of utime + stime (/proc/PID/stat) over wall time. There is no peer: the engine's restart
policy has no process of its own to measure; ours is held against the issue's targets.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import time
import urllib.request

from bench.lab import Lab, logged, say
from bench.report import Result, median, p95

IDLE_CONTAINERS = 10
RSS_TARGET_MB = 50.0
CPU_TARGET_PERCENT = 0.5
SOAK_CONTAINERS = 10
SOAK_WARMUP = 30.0  # seconds of the soak left out of the first RSS window (imports, first allocations)
RSS_GROWTH_LIMIT_MB = 2.0  # "does not grow": the last minute's median RSS within this of the first minute's
SOAK_RESTART = {"backoff": "1s", "max_backoff": "10s", "reset_after": "10s", "max_restarts": 1000, "window": "10m"}
_TICKS = os.sysconf("SC_CLK_TCK")
METRICS_SCRAPE_EVERY = 15.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15 of stat)


def run_idle(lab: Lab, quick: bool) -> Result:
    duration = 15.0 if quick else 60.0
    # BENCH_IDLE_METRICS: off (default), on (the endpoint listening, never asked),
    # scraped (asked every METRICS_SCRAPE_EVERY s, Prometheus's default interval).
    metrics = os.environ.get("BENCH_IDLE_METRICS", "off")
    port = _free_port()
    top = {"metrics": {"listen": f"127.0.0.1:{port}"}} if metrics in ("on", "scraped") else {}
    daemon = lab.site({f"r{i:02d}": {} for i in range(IDLE_CONTAINERS)}, **top)
    daemon.start("--log-level", "info")
    daemon.wait_ready(120)
    time.sleep(5)  # the first resync and state file after READY are start-up, not idling
    pid = daemon.process.pid
    rss, bursts, cpu0, began = [], [], cpu_seconds(pid), time.monotonic()
    last, next_scrape = cpu0, began
    while time.monotonic() - began < duration:
        rss.append(rss_mb(pid))
        if metrics == "scraped" and time.monotonic() >= next_scrape:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
            next_scrape += METRICS_SCRAPE_EVERY
        time.sleep(1.0)
        now = cpu_seconds(pid)
        if now > last:
            bursts.append((time.monotonic() - began, now - last))
        last = now
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - began) * 100
    say(f"idle: RSS max {max(rss):.1f} MB, CPU {cpu:.2f} %")
    result = Result("idle", f"Idle footprint: the daemon with {IDLE_CONTAINERS} containers over {duration:g} s"
                    f"{'' if metrics == 'off' else f', metrics {metrics}'}",
                    ("measure", "value", "target"))
    result.rows += [("RSS max MB", max(rss), f"≤ {RSS_TARGET_MB:g}"), ("RSS median MB", median(rss), ""),
                    ("CPU % of one core (utime+stime / wall)", cpu, f"≤ {CPU_TARGET_PERCENT:g}"),
                    ("seconds with any CPU use", len(bursts), ""),
                    ("busiest second: CPU ms", max((b for _, b in bursts), default=0) * 1000, "")]
    result.targets.append((f"RSS ≤ {RSS_TARGET_MB:g} MB (max {max(rss):.1f} MB)", max(rss) <= RSS_TARGET_MB))
    result.targets.append((f"CPU ≤ {CPU_TARGET_PERCENT:g} % ({cpu:.2f} %)", cpu <= CPU_TARGET_PERCENT))
    result.notes.append("measured from 5 s after READY, log level info (as in production), RSS sampled every second; "
                        "the engine's restart policy has no process of its own, so there is no peer")
    if bursts:
        result.notes.append("where the CPU went (s into the window: ms): " + ", ".join(
            f"{at:.0f}: {spent * 1000:.0f}" for at, spent in bursts) + "; the daemon's resync runs every 30 s")
    result.notes.append(f"CPU comes from the kernel's tick counts (1/{_TICKS} s): over {duration:g} s the smallest "
                        f"non-zero figure is {100 / _TICKS / duration:.3f} %")
    return result


def run_soak(lab: Lab, quick: bool) -> Result:
    # Only ever run in quick mode when asked by name (`--only soak --quick`): a short check of the harness.
    duration = 45.0 if quick else 300.0
    daemon = lab.site({f"r{i:02d}": {} for i in range(SOAK_CONTAINERS)}, restart=SOAK_RESTART)
    daemon.start("--log-level", "info")
    daemon.wait_ready(120)
    names = [f"{daemon.site}-r{i:02d}" for i in range(SOAK_CONTAINERS)]
    pid = daemon.process.pid
    kills: list[tuple[float, str]] = []
    rss: list[tuple[float, float]] = []
    began = time.monotonic()
    next_kill = began + random.uniform(1.5, 4.0)
    while time.monotonic() - began < duration:
        rss.append((time.monotonic() - began, rss_mb(pid)))
        if time.monotonic() >= next_kill:
            name = random.choice(names)
            state = lab.client.api.inspect_container(name)["State"]
            if state["Running"] and state["Pid"]:
                kills.append((time.time(), name))
                os.kill(state["Pid"], signal.SIGKILL)
            next_kill = time.monotonic() + random.uniform(1.5, 4.0)
            if len(kills) % 10 == 0 and kills:
                say(f"soak: {time.monotonic() - began:.0f}/{duration:g} s, {len(kills)} kills, "
                    f"RSS {rss[-1][1]:.1f} MB")
        time.sleep(0.5)
    latencies, lost = [], []
    for killed_at, name in kills:
        started = lab.events.first(name, "start", killed_at, timeout=max(0.1, killed_at + 30 - time.time()))
        (lost.append(name) if started is None else latencies.append(started - killed_at))
    restarted = logged(daemon, "container_restarted", len(kills))
    failed = len(daemon.events("container_failed"))
    return _soak_result(duration, kills, latencies, lost, restarted, failed, rss)


def _soak_result(duration, kills, latencies, lost, restarted, failed, rss) -> Result:
    window = min(60.0, (duration - SOAK_WARMUP) / 2)
    first = [mb for at, mb in rss if SOAK_WARMUP <= at < SOAK_WARMUP + window]
    last = [mb for at, mb in rss if at >= duration - window]
    growth = median(last) - median(first)
    result = Result("soak", f"Soak: random SIGKILLs for {duration:g} s over {SOAK_CONTAINERS} containers",
                    ("measure", "value"))
    result.rows += [
        ("kills", len(kills)), ("replacements seen (engine `start` after each kill)", len(latencies)),
        ("daemon's container_restarted lines", restarted), ("containers in `failed`", failed),
        ("kill → running median s", median(latencies)), ("kill → running p95 s", p95(latencies)),
        ("kill → running max s", max(latencies, default=None)),
        (f"RSS median MB, first {window:g} s after {SOAK_WARMUP:g} s warm-up", median(first)),
        (f"RSS median MB, last {window:g} s", median(last)), ("RSS growth MB", growth),
        ("RSS max MB", max(mb for _, mb in rss)),
    ]
    result.targets.append((f"every death followed by a restart ({len(lost)} not)", not lost and failed == 0))
    result.targets.append((f"RSS does not grow (last window's median ≤ first's + {RSS_GROWTH_LIMIT_MB:g} MB; "
                           f"grew {growth:+.2f} MB)", growth <= RSS_GROWTH_LIMIT_MB))
    result.notes.append(f"a random container is SIGKILLed every 1.5–4 s (only if running); restart settings: "
                        f"backoff 1s, max_backoff 10s, reset_after 10s, max_restarts 1000 in 10m, so a container "
                        f"killed again soon is restarted after its backoff (the latencies include it)")
    return result
