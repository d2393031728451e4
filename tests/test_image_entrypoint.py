"""The worker image's entrypoint, on the real image (image/Dockerfile, built here).

No database or Redis: these are the behaviours every start goes through before
Indico does anything (who may run it, make-config, the missing-config error)
and how the final program is run (PID 1, the stop signal).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness.sites import SITE_LABEL
from tests.indico_images import worker_image

# tests/run runs two test processes: its module fixtures serve one test process.
pytestmark = pytest.mark.xdist_group("image_entrypoint")

# No account in the image has this UID: any UID that owns the bound directories must do.
UID_GID = "4321:4321"


@pytest.fixture(scope="module")
def image(docker_client) -> str:
    return worker_image(docker_client)


@pytest.fixture
def volumes(tmp_path):
    """Host directories for data and scratch, owned by UID_GID as a site's would be."""
    uid, gid = map(int, UID_GID.split(":"))
    dirs = {}
    for name in ("data", "scratch"):
        path = tmp_path / name
        path.mkdir()
        os.chown(path, uid, gid)
        dirs[name] = path
    return dirs


def binds(volumes) -> dict:
    return {str(path): {"bind": f"/opt/indico/{name}", "mode": "rw"} for name, path in volumes.items()}


def run_once(client, image, site, command, volumes=None, user=UID_GID) -> tuple[int, str, str]:
    """Run the image to its end: (exit status, stdout, stderr)."""
    container = client.containers.create(image, command, user=user, labels={SITE_LABEL: site},
                                         volumes=binds(volumes) if volumes else None)
    try:
        container.start()
        status = container.wait(timeout=120)["StatusCode"]
        out = container.logs(stdout=True, stderr=False).decode()
        err = container.logs(stdout=False, stderr=True).decode()
        return status, out, err
    finally:
        container.remove(force=True, v=True)


def make_usable_config(volumes) -> None:
    """What an admin does after make-config, as far as a start without a database needs."""
    conf = volumes["data"] / "etc" / "indico.conf"
    text = conf.read_text().replace("https://indico.CHANGE-ME.example", "http://indico.test")
    conf.write_text(text)


def test_make_config_writes_the_defaults_once_then_refuses_and_changes_nothing(docker_client, image, site_name, volumes):
    status, out, err = run_once(docker_client, image, site_name, ["make-config"], volumes)
    assert status == 0, err
    etc = volumes["data"] / "etc"
    conf, logging_yaml = etc / "indico.conf", etc / "logging.yaml"
    text = conf.read_text()
    assert "CHANGE-ME" in text and "NOT USABLE AS IS" in text  # placeholders an admin must replace
    assert "SECRET_KEY = 'CHANGE-ME" not in text  # make-config gave it a fresh key
    assert "CACHE_DIR = '/opt/indico/scratch/cache'" in text
    assert "STORAGE_BACKENDS = {'default': 'fs:/opt/indico/data/archive'}" in text
    assert logging_yaml.read_text().startswith("# This is the default indico logging configuration")
    # The container's user created the volumes' directories, so they are the site's on the host.
    uid, gid = map(int, UID_GID.split(":"))
    for path in (etc, conf, logging_yaml, volumes["data"] / "archive", volumes["scratch"] / "tmp",
                 volumes["scratch"] / "cache", volumes["scratch"] / "log"):
        assert (path.stat().st_uid, path.stat().st_gid) == (uid, gid), path

    conf.write_text(text + "# edited by the admin\n")
    before = {p.name: p.read_bytes() for p in etc.iterdir()}
    status, out, err = run_once(docker_client, image, site_name, ["make-config"], volumes)
    assert status != 0
    assert "already there" in err and "indico.conf" in err and "Nothing was changed" in err
    assert {p.name: p.read_bytes() for p in etc.iterdir()} == before


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def test_make_config_keeps_the_secrets_and_every_directory_it_makes_from_other_users(docker_client, image,
                                                                                    site_name, volumes):
    status, _, err = run_once(docker_client, image, site_name, ["make-config"], volumes)

    assert status == 0, err
    root = volumes["data"].parent
    made = ["data/etc", "data/etc/indico.conf", "data/etc/logging.yaml", "data/archive",
            "scratch/tmp", "scratch/cache", "scratch/log"]
    # umask 027 before anything is written, whatever the engine's own umask (022) is.
    assert {name: oct(mode(root / name)) for name in made} == {
        "data/etc": "0o750", "data/etc/indico.conf": "0o640", "data/etc/logging.yaml": "0o640",
        "data/archive": "0o750", "scratch/tmp": "0o750", "scratch/cache": "0o750", "scratch/log": "0o750"}
    assert "warning" not in err


