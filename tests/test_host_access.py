"""A site file cannot hand a container the host (the Docker socket, system trees, the host network) by accident.

Each is refused with the key path, the value and what to do, unless the container
says `allow_host_access: true`; check-config then prints the grant as a warning.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from supervisor.cli import main
from supervisor.config import parse_site
from supervisor.model import Bind, Container, Network
from supervisor.problems import ConfigError
from supervisor.spec import spec_hash


def site(tmp_path: Path, **worker) -> dict:
    for directory in ("data", "scratch"):
        (tmp_path / directory).mkdir(exist_ok=True)
    return {"user": "1000:1000", "volumes": {"data": str(tmp_path / "data"), "scratch": str(tmp_path / "scratch")},
            "containers": {"worker": worker}}


def problems(tree: dict, tmp_path: Path) -> list:
    # Host paths are not looked up on disk: /boot or /var/lib/docker need not exist for the rule to hold.
    with pytest.raises(ConfigError) as refused:
        parse_site(tree, str(tmp_path / "site.yaml"), check_paths=False)
    return refused.value.problems


REFUSED_BINDS = {
    "docker_socket": "/var/run/docker.sock:/var/run/docker.sock",
    "docker_socket_under_run": "/run/docker.sock:/docker.sock:ro",
    "containerd_socket": "/run/containerd/containerd.sock:/c.sock",
    "root": "/:/host:ro",
    "etc": "/etc:/host-etc:ro",
    "etc_writable_file": "/etc/passwd:/etc/passwd",
    "etc_shadow_even_read_only": "/etc/shadow:/shadow:ro",
    "etc_ssh_even_read_only": "/etc/ssh:/ssh:ro",
    "proc": "/proc:/host-proc:ro",
    "under_sys": "/sys/fs/cgroup:/sys/fs/cgroup",
    "dev": "/dev:/dev",
    "under_dev": "/dev/sda:/dev/sda",
    "boot": "/boot:/boot:ro",
    "docker_state": "/var/lib/docker:/docker",
    "under_docker_state": "/var/lib/docker/volumes/x/_data:/x",
    "var_holds_docker_state": "/var:/host-var:ro",
    "run_holds_the_docker_socket": "/run:/host-run",
    "dot_dot_into_etc": "/srv/../etc:/e:ro",
}


@pytest.mark.parametrize("bind", REFUSED_BINDS.values(), ids=REFUSED_BINDS.keys())
def test_a_bind_of_the_host_is_refused_with_key_path_value_and_opt_in(tmp_path, bind):
    found = problems(site(tmp_path, volumes={"extra": [bind]}), tmp_path)

    assert [p.path for p in found] == ["containers.worker.volumes.extra[0]"]
    text = found[0].render()
    assert f"= {bind!r}" in text or f"= {bind.replace('/srv/../etc', '/etc')!r}" in text
    assert "bind a directory of its own instead" in text
    assert "set containers.worker.allow_host_access: true" in text


def test_a_site_level_bind_is_refused_where_it_is_written_for_every_container_that_has_it(tmp_path):
    tree = site(tmp_path)
    tree["volumes"]["extra"] = ["/var/run/docker.sock:/var/run/docker.sock"]
    tree["containers"]["celery"] = {}

    found = problems(tree, tmp_path)

    assert [p.path for p in found] == ["volumes.extra[0]"] * 2
    assert {p.message.rsplit("set ", 1)[1] for p in found} == {
        "containers.worker.allow_host_access: true if this container really needs it",
        "containers.celery.allow_host_access: true if this container really needs it"}


def test_the_data_directory_as_a_system_tree_is_refused(tmp_path):
    tree = site(tmp_path)
    tree["volumes"]["data"] = "/etc"

    assert [p.path for p in problems(tree, tmp_path)] == ["volumes.data"]


def test_a_symlink_to_a_system_tree_is_refused(tmp_path):
    link = tmp_path / "innocent"
    link.symlink_to("/proc")

    found = problems(site(tmp_path, volumes={"extra": [f"{link}:/data/innocent:ro"]}), tmp_path)

    assert [p.path for p in found] == ["containers.worker.volumes.extra[0]"]
    assert "resolves to /proc" in found[0].message


def test_the_host_network_is_refused(tmp_path):
    found = problems(site(tmp_path, network={"name": "host"}), tmp_path)

    assert [(p.path, p.value) for p in found] == [("containers.worker.network.name", "host")]
    assert "allow_host_access: true" in found[0].message


def test_the_host_network_set_for_the_site_is_refused_at_the_site_key(tmp_path):
    tree = site(tmp_path)
    tree["network"] = {"name": "host"}

    assert [p.path for p in problems(tree, tmp_path)] == ["network.name"]


ALLOWED_BINDS = {
    "localtime_read_only": "/etc/localtime:/etc/localtime:ro",
    "certificates_read_only": "/etc/ssl/certs:/etc/ssl/certs:ro",
    "a_directory_of_its_own": "/srv/indico/certs:/opt/indico/certs:ro",
    "a_socket_elsewhere": "/srv/indico/run/uwsgi.sock:/run/uwsgi.sock",
    "a_run_directory_without_sockets_named_so": "/run/postgresql:/run/postgresql",
}


@pytest.mark.parametrize("bind", ALLOWED_BINDS.values(), ids=ALLOWED_BINDS.keys())
def test_ordinary_binds_are_accepted(tmp_path, bind):
    parsed = parse_site(site(tmp_path, volumes={"extra": [bind]}), str(tmp_path / "site.yaml"), check_paths=False)
    assert parsed.container("worker").allow_host_access is False


def test_allow_host_access_accepts_them_and_check_config_warns(tmp_path, capsys):
    import yaml

    tree = site(tmp_path, volumes={"extra": ["/var/run/docker.sock:/var/run/docker.sock"]},
                network={"name": "host"}, allow_host_access=True)
    tree["containers"]["celery"] = {}
    file = tmp_path / "site.yaml"
    file.write_text(yaml.safe_dump(tree, sort_keys=False))

    status = main(["check-config", "--config", str(file)])
    out = capsys.readouterr().out

    assert status == 0, out
    warnings = [line.strip() for line in out.splitlines() if "WARNING" in line]
    assert len(warnings) == 2
    assert "/var/run/docker.sock" in warnings[0] and "control socket" in warnings[0]
    assert warnings[1].startswith("WARNING  host access (allow_host_access): network host")
    # Celery did not ask, and inherits nothing that needs it.
    assert out.index("celery:") > out.rindex("WARNING")


def test_allow_host_access_must_be_true_or_false(tmp_path):
    found = problems(site(tmp_path, allow_host_access="yes please"), tmp_path)
    assert [(p.path, p.value) for p in found] == [("containers.worker.allow_host_access", "yes please")]


BASE = Container(role="worker", name="indico-worker", image="indico-worker:latest", pull="missing", command=("run",),
                 uid=1000, gid=1000, binds=(Bind("/srv/indico/data", "/opt/indico/data"),),
                 network=Network(links=(("indico-db", "indico-db"),)), env=(("A", "b"),))


def test_allow_host_access_leaves_the_spec_hash_of_every_container_as_it_was():
    # The key is the daemon's alone: setting it must not recreate a container. (The release's
    # own hash is pinned in tests/test_spec.py, with the capability drop it brings.)
    image_id = "sha256:" + "ab" * 32
    assert spec_hash(replace(BASE, allow_host_access=True), image_id) == spec_hash(BASE, image_id)


def test_a_named_volume_is_not_a_host_path_whatever_its_name(tmp_path, monkeypatch):
    # Resolved as a path it would be judged against the working directory: systemd starts the daemon in /.
    monkeypatch.chdir("/")
    tree = site(tmp_path, volumes={"extra": ["etc:/srv/etc", "docker.sock:/run/x"]})
    parsed = parse_site(tree, str(tmp_path / "site.yaml"), check_paths=False)
    assert {b.host for b in parsed.container("worker").binds if b.named} == {"etc", "docker.sock"}
