"""SIGHUP: the site file read again, and only what changed is touched, one container at a time."""
from __future__ import annotations

import ast
import copy
import json
import signal
import time
from datetime import datetime

from harness.daemon import SLEEPER, kill_main_process, site_containers, wait_until

# Long enough for a wrongly planned recreate (decided on the turn after the reload,
# or once the image is resolved again) to show up in the log; nothing waits on it.
QUIET = 1.5


def snapshot(client, site: str) -> dict:
    """name -> (container id, StartedAt), the two things a restart or recreate changes."""
    return {name: (c.id, c.attrs["State"]["StartedAt"]) for name, c in site_containers(client, site).items()}


def epoch(stamp: str) -> float:
    """An ISO time from the log (microseconds) or the engine (nanoseconds) as epoch seconds."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole + "+00:00").timestamp() + float("0." + (fraction or "0"))


def as_list(value) -> list:
    """A list field of a kv log line (`changed=[]`, `changed="['worker']"`) back into a list."""
    return ast.literal_eval(value) if isinstance(value, str) else list(value)


def reload(daemon, config, count: int | None = None) -> dict:
    """Writes the file, sends SIGHUP and returns the reload's `config_reloaded` event."""
    count = count or len(daemon.events("config_reloaded")) + 1
    daemon.write(config)
    daemon.signal(signal.SIGHUP)
    return daemon.wait_event("config_reloaded", count=count)


def events_after(daemon, marker: dict, *names: str) -> list[dict]:
    """Events named `names` logged after the line `marker`."""
    found = daemon.events()
    index = next(i for i, e in enumerate(found) if e == marker)
    return [e for e in found[index + 1:] if e.get("event") in names]


def assert_no_container_actions_for(daemon, marker: dict, seconds: float = QUIET) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        touched = events_after(daemon, marker, "container_recreating", "container_recreated", "container_started",
                               "container_restarted", "container_removing", "container_stopping")
        assert touched == [], f"containers touched after the reload: {touched}"
        time.sleep(0.1)


def test_sighup_with_the_same_file_restarts_nothing(run_daemon, docker_client, site_name):
    daemon = run_daemon({"worker": {}, "celery": {}, "cron": {}}).start()
    daemon.wait_ready()
    before = snapshot(docker_client, site_name)
    assert len(before) == 3

    reloaded = reload(daemon, daemon.config)

    assert [as_list(reloaded[key]) for key in ("added", "removed", "changed")] == [[], [], []]
    assert reloaded["unchanged"] == "3"
    assert_no_container_actions_for(daemon, reloaded)
    assert snapshot(docker_client, site_name) == before
    assert daemon.process.poll() is None


def test_sighup_with_one_changed_container_recreates_only_that_one(run_daemon, docker_client, site_name):
    daemon = run_daemon({"worker": {}, "celery": {}, "cron": {}}).start()
    daemon.wait_ready()
    before = snapshot(docker_client, site_name)
    config = copy.deepcopy(daemon.config)
    config["containers"]["celery"]["env"] = {"CELERY_CONCURRENCY": "4"}

    reloaded = reload(daemon, config)
    assert as_list(reloaded["changed"]) == ["celery"] and reloaded["unchanged"] == "2"
    daemon.wait_event("container_recreated", role="celery")

    after = snapshot(docker_client, site_name)
    celery = f"{site_name}-celery"
    assert after[celery][0] != before[celery][0]
    assert "CELERY_CONCURRENCY=4" in site_containers(docker_client, site_name)[celery].attrs["Config"]["Env"]
    assert {n: v for n, v in after.items() if n != celery} == {n: v for n, v in before.items() if n != celery}
    assert [e["role"] for e in daemon.events("container_recreating")] == ["celery"]
    assert_no_container_actions_for(daemon, daemon.events("container_recreated", role="celery")[0])
    assert snapshot(docker_client, site_name) == after


# The container comes up unhealthy and turns healthy a second later, so a rollout
# that does not wait for health is caught recreating the next one too early.
SLOW_TO_BE_HEALTHY = ["sh", "-c", "trap 'exit 0' TERM; sleep 1; touch /tmp/up; while :; do sleep 0.2; done"]
HEALTH_CHECKS = {
    "engine_healthcheck": ({"healthcheck": {"test": ["test", "-f", "/tmp/up"], "interval": "200ms", "timeout": "2s",
                                            "retries": 50}},
                           "container_health", {"health": "healthy"}),
    "daemon_exec_probe": ({"health": {"exec": ["test", "-f", "/tmp/up"], "interval": "200ms", "timeout": "2s",
                                      "retries": 50}},
                          "probe_passed", {}),
}


