"""Hundreds of generated malformed site files: each refused with its key path, exit 2, never a traceback.

Every example is a valid site file broken on purpose in one to three places: a wrong
type at any key, an unknown key, a bad duration, UID:GID, port, bind, link, signal or
environment name, two settings that contradict each other, a root that is not a
mapping, text that is not YAML, bytes that are not UTF-8. The generator knows where
it broke the file, so the report must name those key paths.

`check-config` runs in process for the bulk (500 examples), then a sample goes
through the real command, and another through SIGHUP into a running daemon, which
must refuse each one and keep its containers as they were.
"""
from __future__ import annotations

import copy
import io
import re
import signal
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from supervisor.cli import main
from harness.daemon import site_containers

# The README's keys, written out here so a key the code forgot to refuse shows up.
CLOSED_MAPPINGS = {
    "site": ["site", "image", "pull", "user", "volumes", "network", "env", "restart", "stop", "containers",
             "log_driver", "log_options"],
    "container": ["image", "pull", "command", "user", "allow_root", "volumes", "network", "env", "ports", "restart",
                  "stop_timeout", "stop_signal", "health", "healthcheck", "enabled", "name", "log_driver",
                  "log_options"],
    "volumes": ["data", "scratch", "extra"],
    "network": ["links", "name"],
    "restart": ["backoff", "max_backoff", "reset_after", "max_restarts", "window"],
    "stop": ["timeout", "on_exit"],
    "health": ["http", "tcp", "exec", "interval", "timeout", "retries", "start_period"],
    "http": ["port", "path"],
    "tcp": ["port"],
    "healthcheck": ["test", "interval", "timeout", "retries", "start_period"],
}
SIGNALS = {s.name for s in signal.Signals}
PROBLEM_LINE = re.compile(r"^  \S.*: \S.*$")
# Keys whose insertion next to a sibling is a conflict reported on the parent, not on the key.
CONFLICTS = {"name": ("links",), "links": ("name",), "http": ("tcp", "exec"), "tcp": ("http", "exec"), "exec": ("http", "tcp")}

# Building blocks of bad values.
SMALL_INTS = st.integers(-1000, 100_000)
FLOATS = st.floats(allow_nan=False, allow_infinity=False, width=32)
WORDS = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_characters=":"), min_size=1, max_size=8)
LISTS = st.lists(st.one_of(SMALL_INTS, WORDS), max_size=3)
DICTS = st.dictionaries(st.sampled_from(["a", "b", "port"]), SMALL_INTS, min_size=1, max_size=2)
ANY_SMALL = st.one_of(SMALL_INTS, FLOATS, st.booleans(), WORDS, LISTS, DICTS)
NOT_STRING = st.one_of(SMALL_INTS, FLOATS, st.booleans(), LISTS, DICTS)
NOT_MAPPING = st.one_of(SMALL_INTS, FLOATS, st.booleans(), WORDS, st.lists(SMALL_INTS, max_size=3))
NOT_LIST = st.one_of(SMALL_INTS, FLOATS, st.booleans(), WORDS, DICTS)
BAD_CHAR = st.sampled_from(list(" /:@!$*?#%&()+,;=<>[]{}|~^'\"\\"))
NAME_PART = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
BAD_NAME = st.one_of(st.just(""), st.just("   "), st.builds(lambda a, c, b: a + c + b, NAME_PART, BAD_CHAR, NAME_PART),
                     st.builds(lambda c, a: c + a, st.sampled_from(list("-._")), NAME_PART), NOT_STRING)
BAD_DURATION = st.one_of(
    st.sampled_from(["10 minutes", "1d", "ten", "soon", "-1s", "5 s m", "1.5.2s", "1e3s", "s", "ms", "h1", "PT5M",
                     "5min", "3sec", "", "1 hour", "9" * 400, "9" * 400 + "ms"]),
    st.builds(lambda n, u: f"{n}{u}", st.integers(0, 999), st.sampled_from(["d", "w", "y", "min", "sec", "hr", "us",
                                                                          "ns", "S", "M", "H", "mss", "sm"])),
    st.integers(max_value=-1), st.floats(max_value=-1e-6, allow_nan=False, allow_infinity=False),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 10 ** 400]),
    st.booleans(), LISTS, DICTS)
