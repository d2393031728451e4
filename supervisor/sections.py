"""The site file's sections, each read into its model value: volumes, network, env, restart, probes, ports, logging.

Every reader records what is wrong with its section on the shared `Reader` (with
the key path) and returns None for a section it could not read, so the caller
can report every problem of a file in one pass. Host paths are looked up on the
local disk: a bind of a missing directory would be made by the engine, empty and
owned by root.
"""
from __future__ import annotations

import os
import re
import signal

from .model import Bind, Healthcheck, Network, Port, Probe, RestartPolicy
from .schema import Reader, key_path, type_name

NAME_PATTERN = r"[a-zA-Z0-9][a-zA-Z0-9_.-]*"
DATA_TARGET = "/opt/indico/data"
SCRATCH_TARGET = "/opt/indico/scratch"
VOLUME_KEYS = ["data", "scratch", "extra"]
NETWORK_KEYS = ["links", "name"]
RESTART_KEYS = ["backoff", "max_backoff", "reset_after", "max_restarts", "window", "cooldown"]
CONDITIONS = ["started", "healthy"]
HEALTH_KEYS = ["http", "tcp", "exec", "interval", "timeout", "retries", "start_period"]
HEALTHCHECK_KEYS = ["test", "interval", "timeout", "retries", "start_period"]
ENV_KEY_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"
USER_PATTERN = re.compile(r"^(\d+):(\d+)$")
PORT_PATTERN = re.compile(r"^(?:(?P<ip>[0-9.]+|\[[0-9a-fA-F:]+\]):)?(?P<host>\d+):(?P<container>\d+)(?:/(?P<proto>tcp|udp))?$")