def _rollout_waits_for_health(run_daemon, docker_client, site_name, kind):
    check, healthy_event, healthy_fields = HEALTH_CHECKS[kind]
    roles = {role: {"command": SLOW_TO_BE_HEALTHY, **copy.deepcopy(check)} for role in ("first", "second")}
    daemon = run_daemon({**roles, "bystander": {}}).start()
    daemon.wait_ready()
    for role in ("first", "second"):
        daemon.wait_event(healthy_event, role=role, **healthy_fields)
    before = snapshot(docker_client, site_name)
    config = copy.deepcopy(daemon.config)
    for role in ("first", "second"):
        config["containers"][role]["env"] = {"GENERATION": "2"}

    reloaded = reload(daemon, config)
    assert sorted(as_list(reloaded["changed"])) == ["first", "second"]
    daemon.wait_event("container_recreated", role="second", timeout=60)

    log = daemon.events()
    position = {id(e): i for i, e in enumerate(log)}
    after_reload = [e for e in log if position[id(e)] > log.index(reloaded)]

    def first_index(name, **fields):
        found = [e for e in after_reload if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())]
        assert found, f"no {name} {fields} after the reload:\n{daemon.log_text()[-4000:]}"
        return position[id(found[0])], found[0]

    first_recreating, _ = first_index("container_recreating", role="first")
    first_recreated, _ = first_index("container_recreated", role="first")
    first_healthy, healthy_line = first_index(healthy_event, role="first", **healthy_fields)
    second_recreating, second_line = first_index("container_recreating", role="second")
    assert first_recreating < first_recreated < first_healthy < second_recreating, (
        f"second recreated before the first was running and healthy:\n{daemon.log_text()[-4000:]}")
    assert healthy_line["ts"] <= second_line["ts"]

    # The engine agrees: the new `first` had been up for over a second (its health
    # check cannot pass sooner) when the old `second` was about to be replaced.
    after = snapshot(docker_client, site_name)
    assert after[f"{site_name}-first"][0] != before[f"{site_name}-first"][0]
    assert after[f"{site_name}-second"][0] != before[f"{site_name}-second"][0]
    assert after[f"{site_name}-bystander"] == before[f"{site_name}-bystander"]
    first_started = site_containers(docker_client, site_name)[f"{site_name}-first"].attrs["State"]["StartedAt"]
    assert epoch(second_line["ts"]) - epoch(first_started) >= 0.9


def test_changed_containers_with_an_engine_healthcheck_are_recreated_one_at_a_time_once_healthy(
        run_daemon, docker_client, site_name):
    _rollout_waits_for_health(run_daemon, docker_client, site_name, "engine_healthcheck")


def test_changed_containers_with_a_daemon_probe_are_recreated_one_at_a_time_once_healthy(
        run_daemon, docker_client, site_name):
    _rollout_waits_for_health(run_daemon, docker_client, site_name, "daemon_exec_probe")


def test_changing_restart_settings_stop_timeout_and_health_probe_recreates_nothing_and_runs_the_new_probe(
        run_daemon, docker_client, site_name):
    daemon = run_daemon({"worker": {"health": {"exec": ["true"], "interval": "200ms"}}, "celery": {}}).start()
    daemon.wait_ready()
    daemon.wait_event("probe_passed", role="worker")
    before = snapshot(docker_client, site_name)
    config = copy.deepcopy(daemon.config)
    config["restart"] = {"backoff": "300ms", "max_backoff": "3s", "reset_after": "20s", "max_restarts": 5,
                         "window": "2m"}
    config["stop"] = {"timeout": "7s"}
    config["containers"]["celery"]["stop_timeout"] = "9s"
    config["containers"]["celery"]["restart"] = {"max_restarts": 3}
    config["containers"]["worker"]["health"] = {"exec": ["test", "-d", "/tmp"], "interval": "300ms", "retries": 2}

    reloaded = reload(daemon, config)

    assert as_list(reloaded["changed"]) == [] and reloaded["unchanged"] == "2"
    assert_no_container_actions_for(daemon, reloaded)
    assert snapshot(docker_client, site_name) == before
    # The new probe is the one that runs now, on the same container.
    daemon.wait_event("probe_passed", role="worker", detail="test -d /tmp: exit code 0")
    assert snapshot(docker_client, site_name) == before


