"""What the engine is asked to create for one container, and the hash that names it.

Pure: a `Container` from the site file (plus the image ID once it is known) goes
in, keyword arguments for `client.containers.create` come out. The hash covers
everything that changes the running container, so an owned container whose
label carries the current hash can be adopted as it is, and any other is drift.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass

from .model import Container, Site

LABEL_PREFIX = "io.indico-supervisor."
LABEL_SITE = LABEL_PREFIX + "site"
LABEL_ROLE = LABEL_PREFIX + "role"
LABEL_HASH = LABEL_PREFIX + "spec-hash"
# The lease protocol's own label (lease-spec): the fencing token a singleton's container runs under.
LABEL_LEASE_TOKEN = "indico-supervisor.lease-token"
# One-shot containers (`indico-supervisor exec`) carry these instead of LABEL_SITE:
# the daemon would take a site-labelled container of an unknown role for an orphan.
LABEL_ONESHOT = LABEL_PREFIX + "oneshot"
LABEL_ONESHOT_ROLE = LABEL_PREFIX + "oneshot-role"

_NANOSECONDS = 1_000_000_000


@dataclass(frozen=True)
class ContainerSpec:
    site: str
    container: Container
    image_id: str | None = None  # the resolved image ("sha256:…"); part of the hash
    lease_token: int | None = None  # a singleton's fencing token (its lease value, in the env, is in the hash)

    @property
    def role(self) -> str:
        return self.container.role

    @property
    def name(self) -> str:
        return self.container.name

    @property
    def hash(self) -> str:
        return spec_hash(self.container, self.image_id)

    def labels(self) -> dict[str, str]:
        labels = {LABEL_SITE: self.site, LABEL_ROLE: self.role, LABEL_HASH: self.hash}
        if self.lease_token is not None:
            labels[LABEL_LEASE_TOKEN] = str(self.lease_token)
        return labels

    def create_kwargs(self) -> dict:
        """Arguments for `client.containers.create(**kwargs)`."""
        c = self.container
        kwargs: dict = {
            "image": c.image,
            "command": list(c.command) if c.command is not None else None,
            "name": c.name,
            "user": c.user,
            "environment": dict(c.env),
            "labels": self.labels(),
            # Bind mounts (not legacy -v binds) so a missing host directory is an
            # error instead of an empty root-owned directory made by the engine.
            "mounts": [{"Type": "volume" if b.named else "bind", "Source": b.host, "Target": b.target,
                        "ReadOnly": b.read_only} for b in c.binds],
            # The engine must never restart on its own: restarts are ours, with backoff.
            "restart_policy": {"Name": "no"},
            "detach": True,
        }
        if c.network.name:
            kwargs["network"] = c.network.name
        if c.network.links:
            kwargs["links"] = dict(c.network.links)
        if c.ports:
            kwargs["ports"] = {f"{p.container_port}/{p.protocol}": (p.host_ip, p.host_port) if p.host_ip else p.host_port
                               for p in c.ports}
        if c.log_driver:
            kwargs["log_config"] = {"type": c.log_driver, "config": dict(c.log_options)}
        if c.stop_signal:
            kwargs["stop_signal"] = c.stop_signal
        kwargs.update(_confinement(c))
        if c.healthcheck:
            h = c.healthcheck
            kwargs["healthcheck"] = {"test": list(h.test), "interval": int(h.interval * _NANOSECONDS),
                                     "timeout": int(h.timeout * _NANOSECONDS), "retries": h.retries,
                                     "start_period": int(h.start_period * _NANOSECONDS)}
        return kwargs


def _confinement(c: Container) -> dict:
    """No capabilities but those named, and no gaining any through setuid binaries.

    Indico runs as an unprivileged user and needs none; a compromised worker then
    cannot raw-socket, chown, or mknod even if it finds a way to UID 0. A container
    allowed to run as root keeps the engine's defaults.
    """
    confined = {} if c.allow_root else {"cap_drop": ["ALL"], "security_opt": ["no-new-privileges"]}
    if c.cap_add:
        confined["cap_add"] = list(c.cap_add)
    return confined


def oneshot_create_kwargs(site: str, container: Container, command: list[str], name: str) -> dict:
    """Arguments to create a one-shot job container dressed as `container`'s role.

    Same image, user, binds, network, env, log settings and stop signal; `command`
    replaces the role's. Host ports and health checks are left out: the role's
    own container may hold those ports, and a job that ends is not a service
    (the image's HEALTHCHECK is switched off for the same reason).
    """
    kwargs = ContainerSpec(site, container).create_kwargs()
    kwargs.pop("ports", None)
    kwargs.update(name=name, command=list(command), healthcheck={"test": ["NONE"]},
                  labels={LABEL_ONESHOT: site, LABEL_ONESHOT_ROLE: container.role})
    return kwargs


@functools.lru_cache(maxsize=4096)  # the loop asks every turn; settings are frozen values, so equal ones share it
def spec_hash(container: Container, image_id: str | None) -> str:
    """A digest of what the engine is asked for; unchanged by what only the daemon uses.

    Restart policy, stop timeout, daemon probes, `enabled` and `pull` are left out:
    changing them must not bounce a running container (a pull that brings a new
    image already changes `image_id`). `allow_root` is in: it decides the
    capability drop.
    """
    fields = asdict(container)
    for daemon_only in ("restart", "stop_timeout", "probe", "enabled", "pull", "depends_on", "allow_host_access",
                        "singleton"):
        fields.pop(daemon_only)
    # Host binds hash as they always did, so an upgrade adopts its running containers.
    fields["binds"] = [{k: v for k, v in b.items() if k != "named" or v} for b in fields["binds"]]
    fields["image_id"] = image_id
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def desired_specs(site: Site, image_ids: dict[str, str] | None = None) -> dict[str, ContainerSpec]:
    """Every enabled container of the site, by role, in the file's order."""
    ids = image_ids or {}
    return {c.role: ContainerSpec(site.name, c, ids.get(c.image)) for c in site.enabled()}