BAD_POSITIVE_DURATION = st.one_of(BAD_DURATION, st.sampled_from([0, 0.0, "0s", "0ms", "0"]))


def bad_int(minimum: int, maximum: int | None = None):
    too_big = [st.integers(min_value=maximum + 1)] if maximum is not None else []
    return st.one_of(st.integers(max_value=minimum - 1), *too_big, st.floats(allow_nan=False, width=32),
                     st.integers(1, 99).map(str), st.booleans(), LISTS, DICTS)


def bad_choice(choices: list[str]):
    return st.one_of(st.text(max_size=10).filter(lambda s: s not in choices), NOT_STRING)


BAD_USER = st.one_of(
    st.sampled_from(["1000", "1000:", ":1000", "a:b", "indico:indico", "-1:5", "1000:1000:1000", "1000 :1000",
                     "1000:-1", "0x10:10", "", "1000/1000", "1e3:1", " 1000:1000", "1000:1000 x"]),
    st.builds(lambda u, g: f"{u}:{g}", st.integers(0, 70000), st.text("abcxyz-+", min_size=1, max_size=4)),
    SMALL_INTS, FLOATS, st.booleans(), LISTS, DICTS)
BAD_SIGNAL = st.one_of(
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=6).map(lambda s: "SIG" + s).filter(
        lambda s: s not in SIGNALS),
    st.integers(0, 64).map(str), st.just(""), NOT_STRING)
BAD_PORT_ITEM = st.one_of(
    st.sampled_from(["8080", "8080:", ":8080", "a:b", "8080:8080/sctp", "127.0.0.1:8080", "8080:8080:8080:8080",
                     "localhost:8080:8080", "8080-8081:80", ""]),
    st.builds(lambda h, c: f"{h}:{c}", st.one_of(st.just(0), st.integers(65536, 10 ** 6)), st.integers(1, 65535)),
    st.builds(lambda h, c: f"{h}:{c}", st.integers(1, 65535), st.one_of(st.just(0), st.integers(65536, 10 ** 6))),
    SMALL_INTS, st.booleans(), LISTS, DICTS)
BAD_LINK_ITEM = st.one_of(st.sampled_from(["indico db", "-db", "a:b:c", ":db", "", "db:al ias"]), SMALL_INTS,
                          st.booleans(), DICTS)
BAD_COMMAND = st.one_of(st.just([]), st.just(""), st.just("   "), SMALL_INTS, st.booleans(), DICTS,
                        st.lists(st.one_of(SMALL_INTS, st.booleans(), DICTS), min_size=1, max_size=3))
BAD_URL_PATH = st.one_of(st.builds(lambda s: s, NAME_PART), st.just(""), NOT_STRING)
BAD_ENV_KEY = st.one_of(st.sampled_from(["1ST", "A-B", "A B", "A.B", "$A", "É", "A=B"]), st.integers(0, 99),
                        st.booleans())
BAD_ENV_VALUE = st.one_of(st.none(), st.lists(WORDS, max_size=2), DICTS)


def bad_binds(certs: str):
    item = st.one_of(
        st.sampled_from(["/nonexistent/certs:/etc/certs", f"{certs}", f"{certs}:etc/certs", f"{certs}:/etc/certs:rx",
                         f"{certs}:/etc/certs:ro:x", ":/etc/certs", f"{certs}:", "a", f"{certs}:/etc/certs:"]),
        SMALL_INTS, st.booleans(), DICTS)
    return st.one_of(NOT_LIST, st.lists(item, min_size=1, max_size=2))


