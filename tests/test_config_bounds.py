"""A site file that would take minutes or gigabytes to read is refused at once, with a problem naming it.

The daemon reads the file inside its one loop on SIGHUP, so a read that hangs or
grows stops the loop past systemd's WatchdogSec. check-config runs in a subprocess
here, with a generous timeout: a read that hangs (a FIFO) or runs away (an alias
bomb) fails the test by timing out instead of hanging the suite.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from supervisor import logs, yamlload
from supervisor.config import load_site
from supervisor.problems import ConfigError, show

HEAD = """\
user: "1000:1000"
volumes: {data: "@DATA@", scratch: "@SCRATCH@"}
"""

# Billion laughs: 9 levels of 9 aliases, 9^8 (43 million) strings once expanded, in a few hundred bytes.
ALIAS_BOMB = HEAD + """\
a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
containers: {worker: {command: [*g,*g,*g,*g,*g,*g,*g,*g,*g]}}
"""


def write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    for directory in ("data", "scratch"):
        (tmp_path / directory).mkdir(exist_ok=True)
    file = tmp_path / name
    file.write_text(text.replace("@DATA@", str(tmp_path / "data"))
                    .replace("@SCRATCH@", str(tmp_path / "scratch")))
    return file


def check_config(file: Path) -> subprocess.CompletedProcess:
    # 20 s is far past the target (under 2 s) and far short of what the bomb took before.
    done = subprocess.run([sys.executable, "-m", "supervisor", "check-config", "--config", str(file)],
                          capture_output=True, text=True, timeout=20)
    assert "Traceback" not in done.stdout + done.stderr
    return done


def test_an_alias_bomb_is_refused_with_a_problem_naming_the_file(tmp_path):
    file = write(tmp_path, ALIAS_BOMB)
    assert file.stat().st_size < 600  # with this test's long data and scratch paths in it

    done = check_config(file)

    assert done.returncode == 2
    assert str(file) in done.stderr
    assert "aliases (*name) expand to more than 100,000 values" in done.stderr


def test_a_file_over_one_mebibyte_is_refused_unread(tmp_path):
    file = write(tmp_path, HEAD + "containers: {worker: {}}\n")
    with open(file, "a") as stream:  # valid YAML all the way: only its size is wrong
        stream.write(("# " + "x" * 77 + "\n") * (50 * 1024 * 1024 // 80))

    done = check_config(file)

    assert done.returncode == 2
    assert f"{file}: 1 problem" in done.stderr
    assert "over the limit of 1,048,576 (1 MiB)" in done.stderr


def test_a_fifo_in_place_of_the_file_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "site.yaml"
    os.mkfifo(fifo)

    done = check_config(fifo)

    assert done.returncode == 2
    assert f"{fifo}: 1 problem" in done.stderr and "not a regular file" in done.stderr


def test_a_directory_in_place_of_the_file_is_refused(tmp_path):
    with_dir = tmp_path / "site.yaml"
    with_dir.mkdir()

    done = check_config(with_dir)

    assert done.returncode == 2 and "not a regular file" in done.stderr


def test_an_alias_that_contains_itself_is_refused(tmp_path):
    file = write(tmp_path, HEAD + "containers:\n  worker:\n    command: &loop [run, *loop]\n")

    done = check_config(file)

    assert done.returncode == 2
    assert "refers to a block that contains it" in done.stderr


def test_aliases_within_the_limit_still_work(tmp_path):
    file = write(tmp_path, HEAD + textwrap.dedent("""\
        env: &common {INDICO_LANG: en_GB}
        containers:
          worker: {env: *common}
          celery: {env: *common}
        """))

    site = load_site(str(file))

    assert [dict(c.env) for c in site.containers] == [{"INDICO_LANG": "en_GB"}] * 2


def test_merge_keys_repeat_a_block_and_its_keys_may_be_given_again(tmp_path):
    file = write(tmp_path, HEAD + textwrap.dedent("""\
        containers:
          web: &web
            image: indico-httpd:latest
            command: [httpd-foreground]
            env: {TZ: UTC}
            stop_timeout: 10s
          web-2:
            <<: *web
            name: indico-web-2
            stop_timeout: 20s
        """))

    site = load_site(str(file))

    second = site.container("web-2")
    assert (second.image, second.command, dict(second.env)) == ("indico-httpd:latest", ("httpd-foreground",),
                                                                 {"TZ": "UTC"})
    assert (second.name, second.stop_timeout) == ("indico-web-2", 20.0)


def test_merge_keys_from_a_list_of_blocks(tmp_path):
    file = write(tmp_path, HEAD + textwrap.dedent("""\
        containers:
          worker: &a {env: {TZ: UTC}}
          celery: &b {stop_timeout: 5s}
          cron:
            <<: [*a, *b]
            image: indico-worker:latest
            command: [cron]
        """))

    cron = load_site(str(file)).container("cron")

    assert dict(cron.env) == {"TZ": "UTC"} and cron.stop_timeout == 5.0


def test_a_key_given_twice_next_to_a_merge_key_is_still_refused(tmp_path):
    file = write(tmp_path, HEAD + textwrap.dedent("""\
        containers:
          worker: &w {env: {TZ: UTC}}
          celery:
            <<: *w
            stop_timeout: 5s
            stop_timeout: 6s
        """))

    done = check_config(file)

    assert done.returncode == 2
    assert "the key 'stop_timeout' is given twice in one mapping (first on line 7); keep one" in done.stderr


def test_a_problem_shows_a_huge_value_without_writing_it_all_out():
    class Counted:
        calls = 0

        def __repr__(self) -> str:
            Counted.calls += 1
            return "x"

    value = {"items": [Counted() for _ in range(10_000)]}

    shown = show(value)

    assert shown.startswith("{'items': [x, x, x") and shown.endswith("...") and len(shown) == 200
    assert Counted.calls < 200


def test_a_problem_shows_a_small_value_as_repr():
    value = {"port": 8080, "hosts": ["a", "b"], "pair": (1,)}
    assert show(value) == repr(value)
    assert show("x" * 300) == repr("x" * 300)[:197] + "..."


def test_the_secret_walk_visits_a_shared_block_once():
    class Leaf:
        calls = 0

        def __str__(self) -> str:
            Leaf.calls += 1
            return "plain"

    block: object = [Leaf()] * 10
    for _ in range(5):  # 10^6 leaves once expanded, 6 distinct lists
        block = [block] * 10

    assert logs.secrets_in_tree({"command": block, "DB_PASSWORD": "hunter2hunter2"}) == {"hunter2hunter2"}
    assert Leaf.calls <= 10


def test_the_daemon_s_loader_refuses_the_bomb_as_one_problem_of_the_file(tmp_path):
    file = write(tmp_path, ALIAS_BOMB)

    with pytest.raises(ConfigError) as refused:
        load_site(str(file))

    assert refused.value.file == str(file)
    assert [p.path for p in refused.value.problems] == [""]


def test_a_file_of_half_a_million_values_under_one_mebibyte_is_refused_early(tmp_path):
    # No alias at all: the values as written are counted while they are read, not after.
    file = write(tmp_path, HEAD + "containers: {worker: {}}\nx: [" + "a," * 500_000 + "a]\n")
    assert file.stat().st_size < yamlload.MAX_BYTES

    done = check_config(file)

    assert done.returncode == 2
    assert "it holds more than 100,000 values" in done.stderr


LOADERS = {"libyaml_events": yamlload.BoundedLoader, "pure_python": yamlload.PythonLoader}


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
def test_both_loaders_merge_refuse_twice_given_keys_and_refuse_the_bomb(loader):
    merged = yamlload.load("a: &a {k: 1, j: 2}\nb: {<<: *a, k: 3}\n", loader)
    assert merged == {"a": {"k": 1, "j": 2}, "b": {"k": 3, "j": 2}}
    with pytest.raises(yaml.constructor.ConstructorError, match="'k' is given twice"):
        yamlload.load("b: {<<: {j: 2}, k: 3, k: 4}\n", loader)
    with pytest.raises(yamlload.ExpansionRefused, match="aliases"):
        yamlload.load(ALIAS_BOMB.replace('"@DATA@"', "d").replace('"@SCRATCH@"', "s"), loader)
    with pytest.raises(yamlload.ExpansionRefused, match="holds more than"):
        yamlload.load("[" + "a," * 100_001 + "a]", loader)