def test_wider_modes_are_named_at_every_start_with_the_chmod_and_left_alone(docker_client, image, site_name,
                                                                           volumes):
    assert run_once(docker_client, image, site_name, ["make-config"], volumes)[0] == 0
    data = volumes["data"]
    # What an image without the umask made, or an admin loosened.
    wide = {data / "etc": 0o755, data / "etc" / "indico.conf": 0o644, data / "etc" / "logging.yaml": 0o660,
            data / "archive": 0o775, volumes["scratch"] / "log": 0o2777}
    for path, wide_mode in wide.items():
        os.chmod(path, wide_mode)

    for _ in range(2):
        status, _, err = run_once(docker_client, image, site_name, ["true"], volumes)

        assert status == 0, err
        warnings = [line for line in err.splitlines() if line.startswith("indico-worker: warning: ")]
        assert len(warnings) == len(wide), err
        for fix in ("chmod 750 /opt/indico/data/etc ", "chmod 640 /opt/indico/data/etc/indico.conf ",
                    "chmod 640 /opt/indico/data/etc/logging.yaml ", "chmod 755 /opt/indico/data/archive ",
                    "chmod 2755 /opt/indico/scratch/log "):
            assert any(fix in line for line in warnings), f"no {fix!r} in:\n{err}"
        assert "SECRET_KEY" in next(line for line in warnings if "/opt/indico/data/etc/indico.conf is mode" in line)
        assert {path: mode(path) for path in wide} == wide


def test_each_make_config_gives_its_own_secret_key(docker_client, image, site_name, tmp_path):
    keys = set()
    for attempt in ("a", "b"):
        data = tmp_path / attempt
        data.mkdir()
        os.chown(data, *map(int, UID_GID.split(":")))
        status, _, err = run_once(docker_client, image, site_name, ["make-config"], {"data": data})
        assert status == 0, err
        keys |= {line for line in (data / "etc" / "indico.conf").read_text().splitlines()
                 if line.startswith("SECRET_KEY = ")}
    assert len(keys) == 2


@pytest.mark.parametrize("command", [[], ["run"], ["celery"], ["indico", "db", "prepare"], ["db", "prepare"]])
def test_any_start_without_indico_conf_says_to_run_make_config(docker_client, image, site_name, volumes, command):
    status, _, err = run_once(docker_client, image, site_name, command, volumes)
    assert status != 0
    assert "no /opt/indico/data/etc/indico.conf" in err and "make-config" in err


@pytest.mark.parametrize("user", ["0:0", None, "4321"], ids=["root", "image-default", "uid-without-gid"])
def test_celery_as_root_is_refused_with_a_clear_message(docker_client, image, site_name, volumes, user):
    status, _, err = run_once(docker_client, image, site_name, ["celery"], volumes, user=user)
    assert status != 0
    assert "refusing to run 'celery' as root" in err and "--user UID:GID" in err


def test_a_data_directory_the_user_cannot_write_is_named_with_the_fix(docker_client, image, site_name, volumes):
    os.chown(volumes["data"], 0, 0)
    os.chmod(volumes["data"], 0o755)
    status, _, err = run_once(docker_client, image, site_name, ["make-config"], volumes)
    assert status != 0
    assert "/opt/indico/data is not writable by UID:GID 4321:4321" in err and "chown 4321:4321" in err


def wait_for_log(container, text: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = container.logs().decode(errors="replace")
        if text in logs:
            return logs
        container.reload()
        if container.status == "exited":
            break
        time.sleep(0.5)
    raise AssertionError(f"no {text!r} in the container's output:\n{container.logs().decode(errors='replace')[-3000:]}")


@pytest.mark.parametrize("command, pid1, started", [
    (["run"], "uwsgi", "spawned uWSGI worker 4"),
    (["celery"], "indico celery worker -B", "Connected to redis"),
], ids=["uwsgi", "celery"])
def test_the_final_program_is_pid_1_and_stops_by_itself_on_sigterm(docker_client, image, site_name, volumes,
                                                                   command, pid1, started):
    assert run_once(docker_client, image, site_name, ["make-config"], volumes)[0] == 0
    make_usable_config(volumes)
    container = docker_client.containers.create(image, command, user=UID_GID, labels={SITE_LABEL: site_name},
                                                volumes=binds(volumes))
    try:
        container.start()
        if command == ["celery"]:
            # No Redis here: celery keeps retrying the broker, which is all this needs.
            started = "Cannot connect to redis"
        wait_for_log(container, started)
        cmdline = container.exec_run(["cat", "/proc/1/cmdline"], user=UID_GID).output.replace(b"\0", b" ").decode()
        assert pid1 in cmdline, cmdline
        assert "entrypoint" not in cmdline

        container.stop(timeout=100)  # SIGTERM, then SIGKILL only if it does not end by itself
        container.reload()
        state = container.attrs["State"]
        logs = container.logs().decode(errors="replace")
        assert not state["OOMKilled"]
        assert state["ExitCode"] != 137, f"needed SIGKILL:\n{logs[-2000:]}"
        if command == ["run"]:
            # die-on-term: SIGTERM ends uwsgi gracefully instead of reloading it.
            assert "gracefully killing" in logs.lower() or "goodbye to uwsgi" in logs.lower(), logs[-2000:]
            assert "reloading" not in logs.lower()
    finally:
        container.remove(force=True, v=True)
