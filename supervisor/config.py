"""The site file: load it, check every key, and resolve each container's settings.

`load_site(path)` returns a `Site` or raises `ConfigError` holding every problem
found. Nothing here talks to Docker; host paths are checked on the local disk
because a bind of a missing directory would otherwise be created by the engine,
empty and owned by root.
"""
from __future__ import annotations

import os
import re

import yaml

from . import hostaccess, yamlload
from .capabilities import read_cap_add
from .cluster import read_cluster
from .model import Bind, Container, Network, RestartPolicy, Site
from .monitoring import read_monitoring
from .upgrade_settings import read_upgrade
from .problems import ConfigError, Problem
from .schema import Reader, key_path
from .sections import NAME_PATTERN, SectionReader

DEFAULT_PATH = "/etc/indico-supervisor/site.yaml"


# Roles the image README describes; any other role is a generic container.
ROLE_DEFAULTS = {
    "worker": {"name": "indico-worker", "command": ["run"]},
    "celery": {"name": "indico-celery", "command": ["celery"]},
}

SITE_KEYS = ["site", "image", "pull", "user", "volumes", "network", "env", "restart",
             "stop", "containers", "log_driver", "log_options", "pull_timeout",
             "metrics", "alerts", "cluster", "upgrade"]
CONTAINER_KEYS = ["image", "pull", "command", "user", "allow_root", "volumes", "network",
                  "env", "ports", "restart", "stop_timeout", "stop_signal", "health",
                  "healthcheck", "enabled", "name", "log_driver", "log_options", "depends_on", "cap_add", "allow_host_access",
                  "singleton"]
# Keys that belong one level up or down; named so the hint points at the right one.
RENAMED = {"stop": "stop_timeout", "timeout": "stop_timeout", "signal": "stop_signal",
           "links": "network", "volume": "volumes", "environment": "env", "port": "ports",
           "containers": "(only at the top level)", "site": "(only at the top level)"}
STOP_KEYS = ["timeout", "on_exit"]

ROLE_PATTERN = r"[a-z0-9][a-z0-9_-]*"


