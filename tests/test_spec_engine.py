"""A spec, created on the REAL engine, is the container the site file describes.

These look at what the engine stored (`container.attrs`), not at our kwargs: the
Docker SDK could silently drop or reshape an argument. They fail, never skip,
without an engine (see tests/conftest.py).
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import docker.errors
import pytest

from supervisor.config import load_site
from supervisor.spec import LABEL_HASH, LABEL_ROLE, LABEL_SITE, ContainerSpec, desired_specs
from harness.sites import SITE_LABEL

NS = 1_000_000_000


def engine_site(tmp_path: Path, site_name: str, image: str, containers: str, top: str = ""):
    """A site file for `site_name` on the busybox test image, with real tmp data/scratch dirs."""
    data, scratch = tmp_path / "data", tmp_path / "scratch"
    data.mkdir(exist_ok=True)
    scratch.mkdir(exist_ok=True)
    file = tmp_path / "site.yaml"
    file.write_text(
        f"site: {site_name}\n"
        f"image: {image}\n"
        "pull: never\n"
        'user: "1000:1000"\n'
        f"volumes: {{data: {data}, scratch: {scratch}}}\n"
        + textwrap.dedent(top)
        + "containers:\n" + textwrap.indent(textwrap.dedent(containers), "  "))
    return load_site(str(file))


def create(docker_client, busybox, site) -> tuple[ContainerSpec, object]:
    """Create the site's only enabled container exactly as the daemon would."""
    image_id = docker_client.images.get(busybox).id
    (spec,) = desired_specs(site, {busybox: image_id}).values()
    container = docker_client.containers.create(**spec.create_kwargs())
    container.reload()
    return spec, container


def test_created_container_has_the_user_binds_labels_command_env_and_no_engine_restart(
        docker_client, busybox, site_name, tmp_path):
    (tmp_path / "ca.pem").write_text("not really a certificate\n")
    site = engine_site(tmp_path, site_name, busybox, f"""\
        worker:
          name: {site_name}-worker
          command: [sh, -c, "id -u; id -g; ls /opt/indico/data; cat /etc/ssl/ca.pem"]
          env: {{INDICO_SITE: events.example.org, WORKERS: 4}}
          volumes: {{extra: ["{tmp_path / 'ca.pem'}:/etc/ssl/ca.pem:ro"]}}
        """, top="network: {links: []}\n")
    (tmp_path / "data" / "indico.conf").write_text("")

    spec, container = create(docker_client, busybox, site)
    attrs = container.attrs

    assert attrs["Name"] == f"/{site_name}-worker"
    assert attrs["Config"]["Image"] == busybox
    assert attrs["Image"] == spec.image_id
    assert attrs["Config"]["User"] == "1000:1000"
    assert attrs["Config"]["Cmd"] == ["sh", "-c", "id -u; id -g; ls /opt/indico/data; cat /etc/ssl/ca.pem"]
    assert attrs["Config"]["Labels"][SITE_LABEL] == site_name
    assert attrs["Config"]["Labels"][LABEL_SITE] == site_name
    assert attrs["Config"]["Labels"][LABEL_ROLE] == "worker"
    assert attrs["Config"]["Labels"][LABEL_HASH] == spec.hash
    assert {"INDICO_SITE=events.example.org", "WORKERS=4"} <= set(attrs["Config"]["Env"])
    assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
    mounts = {(m["Type"], m["Source"], m["Target"], m.get("ReadOnly", False)) for m in attrs["HostConfig"]["Mounts"]}
    assert mounts == {("bind", str(tmp_path / "data"), "/opt/indico/data", False),
                      ("bind", str(tmp_path / "scratch"), "/opt/indico/scratch", False),
                      ("bind", str(tmp_path / "ca.pem"), "/etc/ssl/ca.pem", True)}
    assert not attrs["HostConfig"].get("Binds")
    assert not attrs["HostConfig"].get("Links")

    container.start()
    status = container.wait(timeout=30)["StatusCode"]
    output = container.logs().decode()

    assert (status, output) == (0, "1000\n1000\nindico.conf\nnot really a certificate\n")
    container.reload()
    assert {(m["Type"], m["Source"], m["Destination"], m["RW"]) for m in container.attrs["Mounts"]} == {
        ("bind", str(tmp_path / "data"), "/opt/indico/data", True),
        ("bind", str(tmp_path / "scratch"), "/opt/indico/scratch", True),
        ("bind", str(tmp_path / "ca.pem"), "/etc/ssl/ca.pem", False)}


def test_links_become_engine_links_and_resolve_inside_the_container(docker_client, busybox, site_name, tmp_path):
    for helper in ("db", "redis"):
        docker_client.containers.run(busybox, ["sleep", "600"], name=f"{site_name}-{helper}", detach=True,
                                     labels={SITE_LABEL: site_name})
    site = engine_site(tmp_path, site_name, busybox, f"""\
        worker:
          name: {site_name}-worker
          command: [sh, -c, "grep -w redis /etc/hosts >/dev/null && grep -w {site_name}-db /etc/hosts >/dev/null && echo linked"]
        """, top=f"network: {{links: [{site_name}-db, '{site_name}-redis:redis']}}\n")

    spec, container = create(docker_client, busybox, site)

    assert sorted(container.attrs["HostConfig"]["Links"]) == sorted([
        f"/{site_name}-db:/{site_name}-worker/{site_name}-db",
        f"/{site_name}-redis:/{site_name}-worker/redis"])
    assert container.attrs["HostConfig"]["NetworkMode"] in ("default", "bridge")
    container.start()
    assert container.wait(timeout=30)["StatusCode"] == 0, container.logs().decode()
    assert container.logs().decode() == "linked\n"


