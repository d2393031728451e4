"""The site file, as an admin meets it through `indico-supervisor check-config`.

Every mistake goes through the real CLI entry point and must come back as exit
status 2 with the file name, the exact key path, the offending value (when there
is one and it is not a secret) and a hint, never as a traceback. No engine here.
"""
from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from supervisor.cli import main
from supervisor.config import load_site
from supervisor.durations import parse_duration
from supervisor.model import Bind, Network, RestartPolicy

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "site.yaml"

# A valid head most cases build on; @DATA@ and @SCRATCH@ become real tmp dirs.
HEAD = """\
user: "1000:1000"
volumes: {data: "@DATA@", scratch: "@SCRATCH@"}
"""
NO_VALUE = object()


def write_site(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    """Write YAML to tmp_path, with @DATA@/@SCRATCH@ pointing at existing tmp dirs."""
    data, scratch = tmp_path / "data", tmp_path / "scratch"
    data.mkdir(exist_ok=True)
    scratch.mkdir(exist_ok=True)
    file = tmp_path / name
    file.write_text(textwrap.dedent(text).replace("@DATA@", str(data)).replace("@SCRATCH@", str(scratch)))
    return file


def check_config(file: Path, capsys) -> tuple[int, str, str]:
    status = main(["check-config", "--config", str(file)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


def problem_lines(err: str, path: str) -> list[str]:
    where = path or "(top level)"
    found = [line for line in err.splitlines()
             if line.startswith(f"  {where} = ") or line.startswith(f"  {where}: ")]
    assert found, f"no problem reported at {where!r} in:\n{err}"
    return found


@dataclass
class Mistake:
    yaml: str
    path: str
    value: object  # what the admin wrote there, as shown (repr); NO_VALUE when absent or hidden
    hint: str

    def __str__(self) -> str:
        return self.path


MISTAKES = {
    "string_where_a_number_is_expected": Mistake(
        HEAD + "restart: {max_restarts: ten}\ncontainers: {worker: {}}\n",
        "restart.max_restarts", "ten", "expected a whole number from 0"),
    "string_where_a_retry_count_is_expected": Mistake(
        HEAD + "containers:\n  worker:\n    health: {tcp: {port: 8080}, retries: three}\n",
        "containers.worker.health.retries", "three", "expected a whole number from 1"),
    "list_where_a_mapping_is_expected": Mistake(
        HEAD + "restart: [1s, 5m]\ncontainers: {worker: {}}\n",
        "restart", ["1s", "5m"], "expected a mapping"),
    "missing_user": Mistake(
        'volumes: {data: "@DATA@", scratch: "@SCRATCH@"}\ncontainers: {worker: {}}\n',
        "user", NO_VALUE, 'set user: "UID:GID"'),
    "unquoted_user_33_33_read_by_yaml_as_base_60_number": Mistake(
        'user: 33:33\nvolumes: {data: "@DATA@", scratch: "@SCRATCH@"}\ncontainers: {worker: {}}\n',
        "user", 2013, "quoted"),
    "user_without_gid": Mistake(
        'user: "1000"\nvolumes: {data: "@DATA@", scratch: "@SCRATCH@"}\ncontainers: {worker: {}}\n',
        "user", "1000", 'both parts, e.g. "1000:1000"'),
    "user_by_account_name": Mistake(
        'user: "indico:indico"\nvolumes: {data: "@DATA@", scratch: "@SCRATCH@"}\ncontainers: {worker: {}}\n',
        "user", "indico:indico", 'expected numeric "UID:GID"'),
    "root_user": Mistake(
        'user: "0:0"\nvolumes: {data: "@DATA@", scratch: "@SCRATCH@"}\ncontainers: {worker: {}}\n',
        "user", "0:0", "allow_root: true"),
    "key_given_twice": Mistake(
        HEAD + "image: indico-worker:3.2\ncontainers: {worker: {}}\nimage: indico-worker:3.3\n",
        "", NO_VALUE, "the key 'image' is given twice in one mapping (first on line 3); keep one"),
    "root_group": Mistake(
        'user: "1000:0"\nvolumes: {data: "@DATA@", scratch: "@SCRATCH@"}\ncontainers: {worker: {}}\n',
        "user", "1000:0", "GID 0 (root's group) is refused"),
    "celery_as_root_even_with_allow_root": Mistake(
        HEAD + 'containers:\n  worker: {}\n  celery: {user: "0:0", allow_root: true}\n',
        "containers.celery.user", "0:0", "celery will not run with UID 0 (root)"),
    "duration_in_words": Mistake(
        HEAD + "stop: {timeout: 10 minutes}\ncontainers: {worker: {}}\n",
        "stop.timeout", "10 minutes", "a duration such as 250ms, 10s, 5m or 1h"),
    "negative_probe_interval": Mistake(
        HEAD + "containers:\n  worker:\n    health: {tcp: {port: 8080}, interval: -5}\n",
        "containers.worker.health.interval", -5, "a duration such as"),
    "zero_probe_interval": Mistake(
        HEAD + "containers:\n  worker:\n    health: {tcp: {port: 8080}, interval: 0s}\n",
        "containers.worker.health.interval", "0s", "must be longer than zero"),
    "unknown_top_level_key_imgae": Mistake(
        HEAD + "imgae: indico-worker:v3\ncontainers: {worker: {}}\n",
        "imgae", NO_VALUE, "did you mean 'image'?"),
    "site_level_stop_inside_a_container": Mistake(
        HEAD + "containers:\n  worker: {stop: 60s}\n",
        "containers.worker.stop", NO_VALUE, "did you mean 'stop_timeout'?"),
    "unknown_key_with_no_near_match": Mistake(
        HEAD + "containers:\n  worker: {replicas: 3}\n",
        "containers.worker.replicas", NO_VALUE, "allowed here: image, pull, command"),
    "extra_bind_without_container_side": Mistake(
        HEAD + 'containers:\n  worker:\n    volumes: {extra: ["@DATA@:/etc/a", "/srv/certs"]}\n',
        "containers.worker.volumes.extra[1]", "/srv/certs", '"HOST:CONTAINER" or "HOST:CONTAINER:ro"'),
    "extra_volume_with_a_bad_name": Mistake(
        HEAD + 'containers:\n  worker:\n    volumes: {extra: ["pg data:/var/lib/postgresql/data"]}\n',
        "containers.worker.volumes.extra[0]", "pg data:/var/lib/postgresql/data", "a volume name is"),
    "extra_bind_with_bad_mode": Mistake(
        'user: "1000:1000"\nvolumes: {data: "@DATA@", scratch: "@SCRATCH@", extra: ["certs:/etc/certs:readonly"]}\n'
        "containers: {worker: {}}\n",
        "volumes.extra[0]", "certs:/etc/certs:readonly", "not a bind"),
    "extra_bind_with_relative_container_side": Mistake(
        HEAD + 'containers:\n  worker:\n    volumes: {extra: ["@DATA@:etc/indico"]}\n',
        "containers.worker.volumes.extra[0]", "@DATA@:etc/indico", "container side must be an absolute path"),
    "extra_bind_of_missing_host_path": Mistake(
        HEAD + 'containers:\n  worker:\n    volumes: {extra: ["/nonexistent/certs:/etc/certs:ro"]}\n',
        "containers.worker.volumes.extra[0]", "/nonexistent/certs:/etc/certs:ro", "create it first"),
    "data_directory_missing_on_disk": Mistake(
        'user: "1000:1000"\nvolumes: {data: /nonexistent/indico-data, scratch: "@SCRATCH@"}\n'
        "containers: {worker: {}}\n",
        "volumes.data", "/nonexistent/indico-data", "create it, owned by the container user"),
    "scratch_directory_not_given": Mistake(
        'user: "1000:1000"\nvolumes: {data: "@DATA@"}\ncontainers: {worker: {}}\n',
        "volumes.scratch", NO_VALUE, "the host directory bound to /opt/indico/scratch"),
    "two_containers_with_the_same_name": Mistake(
        HEAD + "containers:\n  worker: {name: indico-app}\n  celery: {name: indico-app}\n",
        "containers.celery.name", "indico-app", "give each container its own name"),
    "generic_role_without_image": Mistake(
        HEAD + "containers:\n  httpd: {command: [httpd-foreground]}\n",
        "containers.httpd.image", NO_VALUE, "must name an image"),
    "generic_role_without_command": Mistake(
        HEAD + "containers:\n  httpd: {image: 'indico-httpd:latest'}\n",
        "containers.httpd.command", NO_VALUE, "must name a command"),
    "role_name_in_capitals": Mistake(
        HEAD + "containers:\n  Worker: {}\n",
        "containers.Worker", "Worker", "lower-case letters"),
    "bad_pull_value": Mistake(
        HEAD + "pull: sometimes\ncontainers: {worker: {}}\n",
        "pull", "sometimes", "expected one of always, missing, never"),
    "port_without_host_side": Mistake(
        HEAD + 'containers:\n  worker: {ports: ["8080"]}\n',
        "containers.worker.ports[0]", "8080", '"[IP:]HOST:CONTAINER[/tcp|udp]"'),
    "port_out_of_range": Mistake(
        HEAD + 'containers:\n  worker: {ports: ["127.0.0.1:70000:8080"]}\n',
        "containers.worker.ports[0]", "127.0.0.1:70000:8080", "ports 1-65535"),
    "unquoted_port_pair_read_by_yaml_as_number": Mistake(
        HEAD + "containers:\n  worker: {ports: [22:22]}\n",
        "containers.worker.ports[0]", 1342, 'write it quoted, "HOST:CONTAINER"'),
    "ports_as_a_single_string": Mistake(
        HEAD + 'containers:\n  worker: {ports: "8080:8080"}\n',
        "containers.worker.ports", "8080:8080", "expected a list"),
    "health_with_two_kinds": Mistake(
        HEAD + "containers:\n  worker:\n    health: {http: {port: 8080}, tcp: {port: 8080}}\n",
        "containers.worker.health", NO_VALUE, "give exactly one of http"),
    "health_http_without_port": Mistake(
        HEAD + "containers:\n  worker:\n    health: {http: {path: /ping}}\n",
        "containers.worker.health.http.port", NO_VALUE, "missing; the port to probe"),
    "healthcheck_without_test": Mistake(
        HEAD + "containers:\n  worker:\n    healthcheck: {interval: 10s}\n",
        "containers.worker.healthcheck.test", None, "a command as a list, or one shell command line"),
    "bad_stop_signal": Mistake(
        HEAD + "containers:\n  worker: {stop_signal: SIGFOO}\n",
        "containers.worker.stop_signal", "SIGFOO", "a signal name such as SIGTERM"),
    "network_with_both_links_and_name": Mistake(
        HEAD + "network: {links: [indico-db], name: indico-net}\ncontainers: {worker: {}}\n",
        "network", NO_VALUE, "either links"),
    "link_with_a_space": Mistake(
        HEAD + "network: {links: [indico-db, indico redis]}\ncontainers: {worker: {}}\n",
        "network.links[1]", "indico redis", '"NAME" or "NAME:ALIAS"'),
    "env_name_starting_with_a_digit": Mistake(
        HEAD + "containers:\n  worker: {env: {1ST_HOST: a}}\n",
        "containers.worker.env.1ST_HOST", "1ST_HOST", "not a valid environment variable name"),
    "max_backoff_smaller_than_backoff": Mistake(
        HEAD + "restart: {backoff: 5s, max_backoff: 1s}\ncontainers: {worker: {}}\n",
        "restart.max_backoff", "1s", "must be at least backoff (5s)"),
    "bad_stop_on_exit": Mistake(
        HEAD + "stop: {on_exit: kill}\ncontainers: {worker: {}}\n",
        "stop.on_exit", "kill", "expected one of stop, leave"),
    "enabled_not_a_boolean": Mistake(
        HEAD + "containers:\n  celery: {enabled: maybe}\n",
        "containers.celery.enabled", "maybe", "expected true or false"),
    "empty_command_list": Mistake(
        HEAD + "containers:\n  worker: {command: []}\n",
        "containers.worker.command", [], "a command as a list"),
    "log_option_that_is_a_list": Mistake(
        HEAD + "log_options: {max-size: [10m]}\ncontainers: {worker: {}}\n",
        "log_options.max-size", ["10m"], "expected a string"),
    "site_name_with_a_space": Mistake(
        HEAD + "site: indico prod\ncontainers: {worker: {}}\n",
        "site", "indico prod", "a name of letters, digits"),
    "containers_missing": Mistake(
        HEAD, "containers", NO_VALUE, "list at least `worker:`"),
    "containers_empty": Mistake(
        HEAD + "containers: {}\n", "containers", NO_VALUE, "list at least `worker:`"),
    "containers_as_a_list": Mistake(
        HEAD + "containers: [worker, celery]\n", "containers", ["worker", "celery"], "expected a mapping"),
}


@pytest.mark.parametrize("mistake", MISTAKES.values(), ids=MISTAKES.keys())
def test_check_config_reports_each_mistake_with_file_key_path_value_and_hint(tmp_path, capsys, mistake):
    file = write_site(tmp_path, mistake.yaml)

    status, out, err = check_config(file, capsys)

    assert status == 2
    assert err.startswith(f"{file}: ")
    lines = problem_lines(err, mistake.path)
    where = mistake.path or "(top level)"
    if mistake.value is NO_VALUE:
        prefix = f"  {where}: "
    else:
        value = mistake.value
        if isinstance(value, str):
            value = value.replace("@DATA@", str(tmp_path / "data"))
        prefix = f"  {where} = {value!r}: "
    assert any(line.startswith(prefix) and mistake.hint in line for line in lines), err


def test_at_least_twenty_distinct_mistakes_are_specified():
    assert len(MISTAKES) >= 20
    assert len({m.path for m in MISTAKES.values()}) >= 20


def test_unquoted_1000_1000_reaches_us_as_a_string_and_is_accepted(tmp_path):
    # PyYAML only reads a pair as base 60 when the last part is below 60 (33:33 is 2013).
    file = write_site(tmp_path, 'user: 1000:1000\nvolumes: {data: "@DATA@", scratch: "@SCRATCH@"}\n'
                                "containers: {worker: {}}\n")
    (worker,) = load_site(str(file)).containers
    assert (worker.uid, worker.gid) == (1000, 1000)


def test_root_is_accepted_for_worker_with_allow_root(tmp_path, capsys):
    file = write_site(tmp_path, HEAD + 'containers:\n  worker: {user: "0:0", allow_root: true}\n')

    status, out, err = check_config(file, capsys)

    assert (status, err) == (0, "")
    assert "  user     0:0" in out


def test_env_value_that_is_a_mapping_is_reported_without_echoing_it(tmp_path, capsys):
    file = write_site(tmp_path, HEAD + "containers:\n  worker:\n    env: {DB_PASSWORD: {value: hunter2-secret}}\n")

    status, out, err = check_config(file, capsys)

    assert status == 2
    (line,) = problem_lines(err, "containers.worker.env.DB_PASSWORD")
    assert line == "  containers.worker.env.DB_PASSWORD: expected a string or number, got a dict"
    assert "hunter2" not in out + err


def test_env_written_as_a_list_is_reported_without_echoing_its_secrets(tmp_path, capsys):
    file = write_site(tmp_path, HEAD + 'env: ["DB_PASSWORD=hunter2-secret"]\ncontainers: {worker: {}}\n')

    status, out, err = check_config(file, capsys)

    assert status == 2
    (line,) = problem_lines(err, "env")
    assert line.startswith("  env: expected a mapping") and "NAME: value" in line
    assert "hunter2" not in out + err


def test_empty_file_is_reported_with_a_hint(tmp_path, capsys):
    file = tmp_path / "site.yaml"
    file.write_text("# nothing yet\n")

    status, out, err = check_config(file, capsys)

    assert status == 2
    assert err.splitlines() == [f"{file}: 1 problem", "  (top level): the file is empty; start from examples/site.yaml"]


def test_yaml_syntax_error_is_reported_with_its_line_number(tmp_path, capsys):
    file = write_site(tmp_path, HEAD + "containers:\n  worker:\n    env: {A: 1\n  celery: {}\n")

    status, out, err = check_config(file, capsys)

    assert status == 2
    assert err.startswith(f"{file}: 1 problem\n")
    (line,) = problem_lines(err, "")
    assert "not valid YAML: line 6, column" in line


def test_missing_file_is_reported_with_where_to_put_one(tmp_path, capsys):
    file = tmp_path / "nowhere" / "site.yaml"

    status, out, err = check_config(file, capsys)

    assert status == 2
    assert err.splitlines() == [
        f"{file}: 1 problem",
        "  (top level): file not found; copy examples/site.yaml there, or give another file with --config PATH"]


def test_a_file_with_several_mistakes_reports_all_of_them_at_once(tmp_path, capsys):
    file = write_site(tmp_path, """\
        imgae: indico-worker:v3
        user: 33:33
        pull: sometimes
        volumes: {data: /nonexistent/indico-data, scratch: "@SCRATCH@"}
        restart: {backoff: 5s, max_backoff: 1s}
        stop: {timeout: 10 minutes}
        containers:
          worker:
            stop: 60s
            ports: ["8080"]
            volumes: {extra: ["@DATA@:etc/indico"]}
          celery: {stop_signal: SIGFOO}
          httpd: {image: 'indico-httpd:latest'}
        """)

    status, out, err = check_config(file, capsys)

    assert status == 2
    expected = ["imgae", "user", "pull", "volumes.data", "restart.max_backoff", "stop.timeout",
                "containers.worker.stop", "containers.worker.ports[0]", "containers.worker.volumes.extra[0]",
                "containers.celery.stop_signal", "containers.httpd.command"]
    for path in expected:
        problem_lines(err, path)
    assert err.splitlines()[0] == f"{file}: {len(err.splitlines()) - 1} problems"
    assert len(err.splitlines()) - 1 >= len(expected)


# Positive cases: what a valid file resolves to.

def example_site(tmp_path: Path) -> Path:
    text = EXAMPLE.read_text()
    assert "/srv/indico/data" in text and "/srv/indico/scratch" in text
    return write_site(tmp_path, text.replace("/srv/indico/data", "@DATA@").replace("/srv/indico/scratch", "@SCRATCH@"))


def test_example_site_is_the_whole_site_db_redis_worker_celery_and_web_on_one_network(tmp_path):
    site = load_site(str(example_site(tmp_path)))

    roles = {container.role: container for container in site.containers}
    assert set(roles) == {"db", "redis", "worker", "celery", "web"}
    worker, celery, db, redis, web = (roles[r] for r in ("worker", "celery", "db", "redis", "web"))
    data, scratch = str(tmp_path / "data"), str(tmp_path / "scratch")
    binds = (Bind(data, "/opt/indico/data"), Bind(scratch, "/opt/indico/scratch"))
    assets = Bind("indico-assets", "/opt/indico/assets", named=True)
    assert site.name == "indico" and site.stop_on_exit == "stop"
    assert (worker.role, worker.name, worker.command) == ("worker", "indico-worker", ("run",))
    assert (celery.role, celery.name, celery.command) == ("celery", "indico-celery", ("celery",))
    for container in (worker, celery):
        assert (container.uid, container.gid, container.user) == (1000, 1000, "1000:1000")
        assert (container.image, container.pull) == ("indico-worker:latest", "missing")
        assert container.enabled
        assert container.depends_on == (("db", "healthy"), ("redis", "healthy"))
    assert worker.binds == binds + (assets,) and celery.binds == binds
    assert (worker.stop_timeout, celery.stop_timeout) == (60.0, 300.0)
    # The image's HEALTHCHECK watches both (a daemon http probe would get Indico's 404).
    assert worker.probe is None and celery.probe is None
    assert worker.restart == RestartPolicy(backoff=1.0, max_backoff=300.0, reset_after=60.0, max_restarts=10, window=600.0)
    # The official images, their data in named volumes, healthy when they answer.
    assert (db.image, db.name, db.user) == ("postgres:15", "indico-db", "999:999")
    assert db.binds == (Bind("indico-pgdata", "/var/lib/postgresql/data", named=True),)
    assert db.healthcheck.test[:2] == ("CMD", "pg_isready") and db.stop_signal == "SIGINT"
    assert (redis.image, redis.binds) == ("redis:7", (Bind("indico-redis", "/data", named=True),))
    assert redis.healthcheck.test == ("CMD", "redis-cli", "ping")
    # nginx in front: the worker's static files and the data directory, both read-only.
    assert (web.image, web.name, web.user) == ("nginx:1.27", "indico-web", "1000:1000")
    assert web.binds == (Bind(data, "/opt/indico/data", read_only=True),
                         Bind(scratch, "/opt/indico/scratch", read_only=True),
                         Bind("indico-assets", "/opt/indico/assets", read_only=True, named=True))
    assert {(p.host_port, p.container_port) for p in web.ports} == {(80, 80), (443, 443)}
    assert web.depends_on == (("worker", "healthy"),) and web.cap_add == ()
    assert web.command[:3] == ("nginx", "-c", "/opt/indico/data/etc/nginx.conf")
    for container in roles.values():
        assert container.network == Network(name="indico")  # the recommended site network


def test_container_env_is_merged_over_site_env(tmp_path):
    file = write_site(tmp_path, HEAD + textwrap.dedent("""\
        env: {INDICO_SITE: events.example.org, LOG_LEVEL: info, DEBUG: false}
        containers:
          worker: {env: {LOG_LEVEL: debug, WORKERS: 4}}
          celery: {}
        """))

    worker, celery = load_site(str(file)).containers

    assert dict(worker.env) == {"INDICO_SITE": "events.example.org", "LOG_LEVEL": "debug", "DEBUG": "false", "WORKERS": "4"}
    assert dict(celery.env) == {"INDICO_SITE": "events.example.org", "LOG_LEVEL": "info", "DEBUG": "false"}


def test_container_restart_keys_are_merged_over_site_restart(tmp_path):
    file = write_site(tmp_path, HEAD + textwrap.dedent("""\
        restart: {backoff: 2s, max_restarts: 5}
        containers:
          worker: {restart: {max_restarts: 20, window: 1h}}
          celery: {}
        """))

    worker, celery = load_site(str(file)).containers

    assert worker.restart == RestartPolicy(backoff=2.0, max_backoff=300.0, reset_after=60.0, max_restarts=20, window=3600.0)
    assert celery.restart == RestartPolicy(backoff=2.0, max_backoff=300.0, reset_after=60.0, max_restarts=5, window=600.0)


def test_relative_host_paths_resolve_against_the_config_files_directory(tmp_path, monkeypatch):
    conf = tmp_path / "etc"
    for d in ("etc/data", "etc/scratch", "etc/certs"):
        (tmp_path / d).mkdir(parents=True)
    (conf / "site.yaml").write_text('user: "1000:1000"\nvolumes: {data: data, scratch: ./scratch, extra: ["./certs:/etc/certs:ro"]}\n'
                                    "containers: {worker: {}}\n")
    monkeypatch.chdir("/")

    (worker,) = load_site(os.path.relpath(conf / "site.yaml", "/")).containers

    assert worker.binds == (Bind(str(conf / "data"), "/opt/indico/data"),
                            Bind(str(conf / "scratch"), "/opt/indico/scratch"),
                            Bind(str(conf / "certs"), "/etc/certs", read_only=True))


@pytest.mark.parametrize("written, seconds", [("250ms", 0.25), ("10s", 10.0), ("5m", 300.0), ("1h", 3600.0),
                                              (45, 45.0), (1.5, 1.5), ("90", 90.0)])
def test_durations_are_read_in_ms_s_m_h_or_bare_seconds(tmp_path, written, seconds):
    assert parse_duration(written) == seconds
    file = write_site(tmp_path, HEAD + f"containers:\n  worker: {{stop_timeout: {written}}}\n")
    (worker,) = load_site(str(file)).containers
    assert worker.stop_timeout == seconds


@pytest.mark.parametrize("written", ["10 minutes", "-1s", "1d", "", True, float("nan"), float("inf"), -3])
def test_durations_refuse_anything_else(written):
    with pytest.raises(ValueError):
        parse_duration(written)


def test_disabled_containers_are_resolved_but_not_enabled(tmp_path):
    file = write_site(tmp_path, HEAD + "containers:\n  worker: {}\n  celery: {enabled: false}\n")

    site = load_site(str(file))

    assert [c.role for c in site.containers] == ["worker", "celery"]
    assert [c.role for c in site.enabled()] == ["worker"]


def test_check_config_prints_the_resolved_containers_and_exits_0(tmp_path, capsys):
    file = example_site(tmp_path)

    status, out, err = check_config(file, capsys)

    assert (status, err) == (0, "")
    assert "site indico: 5 of 5 containers enabled" in out
    assert "start order: db -> redis -> worker -> celery -> web" in out
    assert "worker: indico-worker" in out and "celery: indico-celery" in out and "web: indico-web" in out
    assert "  command  run" in out and "  command  celery" in out
    assert f"  mount    {tmp_path / 'data'} -> /opt/indico/data" in out
    assert "  network  indico" in out
    assert out.rstrip().endswith(f"{file}: OK")


def test_check_config_masks_password_env_values(tmp_path, capsys):
    file = write_site(tmp_path, HEAD + "env: {INDICO_DB_PASSWORD: hunter2-secret, INDICO_SITE: events.example.org}\n"
                                       "containers: {worker: {}}\n")

    status, out, err = check_config(file, capsys)

    assert status == 0
    assert "  env      INDICO_DB_PASSWORD=***" in out
    assert "  env      INDICO_SITE=events.example.org" in out
    assert "hunter2" not in out + err
