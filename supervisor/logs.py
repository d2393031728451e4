"""Logging setup: one event per line, level kept for journald, secrets never written."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO
from urllib.parse import unquote

import structlog

from . import journal as native_journal

MASK = "***"
MIN_SECRET_LENGTH = 4
SECRET_KEY_MARKERS = ("PASSWORD", "PASSWD", "PASS", "PWD", "SECRET", "TOKEN", "KEY", "AUTH", "CREDENTIAL", "PRIVATE")
# The shell's working directories: their values are paths, masking them would hide every path in the log.
NOT_SECRET_KEYS = ("PWD", "OLDPWD")

# Syslog priorities: journald reads a leading "<N>" on stdout as the line's level.
_PRIORITIES = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}
_LEVELS = {name: getattr(logging, name.upper()) for name in ("debug", "info", "warning", "error")}

# Password part of scheme://user:password@host. The password runs to the last "@"
# before the path so an unencoded "@" inside it cannot leave a tail visible; failing
# that, to the first "@", since SQLAlchemy (Indico's database URI) takes an unencoded "/".
_URI_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)([^\s/]+|[^\s@\x22\x27\\]+)(@)")
# A password as a query parameter: libpq's postgresql:///indico?password=…, ?auth_token=….
_QUERY_SECRET = re.compile(r"([?&][A-Za-z0-9_.-]*(?:pass|pwd|secret|token|key|auth|credential|private)[A-Za-z0-9_.-]*=)"
                           r"([^&#\s\x22\x27\\]+)", re.IGNORECASE)


class Redactor:
    """Replaces known secret values and URI passwords in text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add_secrets(self, values: Iterable[str]) -> None:
        # Very short values would mask ordinary words and numbers all over the log.
        self._secrets.update(v for v in values if v and len(v) >= MIN_SECRET_LENGTH)
        forms = {form for secret in self._secrets for form in _written_forms(secret)}
        # Longest first so a secret containing another is masked whole.
        alternatives = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None

    def scrub(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        return _QUERY_SECRET.sub(rf"\1{MASK}", _URI_PASSWORD.sub(rf"\1{MASK}\3", text))


def _written_forms(secret: str) -> set[str]:
    """The ways a value can appear once escaped by JSON, logfmt or repr()."""
    return {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], repr(secret)[1:-1]}


def is_secret_key(name: str) -> bool:
    upper = name.upper()
    return upper not in NOT_SECRET_KEYS and any(marker in upper for marker in SECRET_KEY_MARKERS)


def uri_passwords(text: str) -> set[str]:
    found = {match.group(2) for pattern in (_URI_PASSWORD, _QUERY_SECRET) for match in pattern.finditer(text)}
    # Code may log the decoded password it hands to a client library.
    return found | {unquote(password) for password in found}


def secrets_of_env(env: Mapping[str, str]) -> set[str]:
    by_name = {value for key, value in env.items() if value and is_secret_key(key)}
    return by_name.union(*(uri_passwords(value) for value in env.values()))


# `NAME: value` or `NAME=value` on one line of a file, for files YAML cannot read.
_SECRET_LINE = re.compile(r"""^[\s-]*["']?([A-Za-z_][A-Za-z0-9_-]*)["']?\s*[:=]\s*(.*?)\s*$""")


