"""`indico-supervisor exec`: a one-shot job dressed as a role's container, streamed, removed.

Run through the real CLI (`python -m supervisor exec …`) against the real engine;
the job containers are found by their `io.indico-supervisor.oneshot` label.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker.errors
import pytest
import yaml

from supervisor.model import Bind, Container, Network, Port, Site
from supervisor.oneshot import ExecRefused, check_runnable
from supervisor.spec import LABEL_ONESHOT, LABEL_ONESHOT_ROLE, LABEL_SITE, ContainerSpec, oneshot_create_kwargs
from harness.sites import remove_site_containers
from harness.daemon import SLEEPER, site_config, wait_until

ROOT = Path(__file__).resolve().parent.parent
QUIET = 1.5  # long enough for a wrongly planned removal to show in the log
WORKER = Container(
    role="worker", name="indico-worker", image="indico-worker:latest", pull="missing", command=("run",),
    uid=1000, gid=1000, binds=(Bind("/srv/data", "/opt/indico/data"), Bind("/etc/ssl/x", "/etc/ssl/x", True)),
    network=Network(links=(("indico-db", "db"),)), env=(("INDICO_DB_PASSWORD", "s3cret"),),
    ports=(Port(None, 8080, 8080),), stop_signal="SIGINT", log_driver="journald", log_options=(("tag", "indico"),))


# Pure: what the job container is asked to be.

def test_oneshot_kwargs_keep_the_roles_settings_and_swap_the_command():
    role = ContainerSpec("prod", WORKER).create_kwargs()
    job = oneshot_create_kwargs("prod", WORKER, ["indico", "db", "prepare"], "prod-exec-abc123")
    for key in ("image", "user", "environment", "mounts", "links", "log_config", "stop_signal", "restart_policy"):
        assert job[key] == role[key], key
    assert job["command"] == ["indico", "db", "prepare"]
    assert job["name"] == "prod-exec-abc123"


def test_oneshot_kwargs_carry_no_site_label_no_ports_and_no_healthcheck():
    job = oneshot_create_kwargs("prod", WORKER, ["make-config"], "prod-exec-abc123")
    assert job["labels"] == {LABEL_ONESHOT: "prod", LABEL_ONESHOT_ROLE: "worker"}
    assert LABEL_SITE not in job["labels"]  # the daemon would remove it as an orphan
    assert "ports" not in job  # the role's own container may hold them
    assert job["healthcheck"] == {"test": ["NONE"]}


def test_a_root_role_without_allow_root_is_refused():
    root = Container(**{**WORKER.__dict__, "uid": 0})
    with pytest.raises(ExecRefused, match="root"):
        check_runnable(Site("site.yaml", "prod", (root,)), root)


# Through the CLI, against the engine.

@pytest.fixture
def jobs(docker_client, site_name):
    """Lists this site's job containers; removes any left (only ours, by label) after the test."""
    def listed():
        found = []
        for summary in docker_client.api.containers(all=True, filters={"label": f"{LABEL_ONESHOT}={site_name}"}):
            try:  # one that goes between the listing and the look is gone: what a test wants to see
                found.append(docker_client.containers.get(summary["Id"]))
            except docker.errors.NotFound:
                pass
        return found
    yield listed
    for container in listed():
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass


@pytest.fixture
def site_file(tmp_path, site_name, busybox):
    def write(containers: dict | None = None, **top) -> Path:
        path = tmp_path / "site.yaml"
        path.write_text(yaml.safe_dump(site_config(site_name, busybox, tmp_path, containers or {"worker": {}}, **top)))
        return path
    return write


def exec_args(config: Path, *command: str, role: str | None = None) -> list[str]:
    return [sys.executable, "-m", "supervisor", "exec", "--config", str(config),
            *(["--role", role] if role else []), "--", *command]


def run_exec(config: Path, *command: str, env: dict | None = None, role: str | None = None):
    return subprocess.run(exec_args(config, *command, role=role), capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, **(env or {})})


def start_exec(config: Path, *command: str) -> subprocess.Popen:
    return subprocess.Popen(exec_args(config, *command), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)


