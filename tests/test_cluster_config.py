"""The `cluster` section and per-container `singleton`: what check-config accepts, refuses and masks.

Every mistake goes through the real CLI entry point: exit 2, the file, the key path,
the value as written and a hint, no traceback.
"""
from __future__ import annotations

import socket

import pytest

from supervisor.config import load_site
from supervisor.spec import spec_hash
from tests.test_config import HEAD, NO_VALUE, Mistake, check_config, problem_lines, write_site

CLUSTER = "cluster: {redis: 'redis://:pw-of-the-lease-redis@10.0.0.5:6379/0', lease: 15s, host: host-a}\n"

CLUSTER_MISTAKES = {
    "singleton_without_cluster": Mistake(
        HEAD + "containers: {celery: {singleton: true}}\n",
        "containers.celery.singleton", True, "needs a `cluster:` section"),
    "singleton_false_without_cluster": Mistake(
        HEAD + "containers: {celery: {singleton: false}}\n",
        "containers.celery.singleton", False, "needs a `cluster:` section"),
    "singleton_not_a_boolean": Mistake(
        HEAD + CLUSTER + "containers: {celery: {singleton: yes-please}}\n",
        "containers.celery.singleton", "yes-please", "expected true or false"),
    "redis_url_with_another_scheme": Mistake(
        HEAD + "cluster: {redis: 'http://10.0.0.5:6379/0'}\ncontainers: {celery: {}}\n",
        "cluster.redis", "http://10.0.0.5:6379/0", "the scheme must be redis:// or rediss://"),
    "redis_url_without_host": Mistake(
        HEAD + "cluster: {redis: 'redis:///0'}\ncontainers: {celery: {}}\n",
        "cluster.redis", "redis:///0", "no host in the URL"),
    "redis_url_with_a_bad_port": Mistake(
        HEAD + "cluster: {redis: 'redis://10.0.0.5:sixty/0'}\ncontainers: {celery: {}}\n",
        "cluster.redis", "redis://10.0.0.5:sixty/0", "not a valid URL"),
    "redis_url_missing": Mistake(
        HEAD + "cluster: {lease: 15s}\ncontainers: {celery: {}}\n",
        "cluster.redis", NO_VALUE, "missing; a Redis URL"),
    "lease_under_three_seconds": Mistake(
        HEAD + "cluster: {redis: 'redis://10.0.0.5', lease: 2500ms}\ncontainers: {celery: {}}\n",
        "cluster.lease", "2500ms", "too short: at least 3s"),
    "lease_not_a_duration": Mistake(
        HEAD + "cluster: {redis: 'redis://10.0.0.5', lease: soon}\ncontainers: {celery: {}}\n",
        "cluster.lease", "soon", "expected a duration"),
    "unknown_cluster_key": Mistake(
        HEAD + "cluster: {redis: 'redis://10.0.0.5', leese: 15s}\ncontainers: {celery: {}}\n",
        "cluster.leese", NO_VALUE, "did you mean 'lease'?"),
    "host_with_a_space": Mistake(
        HEAD + "cluster: {redis: 'redis://10.0.0.5', host: 'host a'}\ncontainers: {celery: {}}\n",
        "cluster.host", "host a", "a host name"),
}


@pytest.mark.parametrize("mistake", CLUSTER_MISTAKES.values(), ids=CLUSTER_MISTAKES.keys())
def test_check_config_refuses_each_cluster_mistake_with_key_path_value_and_hint(tmp_path, capsys, mistake):
    file = write_site(tmp_path, mistake.yaml)

    status, out, err = check_config(file, capsys)

    assert status == 2
    assert err.startswith(f"{file}: ")
    where = mistake.path
    prefix = f"  {where}: " if mistake.value is NO_VALUE else f"  {where} = {mistake.value!r}: "
    assert any(line.startswith(prefix) and mistake.hint in line for line in problem_lines(err, where)), err


def test_celery_is_a_singleton_by_default_once_a_cluster_is_set(tmp_path):
    site = load_site(str(write_site(tmp_path, HEAD + CLUSTER + "containers: {worker: {}, celery: {}}\n")))

    assert site.cluster.redis == "redis://:pw-of-the-lease-redis@10.0.0.5:6379/0"
    assert (site.cluster.lease, site.cluster.lease_ms, site.cluster.host) == (15.0, 15000, "host-a")
    assert {c.role: c.singleton for c in site.containers} == {"worker": False, "celery": True}


def test_any_role_may_be_a_singleton_and_celery_may_opt_out(tmp_path):
    site = load_site(str(write_site(tmp_path, HEAD + CLUSTER + "containers: {worker: {singleton: true}, "
                                                                 "celery: {singleton: false}}\n")))

    assert {c.role: c.singleton for c in site.containers} == {"worker": True, "celery": False}


def test_without_a_cluster_nothing_is_a_singleton(tmp_path):
    site = load_site(str(write_site(tmp_path, HEAD + "containers: {worker: {}, celery: {}}\n")))

    assert site.cluster is None
    assert not any(c.singleton for c in site.containers)


def test_cluster_defaults_to_a_15s_lease_and_this_machines_hostname(tmp_path):
    site = load_site(str(write_site(tmp_path, HEAD + "cluster: {redis: 'rediss://redis.example.org'}\n"
                                                     "containers: {celery: {}}\n")))

    assert (site.cluster.lease, site.cluster.host) == (15.0, socket.gethostname())


def test_singleton_setting_leaves_the_spec_hash_alone(tmp_path):
    """Turning the lease on must not recreate every running container on upgrade."""
    plain = load_site(str(write_site(tmp_path, HEAD + "containers: {celery: {}}\n", "plain.yaml")))
    clustered = load_site(str(write_site(tmp_path, HEAD + CLUSTER + "containers: {celery: {}}\n", "c.yaml")))

    assert clustered.containers[0].singleton and not plain.containers[0].singleton
    assert spec_hash(plain.containers[0], "sha256:x") == spec_hash(clustered.containers[0], "sha256:x")


def test_check_config_shows_the_cluster_with_the_redis_password_masked(tmp_path, capsys):
    file = write_site(tmp_path, HEAD + CLUSTER + "containers: {worker: {}, celery: {}}\n")

    status, out, err = check_config(file, capsys)

    assert (status, err) == (0, "")
    assert "cluster: this host host-a, lease 15s in redis://:***@10.0.0.5:6379/0; singletons: celery" in out
    assert "pw-of-the-lease-redis" not in out


def test_a_refused_redis_url_never_shows_its_password(tmp_path, capsys):
    file = write_site(tmp_path, HEAD + "cluster: {redis: 'http://:pw-of-the-lease-redis@10.0.0.5'}\n"
                                       "containers: {celery: {}}\n")

    status, out, err = check_config(file, capsys)

    assert status == 2
    assert "cluster.redis" in err and "pw-of-the-lease-redis" not in out + err