def kind_of(path: tuple) -> str | None:
    """What a key path holds, by where it sits; None for places that take anything (env values, log options)."""
    *parents, key = path
    parent = parents[-1] if parents else None
    if not parents:
        return {"site": "name", "image": "image", "pull": "pull", "user": "user", "volumes": "map:volumes",
                "network": "map:network", "env": "env", "restart": "map:restart", "stop": "map:stop",
                "containers": "containers", "log_driver": "log_driver", "log_options": "log_options"}.get(key)
    if parents == ["containers"]:
        return "map:container"
    if len(parents) == 2 and parents[0] == "containers":
        return {"image": "image", "pull": "pull", "command": "command", "user": "user", "allow_root": "bool",
                "enabled": "bool", "volumes": "map:volumes", "network": "map:network", "env": "env", "ports": "ports",
                "restart": "map:restart", "stop_timeout": "duration", "stop_signal": "signal", "health": "map:health",
                "healthcheck": "map:healthcheck", "name": "name", "log_driver": "log_driver",
                "log_options": "log_options"}.get(key)
    table = {
        "volumes": {"data": "hostdir", "scratch": "hostdir", "extra": "binds"},
        "network": {"links": "links", "name": "name"},
        "restart": {"max_restarts": "int0", "backoff": "duration", "max_backoff": "duration",
                    "reset_after": "duration", "window": "duration"},
        "stop": {"timeout": "duration", "on_exit": "on_exit"},
        "health": {"http": "map:http", "tcp": "map:tcp", "exec": "exec", "interval": "posduration",
                   "timeout": "posduration", "retries": "int1", "start_period": "duration"},
        "healthcheck": {"test": "command", "interval": "posduration", "timeout": "posduration", "retries": "int1",
                        "start_period": "duration"},
        "http": {"port": "port", "path": "urlpath"},
        "tcp": {"port": "port"},
    }
    return table.get(parent, {}).get(key)


def bad_value(kind: str, root: Path):
    """A value that is wrong for `kind`, whatever the rest of the file says."""
    if kind.startswith("map:"):
        return NOT_MAPPING
    a_file = str(root / "a-file")
    return {
        "name": BAD_NAME, "image": st.one_of(NOT_STRING, st.just(""), st.just("  ")),
        "pull": bad_choice(["always", "missing", "never"]), "on_exit": bad_choice(["stop", "leave"]),
        "user": BAD_USER, "containers": st.one_of(NOT_MAPPING, st.just({})),
        "env": st.one_of(NOT_MAPPING, st.dictionaries(BAD_ENV_KEY, WORDS, min_size=1, max_size=2),
                         st.dictionaries(st.sampled_from(["DB_HOST", "WORKERS"]), BAD_ENV_VALUE, min_size=1, max_size=2)),
        "log_driver": st.one_of(st.just("Json File"), st.just(""), st.builds(lambda a, c: a + c, NAME_PART, BAD_CHAR),
                                SMALL_INTS, LISTS, DICTS),
        "log_options": st.one_of(NOT_MAPPING, st.dictionaries(st.sampled_from(["max-size", "tag"]),
                                                              st.one_of(LISTS, DICTS, st.booleans()), min_size=1)),
        "hostdir": st.one_of(st.sampled_from(["/nonexistent/indico-data", a_file, ""]), NOT_STRING),
        "binds": bad_binds(str(root / "certs")),
        "links": st.one_of(NOT_LIST, st.lists(BAD_LINK_ITEM, min_size=1, max_size=2)),
        "duration": BAD_DURATION, "posduration": BAD_POSITIVE_DURATION,
        "int0": bad_int(0), "int1": bad_int(1), "port": bad_int(1, 65535),
        "bool": st.one_of(SMALL_INTS, FLOATS, WORDS, LISTS, DICTS),
        "command": BAD_COMMAND, "exec": st.one_of(BAD_COMMAND, WORDS),
        "ports": st.one_of(NOT_LIST, st.lists(BAD_PORT_ITEM, min_size=1, max_size=2)),
        "signal": BAD_SIGNAL, "urlpath": BAD_URL_PATH,
    }[kind]


