"""`exec -it` and `exec -i` against `docker run -it` / `docker run -i` for the same container.

keystroke: under a real pseudo-terminal (harness/ptys.py), a key typed into `cat` in the
job's terminal until the job's terminal echoes it back on ours: our relay (raw terminal,
select loop, the attach connection) against the docker CLI's. One key at a time, each a
different letter, so an echo cannot be taken for another's.

pipe: N MiB of random bytes through `cat` with stdin and stdout on pipes, from spawning
the command to its exit (interpreter start, create, attach, start and removal included);
the same with nothing is the fixed cost, and N MiB over the difference the throughput.

Same image, user, binds and env on both sides (the lab site's worker); the sides alternate.
"""
from __future__ import annotations

import os
import shlex
import string
import subprocess
import sys
import time

from bench.lab import BENCH_LABEL, RUN_ID, Lab, say
from bench.report import Result, median, p95, ratio
from harness.ptys import Terminal

FULL = {"keys": 200, "pipe_mib": 64, "pipe_reps": 3}
QUICK = {"keys": 30, "pipe_mib": 8, "pipe_reps": 1}
LETTERS = string.ascii_lowercase


def run(lab: Lab, quick: bool) -> Result:
    plan = QUICK if quick else FULL
    model = lab.site({"worker": {}})  # never started: the settings both sides use
    keys: dict[str, list[float]] = {"ours": [], "docker": []}
    pipe: dict[str, list[float]] = {"ours": [], "docker": []}
    empty: dict[str, list[float]] = {"ours": [], "docker": []}
    for rep in range(2):
        for side in (("ours", "docker") if rep == 0 else ("docker", "ours")):
            keys[side] += _keystrokes(_argv(lab, model, side, "-it"), plan["keys"] // 2)
            say(f"exec_tty keystroke {side}: median {median(keys[side]) * 1000:.2f} ms")
    data = os.urandom(plan["pipe_mib"] * 2**20)
    for rep in range(plan["pipe_reps"]):
        for side in (("ours", "docker") if rep % 2 == 0 else ("docker", "ours")):
            pipe[side].append(_through_pipe(_argv(lab, model, side, "-i"), data))
            empty[side].append(_through_pipe(_argv(lab, model, side, "-i"), b""))
            say(f"exec_tty pipe {side} {rep + 1}/{plan['pipe_reps']}: {pipe[side][-1]:.2f}s")
    result = Result("exec_tty", "exec -it / -i: keystroke echo and a pipe, ours vs the docker CLI",
                    ("measure", "ours", "docker CLI", "ours / docker"))
    for what, pick in (("keystroke echo median (ms)", median), ("keystroke echo p95 (ms)", p95)):
        ours, theirs = pick(keys["ours"]) * 1000, pick(keys["docker"]) * 1000
        result.rows.append((what, ours, theirs, ratio(ours, theirs)))
    ours, theirs = median(pipe["ours"]), median(pipe["docker"])
    result.rows.append((f"{plan['pipe_mib']} MiB through cat, whole command (s)", ours, theirs, ratio(ours, theirs)))
    ours_fixed, theirs_fixed = median(empty["ours"]), median(empty["docker"])
    result.rows.append(("nothing through cat, whole command (s)", ours_fixed, theirs_fixed,
                        ratio(ours_fixed, theirs_fixed)))
    mib = plan["pipe_mib"]
    ours_rate, theirs_rate = mib / max(ours - ours_fixed, 1e-3), mib / max(theirs - theirs_fixed, 1e-3)
    result.rows.append(("MiB/s beyond the fixed cost", ours_rate, theirs_rate, ratio(ours_rate, theirs_rate)))
    result.notes.append(f"{len(keys['ours'])} keys a side; pipe: median of {plan['pipe_reps']} runs a side; "
                        "the whole command includes creating, starting and removing the container")
    return result


def _argv(lab: Lab, model, side: str, flags: str) -> list[str]:
    if side == "ours":
        return [sys.executable, "-m", "supervisor", "exec", "--config", str(model.config_path), flags, "--", "cat"]
    c = lab._resolved(model, "worker")
    words = ["docker", "run", flags, "--rm", "--label", f"{BENCH_LABEL}={RUN_ID}", "--user", c.user]
    for bind in c.binds:
        words += ["--mount", f"type=bind,src={bind.host},dst={bind.target}" + (",readonly" if bind.read_only else "")]
    for key, value in c.env:
        words += ["--env", f"{key}={value}"]
    return [*words, c.image, "cat"]


def _keystrokes(argv: list[str], count: int) -> list[float]:
    term = Terminal(argv, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        term.send("ready\r")
        term.expect("ready\r\nready", timeout=120)  # echoed by the job's terminal, then by cat: it runs
        took = []
        for i in range(count):
            key = LETTERS[i % len(LETTERS)]
            sent = time.perf_counter()
            term.send(key)
            term.expect(key, timeout=30)
            took.append(time.perf_counter() - sent)
        term.send("\r\x04")
        term.process.wait(timeout=60)
        return took
    finally:
        term.close()


def _through_pipe(argv: list[str], data: bytes) -> float:
    began = time.perf_counter()
    done = subprocess.run(argv, input=data, capture_output=True, timeout=600)
    took = time.perf_counter() - began
    if done.returncode != 0 or done.stdout != data:
        raise RuntimeError(f"{shlex.join(argv)}: exit {done.returncode}, {len(done.stdout)} of {len(data)} bytes "
                           f"back; {done.stderr[-500:]!r}")
    return took
