"""The test ground itself, against the real engine: no mocks.

If these fail, every other integration test is meaningless, so they state plainly
what the rest of the suite takes for granted about the engine and the busybox image.
"""

from __future__ import annotations

import time
import uuid

import pytest

from harness import images
from harness.sites import SITE_LABEL

pytest_plugins = ["pytester"]


def run(client, image, cmd, site, **kw):
    """Start a detached container labelled for `site`, so the site_name fixture reaps it."""
    return client.containers.run(image, cmd, detach=True, labels={SITE_LABEL: site}, **kw)


def wait_output(container, timeout=30) -> tuple[int, str]:
    status = container.wait(timeout=timeout)["StatusCode"]
    return status, container.logs().decode()


def test_busybox_image_is_built_once_and_then_reused(docker_client, busybox):
    before = {i.id for i in docker_client.images.list(name=images.REPOSITORY)}
    first = docker_client.images.get(busybox)

    t0 = time.monotonic()
    again = images.busybox_image(docker_client)
    cached_secs = time.monotonic() - t0

    assert again == busybox
    assert again.startswith(f"{images.REPOSITORY}:") and not again.endswith(":latest")
    second = docker_client.images.get(again)
    assert second.id == first.id
    assert second.attrs["Created"] == first.attrs["Created"]  # not re-imported
    assert {i.id for i in docker_client.images.list(name=images.REPOSITORY)} == before
    assert docker_client.images.get(f"{images.REPOSITORY}:latest").id == first.id
    assert cached_secs < 5, f"cached call took {cached_secs:.1f}s; did it rebuild?"


def test_busybox_image_defaults_to_sh_with_bin_on_path(docker_client, busybox):
    config = docker_client.images.get(busybox).attrs["Config"]
    assert config["Cmd"] == ["sh"]
    assert "PATH=/bin" in config["Env"]


def test_missing_required_applet_fails_loudly(monkeypatch):
    monkeypatch.setattr(images, "REQUIRED_APPLETS", images.REQUIRED_APPLETS + ("no-such-applet",))
    with pytest.raises(RuntimeError, match="no-such-applet"):
        images._applets()


def test_container_runs_sh_and_its_logs_show_the_output(docker_client, busybox, site_name):
    c = run(docker_client, busybox, ["sh", "-c", "echo hello"], site_name)
    try:
        assert wait_output(c) == (0, "hello\n")
    finally:
        c.remove(force=True)


def test_httpd_serves_a_file_from_www_to_wget_in_the_same_container(
    docker_client, busybox, site_name
):
    serve = "echo hello-from-www > /www/index.html && exec httpd -f -p 8080 -h /www"
    c = run(docker_client, busybox, ["sh", "-c", serve], site_name)
    try:
        # httpd needs a moment to bind; retry rather than sleep a fixed guess.
        deadline = time.monotonic() + 15
        while True:
            code, out = c.exec_run(["wget", "-q", "-O-", "http://127.0.0.1:8080/"])
            if code == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert (code, out) == (0, b"hello-from-www\n")
        c.reload()
        assert c.status == "running"  # httpd -f stays in the foreground as PID 1
    finally:
        c.remove(force=True)


def test_container_runs_as_nobody_65534(docker_client, busybox, site_name):
    c = run(docker_client, busybox, ["sh", "-c", "id -u; id -g; id -un"], site_name,
            user="65534:65534")
    try:
        assert wait_output(c) == (0, "65534\n65534\nnobody\n")
    finally:
        c.remove(force=True)


def test_site_name_fixture_removes_its_labelled_containers_and_nothing_else(
    docker_client, busybox, pytester
):
    # Drive the real fixture in an inner pytest session, then look at what survived.
    bystander = run(docker_client, busybox, ["sleep", "300"], "bystander-" + uuid.uuid4().hex[:10])
    try:
        pytester.makeconftest("from tests.conftest import *")
        pytester.makepyfile(
            """
            from harness.sites import SITE_LABEL

            def test_leaves_containers_behind(docker_client, busybox, site_name, tmp_path_factory):
                ids = []
                for cmd in (["sleep", "300"], ["true"]):  # one running, one exited
                    c = docker_client.containers.run(
                        busybox, cmd, detach=True, labels={SITE_LABEL: site_name})
                    ids.append(c.id)
                open("ids.txt", "w").write("\\n".join([site_name] + ids))
            """
        )
        pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
        site, *ids = (pytester.path / "ids.txt").read_text().split("\n")
        assert site.startswith("t") and len(ids) == 2

        leftovers = docker_client.containers.list(
            all=True, filters={"label": f"{SITE_LABEL}={site}"}
        )
        assert leftovers == []
        bystander.reload()
        assert bystander.status == "running"
    finally:
        bystander.remove(force=True)