def running_job(jobs):
    return wait_until(lambda: next((c for c in jobs() if c.status == "running"), None), 60, what="a running job")


def test_output_arrives_while_the_job_runs_with_stdout_and_stderr_apart(site_file, jobs):
    script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; sleep 0.3; done"
    process = start_exec(site_file(), "sh", "-c", script)
    first = process.stdout.readline()
    still_running = process.poll() is None
    rest, errors = process.communicate(timeout=60)
    assert first == "out1\n"
    assert still_running, "the first line only came when the job had ended"
    assert process.returncode == 0, errors
    assert rest.split() == ["out2", "out3", "out4", "out5"]
    assert [line for line in errors.splitlines() if line.startswith("err")] == [f"err{i}" for i in range(1, 6)]
    assert jobs() == []


@pytest.mark.parametrize("status", [0, 3])
def test_the_jobs_exit_status_is_ours_and_its_container_is_removed(site_file, jobs, status):
    done = run_exec(site_file(), "sh", "-c", f"exit {status}")
    assert done.returncode == status, done.stderr
    assert jobs() == []


def test_a_killed_job_exits_137(site_file, jobs, docker_client):
    process = start_exec(site_file(), "sleep", "60")
    docker_client.api.kill(running_job(jobs).id)
    process.communicate(timeout=60)
    assert process.returncode == 137
    assert jobs() == []


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_stops_the_job_removes_it_and_exits_128_plus_n(site_file, jobs, signum, status):
    process = start_exec(site_file(), *SLEEPER)
    running_job(jobs)
    process.send_signal(signum)
    _, errors = process.communicate(timeout=60)
    assert process.returncode == status, errors
    assert "Traceback" not in errors
    assert jobs() == []


def test_a_disabled_roles_settings_are_used(site_file, jobs):
    config = site_file({"worker": {"enabled": False, "user": "65533:65532", "env": {"MARK": "from-worker"}}})
    done = run_exec(config, "sh", "-c", 'echo "$MARK $(id -u):$(id -g)"')
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "from-worker 65533:65532"


def test_a_missing_image_with_pull_never_is_refused_naming_it(site_file, jobs):
    absent = f"indico-supervisor-test/absent:{uuid.uuid4().hex[:12]}"
    done = run_exec(site_file({"worker": {"image": absent, "pull": "never"}}), "true")
    assert done.returncode == 2
    assert absent in done.stderr and "pull is never" in done.stderr
    assert "Traceback" not in done.stderr
    assert jobs() == []


def test_a_managed_name_in_the_job_name_space_is_refused(site_file, jobs, site_name):
    done = run_exec(site_file({"worker": {"name": f"{site_name}-exec-abc"}}), "true")
    assert done.returncode == 2
    assert f"containers.worker.name = '{site_name}-exec-abc'" in done.stderr
    assert jobs() == []


def test_an_unknown_role_is_a_config_error(site_file, jobs):
    done = run_exec(site_file(), "true", role="nope")
    assert done.returncode == 2
    assert "containers.nope: no such role" in done.stderr