def walk(tree, path=()):
    """Every key path of the tree, mappings and leaves (list items are left to their list's kind)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield path + (key,)
            yield from walk(value, path + (key,))


def mapping_kind(path: tuple) -> str | None:
    if path == ():
        return "site"
    kind = kind_of(path)
    return kind[4:] if kind and kind.startswith("map:") else None


def slots(base: dict) -> list[tuple[tuple, str]]:
    """(path, kind) for every key in the base file and every known key it could have but does not."""
    found = [(path, kind_of(path)) for path in walk(base) if kind_of(path)]
    for path in [(), *walk(base)]:
        closed = mapping_kind(path)
        node = get(base, path)
        if closed is None or not isinstance(node, dict):
            continue
        for key in CLOSED_MAPPINGS[closed]:
            rivals = CONFLICTS.get(key, ())
            if key not in node and kind_of(path + (key,)) and not any(r in node for r in rivals):
                found.append((path + (key,), kind_of(path + (key,))))
    return found


def get(tree, path: tuple):
    for key in path:
        tree = tree[key]
    return tree


def put(tree: dict, path: tuple, value) -> None:
    get(tree, path[:-1])[path[-1]] = value


def render(path: tuple) -> str:
    return ".".join(str(k) for k in path)


def related(a: tuple, b: tuple) -> bool:
    return a[:len(b)] == b or b[:len(a)] == a


@st.composite
def broken_value(draw, base: dict, root: Path):
    """1-3 keys, none inside another, given a value wrong for them."""
    places = slots(base)
    chosen = draw(st.lists(st.sampled_from(places), min_size=1, max_size=3, unique_by=lambda s: s[0]))
    chosen = [c for i, c in enumerate(chosen) if not any(related(c[0], d[0]) for d in chosen[:i])]
    tree = copy.deepcopy(base)
    for path, kind in chosen:
        put(tree, path, draw(bad_value(kind, root)))
    return tree, [render(path) for path, _ in chosen]


@st.composite
def unknown_key(draw, base: dict):
    places = [p for p in [(), *walk(base)] if mapping_kind(p) and isinstance(get(base, p), dict)]
    path = draw(st.sampled_from(places))
    allowed = CLOSED_MAPPINGS[mapping_kind(path)]
    key = draw(st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True).filter(lambda k: k not in allowed))
    tree = copy.deepcopy(base)
    get(tree, path)[key] = draw(ANY_SMALL)
    return tree, [render(path + (key,))]


@st.composite
def contradiction(draw, base: dict):
    """Settings each valid alone, wrong together."""
    tree = copy.deepcopy(base)
    roles = list(tree["containers"])
    role = draw(st.sampled_from(roles))
    choice = draw(st.sampled_from(["backoff", "names", "root", "generic", "no_user", "no_containers", "two_probes",
                                   "links_and_name", "no_data"]))
    if choice == "backoff":
        tree["restart"] = {**(tree.get("restart") or {}), "backoff": "10m", "max_backoff": "1m"}
        return tree, ["restart.max_backoff"]
    if choice == "names" and len(roles) > 1:
        first, second = roles[:2]
        tree["containers"][first] = {**(tree["containers"][first] or {}), "name": "the-same"}
        tree["containers"][second] = {**(tree["containers"][second] or {}), "name": "the-same"}
        return tree, [f"containers.{second}.name"]
    if choice == "root":
        tree["containers"][role] = {**(tree["containers"][role] or {}), "user": "0:0"}
        return tree, [f"containers.{role}.user"]
    if choice == "generic":
        tree["containers"]["extra1"] = {"command": ["true"]}
        return tree, ["containers.extra1.image"]
    if choice == "no_user":
        tree.pop("user", None)
        for body in tree["containers"].values():
            (body or {}).pop("user", None)
        return tree, ["user"]
    if choice == "no_containers":
        if draw(st.booleans()):
            del tree["containers"]
        else:
            tree["containers"] = {}
        return tree, ["containers"]
    if choice == "two_probes":
        tree["containers"][role] = {**(tree["containers"][role] or {}),
                                    "health": {"http": {"port": 80}, "tcp": {"port": 80}}}
        return tree, [f"containers.{role}.health"]
    if choice == "links_and_name":
        tree["network"] = {"links": ["indico-db"], "name": "indico-net"}
        return tree, ["network"]
    tree["volumes"] = {k: v for k, v in tree["volumes"].items() if k != "data"}
    return tree, ["volumes.data"]


def to_yaml(tree) -> bytes:
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True).encode()


@st.composite
def malformed(draw, base: dict, root: Path):
    """(file content, key paths that must be reported; None when any place will do)."""
    kind = draw(st.sampled_from(["value"] * 6 + ["unknown"] * 2 + ["contradiction", "root", "text", "broken_yaml",
                                                                     "bytes"]))
    if kind in ("value", "unknown", "contradiction"):
        strategy = {"value": broken_value(base, root), "unknown": unknown_key(base),
                    "contradiction": contradiction(base)}[kind]
        tree, paths = draw(strategy)
        return to_yaml(tree), paths
    if kind == "root":
        return to_yaml(draw(st.one_of(st.none(), NOT_MAPPING))), [""]
    if kind == "text":
        return draw(st.text(max_size=200)).encode(), None
    if kind == "bytes":
        return b"\xff\xfe" + draw(st.binary(max_size=50)), [""]  # never UTF-8
    lines = to_yaml(base).decode().splitlines()
    at = draw(st.integers(0, len(lines)))
    breaker = draw(st.sampled_from(["key: [unclosed", "- {a: 1", 'quoted: "unterminated', "a: b: c", "[" * 600]))
    return "\n".join(lines[:at] + [breaker] + lines[at:]).encode() + b"\n", None


def reported_paths(err: str) -> list[str]:
    return [line[2:] for line in err.splitlines()[1:]]


def names(line: str, path: str) -> bool:
    where = path or "(top level)"
    return line.startswith(where) and line[len(where):len(where) + 1] in (" ", ":", ".", "[")


def assert_refused(status: int, out: str, err: str, file: Path, expected: list[str] | None, content: bytes) -> None:
    said = f"for the file:\n{content[:2000]!r}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in out + err, said
    assert status == 2, said
    assert out == "", said
    lines = err.splitlines()
    count = len(lines) - 1
    assert count >= 1 and lines[0] == f"{file}: {count} problem{'s' if count != 1 else ''}", said
    assert all(PROBLEM_LINE.match(line) for line in lines[1:]), said
    for path in expected or []:
        assert any(names(line, path) for line in reported_paths(err)), f"{path!r} not reported " + said


def check_in_process(file: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(["check-config", "--config", str(file)])
    return status, out.getvalue(), err.getvalue()


def valid_site(root: Path) -> dict:
    """A file using most keys, as an admin would write it."""
    for directory in ("data", "scratch", "certs"):
        (root / directory).mkdir(exist_ok=True)
    (root / "a-file").write_text("not a directory\n")
    return {
        "site": "faults", "image": "indico-worker:latest", "pull": "missing", "user": "1000:1000",
        "volumes": {"data": str(root / "data"), "scratch": str(root / "scratch"), "extra": [f"{root / 'certs'}:/etc/certs:ro"]},
        "network": {"links": ["indico-db", "indico-redis:redis"]},
        "env": {"INDICO_SITE": "events.example.org", "WORKERS": 4},
        "log_driver": "json-file", "log_options": {"max-size": "10m"},
        "restart": {"backoff": "1s", "max_backoff": "5m", "reset_after": "60s", "max_restarts": 10, "window": "10m"},
        "stop": {"timeout": "30s", "on_exit": "stop"},
        "containers": {
            "worker": {"ports": ["127.0.0.1:8080:8080"], "stop_signal": "SIGQUIT", "stop_timeout": "60s",
                       "env": {"LOG_LEVEL": "debug"}, "restart": {"max_restarts": 20},
                       "health": {"http": {"port": 8080, "path": "/ping"}, "interval": "10s", "timeout": "5s",
                                  "retries": 3, "start_period": "60s"}},
            "celery": {"command": ["celery"], "enabled": True,
                       "healthcheck": {"test": ["celery", "inspect", "ping"], "interval": "30s", "retries": 2}},
            "cron": {"image": "indico-cron:1", "command": ["crond", "-f"], "name": "indico-cron", "allow_root": False,
                     "user": "33:33", "network": {"name": "indico-net"}, "volumes": {"extra": []},
                     "health": {"exec": ["true"]}},
        },
    }


FUZZ = settings(deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def test_the_valid_base_file_is_accepted(tmp_path):
    file = tmp_path / "site.yaml"
    file.write_bytes(to_yaml(valid_site(tmp_path)))
    status, out, err = check_in_process(file)
    assert (status, err) == (0, ""), err
    assert len(slots(valid_site(tmp_path))) >= 100  # the generator reaches into every corner of the file


def test_500_generated_malformed_files_each_give_exit_2_and_their_key_paths_never_a_traceback(tmp_path):
    base = valid_site(tmp_path)
    file = tmp_path / "site.yaml"
    seen = []

    @settings(FUZZ, max_examples=500)
    @given(malformed(base, tmp_path))
    def refused(example):
        content, expected = example
        file.write_bytes(content)
        assert_refused(*check_in_process(file), file, expected, content)
        seen.append(content)

    refused()
    assert len(seen) >= 500 and len(set(seen)) >= 450


ANY_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.one_of(st.text(max_size=6), st.integers()), inner, max_size=3)),
    max_leaves=8)


def test_any_value_anywhere_is_accepted_or_refused_one_problem_a_line_never_a_traceback(tmp_path):
    """Not always a mistake (45 is a fine stop_timeout): the answer is 0 or 2, and 2 reads cleanly."""
    base = valid_site(tmp_path)
    file = tmp_path / "site.yaml"
    places = [path for path, _ in slots(base)] + [path + ("x",) for path in walk(base) if isinstance(get(base, path), dict)]

    @settings(FUZZ, max_examples=300)
    @given(st.lists(st.tuples(st.sampled_from(places), ANY_VALUE), min_size=1, max_size=3))
    def answered(changes):
        tree = copy.deepcopy(base)
        for path, value in changes:
            if settable(tree, path):
                put(tree, path, value)
        content = to_yaml(tree)
        file.write_bytes(content)
        status, out, err = check_in_process(file)
        if status != 0:
            assert_refused(status, out, err, file, None, content)
        else:
            assert err == "" and out.rstrip().endswith(f"{file}: OK")

    answered()


def settable(tree, path: tuple) -> bool:
    """The key's parent is still a mapping (an earlier change may have replaced it)."""
    for key in path[:-1]:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return isinstance(tree, dict)


