"""Shared fixtures for tests that talk to the real Docker engine.

`docker` is imported inside the fixtures so that pure unit tests, which never ask
for an engine, collect and run on a machine without one.

`tests/` is a package (tests/__init__.py): import helpers as `from harness.images import ...`.
"""

from __future__ import annotations

import os
import uuid

import pytest

from harness.sites import remove_site_containers

ENGINE_HINT = (
    "No Docker engine answers on {where}. Integration tests need one: "
    "run `sudo tests/tools/ensure-engine` (see the README's test command), then retry."
)


@pytest.fixture(scope="session")
def docker_client():
    import docker
    import docker.errors
    import requests.exceptions

    # Ping with a short timeout so a hung engine fails fast; the client we hand out
    # keeps the SDK's default (long) timeout for slow operations like container waits.
    problem = None
    try:
        probe = docker.from_env(timeout=10)
        probe.ping()
        probe.close()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
        problem = f"{type(e).__name__}: {e}"
    if problem:  # failed outside the except block, so the report is not a chained traceback
        # Fail, never skip: a skipped integration suite looks green and hides the gap.
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        pytest.fail(ENGINE_HINT.format(where=where) + f"\n({problem})", pytrace=False)
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture(scope="session")
def busybox(docker_client) -> str:
    from harness.images import busybox_image

    return busybox_image(docker_client)


@pytest.fixture
def site_name(docker_client) -> str:
    """A site name unique to this test; its labelled containers are removed afterwards.

    Unique names keep concurrent runs and other tests' containers out of each other's
    way: cleanup only ever touches containers carrying this exact site label.
    """
    name = "t" + uuid.uuid4().hex[:10]
    yield name
    remove_site_containers(docker_client, name)


@pytest.fixture
def run_daemon(tmp_path, busybox, site_name, docker_client):
    """Factory for real daemons on this test's site; every one is killed afterwards.

    Torn down before `site_name`, so the daemon is gone before its containers are removed.
    """
    from harness.daemon import Daemon, site_config

    started = []

    def make(containers: dict, env: dict | None = None, **top) -> Daemon:
        daemon = Daemon(tmp_path, site_config(site_name, busybox, tmp_path, containers, **top), env)
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.kill()


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> str:
    """A local image registry for pull tests: yields "127.0.0.1:PORT"; stopped at the end.

    Docker Hub is out of reach, so pulls go to Distribution (Debian's `docker-registry`)
    on a loopback port, which dockerd accepts over plain HTTP. Fails, never skips.
    """
    import signal
    import socket
    import subprocess
    from pathlib import Path

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory = tmp_path_factory.mktemp("registry")
    tool = Path(__file__).parent / "tools" / "ensure-registry"
    try:
        done = subprocess.run([str(tool), str(directory), str(port)], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        done = None
    if done is None or done.returncode != 0 or not done.stdout.strip().isdigit():
        said = "timed out after 300s" if done is None else f"exit {done.returncode}:\n{done.stderr[-3000:]}"
        pytest.fail(f"could not start a local registry with {tool} ({said})", pytrace=False)
    pid = int(done.stdout.strip().splitlines()[-1])
    yield f"127.0.0.1:{port}"
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A real Redis (Debian's redis-server on loopback) shared by a test file's lease tests."""
    from tests.lease_redis import RedisServer  # harness's, restartable on its port
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()
