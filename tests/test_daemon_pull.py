"""Images from a registry: pulled with progress, pulled again on reload, kept when the registry is away.

Docker Hub is out of reach, so images are pushed to a local registry (the `registry`
fixture, 127.0.0.1 only) and their local tags removed, so the real daemon has to pull.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import docker.errors
import pytest

from harness.sites import remove_site_containers
from harness.daemon import site_containers, wait_until

TOOL = Path(__file__).parent / "tools" / "ensure-registry"
QUIET = 1.5  # long enough for a wrongly planned recreate to show in the log
WARNING, ERROR = 4, 3  # syslog priorities of the log lines


@pytest.fixture
def tags(docker_client, site_name):
    """References a test tagged; removed after it. Ask for it before `run_daemon`, so the daemon is gone first."""
    made: list[str] = []
    yield made
    remove_site_containers(docker_client, site_name)  # frees the images for removal
    repositories = {split(ref)[0] for ref in made}
    # A pull also leaves `repo@sha256:…` on the image (on busybox's own, say): those go too.
    digests = [d for image in docker_client.images.list() for d in image.attrs.get("RepoDigests") or []
               if d.partition("@")[0] in repositories]
    for ref in made + digests:
        try:
            docker_client.images.remove(ref)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError:
            docker_client.images.remove(ref, force=True)  # still used by something: untag it at least


def split(ref: str) -> tuple[str, str]:
    repository, _, tag = ref.rpartition(":")
    return repository, tag


def push(client, ref: str) -> str:
    """Pushes the local `ref`; returns the manifest digest the registry took."""
    repository, tag = split(ref)
    stream = list(client.images.push(repository, tag=tag, stream=True, decode=True))
    errors = [line for line in stream if "error" in line or "errorDetail" in line]
    assert not errors, f"push of {ref} failed: {errors}"
    digests = [line["aux"]["Digest"] for line in stream if (line.get("aux") or {}).get("Digest")]
    assert digests, f"push of {ref} reported no digest: {stream}"
    return digests[-1]


def build_distinct(client, busybox: str, ref: str, size: int = 2_000_000) -> str:
    """A new image under `ref`: busybox plus a file of random bytes (a new layer, a new digest). Returns its ID."""
    maker = client.containers.run(busybox, ["sh", "-c", f"head -c {size} /dev/urandom > /payload"], detach=True)
    try:
        assert maker.wait(timeout=60)["StatusCode"] == 0
        return maker.commit(*split(ref)).id
    finally:
        maker.remove(force=True)


def publish_only(client, ref: str) -> str:
    """Pushes `ref` and drops it from this host, so only a pull brings it back. Returns the digest."""
    digest = push(client, ref)
    client.images.remove(ref)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(ref)
    return digest


def image_of(client, site: str, name: str) -> str:
    return site_containers(client, site)[name].attrs["Image"]


def snapshot(client, site: str) -> dict:
    """name -> (container id, StartedAt, status): what a restart or recreate changes."""
    return {n: (c.id, c.attrs["State"]["StartedAt"], c.status) for n, c in site_containers(client, site).items()}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def status_json(daemon) -> dict | None:
    done = subprocess.run([sys.executable, "-m", "supervisor", "status", "--config", str(daemon.config_path), "--json"],
                          capture_output=True, text=True, env=daemon.env, timeout=30)
    return json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else None


def test_missing_image_is_pulled_once_with_progress_and_its_containers_run_on_it(
        tags, run_daemon, docker_client, site_name, registry, busybox):
    ref = f"{registry}/{site_name}/worker:1"
    tags.append(ref)
    pushed_id = build_distinct(docker_client, busybox, ref)
    publish_only(docker_client, ref)

    daemon = run_daemon({"worker": {"image": ref, "pull": "missing"}, "celery": {"image": ref, "pull": "missing"}})
    daemon.start().wait_ready(timeout=120)

    assert len(daemon.events("image_pulling", image=ref)) == 1  # two roles, one image, one pull
    progress = daemon.events("image_pull_progress", image=ref)
    assert progress, daemon.log_text()[-3000:]
    last = progress[-1]
    assert int(last["layers"]) >= 1 and int(last["layers_done"]) == int(last["layers"]), last
    assert int(last["bytes"]) == int(last["bytes_total"]) > 0, last
    [resolved] = daemon.events("image_resolved", image=ref)
    assert pushed_id.startswith(resolved["image_id"])
    assert docker_client.images.get(ref).id == pushed_id
    for role in ("worker", "celery"):
        name = f"{site_name}-{role}"
        assert site_containers(docker_client, site_name)[name].status == "running"
        assert image_of(docker_client, site_name, name) == pushed_id


def test_pull_always_on_reload_takes_a_new_digest_and_recreates_only_that_container(
        tags, run_daemon, docker_client, site_name, registry, busybox):
    ref = f"{registry}/{site_name}/worker:1"
    tags.append(ref)
    docker_client.images.get(busybox).tag(*split(ref))
    first_digest = publish_only(docker_client, ref)
    first_id = docker_client.images.get(busybox).id

    # busybox has no `indico db upgrade`: this test is about the pull, upgrades have their own (test_daemon_upgrade)
    daemon = run_daemon({"worker": {"image": ref, "pull": "always"}, "cron": {"pull": "never"}}, upgrade={"commands": []})
    daemon.start().wait_ready(timeout=120)
    worker, cron = f"{site_name}-worker", f"{site_name}-cron"
    assert image_of(docker_client, site_name, worker) == first_id
    before = snapshot(docker_client, site_name)

    # The same tag now names another image, and this host no longer has it under that tag.
    new_id = build_distinct(docker_client, busybox, ref)
    assert new_id != first_id
    assert publish_only(docker_client, ref) != first_digest

    daemon.signal(signal.SIGHUP)
    daemon.wait_event("config_reloaded")
    daemon.wait_event("container_recreated", role="worker", timeout=120)

    assert len(daemon.events("image_pulling", image=ref)) == 2
    resolved = daemon.events("image_resolved", image=ref)
    assert len(resolved) == 2 and new_id.startswith(resolved[-1]["image_id"])
    [recreating] = daemon.events("container_recreating")
    assert (recreating["role"], recreating["reason"]) == ("worker", "changed")
    after = snapshot(docker_client, site_name)
    assert image_of(docker_client, site_name, worker) == new_id and after[worker][2] == "running"
    assert after[worker][0] != before[worker][0]
    assert after[cron] == before[cron]  # pull: never, local image: untouched
    assert image_of(docker_client, site_name, cron) == docker_client.images.get(busybox).id


def test_failed_pull_with_the_image_on_this_host_warns_and_keeps_the_container_running(
        tags, run_daemon, docker_client, site_name, busybox, tmp_path):
    # A throwaway registry of its own: stopping the session one would break later tests.
    port = free_port()
    started = subprocess.run([str(TOOL), str(tmp_path / "registry"), str(port)], capture_output=True, text=True,
                             timeout=300)
    assert started.returncode == 0, started.stderr
    pid = int(started.stdout.split()[-1])
    try:
        ref = f"127.0.0.1:{port}/{site_name}/worker:1"
        tags.append(ref)
        docker_client.images.get(busybox).tag(*split(ref))
        push(docker_client, ref)  # kept here too: the image stays on this host

        daemon = run_daemon({"worker": {"image": ref, "pull": "always"}})
        daemon.start().wait_ready(timeout=120)
        assert daemon.events("image_pulling", image=ref) and not daemon.events("image_pull_failed")
        before = snapshot(docker_client, site_name)

        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not answers(port), what="the throwaway registry to stop")
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait_event("image_pull_failed", image=ref, timeout=60)
    finally:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    assert failed["priority"] == WARNING and failed["reason"], failed
    marker = len(daemon.events())
    time.sleep(QUIET)
    later = [e["event"] for e in daemon.events()[marker:]]
    assert not {"image_unavailable", "image_resolved", "container_recreating", "container_restarted",
                "container_removing", "container_stopping"} & set(later), later
    assert snapshot(docker_client, site_name) == before
    assert before[f"{site_name}-worker"][2] == "running"


def test_pull_never_with_the_image_missing_says_so_and_the_rest_of_the_site_runs(
        tags, run_daemon, docker_client, site_name):
    missing = f"indico-supervisor-test/{site_name}-absent:1"
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(missing)

    daemon = run_daemon({"worker": {"image": missing, "pull": "never"}, "web": {}}).start()
    unavailable = daemon.wait_event("image_unavailable", image=missing, timeout=60)
    assert unavailable["priority"] == ERROR and missing in unavailable["reason"], unavailable
    daemon.wait_event("container_started", role="web")
    web = f"{site_name}-web"
    before = snapshot(docker_client, site_name)
    assert set(before) == {web} and before[web][2] == "running"

    def pulling():
        shown = status_json(daemon)
        rows = {row["role"]: row for row in (shown or {}).get("containers", [])}
        return rows if rows.get("worker", {}).get("state") == "pulling" and rows["worker"].get("detail") else None

    rows = wait_until(pulling, what="status to show worker pulling")
    assert missing in rows["worker"]["detail"] and "never" in rows["worker"]["detail"], rows["worker"]
    assert rows["web"]["state"] == "running"
    assert not daemon.events("image_pulling")  # never means never

    daemon.wait_event("image_unavailable", image=missing, count=2, timeout=30)  # retried later, still missing
    assert snapshot(docker_client, site_name) == before
    assert not daemon.events("daemon_ready")  # the site is not all up, so not ready


@pytest.fixture
def stalling_registry(registry):
    """The session registry behind a proxy on another loopback port whose blob downloads can be made to hang."""
    from tests.proxies import FreezingProxy
    host, _, port = registry.partition(":")
    proxy = FreezingProxy(("127.0.0.1", 0), (host, int(port)))
    yield proxy
    proxy.close()


def blob_download(request: bytes) -> bool:
    return request.startswith(b"GET /v2/") and b"/blobs/" in request.split(b"\r\n", 1)[0]


def test_a_stalled_pull_is_abandoned_after_pull_timeout_and_retried_until_it_succeeds(
        tags, run_daemon, docker_client, site_name, registry, stalling_registry, busybox):
    ref = f"{registry}/{site_name}/worker:1"
    via_proxy = f"127.0.0.1:{stalling_registry.port}/{site_name}/worker:1"
    tags += [ref, via_proxy]
    pushed_id = build_distinct(docker_client, busybox, ref)
    publish_only(docker_client, ref)
    stalling_registry.freeze(blob_download)  # the manifest comes, the layers never do

    daemon = run_daemon({"worker": {"image": via_proxy, "pull": "missing"}}, pull_timeout="2s").start()
    stalled = daemon.wait_event("image_unavailable", image=via_proxy, timeout=90)
    assert "no progress for 2s" in stalled["reason"] and stalled["priority"] == ERROR, stalled
    assert stalling_registry.matching(blob_download) >= 1  # it did stall on a layer, not fail before
    daemon.wait_event("image_unavailable", image=via_proxy, count=2, timeout=90)  # retried, stalled again

    stalling_registry.freeze(None)
    stalling_registry.cut_frozen()  # the registry recovers; dockerd's own stuck downloads end with it
    daemon.wait_ready(timeout=120)
    assert site_containers(docker_client, site_name)[f"{site_name}-worker"].status == "running"
    assert image_of(docker_client, site_name, f"{site_name}-worker") == pushed_id
    assert len(daemon.events("image_pulling", image=via_proxy)) >= 3
