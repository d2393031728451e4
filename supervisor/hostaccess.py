"""Settings that hand a container the host itself: binds of the engine's socket or of system trees, the host network.

Any of these turns write access to the site file into root on the host (the Docker
socket alone starts a privileged container with / bound), and none is needed to run
Indico. They are refused unless the container says `allow_host_access: true`, which
`check-config` then shows as a warning, so the choice stays visible.

Paths are judged after resolving symlinks and `..` (os.path.realpath), and as
written: `/srv/../etc` and a symlink to /etc are /etc.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .model import Bind, Network

# Trees whose every part is the host's: kernel and device interfaces, the boot
# loader, the engine's own state (other containers' filesystems, its keys).
_SYSTEM_TREES = ("/proc", "/sys", "/dev", "/boot", "/var/lib/docker")
_DOCKER_SOCKETS = ("/run/docker.sock", "/var/run/docker.sock")
_SOCKET_DIRS = ("/run", "/var/run")
# Under /etc a read-only bind is ordinary (/etc/localtime, /etc/ssl/certs); a writable
# one lets the container change how the host runs (passwd, sudoers, cron, systemd units),
# and these give away credentials even read-only.
_ETC_CREDENTIALS = ("/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/sudoers.d", "/etc/ssh")


@dataclass(frozen=True)
class Finding:
    what: str  # the setting as the admin wrote it, resolved: "/var/run/docker.sock -> /run/docker.sock"
    why: str


def bind_finding(bind: Bind) -> Finding | None:
    if bind.named:  # a volume the engine keeps for us, not a path on the host
        return None
    written = os.path.normpath(bind.host)
    resolved = os.path.realpath(written)
    for path in dict.fromkeys((written, resolved)):
        why = _why(path, bind.read_only)
        if why:
            shown = written if resolved == written else f"{written} (resolves to {resolved})"
            return Finding(shown, why)
    return None


def network_finding(network: Network) -> Finding | None:
    if network.name == "host":
        return Finding("network host", "the host's network stack: every port on the host's interfaces, "
                                       "and services listening on the host's loopback")
    return None


def findings(binds: tuple[Bind, ...], network: Network) -> list[Finding]:
    found = [bind_finding(bind) for bind in binds] + [network_finding(network)]
    return [finding for finding in found if finding]


def _why(path: str, read_only: bool) -> str | None:
    if path == "/":
        return "the host's whole filesystem"
    if path in _DOCKER_SOCKETS or (path.endswith(".sock") and any(_under(path, root) for root in _SOCKET_DIRS)):
        return "a service's control socket; the Docker socket is root on the host"
    for tree in _SYSTEM_TREES:
        if _under(path, tree):
            return f"part of {tree}, the host's own system tree"
    # A parent of a refused path holds it: /var holds /var/lib/docker, /run the Docker socket.
    for held in _SYSTEM_TREES + _DOCKER_SOCKETS + ("/etc",):
        if _under(held, path):
            return f"it holds {held}"
    if path == "/etc":
        return "the host's whole configuration"
    if any(_under(path, credential) for credential in _ETC_CREDENTIALS):
        return "the host's credentials"
    if _under(path, "/etc") and not read_only:
        return "writable host configuration under /etc (bind it read-only with :ro if the container only reads it)"
    return None


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