def load_site(path: str, check_paths: bool = True) -> Site:
    """Read and check the site file; raise ConfigError with every problem in it.

    `check_paths=False` skips looking for host directories on disk: `status` must work
    while a bound directory is missing, since that is when an admin needs it.
    """
    try:
        text = yamlload.read_text(path)
    except FileNotFoundError:
        raise ConfigError(path, [Problem("", "file not found; copy examples/site.yaml there, "
                                             "or give another file with --config PATH")]) from None
    except yamlload.ReadRefused as refused:
        raise ConfigError(path, [Problem("", str(refused))]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(path, [Problem("", f"cannot read the file: {error}")]) from None
    try:
        tree = yamlload.load(text)
    except RecursionError:
        raise ConfigError(path, [Problem("", "not valid YAML: nested too deeply")]) from None
    except yamlload.ExpansionRefused as refused:
        raise ConfigError(path, [Problem("", refused.problem)]) from None
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


def parse_site(tree: object, path: str, check_paths: bool = True) -> Site:
    reader = Reader()
    site = SiteReader(reader, os.path.dirname(os.path.abspath(path)), check_paths).read(tree, path)
    if reader.problems or site is None:
        raise ConfigError(path, reader.problems or [Problem("", "the file is empty; start from examples/site.yaml")])
    return site


class SiteReader:
    def __init__(self, reader: Reader, base_dir: str, check_paths: bool = True):
        self.r = reader
        self.sections = SectionReader(reader, base_dir, check_paths)

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
            "user": self.sections.user(top["user"], "user") if "user" in top else None,
            "volumes": self.sections.volumes(top.get("volumes"), "volumes", {}, top_level=True),
            "network": self.sections.network(top.get("network", {"links": ["indico-db", "indico-redis"]}), "network"),
            "env": self.sections.env(top.get("env"), "env"),
            "restart": self.sections.restart(top.get("restart"), "restart", RestartPolicy()),
            "stop_timeout": self.r.duration(stop.get("timeout", 30), "stop.timeout"),
            "log_driver": self.sections.log_driver(top.get("log_driver"), "log_driver"),
            "log_options": self.sections.log_options(top.get("log_options"), "log_options"),
        }
        on_exit = self.r.choice(stop.get("on_exit", "stop"), "stop.on_exit", ["stop", "leave"])
        pull_timeout = self.r.duration(top.get("pull_timeout", 120), "pull_timeout", positive=True)
        cluster = read_cluster(self.r, top)
        defaults["clustered"] = top.get("cluster") is not None  # even a broken section: no second problem
        containers = self._containers(top.get("containers"), defaults, "user" in top)
        monitoring = read_monitoring(self.r, top)
        upgrade = read_upgrade(self.r, top)
        if name is None or on_exit is None or containers is None or pull_timeout is None or upgrade is None:
            return None
        return Site(path=path, name=name, containers=containers, stop_on_exit=on_exit, pull_timeout=pull_timeout,
                    monitoring=monitoring, cluster=cluster, upgrade=upgrade)

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
        self._check_dependencies(built)
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
        command = self.sections.command(body.get("command", role_defaults.get("command")), at("command"))
        user = self.sections.user(body["user"], at("user")) if "user" in body else defaults["user"]
        allow_root = self.r.boolean(body.get("allow_root", False), at("allow_root"))
        enabled = self.r.boolean(body.get("enabled", True), at("enabled"))
        # Indico's data and scratch binds (and the site's extra ones) are for the roles that run
        # Indico: worker, celery, and any role on the site's image. PostgreSQL gets only its own.
        runs_indico = role in ROLE_DEFAULTS or image == defaults["image"]
        volumes = defaults["volumes"] if runs_indico else ()
        if "volumes" in body:
            volumes = self.sections.volumes(body["volumes"], at("volumes"), volumes or {}, top_level=False)
        network = self.sections.network(body["network"], at("network")) if "network" in body else defaults["network"]
        env = dict(defaults["env"] or {})
        env.update(self.sections.env(body.get("env"), at("env")) or {})
        restart = defaults["restart"]
        if "restart" in body:
            # Over the defaults when the site's own is broken: its mistakes are reported in the same pass.
            restart = self.sections.restart(body["restart"], at("restart"), restart or RestartPolicy())
        stop_timeout = self.r.duration(body["stop_timeout"], at("stop_timeout")) if "stop_timeout" in body else defaults["stop_timeout"]
        stop_signal = self.sections.signal(body["stop_signal"], at("stop_signal")) if "stop_signal" in body else None
        probe = self.sections.probe(body["health"], at("health")) if "health" in body else None
        healthcheck = self.sections.healthcheck(body["healthcheck"], at("healthcheck")) if "healthcheck" in body else None
        ports = self.sections.ports(body.get("ports", []), at("ports"))
        log_driver = self.sections.log_driver(body["log_driver"], at("log_driver")) if "log_driver" in body else defaults["log_driver"]
        log_options = self.sections.log_options(body["log_options"], at("log_options")) if "log_options" in body else defaults["log_options"]
        depends_on = self.sections.depends_on(body["depends_on"], at("depends_on")) if "depends_on" in body else ()
        cap_add = read_cap_add(self.r, body["cap_add"], at("cap_add")) if "cap_add" in body else ()
        allow_host_access = self.r.boolean(body.get("allow_host_access", False), at("allow_host_access"))
        singleton = self._singleton(role, body, at("singleton"), defaults["clustered"])
        if allow_host_access is False and volumes is not None and network is not None:
            self._refuse_host_access(path, body, volumes, network)
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
                    stop_timeout, ports, command, log_options, depends_on, cap_add, allow_host_access, singleton)
        optional = {"stop_signal": stop_signal, "health": probe, "healthcheck": healthcheck, "log_driver": log_driver}
        if any(v is None for v in required) or any(body.get(k) is not None and v is None for k, v in optional.items()):
            return None
        return Container(
            role=role, name=name, image=image, pull=pull, command=command[0], uid=user[0], gid=user[1],
            binds=volumes, network=network, env=tuple(sorted(env.items())), ports=ports,
            restart=restart, stop_timeout=stop_timeout, stop_signal=stop_signal, probe=probe,
            healthcheck=healthcheck, enabled=enabled, allow_root=allow_root,
            log_driver=log_driver, log_options=log_options, depends_on=depends_on, cap_add=cap_add,
            allow_host_access=allow_host_access, singleton=singleton)

    def _singleton(self, role: str, body: dict, path: str, clustered: bool) -> bool | None:
        """One container of this role across all hosts (celery runs beat): it needs the cluster's lease."""
        if "singleton" not in body:
            return clustered and role == "celery"
        singleton = self.r.boolean(body["singleton"], path)
        if singleton is not None and not clustered:
            self.r.problem(path, "needs a `cluster:` section (redis, lease, host) to hold the lease in; "
                                 "without one, run this role on one host only and drop `singleton`", singleton)
            return None
        return singleton

    def _refuse_host_access(self, path: str, body: dict, volumes: tuple[Bind, ...], network: Network) -> None:
        opt_in = f"or set {key_path(path, 'allow_host_access')}: true if this container really needs it"
        for bind in volumes:
            finding = hostaccess.bind_finding(bind)
            if finding:
                # Where the bind was written: the container's own volumes, or the site's it inherits.
                where = self.sections.bind_paths.get(bind, key_path(path, "volumes"))
                self.r.problem(where, f"binds {finding.what}: {finding.why}; this gives the container the host, "
                                      f"not just Indico's files; bind a directory of its own instead, {opt_in}",
                               f"{bind.host}:{bind.target}{':ro' if bind.read_only else ''}")
        finding = hostaccess.network_finding(network)
        if finding:
            where = key_path(path, "network.name") if "network" in body else "network.name"
            self.r.problem(where, f"{finding.why}; use links or a user-defined network, {opt_in}", network.name)

    def _check_unique_names(self, containers: list[Container]) -> None:
        seen: dict[str, str] = {}
        for container in containers:
            if container.name in seen:
                self.r.problem(key_path(key_path("containers", container.role), "name"),
                               f"the same container name as containers.{seen[container.name]}; "
                               f"give each container its own name", container.name)
            else:
                seen[container.name] = container.role

    def _check_dependencies(self, containers: list[Container]) -> None:
        by_role = {c.role: c for c in containers}
        for container in containers:
            for dep, _ in container.depends_on:
                at = key_path(key_path(key_path("containers", container.role), "depends_on"), dep)
                if dep == container.role:
                    self.r.problem(at, "a container cannot depend on itself")
                elif dep not in by_role:
                    self.r.problem(at, f"no such role; the roles are {', '.join(sorted(by_role))}")
                elif container.enabled and not by_role[dep].enabled:
                    self.r.problem(at, f"containers.{dep} is disabled (enabled: false); enable it, "
                                       f"or drop the dependency")
        cycle = _find_cycle({c.role: [d for d, _ in c.depends_on if d in by_role and d != c.role] for c in containers})
        if cycle:
            at = key_path(key_path(key_path("containers", cycle[0]), "depends_on"), cycle[1])
            self.r.problem(at, f"a dependency cycle: {' -> '.join(cycle)}; nothing in it could ever start first")


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One cycle as a path that ends where it starts (worker -> db -> worker), or None."""
    done: set[str] = set()

    def visit(role: str, path: list[str]) -> list[str] | None:
        if role in path:
            return path[path.index(role):] + [role]
        if role in done:
            return None
        for dep in graph.get(role, []):
            found = visit(dep, path + [role])
            if found:
                return found
        done.add(role)
        return None

    for role in graph:
        found = visit(role, [])
        if found:
            return found
    return None

