"""The worker image's `indico-publish-static` (run by the entrypoint before uwsgi), against
the real engine and a real named volume: the static tree of the image lands in a directory
named by its fingerprint, `current` points at it, `previous` at the tree before, and
nothing else is kept. The web container's nginx tries `current` then `previous`.
"""
from __future__ import annotations

import uuid

import docker.errors
import pytest

from tests.indico_images import worker_image
from tests.test_web_front import second_worker_image

# tests/run runs two test processes: its module fixtures serve one test process.
pytestmark = pytest.mark.xdist_group("static_publish")

UID_GID = "4321:4321"
ASSETS = "/opt/indico/assets"


@pytest.fixture(scope="module")
def images(docker_client) -> tuple[str, str]:
    first = worker_image(docker_client)
    return first, second_worker_image(docker_client, first)


@pytest.fixture
def volume(docker_client):
    made = docker_client.volumes.create(f"indico-supervisor-test-assets-{uuid.uuid4().hex[:10]}")
    yield made.name
    made.remove(force=True)


def publish(client, image: str, volume: str | None, user: str = UID_GID) -> tuple[int, str]:
    """indico-publish-static as the worker runs it: its UID:GID, no capabilities."""
    container = client.containers.create(
        image, entrypoint=["indico-publish-static"], user=user, cap_drop=["ALL"],
        security_opt=["no-new-privileges"], network_mode="none",
        volumes={volume: {"bind": ASSETS, "mode": "rw"}} if volume else {})
    try:
        container.start()
        code = container.wait(timeout=120)["StatusCode"]
        return code, container.logs().decode()
    finally:
        container.remove(force=True)


def look(client, image: str, volume: str, script: str) -> str:
    return client.containers.run(image, ["-c", script], entrypoint=["bash"], user=UID_GID, remove=True,
                                 network_mode="none", volumes={volume: {"bind": ASSETS, "mode": "ro"}}).decode()


def links(client, image: str, volume: str) -> dict:
    out = look(client, image, volume, f"cd {ASSETS} && for l in current previous; do echo $l $(readlink $l); done; "
                                      "echo trees $(find . -mindepth 1 -maxdepth 1 -type d -printf '%P ' | sort)")
    return {line.split()[0]: sorted(line.split()[1:]) if line.startswith("trees") else (line.split()[1:] or [None])[0]
            for line in out.splitlines()}


def test_the_first_publish_makes_a_tree_named_by_fingerprint_and_points_current_at_it(docker_client, images, volume):
    code, out = publish(docker_client, images[0], volume)

    assert code == 0, out
    state = links(docker_client, images[0], volume)
    assert state["previous"] is None and state["trees"] == [state["current"]]
    assert len(state["current"]) == 16 and f"published static files {state['current']}" in out
    # Public files, whatever UID the web container's nginx runs as.
    modes = look(docker_client, images[0], volume,
                 f"stat -c '%a' {ASSETS}/current/dist/manifest.json {ASSETS}/current/dist")
    assert modes.split() == ["644", "755"]


def test_the_same_image_again_publishes_nothing_and_changes_no_link(docker_client, images, volume):
    publish(docker_client, images[0], volume)
    before = links(docker_client, images[0], volume)

    code, out = publish(docker_client, images[0], volume)

    assert code == 0 and out == "", out
    assert links(docker_client, images[0], volume) == before


def test_a_new_image_becomes_current_and_the_one_before_stays_as_previous(docker_client, images, volume):
    first, second = images
    publish(docker_client, first, volume)
    old = links(docker_client, first, volume)["current"]

    code, out = publish(docker_client, second, volume)

    assert code == 0, out
    state = links(docker_client, first, volume)
    assert state["previous"] == old and state["current"] not in (None, old)
    assert state["trees"] == sorted([old, state["current"]])
    assert "second build" in look(docker_client, first, volume,
                                  f"cat {ASSETS}/current/dist/css/common.second-build.*.css | tail -c 100")
    # Back to the first image (a rollback): the trees swap roles, both kept.
    publish(docker_client, first, volume)
    assert links(docker_client, first, volume) == {**state, "current": old, "previous": state["current"]}


def test_trees_neither_current_nor_previous_are_removed(docker_client, images, volume):
    first, second = images
    publish(docker_client, first, volume)
    # A tree left by a worker two versions ago, and one half-copied by a start that died.
    docker_client.containers.run(first, ["-c", f"mkdir {ASSETS}/00000000deadbeef {ASSETS}/.incoming-x-1"],
                                 entrypoint=["bash"], user=UID_GID, remove=True, network_mode="none",
                                 volumes={volume: {"bind": ASSETS, "mode": "rw"}})

    code, out = publish(docker_client, second, volume)

    assert code == 0 and "removed static files 00000000deadbeef" in out, out
    state = links(docker_client, first, volume)
    assert state["trees"] == sorted([state["current"], state["previous"]])
    assert look(docker_client, first, volume, f"ls -A {ASSETS}").split() == sorted(
        ["current", "previous", state["current"], state["previous"]])


def test_without_a_volume_nothing_is_published(docker_client, images):
    code, out = publish(docker_client, images[0], None)

    assert (code, out) == (0, "")


def test_a_volume_the_worker_cannot_write_is_refused_with_the_fix(docker_client, images, volume):
    # As root, on purpose: a volume that lost the image's mode 1777 (made by hand, say).
    # (Not empty: the engine copies the image's directory, mode 1777, into an empty volume at each mount.)
    docker_client.containers.run(images[0], ["-c", f"chmod 755 {ASSETS} && touch {ASSETS}/kept"],
                                 entrypoint=["bash"], user="0:0",
                                 remove=True, network_mode="none",
                                 volumes={volume: {"bind": ASSETS, "mode": "rw"}})

    code, out = publish(docker_client, images[0], volume)

    assert code == 2, out
    assert f"{ASSETS} is not writable by UID:GID {UID_GID}" in out and "chmod 1777" in out


def test_a_volume_published_by_another_uid_is_refused_with_the_fix(docker_client, images, volume):
    publish(docker_client, images[0], volume, user="4322:4322")

    code, out = publish(docker_client, images[1], volume)

    assert code == 2, out
    assert f"{ASSETS}/current belongs to UID 4322, not to this worker's 4321" in out and "chown -hR 4321:4321" in out
