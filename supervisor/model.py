"""Plain frozen values: what a validated site file resolves to, and what the engine shows of a container.

Equal when the settings are equal. Nothing here talks to the engine or keeps state.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Bind:
    host: str  # a host path, or the name of a volume when `named`
    target: str
    read_only: bool = False
    named: bool = False  # a named volume: created with the site label when missing, never removed by us


@dataclass(frozen=True)
class Port:
    host_ip: str | None
    host_port: int
    container_port: int
    protocol: str = "tcp"


@dataclass(frozen=True)
class Network:
    links: tuple[tuple[str, str], ...] = ()  # (container name, alias)
    name: str | None = None


@dataclass(frozen=True)
class RestartPolicy:
    backoff: float = 1.0
    max_backoff: float = 300.0
    reset_after: float = 60.0
    max_restarts: int = 10
    window: float = 600.0
    cooldown: float | None = 600.0  # a failed role is tried again after this; None: never


@dataclass(frozen=True)
class Probe:
    """A health probe the daemon runs itself: http, tcp or exec."""
    kind: str
    port: int | None = None
    path: str = "/"
    command: tuple[str, ...] = ()
    interval: float = 10.0
    timeout: float = 5.0
    retries: int = 3
    start_period: float = 0.0


@dataclass(frozen=True)
class Healthcheck:
    """The engine's own HEALTHCHECK, set on the container at create time."""
    test: tuple[str, ...]
    interval: float = 10.0
    timeout: float = 5.0
    retries: int = 3
    start_period: float = 0.0


@dataclass(frozen=True)
class Container:
    role: str
    name: str
    image: str
    pull: str
    command: tuple[str, ...] | None  # None keeps the image's own CMD
    uid: int
    gid: int
    binds: tuple[Bind, ...]
    network: Network
    env: tuple[tuple[str, str], ...]  # sorted, so equal settings compare equal
    ports: tuple[Port, ...] = ()
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    stop_timeout: float = 30.0
    stop_signal: str | None = None
    probe: Probe | None = None
    healthcheck: Healthcheck | None = None
    enabled: bool = True
    allow_root: bool = False
    log_driver: str | None = None
    log_options: tuple[tuple[str, str], ...] = ()
    depends_on: tuple[tuple[str, str], ...] = ()  # (role, "started" or "healthy"), in the file's order
    cap_add: tuple[str, ...] = ()  # "CAP_…" names, sorted; all others are dropped unless allow_root
    allow_host_access: bool = False  # daemon-only: what the site file may ask for, not what the engine is given
    singleton: bool = False  # daemon-only: runs on one host of the cluster at a time, under a lease (lease.py)

    @property
    def user(self) -> str:
        return f"{self.uid}:{self.gid}"


@dataclass(frozen=True)
class Site:
    path: str
    name: str  # in every label: the containers of this host's site
    containers: tuple[Container, ...]
    stop_on_exit: str = "stop"
    pull_timeout: float = 120.0  # seconds a pull may go without progress before it is abandoned and retried
    monitoring: object = None  # monitoring.Monitoring: the `metrics` and `alerts` sections
    cluster: object = None  # cluster.Cluster: the lease's Redis, length and host name; None: no singletons
    upgrade: object = None  # upgrade_settings.UpgradeSettings; None: the defaults

    def enabled(self) -> tuple[Container, ...]:
        return tuple(c for c in self.containers if c.enabled)

    def container(self, role: str) -> Container | None:
        return next((c for c in self.containers if c.role == role), None)

    def start_order(self) -> tuple[str, ...]:
        """Enabled roles, each after what it depends on; otherwise in the file's order.

        The site file was checked for cycles, so every role finds its place.
        """
        enabled = {c.role: c for c in self.enabled()}
        placed: list[str] = []
        while len(placed) < len(enabled):
            for role, container in enabled.items():
                if role not in placed and all(dep in placed for dep, _ in container.depends_on):
                    placed.append(role)
                    break
            else:
                raise ValueError("a dependency cycle in a checked site")  # a bug: config refuses cycles
        return tuple(placed)


RUNNING_STATES = ("running",)


@dataclass(frozen=True)
class Run:
    """One run of one container: a restart of the same container is a new run.

    `gone` names the container's absence (removed behind our back, or replaced by
    us): a run of its own, so that absence is counted once, like an exit.
    """
    container_id: str
    started_at: float | None = None
    gone: bool = False


@dataclass(frozen=True)
class Observed:
    """One container as the engine last described it."""
    id: str
    name: str
    site: str | None  # our site label, None when the container is not ours
    role: str | None
    spec_hash: str | None
    image_id: str
    status: str  # the engine's: created, running, exited, dead, paused, restarting, removing
    started_at: float | None = None  # epoch seconds
    finished_at: float | None = None
    created_at: float | None = None  # a legacy link is bound to what its target was when this was created
    exit_code: int | None = None
    oom_killed: bool = False
    health: str | None = None  # the engine's HEALTHCHECK verdict: starting, healthy, unhealthy
    ip: str | None = None
    observed_at: float = 0.0  # monotonic; the newer of two descriptions wins
    lease_value: str | None = None  # a singleton's INDICO_SUPERVISOR_LEASE_VALUE: adopted when the key still holds it

    @property
    def running(self) -> bool:
        return self.status in RUNNING_STATES

    @property
    def run(self) -> Run:
        return Run(self.id, self.started_at)