@pytest.mark.parametrize("text, where, says", [
    ("stop_timeout: " + "9" * 400, "containers.worker.stop_timeout", "a duration"),
    ("stop_timeout: '" + "9" * 400 + "s'", "containers.worker.stop_timeout", "a duration"),
    ("restart: {window: " + "1" * 400 + "}", "containers.worker.restart.window", "a duration"),
    ("env: {\"A\\nB\": x}", "containers.worker.env.A\\nB", "not a valid environment variable name"),
    ("env: {A: \"x\x1fy\"}", "(top level)", "unacceptable character #x001f"),
])
def test_found_by_the_generator(tmp_path, text, where, says):
    """Each was a traceback, an accepted infinity, or a problem split over two lines."""
    site = valid_site(tmp_path)
    head = to_yaml({k: site[k] for k in ("user", "volumes")}).decode()
    file = tmp_path / "site.yaml"
    file.write_text(head + "containers:\n  worker: {" + text + "}\n")
    status, out, err = check_in_process(file)
    assert_refused(status, out, err, file, None, file.read_bytes())
    assert err.splitlines()[1].startswith(f"  {where}") and says in err, err
    if "\x1f" in text:  # where the character is, though YAML's own error gives no line
        line = file.read_text().splitlines().index(next(l for l in file.read_text().splitlines() if "\x1f" in l)) + 1
        assert f"line {line}, column" in err, err


