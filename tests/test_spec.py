"""What the engine is asked to create, and the hash that says whether a container drifted.

The hash decides whether a running container is adopted or recreated, so it must be
the same in every process, blind to how the YAML is written, changed by everything
the engine is asked for, and unchanged by what only the daemon uses. Pure: no engine.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from supervisor.config import load_site
from supervisor.model import Bind, Container, Healthcheck, Network, Port, Probe, RestartPolicy
from supervisor.spec import (LABEL_HASH, LABEL_ROLE, LABEL_SITE, ContainerSpec, desired_specs, oneshot_create_kwargs,
                             spec_hash)

ROOT = Path(__file__).resolve().parent.parent
IMAGE_ID = "sha256:" + "ab" * 32
PRE_CONFINEMENT_HASH = "88eb0f702c4d7daa2ce9c3bf"  # BASE's hash before containers dropped their capabilities

BASE = Container(
    role="worker", name="indico-worker", image="indico-worker:latest", pull="missing", command=("run",),
    uid=1000, gid=1000,
    binds=(Bind("/srv/indico/data", "/opt/indico/data"), Bind("/srv/indico/scratch", "/opt/indico/scratch"),
           Bind("/etc/ssl/indico", "/etc/ssl/indico", read_only=True)),
    network=Network(links=(("indico-db", "indico-db"), ("indico-redis", "redis"))),
    env=(("INDICO_DB_PASSWORD", "s3cret"), ("INDICO_SITE", "events.example.org")),
    ports=(Port("127.0.0.1", 8080, 8080),),
    stop_signal="SIGTERM", healthcheck=Healthcheck(("CMD", "true")),
    log_driver="json-file", log_options=(("max-size", "10m"),),
    probe=Probe("http", port=8080),
)


def env_with(**changes: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({**dict(BASE.env), **changes}.items()))


def binds_with(index: int, **changes) -> tuple[Bind, ...]:
    binds = list(BASE.binds)
    binds[index] = replace(binds[index], **changes)
    return tuple(binds)


ENGINE_CHANGES = {
    "image": replace(BASE, image="indico-worker:v3.3"),
    "command": replace(BASE, command=("celery",)),
    "command_none_keeps_image_cmd": replace(BASE, command=None),
    "uid": replace(BASE, uid=1001),
    "gid": replace(BASE, gid=1001),
    "data_bind_host": replace(BASE, binds=binds_with(0, host="/srv/other/data")),
    "scratch_bind_host": replace(BASE, binds=binds_with(1, host="/srv/other/scratch")),
    "extra_bind_target": replace(BASE, binds=binds_with(2, target="/etc/ssl/other")),
    "extra_bind_read_only": replace(BASE, binds=binds_with(2, read_only=False)),
    "one_more_bind": replace(BASE, binds=BASE.binds + (Bind("/srv/logs", "/var/log/indico"),)),
    "one_bind_less": replace(BASE, binds=BASE.binds[:2]),
    "link_added": replace(BASE, network=Network(links=BASE.network.links + (("indico-mail", "indico-mail"),))),
    "link_alias": replace(BASE, network=Network(links=(("indico-db", "db"), ("indico-redis", "redis")))),
    "network_name": replace(BASE, network=Network(name="indico-net")),
    "network_name_changed": None,  # filled below: from one named network to another
    "env_value": replace(BASE, env=env_with(INDICO_SITE="indico.example.org")),
    "env_secret_value": replace(BASE, env=env_with(INDICO_DB_PASSWORD="n3w-s3cret")),
    "env_added": replace(BASE, env=env_with(LOG_LEVEL="debug")),
    "port_host_side": replace(BASE, ports=(Port("127.0.0.1", 8081, 8080),)),
    "port_ip": replace(BASE, ports=(Port(None, 8080, 8080),)),
    "port_protocol": replace(BASE, ports=(Port("127.0.0.1", 8080, 8080, "udp"),)),
    "log_driver": replace(BASE, log_driver="journald"),
    "log_options": replace(BASE, log_options=(("max-size", "50m"),)),
    "healthcheck_test": replace(BASE, healthcheck=Healthcheck(("CMD-SHELL", "wget -q localhost:8080"))),
    "healthcheck_interval": replace(BASE, healthcheck=Healthcheck(("CMD", "true"), interval=30.0)),
    "healthcheck_removed": replace(BASE, healthcheck=None),
    "stop_signal": replace(BASE, stop_signal="SIGQUIT"),
    "name": replace(BASE, name="indico-worker-2"),
    "allow_root": replace(BASE, allow_root=True),  # keeps the engine's default capabilities
    "cap_add": replace(BASE, cap_add=("CAP_NET_BIND_SERVICE",)),
}
ENGINE_CHANGES["network_name_changed"] = replace(BASE, network=Network(name="indico-net-2"))

DAEMON_ONLY_CHANGES = {
    "restart_policy": replace(BASE, restart=RestartPolicy(backoff=5.0, max_backoff=600.0, max_restarts=3)),
    "stop_timeout": replace(BASE, stop_timeout=300.0),
    "probe": replace(BASE, probe=Probe("tcp", port=9090, interval=1.0)),
    "no_probe": replace(BASE, probe=None),
    "enabled": replace(BASE, enabled=False),
    "pull": replace(BASE, pull="always"),
}


@pytest.mark.parametrize("changed", ENGINE_CHANGES.values(), ids=ENGINE_CHANGES.keys())
def test_hash_changes_with_every_setting_the_engine_is_asked_for(changed):
    assert spec_hash(changed, IMAGE_ID) != spec_hash(BASE, IMAGE_ID)


def test_every_engine_change_gives_its_own_hash():
    hashes = {spec_hash(c, IMAGE_ID) for c in ENGINE_CHANGES.values()} | {spec_hash(BASE, IMAGE_ID)}
    assert len(hashes) == len(ENGINE_CHANGES) + 1


def test_hash_changes_with_the_resolved_image_id():
    assert spec_hash(BASE, "sha256:" + "cd" * 32) != spec_hash(BASE, IMAGE_ID)
    assert spec_hash(BASE, None) != spec_hash(BASE, IMAGE_ID)


@pytest.mark.parametrize("changed", DAEMON_ONLY_CHANGES.values(), ids=DAEMON_ONLY_CHANGES.keys())
def test_hash_ignores_what_only_the_daemon_uses(changed):
    assert spec_hash(changed, IMAGE_ID) == spec_hash(BASE, IMAGE_ID)


def test_hash_is_a_short_hex_digest_equal_for_equal_settings():
    again = replace(BASE, env=tuple(BASE.env), binds=tuple(BASE.binds))
    assert spec_hash(again, IMAGE_ID) == spec_hash(BASE, IMAGE_ID)
    # A label value the engine and an admin's `docker ps --filter` both read as is.
    assert re.fullmatch(r"[0-9a-f]{24}", spec_hash(BASE, IMAGE_ID))


# Whole files: YAML key order must not matter.

ORDERED = """\
site: indico
image: indico-worker:latest
user: "1000:1000"
volumes: {data: "@DATA@", scratch: "@SCRATCH@", extra: ["@DATA@:/etc/extra:ro"]}
network: {links: [indico-db, indico-redis]}
env: {INDICO_SITE: events.example.org, LOG_LEVEL: info}
log_driver: json-file
log_options: {max-size: 10m, max-file: "3"}
containers:
  worker:
    env: {WORKERS: 4, A_FIRST: x}
    ports: ["127.0.0.1:8080:8080"]
    stop_signal: SIGTERM
    healthcheck: {test: [CMD, "true"], interval: 10s, retries: 3}
    health: {http: {port: 8080, path: /}, interval: 10s}
  celery:
    stop_timeout: 300s