def test_an_unreachable_engine_is_one_line_and_exit_1(site_file, tmp_path):
    done = run_exec(site_file(), "true", env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
    assert done.returncode == 1
    assert done.stderr.startswith("indico-supervisor exec: cannot reach the Docker engine")
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.fixture
def network(docker_client, site_name):
    """A user-defined network for the site; ask for it before `run_daemon`, so the daemon is gone first."""
    made = docker_client.networks.create(f"{site_name}-net")
    yield made.name
    remove_site_containers(docker_client, site_name)  # a network with containers on it cannot go
    made.remove()


def test_the_job_matches_the_daemons_worker_and_the_daemon_leaves_it_alone(
        network, run_daemon, jobs, docker_client, site_name, tmp_path):
    daemon = run_daemon({"worker": {"env": {"MARK": "x", "INDICO_SITE": "events.example.org"},
                                    "volumes": {"extra": [f"{tmp_path}:/mnt/extra:ro"]}}},
                        network={"name": network}, log_driver="json-file", log_options={"max-size": "1m"})
    # Started before the daemon, so its first listing of the engine sees the job.
    process = start_exec(daemon.config_path,
                         "sh", "-c", "while [ ! -e /opt/indico/scratch/go ]; do sleep 0.1; done; echo finished")
    job = running_job(jobs)
    daemon.start().wait_ready()
    worker = docker_client.containers.get(f"{site_name}-worker")
    for key in ("Image", "User", "Env"):
        assert job.attrs["Config"][key] == worker.attrs["Config"][key], key
    for key in ("Mounts", "NetworkMode", "Links", "LogConfig"):
        assert job.attrs["HostConfig"][key] == worker.attrs["HostConfig"][key], key
    assert set(job.attrs["NetworkSettings"]["Networks"]) == {network}

    daemon.signal(signal.SIGHUP)  # a reload plans again over everything it knows
    daemon.wait_event("config_reloaded")
    time.sleep(QUIET)
    job.reload()
    assert job.status == "running"
    assert job.name not in daemon.log_text()

    (tmp_path / "scratch" / "go").touch()
    output, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors
    assert output == "finished\n"
    assert jobs() == []
    assert daemon.events("container_started", role="worker") and not daemon.events("container_removing")


@pytest.fixture
def hanging_engine(tmp_path):
    from tests.proxies import FreezingProxy, engine_socket_path
    proxy = FreezingProxy(str(tmp_path / "engine.sock"), engine_socket_path())
    yield proxy
    proxy.close()


def start_exec_through(config: Path, proxy, stderr_path: Path, *command: str) -> subprocess.Popen:
    with open(stderr_path, "w") as stderr:
        return subprocess.Popen(exec_args(config, *command), stdout=subprocess.DEVNULL, stderr=stderr, text=True,
                                cwd=ROOT, env={**os.environ, "DOCKER_HOST": proxy.docker_host})


def test_a_second_ctrl_c_ends_exec_at_once_with_130_when_the_engine_hangs_in_cleanup(
        site_file, jobs, hanging_engine, tmp_path):
    errors = tmp_path / "exec.err"
    process = start_exec_through(site_file(), hanging_engine, errors, *SLEEPER)
    job = running_job(jobs)
    hanging_engine.freeze()
    process.send_signal(signal.SIGINT)
    wait_until(lambda: "SIGINT: stopping" in errors.read_text(), what="the first signal's stop to begin")

    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"exec still waits for the hung engine after a second SIGINT:\n{errors.read_text()}")
    assert process.returncode == 130
    said = errors.read_text()
    assert "Traceback" not in said
    assert f"docker rm -f {job.name}" in said  # what may be left behind, and how to remove it


def test_cleanup_calls_give_up_on_a_hung_engine_and_say_what_is_left(site_file, jobs, hanging_engine, tmp_path):
    errors = tmp_path / "exec.err"
    process = start_exec_through(site_file(stop={"timeout": "1s"}), hanging_engine, errors, *SLEEPER)
    job = running_job(jobs)
    hanging_engine.freeze()
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"exec's cleanup waits for ever on a hung engine:\n{errors.read_text()}")
    assert process.returncode == 130
    said = errors.read_text()
    assert "Traceback" not in said
    assert f"could not remove {job.name}" in said and f"docker rm -f {job.name}" in said


def test_a_second_ctrl_c_with_a_healthy_engine_kills_and_removes_the_job_at_once(site_file, jobs, tmp_path):
    errors = tmp_path / "exec.err"
    with open(errors, "w") as stderr:
        process = subprocess.Popen(exec_args(site_file(stop={"timeout": "5m"}), "sh", "-c", "trap '' TERM INT; "
                                             "while :; do sleep 0.2; done"), stderr=stderr, cwd=ROOT)
    running_job(jobs)
    process.send_signal(signal.SIGINT)
    wait_until(lambda: "SIGINT: stopping" in errors.read_text(), what="the first signal's stop to begin")
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 130, errors.read_text()
    assert "could not remove" not in errors.read_text()
    assert jobs() == []