def test_yaml_nested_too_deeply_is_a_problem_not_a_traceback(tmp_path):
    file = tmp_path / "site.yaml"
    file.write_text("containers: " + "[" * 1000 + "]" * 1000 + "\n")
    status, out, err = check_in_process(file)
    assert_refused(status, out, err, file, [""], file.read_bytes())
    assert "nested too deeply" in err


def test_a_broken_site_restart_does_not_hide_a_containers_own_restart_mistakes(tmp_path):
    site = valid_site(tmp_path)
    site["restart"] = "often"
    site["containers"]["worker"]["restart"] = {"max_restarts": -1}
    file = tmp_path / "site.yaml"
    file.write_bytes(to_yaml(site))
    assert_refused(*check_in_process(file), file, ["restart", "containers.worker.restart.max_restarts"],
                   file.read_bytes())


def test_a_sample_through_the_real_check_config_command(tmp_path):
    base = valid_site(tmp_path)
    file = tmp_path / "site.yaml"
    seen = []

    @settings(FUZZ, max_examples=25)
    @given(malformed(base, tmp_path))
    def refused(example):
        content, expected = example
        file.write_bytes(content)
        done = subprocess.run([sys.executable, "-m", "supervisor", "check-config", "--config", str(file)],
                              capture_output=True, text=True, timeout=30)
        assert_refused(done.returncode, done.stdout, done.stderr, file, expected, content)
        seen.append(content)

    refused()
    assert len(seen) == 25


