"""The site file: load it, check every key, and resolve each container's settings.

`load_site(path)` returns a `Site` or raises `ConfigError` holding every problem
found. Nothing here talks to Docker; host paths are checked on the local disk
because a bind of a missing directory would otherwise be created by the engine,
empty and owned by root.
"""
from __future__ import annotations

import os
import re
import signal
import yaml

from .model import Bind, Container, Healthcheck, Network, Port, Probe, RestartPolicy, Site
from .problems import ConfigError, Problem
from .schema import Reader, key_path, type_name

DEFAULT_PATH = "/etc/indico-supervisor/site.yaml"

DATA_TARGET = "/opt/indico/data"
SCRATCH_TARGET = "/opt/indico/scratch"

# Roles the image README describes; any other role is a generic container.
ROLE_DEFAULTS = {
    "worker": {"name": "indico-worker", "command": ["run"]},
    "celery": {"name": "indico-celery", "command": ["celery"]},
}

SITE_KEYS = ["site", "image", "pull", "user", "volumes", "network", "env", "restart",
             "stop", "containers", "log_driver", "log_options"]
CONTAINER_KEYS = ["image", "pull", "command", "user", "allow_root", "volumes", "network",
                  "env", "ports", "restart", "stop_timeout", "stop_signal", "health",
                  "healthcheck", "enabled", "name", "log_driver", "log_options"]
# Keys that belong one level up or down; named so the hint points at the right one.
RENAMED = {"stop": "stop_timeout", "timeout": "stop_timeout", "signal": "stop_signal",
           "links": "network", "volume": "volumes", "environment": "env", "port": "ports",
           "containers": "(only at the top level)", "site": "(only at the top level)"}
VOLUME_KEYS = ["data", "scratch", "extra"]
NETWORK_KEYS = ["links", "name"]
RESTART_KEYS = ["backoff", "max_backoff", "reset_after", "max_restarts", "window"]
STOP_KEYS = ["timeout", "on_exit"]
HEALTH_KEYS = ["http", "tcp", "exec", "interval", "timeout", "retries", "start_period"]
HEALTHCHECK_KEYS = ["test", "interval", "timeout", "retries", "start_period"]

NAME_PATTERN = r"[a-zA-Z0-9][a-zA-Z0-9_.-]*"
ROLE_PATTERN = r"[a-z0-9][a-z0-9_-]*"
ENV_KEY_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"
USER_PATTERN = re.compile(r"^(\d+):(\d+)$")
PORT_PATTERN = re.compile(r"^(?:(?P<ip>[0-9.]+|\[[0-9a-fA-F:]+\]):)?(?P<host>\d+):(?P<container>\d+)(?:/(?P<proto>tcp|udp))?$")


def load_site(path: str, check_paths: bool = True) -> Site:
    """Read and check the site file; raise ConfigError with every problem in it.

    `check_paths=False` skips looking for host directories on disk: `status` must work
    while a bound directory is missing, since that is when an admin needs it.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except FileNotFoundError:
        raise ConfigError(path, [Problem("", "file not found; copy examples/site.yaml there, "
                                             "or give another file with --config PATH")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(path, [Problem("", f"cannot read the file: {error}")]) from None
    try:
        tree = yaml.load(text, Loader=_StrictLoader)
    except RecursionError:
        raise ConfigError(path, [Problem("", "not valid YAML: nested too deeply")]) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        position = getattr(error, "position", None)  # a ReaderError: a character YAML does not accept
        if mark is None and isinstance(position, int):
            before = text[:position]
            where = f"line {before.count(chr(10)) + 1}, column {position - before.rfind(chr(10))}: "
        # The first line only: the rest names "<unicode string>", and one problem is one line.
        reason = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(path, [Problem("", f"not valid YAML: {where}{reason}")]) from None
    return parse_site(tree, path, check_paths)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping.

    PyYAML keeps the last silently, so an admin who adds `image:` at the end of a
    block without seeing the one at its top would run something else than they read.
    """

    def construct_mapping(self, node, deep=False):
        seen: dict[object, yaml.Mark] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: SafeLoader's own error says what is wrong
                break
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice in one mapping (first on line {first.line + 1}); "
                                "keep one", key_node.start_mark)
        return super().construct_mapping(node, deep)


def parse_site(tree: object, path: str, check_paths: bool = True) -> Site:
    reader = Reader()
    site = _SiteReader(reader, os.path.dirname(os.path.abspath(path)), check_paths).read(tree, path)
    if reader.problems or site is None:
        raise ConfigError(path, reader.problems or [Problem("", "the file is empty; start from examples/site.yaml")])
    return site


