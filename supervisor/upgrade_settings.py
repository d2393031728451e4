"""The site file's `upgrade` section: the jobs run once per new Indico image, before its containers are recreated.

    upgrade:
      commands: [[indico, db, upgrade], [indico, db, --all-plugins, upgrade]]
      timeout: 10m

Owns: reading and checking that section (problems with key paths, like every other
section) and which roles run "the Indico image": the enabled roles whose image is
the `worker` role's. Jobs run with the worker role's settings (user, binds, network, env).
Must not: talk to the engine.
"""
from __future__ import annotations

from dataclasses import dataclass

from .schema import Reader, key_path

UPGRADE_KEYS = ["commands", "timeout"]
DEFAULT_COMMANDS = (("indico", "db", "upgrade"), ("indico", "db", "--all-plugins", "upgrade"))
DEFAULT_TIMEOUT = 600.0
JOB_ROLE = "worker"  # whose settings the jobs take, and whose image marks the roles to upgrade


@dataclass(frozen=True)
class UpgradeSettings:
    commands: tuple[tuple[str, ...], ...] = DEFAULT_COMMANDS  # () switches upgrades off
    timeout: float = DEFAULT_TIMEOUT  # for each job; a job still running then is killed


DEFAULT = UpgradeSettings()


def read_upgrade(r: Reader, top: dict) -> UpgradeSettings | None:
    """The section, or the defaults when absent; None (and problems recorded) when wrong."""
    if "upgrade" not in top:
        return DEFAULT
    body = r.mapping(top["upgrade"], "upgrade", UPGRADE_KEYS)
    if body is None:
        return None
    timeout = r.duration(body.get("timeout", DEFAULT_TIMEOUT), "upgrade.timeout", positive=True)
    commands = _commands(r, body.get("commands", [list(c) for c in DEFAULT_COMMANDS]))
    if timeout is None or commands is None:
        return None
    return UpgradeSettings(commands=commands, timeout=timeout)


def _commands(r: Reader, node: object) -> tuple[tuple[str, ...], ...] | None:
    hint = "a list of commands, each a list of strings, e.g. [[indico, db, upgrade]] ([] for none)"
    if not isinstance(node, list):
        r.problem("upgrade.commands", f"expected {hint}", node)
        return None
    commands = []
    for index, item in enumerate(node):
        words = r.string_list(item, key_path("upgrade.commands", index), non_empty=True,
                              hint="a command as a non-empty list of strings, e.g. [indico, db, upgrade]")
        if words is not None:
            commands.append(tuple(words))
    return tuple(commands) if len(commands) == len(node) else None


def settings_of(site) -> UpgradeSettings:
    return site.upgrade if isinstance(site.upgrade, UpgradeSettings) else DEFAULT


def upgraded_roles(site) -> tuple[str, ...]:
    """The enabled roles that run the Indico image: those with the `worker` role's image reference.

    None without a `worker` role in the file, or with upgrades switched off (`commands: []`).
    """
    worker = site.container(JOB_ROLE)
    if worker is None or not settings_of(site).commands:
        return ()
    return tuple(c.role for c in site.enabled() if c.image == worker.image)