@pytest.fixture
def network(docker_client, site_name):
    net = docker_client.networks.create(f"{site_name}-net", labels={SITE_LABEL: site_name})
    yield net.name
    # Containers on it must go first; the site_name fixture would remove them only later.
    for c in docker_client.containers.list(all=True, filters={"label": f"{SITE_LABEL}={site_name}"}):
        c.remove(force=True)
    try:
        net.remove()
    except docker.errors.NotFound:
        pass


def test_named_network_becomes_the_network_mode(docker_client, busybox, site_name, tmp_path, network):
    site = engine_site(tmp_path, site_name, busybox, f"""\
        worker:
          name: {site_name}-worker
          network: {{name: {network}}}
        """)

    spec, container = create(docker_client, busybox, site)

    assert container.attrs["HostConfig"]["NetworkMode"] == network
    assert not container.attrs["HostConfig"].get("Links")
    assert set(container.attrs["NetworkSettings"]["Networks"]) == {network}


def test_healthcheck_stop_signal_ports_and_log_config_reach_the_engine(docker_client, busybox, site_name, tmp_path):
    site = engine_site(tmp_path, site_name, busybox, f"""\
        worker:
          name: {site_name}-worker
          command: [httpd, -f, -p, "8080"]
          healthcheck: {{test: "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1", interval: 250ms,
                        timeout: 2s, retries: 4, start_period: 1m}}
          stop_signal: quit
          ports: ["127.0.0.1:18080:8080", "18081:8081/udp"]
          log_driver: json-file
          log_options: {{max-size: 10m, max-file: 3}}
        """, top="network: {links: []}\n")

    spec, container = create(docker_client, busybox, site)
    config, host = container.attrs["Config"], container.attrs["HostConfig"]

    assert config["Healthcheck"] == {
        "Test": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1"],
        "Interval": NS // 4, "Timeout": 2 * NS, "Retries": 4, "StartPeriod": 60 * NS}
    assert config["StopSignal"] == "SIGQUIT"
    assert set(config["ExposedPorts"]) == {"8080/tcp", "8081/udp"}
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18080"}],
                                    "8081/udp": [{"HostIp": "", "HostPort": "18081"}]}
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "3", "max-size": "10m"}}
    assert config["Labels"][LABEL_HASH] == spec.hash


def test_exec_array_healthcheck_is_stored_as_cmd(docker_client, busybox, site_name, tmp_path):
    site = engine_site(tmp_path, site_name, busybox, f"""\
        celery:
          name: {site_name}-celery
          command: [sleep, "600"]
          healthcheck: {{test: ["true"]}}
        """, top="network: {links: []}\n")

    spec, container = create(docker_client, busybox, site)

    assert container.attrs["Config"]["Healthcheck"]["Test"] == ["CMD", "true"]
    assert container.attrs["Config"]["Cmd"] == ["sleep", "600"]
    assert container.attrs["Config"]["Labels"][LABEL_ROLE] == "celery"


def capability_lines(container) -> dict:
    container.start()
    assert container.wait(timeout=30)["StatusCode"] == 0, container.logs().decode()
    return dict(line.split(":\t") for line in container.logs().decode().splitlines())


def test_every_capability_is_dropped_and_no_new_privileges_is_set_in_the_kernel(
        docker_client, busybox, site_name, tmp_path):
    site = engine_site(tmp_path, site_name, busybox, f"""\
        worker:
          name: {site_name}-worker
          command: [grep, -E, "^(CapBnd|NoNewPrivs)", /proc/self/status]
        """, top="network: {links: []}\n")

    spec, container = create(docker_client, busybox, site)
    host = container.attrs["HostConfig"]

    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert not host.get("CapAdd")
    # What the process really holds, not only what the engine stored.
    assert capability_lines(container) == {"CapBnd": "0000000000000000", "NoNewPrivs": "1"}


def test_cap_add_gives_back_only_the_capabilities_named(docker_client, busybox, site_name, tmp_path):
    site = engine_site(tmp_path, site_name, busybox, f"""\
        worker:
          name: {site_name}-worker
          command: [grep, -E, "^(CapBnd|NoNewPrivs)", /proc/self/status]
          cap_add: [NET_BIND_SERVICE]
        """, top="network: {links: []}\n")

    spec, container = create(docker_client, busybox, site)

    assert container.attrs["HostConfig"]["CapDrop"] == ["ALL"]
    assert container.attrs["HostConfig"]["CapAdd"] == ["CAP_NET_BIND_SERVICE"]
    assert capability_lines(container) == {"CapBnd": f"{1 << 10:016x}", "NoNewPrivs": "1"}  # bit 10: NET_BIND_SERVICE


def test_a_container_allowed_root_keeps_the_engine_defaults(docker_client, busybox, site_name, tmp_path):
    site = engine_site(tmp_path, site_name, busybox, f"""\
        worker:
          name: {site_name}-worker
          user: "0:0"
          allow_root: true
        """, top="network: {links: []}\n")

    spec, container = create(docker_client, busybox, site)

    assert not container.attrs["HostConfig"].get("CapDrop")
    assert not container.attrs["HostConfig"].get("SecurityOpt")