class SectionReader:
    def __init__(self, reader: Reader, base_dir: str, check_paths: bool = True):
        self.r = reader
        self.base_dir = base_dir
        self.check_paths = check_paths
        self.bind_paths: dict[Bind, str] = {}  # where each bind was written, for problems found later

    def command(self, node: object, path: str) -> tuple[tuple[str, ...] | None] | None:
        # Wrapped in a 1-tuple so "no command" (None: the image's CMD) differs from "invalid".
        if node is None:
            return (None,)
        if isinstance(node, str):
            if node.strip():
                return (tuple(node.split()),)
            self.r.problem(path, "expected a non-empty command", node)
            return None
        items = self.r.string_list(node, path, non_empty=True, hint="a command as a list, e.g. [indico, db, prepare]")
        return (tuple(items),) if items is not None else None

    def user(self, node: object, path: str) -> tuple[int, int] | None:
        if isinstance(node, int) and not isinstance(node, bool):
            # YAML 1.1 reads an unquoted pair whose last part is below 60 (33:33) as base 60 (2013).
            self.r.problem(path, 'write it quoted, "UID:GID" with both parts: YAML reads an unquoted pair '
                                 'such as 33:33 as a base-60 number', node)
            return None
        match = USER_PATTERN.match(node) if isinstance(node, str) else None
        if not match:
            self.r.problem(path, 'expected numeric "UID:GID" with both parts, e.g. "1000:1000"', node)
            return None
        return int(match.group(1)), int(match.group(2))

    def volumes(self, node: object, path: str, inherited: tuple[Bind, ...] | dict, *, top_level: bool) -> tuple[Bind, ...] | None:
        body = self.r.mapping(node, path, VOLUME_KEYS)
        if body is None:
            return None
        current = {b.target: b for b in inherited} if isinstance(inherited, tuple) else {}
        binds: dict[str, Bind] = {}
        for key, target in (("data", DATA_TARGET), ("scratch", SCRATCH_TARGET)):
            if key in body:
                host = self.host_dir(body[key], key_path(path, key))
                if host is not None:
                    binds[target] = Bind(host, target)
                    self.bind_paths.setdefault(binds[target], key_path(path, key))
            elif target in current:
                binds[target] = current[target]
            elif top_level:
                self.r.problem(key_path(path, key), f"missing; the host directory bound to {target}")
        extras = body.get("extra", None)
        if extras is None:
            binds.update({t: b for t, b in current.items() if t not in (DATA_TARGET, SCRATCH_TARGET)})
        elif isinstance(extras, list):
            for index, item in enumerate(extras):
                bind = self.bind(item, key_path(key_path(path, "extra"), index))
                if bind is not None:
                    binds[bind.target] = bind
                    self.bind_paths.setdefault(bind, key_path(key_path(path, "extra"), index))
        else:
            self.r.problem(key_path(path, "extra"), 'expected a list of "HOST:CONTAINER" or "HOST:CONTAINER:ro"', extras)
        return tuple(binds.values())

    def host_dir(self, node: object, path: str) -> str | None:
        host = self.r.string(node, path, hint="a host directory path")
        if host is None:
            return None
        host = os.path.normpath(os.path.join(self.base_dir, host))
        if self.check_paths and not os.path.isdir(host):
            self.r.problem(path, f"no such directory on this host ({host}); create it, owned by the container user", node)
            return None
        return host

    def bind(self, node: object, path: str) -> Bind | None:
        hint = ('"HOST:CONTAINER" or "HOST:CONTAINER:ro" (HOST a path with a "/"), '
                'or "VOLUME:CONTAINER" for a named volume')
        parts = node.split(":") if isinstance(node, str) else []
        if len(parts) not in (2, 3) or not all(parts[:2]) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            self.r.problem(path, f"not a bind; expected {hint}", node)
            return None
        if not parts[1].startswith("/"):
            self.r.problem(path, f"the container side must be an absolute path; expected {hint}", node)
            return None
        read_only = len(parts) == 3 and parts[2] == "ro"
        if "/" not in parts[0]:
            # As `docker run -v pgdata:/var/lib/postgresql/data`: a named volume, kept across recreates.
            if not re.fullmatch(NAME_PATTERN, parts[0]):
                self.r.problem(path, "a volume name is letters, digits, '.', '_' or '-'; a host path needs a '/' "
                                     "(./NAME for one next to the site file)", node)
                return None
            return Bind(parts[0], parts[1], read_only=read_only, named=True)
        host = os.path.normpath(os.path.join(self.base_dir, parts[0]))
        if self.check_paths and not os.path.exists(host):
            self.r.problem(path, f"no such file or directory on this host ({host}); create it first", node)
            return None
        return Bind(host, parts[1], read_only=read_only)

    def network(self, node: object, path: str) -> Network | None:
        body = self.r.mapping(node, path, NETWORK_KEYS)
        if body is None:
            return None
        if "links" in body and "name" in body:
            self.r.problem(path, "give either links (the README's --link) or name (a user-defined network), not both")
            return None
        if "name" in body:
            name = self.r.string(body["name"], key_path(path, "name"), pattern=NAME_PATTERN, hint="a network name")
            return Network(name=name) if name else None
        links = self.r.string_list(body.get("links", []), key_path(path, "links"),
                                   hint="a list of container names, e.g. [indico-db, indico-redis]")
        if links is None:
            return None
        pairs = []
        for index, link in enumerate(links):
            name, _, alias = link.partition(":")
            if not re.fullmatch(NAME_PATTERN, name) or (alias and not re.fullmatch(NAME_PATTERN, alias)):
                self.r.problem(key_path(key_path(path, "links"), index), 'expected "NAME" or "NAME:ALIAS"', link)
                return None
            pairs.append((name, alias or name))
        return Network(links=tuple(pairs))

    def env(self, node: object, path: str) -> dict[str, str] | None:
        if node is not None and not isinstance(node, dict):
            # Not echoed: a compose-style list ["DB_PASSWORD=..."] carries the secrets.
            self.r.problem(path, f"expected a mapping of NAME: value lines, got {type_name(node)}")
            return None
        body = self.r.mapping(node, path, node.keys() if isinstance(node, dict) else [])
        if body is None:
            return None
        env = {}
        for key, value in body.items():
            if not isinstance(key, str) or not re.fullmatch(ENV_KEY_PATTERN, key):
                self.r.problem(key_path(path, str(key)), "not a valid environment variable name", key)
            elif value is None or isinstance(value, (dict, list)):
                # The value itself is not shown: env values are where secrets live.
                self.r.problem(key_path(path, key), f"expected a string or number, got a {type(value).__name__}")
            else:
                env[key] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    def restart(self, node: object, path: str, inherited: RestartPolicy) -> RestartPolicy | None:
        body = self.r.mapping(node, path, RESTART_KEYS)
        if body is None:
            return None
        values = {}
        for key in RESTART_KEYS:
            if key == "cooldown" and body.get(key) == "never":
                values[key] = None  # today's crash loop: failed until a reload
            elif key in body:
                if key == "max_restarts":
                    values[key] = self.r.integer(body[key], key_path(path, key), minimum=0)
                else:
                    values[key] = self.r.duration(body[key], key_path(path, key))
        if any(v is None for k, v in values.items() if not (k == "cooldown" and body.get(k) == "never")):
            return None
        policy = RestartPolicy(**{**inherited.__dict__, **values})
        if policy.max_backoff < policy.backoff:
            self.r.problem(key_path(path, "max_backoff"), f"must be at least backoff ({policy.backoff:g}s)",
                           body.get("max_backoff", policy.max_backoff))
            return None
        return policy

    def signal(self, node: object, path: str) -> str | None:
        names = {s.name for s in signal.Signals if s.name.startswith("SIG") and not s.name.startswith("SIG_")}
        text = node.upper() if isinstance(node, str) else ""
        text = text if text.startswith("SIG") else "SIG" + text
        if text in names:
            return text
        self.r.problem(path, "expected a signal name such as SIGTERM, SIGQUIT or SIGINT", node)
        return None

    def probe(self, node: object, path: str) -> Probe | None:
        body = self.r.mapping(node, path, HEALTH_KEYS)
        if body is None:
            return None
        kinds = [k for k in ("http", "tcp", "exec") if k in body]
        if len(kinds) != 1:
            self.r.problem(path, "give exactly one of http: {port: N, path: /}, tcp: {port: N} or exec: [cmd, ...]")
            return None
        kind = kinds[0]
        timing = self.timing(body, path)
        at = key_path(path, kind)
        if kind == "exec":
            command = self.r.string_list(body["exec"], at, non_empty=True, hint="a command as a list, e.g. [indico, --help]")
            return Probe("exec", command=tuple(command), **timing) if command and timing else None
        target = self.r.mapping(body[kind], at, ["port", "path"] if kind == "http" else ["port"])
        if target is None:
            return None
        if "port" not in target:
            self.r.problem(key_path(at, "port"), "missing; the port to probe, a whole number from 1 to 65535")
            return None
        port = self.r.integer(target["port"], key_path(at, "port"), minimum=1, maximum=65535)
        probe_path = self.r.string(target.get("path", "/"), key_path(at, "path"), pattern=r"/.*",
                                   hint="a URL path starting with /")
        if port is None or probe_path is None or not timing:
            return None
        return Probe(kind, port=port, path=probe_path, **timing)

    def healthcheck(self, node: object, path: str) -> Healthcheck | None:
        body = self.r.mapping(node, path, HEALTHCHECK_KEYS)
        if body is None:
            return None
        test = body.get("test")
        if isinstance(test, str) and test.strip():
            command = ("CMD-SHELL", test)
        else:
            items = self.r.string_list(test, key_path(path, "test"), non_empty=True,
                                       hint="a command as a list, or one shell command line")
            command = ("CMD", *items) if items else None
        timing = self.timing(body, path)
        return Healthcheck(command, **timing) if command and timing else None

    def timing(self, body: dict, path: str) -> dict | None:
        timing = {
            "interval": self.r.duration(body.get("interval", 10), key_path(path, "interval"), positive=True),
            "timeout": self.r.duration(body.get("timeout", 5), key_path(path, "timeout"), positive=True),
            "retries": self.r.integer(body.get("retries", 3), key_path(path, "retries"), minimum=1),
            "start_period": self.r.duration(body.get("start_period", 0), key_path(path, "start_period")),
        }
        return None if any(v is None for v in timing.values()) else timing

    def ports(self, node: object, path: str) -> tuple[Port, ...] | None:
        if not isinstance(node, list):
            self.r.problem(path, 'expected a list of "[IP:]HOST:CONTAINER"', node)
            return None
        ports = []
        for index, item in enumerate(node):
            at = key_path(path, index)
            match = PORT_PATTERN.match(item) if isinstance(item, str) else None
            if isinstance(item, int):
                self.r.problem(at, 'write it quoted, "HOST:CONTAINER": YAML reads some unquoted pairs as numbers', item)
            elif not match or not all(1 <= int(match.group(g)) <= 65535 for g in ("host", "container")):
                self.r.problem(at, 'expected "[IP:]HOST:CONTAINER[/tcp|udp]" with ports 1-65535, e.g. "127.0.0.1:8080:8080"', item)
            else:
                ip = match.group("ip")
                ports.append(Port(ip.strip("[]") if ip else None, int(match.group("host")),
                                  int(match.group("container")), match.group("proto") or "tcp"))
        return tuple(ports) if len(ports) == len(node) else None

    def log_driver(self, node: object, path: str) -> str | None:
        if node is None:
            return None
        return self.r.string(node, path, pattern=r"[a-z0-9_-]+", hint="a log driver name such as journald or json-file")

    def log_options(self, node: object, path: str) -> tuple[tuple[str, str], ...] | None:
        body = self.r.mapping(node, path, node.keys() if isinstance(node, dict) else [])
        if body is None:
            return None
        bad = [k for k, v in body.items() if not isinstance(v, (str, int, float)) or isinstance(v, bool)]
        for key in bad:
            self.r.problem(key_path(path, str(key)), "expected a string", body[key])
        return None if bad else tuple(sorted((str(k), str(v)) for k, v in body.items()))

    def depends_on(self, node: object, path: str) -> tuple[tuple[str, str], ...] | None:
        """`{ROLE: started | healthy}`, or a list of roles (each `started`)."""
        if isinstance(node, list):
            roles = self.r.string_list(node, path, hint="a list of roles, or a mapping ROLE: started | healthy")
            return None if roles is None else tuple((role, "started") for role in roles)
        body = self.r.mapping(node, path, node.keys() if isinstance(node, dict) else [])
        if body is None:
            return None
        found = []
        for role, condition in body.items():
            chosen = self.r.choice(condition, key_path(path, str(role)), CONDITIONS)
            if chosen is not None:
                found.append((str(role), chosen))
        return tuple(found) if len(found) == len(body) else None