class _SiteReader:
    def __init__(self, reader: Reader, base_dir: str, check_paths: bool = True):
        self.r = reader
        self.base_dir = base_dir
        self.check_paths = check_paths

    def read(self, tree: object, path: str) -> Site | None:
        if tree is None:
            return None
        top = self.r.mapping(tree, "", SITE_KEYS)
        if top is None:
            return None
        name = self.r.string(top.get("site", "indico"), "site", pattern=NAME_PATTERN,
                             hint="a name of letters, digits, '.', '_' or '-'")
        stop = self.r.mapping(top.get("stop"), "stop", STOP_KEYS) or {}
        defaults = {
            "image": self.r.string(top.get("image", "indico-worker:latest"), "image",
                                   hint="an image reference such as indico-worker:latest"),
            "pull": self.r.choice(top.get("pull", "missing"), "pull", ["always", "missing", "never"]),
            "user": self._user(top["user"], "user") if "user" in top else None,
            "volumes": self._volumes(top.get("volumes"), "volumes", {}, top_level=True),
            "network": self._network(top.get("network", {"links": ["indico-db", "indico-redis"]}), "network"),
            "env": self._env(top.get("env"), "env"),
            "restart": self._restart(top.get("restart"), "restart", RestartPolicy()),
            "stop_timeout": self.r.duration(stop.get("timeout", 30), "stop.timeout"),
            "log_driver": self._log_driver(top.get("log_driver"), "log_driver"),
            "log_options": self._log_options(top.get("log_options"), "log_options"),
        }
        on_exit = self.r.choice(stop.get("on_exit", "stop"), "stop.on_exit", ["stop", "leave"])
        containers = self._containers(top.get("containers"), defaults, "user" in top)
        if name is None or on_exit is None or containers is None:
            return None
        return Site(path=path, site=name, containers=containers, stop_on_exit=on_exit)

    def _containers(self, node: object, defaults: dict, has_user: bool) -> tuple[Container, ...] | None:
        if node is None or node == {}:
            self.r.problem("containers", "no containers; list at least `worker:` (and `celery:` on one host)")
            return None
        entries = self.r.mapping(node, "containers", node.keys() if isinstance(node, dict) else [])
        if entries is None:
            return None
        if not has_user and not all(isinstance(v, dict) and "user" in v for v in entries.values()):
            self.r.problem("user", 'missing; set user: "UID:GID" (numeric, quoted), the account that owns the data and scratch directories')
        built = []
        for role, body in entries.items():
            if not isinstance(role, str) or not re.fullmatch(ROLE_PATTERN, role):
                self.r.problem(key_path("containers", str(role)),
                               "role names are lower-case letters, digits, '-' or '_'", role)
                continue
            container = self._container(role, body, defaults)
            if container is not None:
                built.append(container)
        self._check_unique_names(built)
        return tuple(built)

    def _container(self, role: str, node: object, defaults: dict) -> Container | None:
        path = key_path("containers", role)
        body = self.r.mapping(node, path, CONTAINER_KEYS, RENAMED)
        if body is None:
            return None
        role_defaults = ROLE_DEFAULTS.get(role, {})
        at = lambda key: key_path(path, key)  # noqa: E731 - reads better than six f-strings
        if not role_defaults:
            for key, what in (("image", "an image"), ("command", "a command")):
                if key not in body:
                    self.r.problem(at(key), f"missing; a generic role such as '{role}' must name {what} "
                                            f"(only worker and celery have defaults)")
        name = self.r.string(body.get("name", role_defaults.get("name", f"indico-{role}")), at("name"),
                             pattern=NAME_PATTERN, hint="a container name of letters, digits, '.', '_' or '-'")
        image = self.r.string(body["image"], at("image"), hint="an image reference") if "image" in body else defaults["image"]
        pull = self.r.choice(body["pull"], at("pull"), ["always", "missing", "never"]) if "pull" in body else defaults["pull"]
        command = self._command(body.get("command", role_defaults.get("command")), at("command"))
        user = self._user(body["user"], at("user")) if "user" in body else defaults["user"]
        allow_root = self.r.boolean(body.get("allow_root", False), at("allow_root"))
        enabled = self.r.boolean(body.get("enabled", True), at("enabled"))
        volumes = defaults["volumes"]
        if "volumes" in body:
            volumes = self._volumes(body["volumes"], at("volumes"), volumes or {}, top_level=False)
        network = self._network(body["network"], at("network")) if "network" in body else defaults["network"]
        env = dict(defaults["env"] or {})
        env.update(self._env(body.get("env"), at("env")) or {})
        restart = defaults["restart"]
        if "restart" in body:
            # Over the defaults when the site's own is broken: its mistakes are reported in the same pass.
            restart = self._restart(body["restart"], at("restart"), restart or RestartPolicy())
        stop_timeout = self.r.duration(body["stop_timeout"], at("stop_timeout")) if "stop_timeout" in body else defaults["stop_timeout"]
        stop_signal = self._signal(body["stop_signal"], at("stop_signal")) if "stop_signal" in body else None
        probe = self._probe(body["health"], at("health")) if "health" in body else None
        healthcheck = self._healthcheck(body["healthcheck"], at("healthcheck")) if "healthcheck" in body else None
        ports = self._ports(body.get("ports", []), at("ports"))
        log_driver = self._log_driver(body["log_driver"], at("log_driver")) if "log_driver" in body else defaults["log_driver"]
        log_options = self._log_options(body["log_options"], at("log_options")) if "log_options" in body else defaults["log_options"]
        if user is not None and 0 in user:
            where = at("user") if "user" in body else "user"
            # GID 0 is root's group: files it writes into the bound host directories are root's
            # group's, and the worker image refuses it like UID 0.
            what = "UID 0 (root)" if user[0] == 0 else "GID 0 (root's group)"
            if role == "celery":
                self.r.problem(where, f"celery will not run with {what} (the image refuses it); "
                                      "use the numeric UID:GID of the indico account", f"{user[0]}:{user[1]}")
            elif not allow_root:
                self.r.problem(where, f"{what} is refused; use the numeric UID:GID of the indico account, "
                                      f"or set {at('allow_root')}: true if this container really needs root",
                               f"{user[0]}:{user[1]}")
        required = (name, image, pull, user, allow_root, enabled, volumes, network, restart,
                    stop_timeout, ports, command, log_options)
        optional = {"stop_signal": stop_signal, "health": probe, "healthcheck": healthcheck, "log_driver": log_driver}
        if any(v is None for v in required) or any(body.get(k) is not None and v is None for k, v in optional.items()):
            return None
        return Container(
            role=role, name=name, image=image, pull=pull, command=command[0], uid=user[0], gid=user[1],
            binds=volumes, network=network, env=tuple(sorted(env.items())), ports=ports,
            restart=restart, stop_timeout=stop_timeout, stop_signal=stop_signal, probe=probe,
            healthcheck=healthcheck, enabled=enabled, allow_root=allow_root,
            log_driver=log_driver, log_options=log_options)

    def _command(self, node: object, path: str) -> tuple[tuple[str, ...] | None] | None:
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

    def _user(self, node: object, path: str) -> tuple[int, int] | None:
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

    def _volumes(self, node: object, path: str, inherited: tuple[Bind, ...] | dict, *, top_level: bool) -> tuple[Bind, ...] | None:
        body = self.r.mapping(node, path, VOLUME_KEYS)
        if body is None:
            return None
        current = {b.target: b for b in inherited} if isinstance(inherited, tuple) else {}
        binds: dict[str, Bind] = {}
        for key, target in (("data", DATA_TARGET), ("scratch", SCRATCH_TARGET)):
            if key in body:
                host = self._host_dir(body[key], key_path(path, key))
                if host is not None:
                    binds[target] = Bind(host, target)
            elif target in current:
                binds[target] = current[target]
            elif top_level:
                self.r.problem(key_path(path, key), f"missing; the host directory bound to {target}")
        extras = body.get("extra", None)
        if extras is None:
            binds.update({t: b for t, b in current.items() if t not in (DATA_TARGET, SCRATCH_TARGET)})
        elif isinstance(extras, list):
            for index, item in enumerate(extras):
                bind = self._bind(item, key_path(key_path(path, "extra"), index))
                if bind is not None:
                    binds[bind.target] = bind
        else:
            self.r.problem(key_path(path, "extra"), 'expected a list of "HOST:CONTAINER" or "HOST:CONTAINER:ro"', extras)
        return tuple(binds.values())

    def _host_dir(self, node: object, path: str) -> str | None:
        host = self.r.string(node, path, hint="a host directory path")
        if host is None:
            return None
        host = os.path.normpath(os.path.join(self.base_dir, host))
        if self.check_paths and not os.path.isdir(host):
            self.r.problem(path, f"no such directory on this host ({host}); create it, owned by the container user", node)
            return None
        return host

    def _bind(self, node: object, path: str) -> Bind | None:
        hint = '"HOST:CONTAINER" or "HOST:CONTAINER:ro", both absolute paths'
        parts = node.split(":") if isinstance(node, str) else []
        if len(parts) not in (2, 3) or not all(parts[:2]) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            self.r.problem(path, f"not a bind; expected {hint}", node)
            return None
        if not parts[1].startswith("/"):
            self.r.problem(path, f"the container side must be an absolute path; expected {hint}", node)
            return None
        host = os.path.normpath(os.path.join(self.base_dir, parts[0]))
        if self.check_paths and not os.path.exists(host):
            self.r.problem(path, f"no such file or directory on this host ({host}); create it first", node)
            return None
        return Bind(host, parts[1], read_only=len(parts) == 3 and parts[2] == "ro")

    def _network(self, node: object, path: str) -> Network | None:
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

    def _env(self, node: object, path: str) -> dict[str, str] | None:
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

    def _restart(self, node: object, path: str, inherited: RestartPolicy) -> RestartPolicy | None:
        body = self.r.mapping(node, path, RESTART_KEYS)
        if body is None:
            return None
        values = {}
        for key in RESTART_KEYS:
            if key in body:
                if key == "max_restarts":
                    values[key] = self.r.integer(body[key], key_path(path, key), minimum=0)
                else:
                    values[key] = self.r.duration(body[key], key_path(path, key))
        if any(v is None for v in values.values()):
            return None
        policy = RestartPolicy(**{**inherited.__dict__, **values})
        if policy.max_backoff < policy.backoff:
            self.r.problem(key_path(path, "max_backoff"), f"must be at least backoff ({policy.backoff:g}s)",
                           body.get("max_backoff", policy.max_backoff))
            return None
        return policy

    def _signal(self, node: object, path: str) -> str | None:
        names = {s.name for s in signal.Signals if s.name.startswith("SIG") and not s.name.startswith("SIG_")}
        text = node.upper() if isinstance(node, str) else ""
        text = text if text.startswith("SIG") else "SIG" + text
        if text in names:
            return text
        self.r.problem(path, "expected a signal name such as SIGTERM, SIGQUIT or SIGINT", node)
        return None

    def _probe(self, node: object, path: str) -> Probe | None:
        body = self.r.mapping(node, path, HEALTH_KEYS)
        if body is None:
            return None
        kinds = [k for k in ("http", "tcp", "exec") if k in body]
        if len(kinds) != 1:
            self.r.problem(path, "give exactly one of http: {port: N, path: /}, tcp: {port: N} or exec: [cmd, ...]")
            return None
        kind = kinds[0]
        timing = self._timing(body, path)
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

    def _healthcheck(self, node: object, path: str) -> Healthcheck | None:
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
        timing = self._timing(body, path)
        return Healthcheck(command, **timing) if command and timing else None

    def _timing(self, body: dict, path: str) -> dict | None:
        timing = {
            "interval": self.r.duration(body.get("interval", 10), key_path(path, "interval"), positive=True),
            "timeout": self.r.duration(body.get("timeout", 5), key_path(path, "timeout"), positive=True),
            "retries": self.r.integer(body.get("retries", 3), key_path(path, "retries"), minimum=1),
            "start_period": self.r.duration(body.get("start_period", 0), key_path(path, "start_period")),
        }
        return None if any(v is None for v in timing.values()) else timing

    def _ports(self, node: object, path: str) -> tuple[Port, ...] | None:
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

    def _log_driver(self, node: object, path: str) -> str | None:
        if node is None:
            return None
        return self.r.string(node, path, pattern=r"[a-z0-9_-]+", hint="a log driver name such as journald or json-file")

    def _log_options(self, node: object, path: str) -> tuple[tuple[str, str], ...] | None:
        body = self.r.mapping(node, path, node.keys() if isinstance(node, dict) else [])
        if body is None:
            return None
        bad = [k for k, v in body.items() if not isinstance(v, (str, int, float)) or isinstance(v, bool)]
        for key in bad:
            self.r.problem(key_path(path, str(key)), "expected a string", body[key])
        return None if bad else tuple(sorted((str(k), str(v)) for k, v in body.items()))

    def _check_unique_names(self, containers: list[Container]) -> None:
        seen: dict[str, str] = {}
        for container in containers:
            if container.name in seen:
                self.r.problem(key_path(key_path("containers", container.role), "name"),
                               f"the same container name as containers.{seen[container.name]}; "
                               f"give each container its own name", container.name)
            else:
                seen[container.name] = container.role