def test_sighup_with_an_invalid_file_is_refused_and_the_old_configuration_keeps_running(
        run_daemon, docker_client, site_name):
    daemon = run_daemon({"worker": {}, "celery": {}}).start()
    daemon.wait_ready()
    good = copy.deepcopy(daemon.config)
    before = snapshot(docker_client, site_name)
    bad = copy.deepcopy(good)
    bad["restart"]["backoff"] = "soon"
    bad["containers"]["worker"]["colour"] = "blue"
    bad["containers"]["celery"]["env"] = {"CELERY_CONCURRENCY": "8"}  # a change that must not be applied

    daemon.write(bad)
    daemon.signal(signal.SIGHUP)
    refused = daemon.wait_event("reload_refused")

    problems = daemon.events("config_problem")
    assert {p["key"] for p in problems} == {"restart.backoff", "containers.worker.colour"}
    assert all(p["priority"] == 3 for p in problems) and refused["priority"] == 3
    assert refused["problems"] == "2"
    assert not daemon.events("config_reloaded")
    assert_no_container_actions_for(daemon, refused)
    assert daemon.process.poll() is None
    assert snapshot(docker_client, site_name) == before

    # Still supervising with the old file: a killed container comes back unchanged.
    kill_main_process(docker_client, f"{site_name}-worker")
    daemon.wait_event("container_restarted", role="worker")
    celery = site_containers(docker_client, site_name)[f"{site_name}-celery"]
    assert not any(v.startswith("CELERY_CONCURRENCY=") for v in celery.attrs["Config"]["Env"])

    # A good file is applied; the comparison is with the old (kept) configuration.
    fixed = copy.deepcopy(good)
    fixed["containers"]["celery"]["env"] = {"CELERY_CONCURRENCY": "8"}
    reloaded = reload(daemon, fixed)
    assert as_list(reloaded["changed"]) == ["celery"] and reloaded["unchanged"] == "1"
    daemon.wait_event("container_recreated", role="celery")
    celery = site_containers(docker_client, site_name)[f"{site_name}-celery"]
    assert "CELERY_CONCURRENCY=8" in celery.attrs["Config"]["Env"]
    assert daemon.process.poll() is None
    assert daemon.stop() == 0


def test_roles_added_removed_and_disabled_on_reload(run_daemon, docker_client, site_name):
    daemon = run_daemon({"kept": {}, "dropped": {}, "disabled": {}}).start()
    daemon.wait_ready()
    before = snapshot(docker_client, site_name)
    config = copy.deepcopy(daemon.config)
    del config["containers"]["dropped"]
    config["containers"]["disabled"]["enabled"] = False
    config["containers"]["added"] = {"name": f"{site_name}-added", "image": config["image"], "command": SLEEPER}

    reloaded = reload(daemon, config)
    assert as_list(reloaded["added"]) == ["added"]
    assert sorted(as_list(reloaded["removed"])) == ["disabled", "dropped"]
    assert as_list(reloaded["changed"]) == [] and reloaded["unchanged"] == "1"

    daemon.wait_event("container_started", role="added")
    daemon.wait_event("container_removed", role="dropped")
    daemon.wait_event("container_removed", role="disabled")
    names = {f"{site_name}-{role}" for role in ("kept", "added")}
    wait_until(lambda: set(site_containers(docker_client, site_name)) == names, timeout=30,
               what="only kept and added left on the engine")
    now = site_containers(docker_client, site_name)
    assert now[f"{site_name}-added"].status == "running"
    assert snapshot(docker_client, site_name)[f"{site_name}-kept"] == before[f"{site_name}-kept"]
    assert not daemon.events("container_recreating") and not daemon.events("container_restarted")
    wait_until(lambda: _state_file(daemon) == {"kept": "running", "added": "running"}, timeout=10,
               what="the state file to list only the two enabled containers, running")
    assert daemon.stop() == 0
    assert site_containers(docker_client, site_name) == {}


def _state_file(daemon) -> dict:
    found = list(daemon.runtime.glob("*.state.json"))
    if not found:
        return {}
    return {c["role"]: c["state"] for c in json.loads(found[0].read_text())["containers"]}
