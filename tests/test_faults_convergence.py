"""The daemon SIGKILLed at random points of a convergence, then started again.

Each trial starts from a converged site, writes the other of two site files (two
roles unchanged, two changed, one dropped, one new) and starts a daemon that is
SIGKILLed after a seeded random delay somewhere inside the time a full
convergence takes. A fresh daemon must then finish the job with no duplicate,
no orphan, and without bouncing any container that was already right when it
started. Set FAULT_SEED to replay other kill points.
"""
from __future__ import annotations

import copy
import os
import random
import time

import docker.errors

from harness.sites import SITE_LABEL
from harness.daemon import SLEEPER, site_containers, wait_until

ROLE_LABEL = "io.indico-supervisor.role"
SEED = int(os.environ.get("FAULT_SEED", "20240611"))
TRIALS = 10
KEPT = ("keep1", "keep2")  # the same in both files: must never be bounced
CHANGED = ("change1", "change2")  # another GENERATION in each file: recreated every trial
SWAPPED = {"a": "alpha", "b": "beta"}  # in one file only: removed by one, created by the other


def site_file(base: dict, generation: str) -> dict:
    config = copy.deepcopy(base)
    image = config["image"]
    containers = {role: {"name": f"{config['site']}-{role}", "image": image, "command": SLEEPER}
                  for role in (*KEPT, *CHANGED, SWAPPED[generation])}
    for role in CHANGED:
        containers[role]["env"] = {"GENERATION": generation}
    config["containers"] = containers
    return config


def generation_of(attrs: dict) -> str | None:
    env = dict(item.partition("=")[::2] for item in attrs["Config"]["Env"] or [])
    return env.get("GENERATION")


def wanted(config: dict) -> dict:
    """name -> (role, GENERATION) the engine should show once converged."""
    return {body["name"]: (role, (body.get("env") or {}).get("GENERATION"))
            for role, body in config["containers"].items()}


def engine_view(client, site: str) -> dict:
    """name -> (id, StartedAt, status, role label, GENERATION).

    Read with the low-level API, container by container, because a container may be
    removed between the listing and its inspection while a daemon is at work.
    """
    view = {}
    for summary in client.api.containers(all=True, filters={"label": f"{SITE_LABEL}={site}"}):
        try:
            attrs = client.api.inspect_container(summary["Id"])
        except docker.errors.NotFound:
            continue
        view[attrs["Name"].lstrip("/")] = (attrs["Id"], attrs["State"]["StartedAt"], attrs["State"]["Status"],
                                           attrs["Config"]["Labels"].get(ROLE_LABEL), generation_of(attrs))
    return view


def converged(client, site: str, config: dict) -> dict | None:
    view = engine_view(client, site)
    expected = wanted(config)
    if set(view) != set(expected):
        return None
    if all(status == "running" and (role, gen) == expected[name] for name, (_, _, status, role, gen) in view.items()):
        return view
    return None


def settled_view(client, site: str) -> dict:
    """The engine's view once calls already sent by a killed daemon have finished."""
    previous = engine_view(client, site)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.3)
        current = engine_view(client, site)
        if current == previous:
            return current
        previous = current
    raise AssertionError(f"the engine kept changing after the daemon was killed: {previous}")


def run_to_convergence(daemon, client, site: str) -> tuple[float, dict]:
    """Starts a daemon on the current file and waits for the engine to match it; returns (seconds, view).

    The view is read again once the daemon says it is ready, so a late bounce would show.
    """
    marker = len(daemon.log_text())
    ready = len(daemon.events("daemon_ready"))
    started = time.monotonic()
    daemon.start()
    wait_until(lambda: converged(client, site, daemon.config), timeout=60, interval=0.05,
               what=f"convergence on {sorted(wanted(daemon.config))}; log:\n{daemon.log_text()[marker:][-3000:]}")
    seconds = time.monotonic() - started
    daemon.wait_event("daemon_ready", count=ready + 1)
    view = converged(client, site, daemon.config)
    assert view, f"no longer converged once ready: {engine_view(client, site)}"
    return seconds, view


def test_sigkill_at_random_points_of_a_convergence_leaves_no_duplicate_no_orphan_and_no_bounce(
        run_daemon, docker_client, site_name):
    rng = random.Random(SEED)
    daemon = run_daemon({})
    base = daemon.config
    files = {generation: site_file(base, generation) for generation in SWAPPED}

    # From nothing to file a, then (timed) from a to b: the span the kill points are drawn from.
    daemon.write(files["a"])
    run_to_convergence(daemon, docker_client, site_name)
    daemon.kill()
    daemon.write(files["b"])
    span, before = run_to_convergence(daemon, docker_client, site_name)
    daemon.kill()
    generation = "b"

    for trial in range(TRIALS):
        generation = "a" if generation == "b" else "b"
        delay = rng.uniform(0, span)
        said = f"trial {trial} (FAULT_SEED={SEED}, killed after {delay:.3f}s of {span:.3f}s)"
        daemon.write(files[generation])

        daemon.start()
        time.sleep(delay)
        daemon.kill()
        at_restart = settled_view(docker_client, site_name)

        marker = len(daemon.log_text())
        _, after = run_to_convergence(daemon, docker_client, site_name)
        fresh_log = daemon.log_text()[marker:]

        # One container per role label, and only configured roles (names are unique on the engine).
        roles = [role for (_, _, _, role, _) in after.values()]
        assert sorted(roles) == sorted(files[generation]["containers"]), f"{said}: {after}"

        # The unchanged roles kept their containers through both daemons.
        for role in KEPT:
            name = f"{site_name}-{role}"
            assert after[name][:2] == before[name][:2], f"{said}: {role} was bounced"

        # Whatever was already right when the fresh daemon started is left alone by it.
        expected = wanted(files[generation])
        right = {name for name, (_, _, status, role, gen) in at_restart.items()
                 if status == "running" and expected.get(name) == (role, gen)}
        for name in right:
            assert after[name][:2] == at_restart[name][:2], f"{said}: {name} was right at the restart, yet bounced"
            role = expected[name][0]
            touched = [line for line in fresh_log.splitlines()
                       if f"role={role} " in line and ("container_recreating" in line or "container_restarted" in line)]
            assert not touched, f"{said}: {touched}"

        daemon.kill()  # leaves the site as converged for the next trial
        before = after

    ready = len(daemon.events("daemon_ready"))
    daemon.start().wait_event("daemon_ready", count=ready + 1)
    assert daemon.stop() == 0
    assert site_containers(docker_client, site_name) == {}