"""
SHUFFLED = """\
containers:
  celery:
    stop_timeout: 300s
  worker:
    health: {interval: 10s, http: {path: /, port: 8080}}
    healthcheck: {retries: 3, interval: 10s, test: [CMD, "true"]}
    stop_signal: SIGTERM
    ports: ["127.0.0.1:8080:8080"]
    env: {A_FIRST: x, WORKERS: 4}
log_options: {max-file: "3", max-size: 10m}
log_driver: json-file
env: {LOG_LEVEL: info, INDICO_SITE: events.example.org}
network: {links: [indico-db, indico-redis]}
volumes: {extra: ["@DATA@:/etc/extra:ro"], scratch: "@SCRATCH@", data: "@DATA@"}
user: "1000:1000"
image: indico-worker:latest
site: indico
"""


def write_site(tmp_path: Path, text: str, name: str) -> Path:
    for d in ("data", "scratch"):
        (tmp_path / d).mkdir(exist_ok=True)
    file = tmp_path / name
    file.write_text(textwrap.dedent(text).replace("@DATA@", str(tmp_path / "data"))
                    .replace("@SCRATCH@", str(tmp_path / "scratch")))
    return file


def hashes_of(file: Path) -> dict[str, str]:
    return {role: spec.hash for role, spec in desired_specs(load_site(str(file)), {"indico-worker:latest": IMAGE_ID}).items()}


def test_hash_does_not_depend_on_yaml_key_order(tmp_path):
    ordered = hashes_of(write_site(tmp_path, ORDERED, "ordered.yaml"))
    shuffled = hashes_of(write_site(tmp_path, SHUFFLED, "shuffled.yaml"))

    assert ordered == shuffled
    assert set(ordered) == {"worker", "celery"}


@pytest.mark.parametrize("seed", ["0", "1", "4242"])
def test_hash_is_the_same_in_a_fresh_process_whatever_its_hash_seed(tmp_path, seed):
    file = write_site(tmp_path, ORDERED, "site.yaml")
    script = ("import json, sys\n"
              "from supervisor.config import load_site\n"
              "from supervisor.spec import desired_specs\n"
              "site = load_site(sys.argv[1])\n"
              f"print(json.dumps({{r: s.hash for r, s in desired_specs(site, {{'indico-worker:latest': {IMAGE_ID!r}}}).items()}}))\n")
    env = {**os.environ, "PYTHONHASHSEED": seed}

    result = subprocess.run([sys.executable, "-c", script, str(file)], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=True)

    assert json.loads(result.stdout) == hashes_of(file)


def test_hash_is_the_same_on_every_call():
    assert len({spec_hash(BASE, IMAGE_ID) for _ in range(5)}) == 1
    assert ContainerSpec("indico", BASE, IMAGE_ID).hash == spec_hash(BASE, IMAGE_ID)


# create_kwargs: what `client.containers.create(**kwargs)` receives.

def test_create_kwargs_never_let_the_engine_restart_the_container():
    assert ContainerSpec("indico", BASE, IMAGE_ID).create_kwargs()["restart_policy"] == {"Name": "no"}


def test_create_kwargs_label_the_container_with_site_role_and_hash():
    spec = ContainerSpec("indico-prod", BASE, IMAGE_ID)
    assert spec.create_kwargs()["labels"] == {LABEL_SITE: "indico-prod", LABEL_ROLE: "worker", LABEL_HASH: spec.hash}
    assert LABEL_SITE == "io.indico-supervisor.site"


def test_create_kwargs_use_bind_mounts_not_legacy_volumes():
    kwargs = ContainerSpec("indico", BASE, IMAGE_ID).create_kwargs()
    assert kwargs["mounts"] == [
        {"Type": "bind", "Source": "/srv/indico/data", "Target": "/opt/indico/data", "ReadOnly": False},
        {"Type": "bind", "Source": "/srv/indico/scratch", "Target": "/opt/indico/scratch", "ReadOnly": False},
        {"Type": "bind", "Source": "/etc/ssl/indico", "Target": "/etc/ssl/indico", "ReadOnly": True},
    ]
    assert "volumes" not in kwargs


def test_create_kwargs_carry_the_readme_docker_run_settings():
    kwargs = ContainerSpec("indico", BASE, IMAGE_ID).create_kwargs()
    assert kwargs["image"] == "indico-worker:latest"
    assert kwargs["name"] == "indico-worker"
    assert kwargs["command"] == ["run"]
    assert kwargs["user"] == "1000:1000"
    assert kwargs["environment"] == {"INDICO_DB_PASSWORD": "s3cret", "INDICO_SITE": "events.example.org"}
    assert kwargs["links"] == {"indico-db": "indico-db", "indico-redis": "redis"}
    assert "network" not in kwargs
    assert kwargs["ports"] == {"8080/tcp": ("127.0.0.1", 8080)}
    assert kwargs["stop_signal"] == "SIGTERM"
    assert kwargs["log_config"] == {"type": "json-file", "config": {"max-size": "10m"}}
    assert kwargs["healthcheck"] == {"test": ["CMD", "true"], "interval": 10_000_000_000, "timeout": 5_000_000_000,
                                     "retries": 3, "start_period": 0}
    assert kwargs["detach"] is True


def test_create_kwargs_leave_out_what_is_not_set():
    bare = replace(BASE, command=None, network=Network(name="indico-net"), ports=(), stop_signal=None,
                   healthcheck=None, log_driver=None, log_options=())
    kwargs = ContainerSpec("indico", bare, IMAGE_ID).create_kwargs()
    assert kwargs["command"] is None  # the image's own CMD
    assert kwargs["network"] == "indico-net"
    for key in ("links", "ports", "stop_signal", "healthcheck", "log_config"):
        assert key not in kwargs


def test_create_kwargs_drop_every_capability_and_forbid_gaining_privileges():
    kwargs = ContainerSpec("indico", BASE, IMAGE_ID).create_kwargs()
    assert kwargs["cap_drop"] == ["ALL"]
    assert kwargs["security_opt"] == ["no-new-privileges"]
    assert "cap_add" not in kwargs


def test_create_kwargs_add_back_only_the_capabilities_named():
    kwargs = ContainerSpec("indico", replace(BASE, cap_add=("CAP_NET_BIND_SERVICE",)), IMAGE_ID).create_kwargs()
    assert (kwargs["cap_drop"], kwargs["cap_add"]) == (["ALL"], ["CAP_NET_BIND_SERVICE"])


def test_a_container_allowed_root_keeps_the_engine_default_capabilities():
    kwargs = ContainerSpec("indico", replace(BASE, uid=0, allow_root=True), IMAGE_ID).create_kwargs()
    for key in ("cap_drop", "security_opt", "cap_add"):
        assert key not in kwargs


def test_a_oneshot_job_is_confined_like_its_role():
    kwargs = oneshot_create_kwargs("indico", replace(BASE, cap_add=("CAP_CHOWN",)), ["indico", "db", "prepare"], "job")
    assert kwargs["cap_drop"] == ["ALL"] and kwargs["security_opt"] == ["no-new-privileges"]
    assert kwargs["cap_add"] == ["CAP_CHOWN"]


def test_the_capability_drop_changes_the_hash_of_a_container_created_before_it():
    # An upgrade recreates each container once, confined; never adopts an unconfined one as current.
    assert spec_hash(BASE, IMAGE_ID) != PRE_CONFINEMENT_HASH
