"""What a validated site file resolves to: plain frozen values, equal when the settings are equal."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Bind:
    host: str
    target: str
    read_only: bool = False


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

    @property
    def user(self) -> str:
        return f"{self.uid}:{self.gid}"


@dataclass(frozen=True)
class Site:
    path: str
    site: str
    containers: tuple[Container, ...]
    stop_on_exit: str = "stop"

    def enabled(self) -> tuple[Container, ...]:
        return tuple(c for c in self.containers if c.enabled)

    def env_values(self) -> list[dict[str, str]]:
        return [dict(c.env) for c in self.containers]