def test_generated_malformed_files_on_sighup_are_each_refused_and_the_containers_kept(
        run_daemon, docker_client, site_name, tmp_path):
    daemon = run_daemon({"worker": {}, "celery": {}}).start()
    daemon.wait_ready()
    good = copy.deepcopy(daemon.config)
    (tmp_path / "certs").mkdir()
    (tmp_path / "a-file").write_text("not a directory\n")
    before = {n: (c.id, c.attrs["State"]["StartedAt"]) for n, c in site_containers(docker_client, site_name).items()}
    assert len(before) == 2
    fed = []

    @settings(FUZZ, max_examples=30)
    @given(malformed(good, tmp_path))
    def refused(example):
        content, expected = example
        daemon.config_path.write_bytes(content)
        # The same file through check-config first: a generator mistake must not reach the daemon as a good file.
        assert_refused(*check_in_process(daemon.config_path), daemon.config_path, expected, content)
        marker = len(daemon.events())
        daemon.signal(signal.SIGHUP)
        refusal = daemon.wait_event("reload_refused", count=len(fed) + 1, timeout=15)
        assert refusal["priority"] == 3
        problems = [e for e in daemon.events()[marker:] if e.get("event") == "config_problem"]
        assert problems and all(p["priority"] == 3 for p in problems), problems
        for path in expected or []:
            assert any(names(str(p["key"]) or "(top level)", path) or str(p["key"]) == path for p in problems), (
                path, problems)
        fed.append(content)

    refused()
    assert len(fed) == 30
    assert not daemon.events("config_reloaded")
    assert daemon.process.poll() is None and "Traceback" not in daemon.log_text()
    after = {n: (c.id, c.attrs["State"]["StartedAt"]) for n, c in site_containers(docker_client, site_name).items()}
    assert after == before

    # Still listening: a good change is applied.
    changed = copy.deepcopy(good)
    changed["containers"]["celery"]["env"] = {"GENERATION": "2"}
    daemon.write(changed)
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("config_reloaded")
    daemon.wait_event("container_recreated", role="celery")
    celery = site_containers(docker_client, site_name)[f"{site_name}-celery"]
    assert "GENERATION=2" in celery.attrs["Config"]["Env"]
    assert (celery.id, celery.attrs["State"]["StartedAt"]) != before[f"{site_name}-celery"]
    worker = f"{site_name}-worker"
    assert (site_containers(docker_client, site_name)[worker].id,) == before[worker][:1]
    assert daemon.stop() == 0