def secrets_in_file(path: str) -> set[str]:
    """Best effort for a site file that failed to load, before its problems are shown.

    Its problems echo values, and its new secrets were never registered (the file
    was refused), so they are looked for anywhere in it: values under secret-looking
    names (mapping keys, compose-style "NAME=value" items, raw lines) and URI passwords.
    Read within the same bounds as the site file itself: a file refused for its size,
    its kind or its aliases must not hang or swell us here instead.
    """
    from . import yamlload
    try:
        text = yamlload.read_text(path)
    except (OSError, ValueError, yamlload.ReadRefused):  # ValueError: not UTF-8
        return set()
    found = uri_passwords(text)
    for line in text.splitlines():
        match = _SECRET_LINE.match(line)
        if match and is_secret_key(match.group(1)):
            found.add(match.group(2).strip("'\""))
    try:
        # A tenth of the loader's limit: this is a second read of a file already refused, and
        # one big enough to reach it has only its lines searched, at a tenth of the cost.
        found |= secrets_in_tree(yamlload.load(text, limit=yamlload.MAX_NODES // 10))
    except Exception:  # not YAML, or too big once expanded: the lines above are all there is
        pass
    return {value for value in found if value}


def secrets_in_tree(root: Any) -> set[str]:
    """Secret-looking values anywhere in a parsed YAML tree.

    Each mapping and list is walked once (remembered by id): YAML aliases make one
    node appear under many parents, and a walk that followed every reference would
    do the work of the whole expansion.
    """
    found: set[str] = set()
    visited: set[tuple[int, str]] = set()
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        node, key = stack.pop()
        if isinstance(node, (Mapping, list)):
            if (id(node), key) in visited:
                continue
            visited.add((id(node), key))
            items = node.items() if isinstance(node, Mapping) else ((key, item) for item in node)
            stack.extend((value, str(name)) for name, value in items)
            continue
        if node is None or isinstance(node, bool):
            continue
        text = str(node)
        name, equals, value = text.partition("=")
        found |= uri_passwords(text)
        if is_secret_key(key):
            found.add(text)
        if equals and is_secret_key(name):
            found.add(value)
    return found


# `NAME=value` inside a command line, `--name=value` too: `env PGPASSWORD=… psql`, `--db-password=…`.
_ASSIGNMENT = re.compile(r"(?:^|[\s;&|('\x22])-{0,2}([A-Za-z_][A-Za-z0-9_.-]*)=['\x22]?([^\s;&|)'\x22]+)")


def secrets_of_command(words: Iterable[str]) -> set[str]:
    """Values a command line gives under secret names, and URI passwords in it.

    A command is a list or a shell line (`sh -c "PGPASSWORD=… psql"`), so each word
    is searched as text, and a secret-named flag takes the next word too (`--password X`).
    """
    found: set[str] = set()
    previous = ""
    for word in words:
        found |= uri_passwords(word)
        found |= {value for name, value in _ASSIGNMENT.findall(word) if is_secret_key(name)}
        if previous.startswith("-") and "=" not in previous and is_secret_key(previous.lstrip("-")):
            found.add(word)
        previous = word
    return found


def secrets_of_site(site: Any) -> set[str]:
    """Every secret a resolved site gives: one set for the log, check-config, status and the state file.

    Env values by name and URI passwords anywhere; log options by name (`splunk-token`);
    secret-named assignments and flags in commands, daemon probes and engine healthchecks.
    """
    found: set[str] = set()
    for container in site.containers:
        found |= secrets_of_env(dict(container.env))
        for name, value in container.log_options:
            found |= uri_passwords(value) | ({value} if is_secret_key(name) else set())
        for words in (container.command, container.probe and container.probe.command,
                      container.healthcheck and container.healthcheck.test):
            found |= secrets_of_command(words or ())
    cluster = getattr(site, "cluster", None)
    if cluster is not None:
        found |= uri_passwords(cluster.redis)
    return found


def mask_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment made safe to print; empty secrets stay empty to show they are unset."""
    redactor = Redactor()
    redactor.add_secrets(secrets_of_env(env))
    return {
        key: (MASK if value else value) if is_secret_key(key) else redactor.scrub(value)
        for key, value in env.items()
    }


_redactor = Redactor()


def add_secrets(values: Iterable[str]) -> None:
    """Register secrets with the process-wide log redactor; they accumulate across reloads."""
    _redactor.add_secrets(values)


def learn_site(site: Any) -> None:
    """Register a resolved site's secrets with the process-wide redactor."""
    _redactor.add_secrets(secrets_of_site(site))


def scrub(text: str) -> str:
    """Text with every secret known to this process masked: for what is printed, not logged."""
    return _redactor.scrub(text)


def scrub_value(value: Any) -> Any:
    """A structure (the state file's payload) with every string in it scrubbed."""
    return _scrub_value(value)


class ScrubbingStream:
    """A text stream that scrubs what is written to it: a command's own stdout and stderr.

    `buffer` is the real one: a one-shot job's output is its own, passed through as bytes.
    """

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(_redactor.scrub(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def get_logger(**bound: Any) -> Any:
    # The lazy proxy resolves configuration at use time, so module-level loggers
    # created before configure() still follow it.
    return structlog.get_logger(**bound)


def configure(fmt: str = "kv", level: str = "info", stream: TextIO | None = None) -> None:
    if fmt not in ("kv", "json"):
        raise ValueError(f"unknown log format {fmt!r}, expected 'kv' or 'json'")
    if level not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}, expected one of {', '.join(_LEVELS)}")
    stream = stream if stream is not None else sys.stdout
    journal = stream_is_journal(stream)

    processors: list[Any] = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level]
    if not journal:
        # journald stamps every line itself.
        processors.append(structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"))
    processors += [structlog.processors.format_exc_info, _scrub_fields]
    # JSON stays pure for shippers reading stdout unless journald is the reader.
    render = _kv_line if fmt == "kv" else (_json_line_for_journal if journal else _json_line)
    factory: Any = structlog.WriteLoggerFactory(file=stream)
    if journal and native_journal.available():
        # Native entries carry EVENT=, ROLE=, CONTAINER= for journalctl's filters; each
        # entry goes there instead of stdout, never to both, or it would show twice.
        render, factory = native_journal.renderer(render), native_journal.JournalLoggerFactory(stream)
    processors.append(render)

    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        # Off so a later configure() (tests, a different stream) reaches loggers
        # already in use; the daemon logs a few lines a minute, so the cost is nil.
        cache_logger_on_first_use=False,
    )


def stream_is_journal(stream: TextIO, env: Mapping[str, str] = os.environ) -> bool:
    """systemd sets JOURNAL_STREAM=dev:inode when it connects stdout to the journal."""
    try:
        device, inode = (int(part) for part in env["JOURNAL_STREAM"].split(":"))
        status = os.fstat(stream.fileno())
    except (KeyError, ValueError, OSError, AttributeError):
        return False
    return (status.st_dev, status.st_ino) == (device, inode)


def _scrub_fields(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    # Masks raw values before renderers escape them into forms the line scrub
    # could miss (a repr-escaped secret inside a traceback, then JSON-escaped).
    return {key: _scrub_value(value) for key, value in event_dict.items()}


def _scrub_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return _redactor.scrub(value)
    if isinstance(value, Mapping):
        return {key: _scrub_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_scrub_value(item) for item in value]
    return _redactor.scrub(str(value))


def _ordered(event_dict: dict[str, Any], lead: tuple[str, ...]) -> dict[str, Any]:
    first = {key: event_dict.pop(key) for key in lead if key in event_dict}
    return first | event_dict


def _prefix(event_dict: Mapping[str, Any]) -> str:
    return f"<{_PRIORITIES.get(event_dict.get('level', 'info'), 6)}>"


def _kv_line(_logger: Any, _name: str, event_dict: dict[str, Any]) -> str:
    prefix = _prefix(event_dict)
    # The priority prefix already carries the level.
    del event_dict["level"]
    fields = _ordered(event_dict, ("ts", "event"))
    # Scrubbing the finished line too, so nothing a renderer adds escapes the mask.
    return _redactor.scrub(prefix + " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields.items()))


def _logfmt_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text and not any(char in ' ="\\' or char < " " or char == "\x7f" for char in text):
        return text
    # JSON string escaping turns newlines and control characters into escapes,
    # keeping one event per line, and is a quoting logfmt parsers accept.
    return json.dumps(text, ensure_ascii=False)


def _json_line(_logger: Any, _name: str, event_dict: dict[str, Any]) -> str:
    return _redactor.scrub(json.dumps(_ordered(event_dict, ("event", "level")), default=repr))


def _json_line_for_journal(logger: Any, name: str, event_dict: dict[str, Any]) -> str:
    return _prefix(event_dict) + _json_line(logger, name, event_dict)
