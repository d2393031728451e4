"""The site file's `metrics` and `alerts` sections, and what the daemon hands its observers.

Owns: reading and checking those two sections (problems with key paths, like every
other section), the warnings `check-config` prints about them, and `Published`: what
the loop shows its observers once a turn. Observers (`metrics.Metrics`, `alerts.Alerts`)
are fed on the loop's thread only: `event(event, mono)` for each event it logs and
`published(Published)` once a turn, `deadline()` (a monotonic time the loop must wake
by, or None) and `close()` at the end.
Must not: start anything; `observers_for` builds them, the daemon starts them.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .schema import Reader, key_path

METRICS_KEYS = ["listen", "public"]
ALERTS_KEYS = ["command", "min_interval", "timeout"]
DEFAULT_MIN_INTERVAL = 300.0
DEFAULT_ALERT_TIMEOUT = 30.0


@dataclass(frozen=True)
class MetricsSettings:
    host: str
    port: int
    public: bool = False  # the admin's explicit yes to a non-loopback address

    @property
    def listen(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class AlertSettings:
    command: tuple[str, ...]
    min_interval: float = DEFAULT_MIN_INTERVAL
    timeout: float = DEFAULT_ALERT_TIMEOUT


@dataclass(frozen=True)
class Monitoring:
    metrics: MetricsSettings | None = None  # off unless the file asks
    alerts: AlertSettings | None = None


@dataclass(frozen=True)
class Published:
    """What the loop knows at the end of a turn, for observers."""
    mono: float
    wall: float
    statuses: list
    engine_up: bool
    images: dict = field(default_factory=dict)  # reference -> image ID, once resolved
    reload_refused: bool = False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def read_monitoring(r: Reader, top: dict) -> Monitoring:
    return Monitoring(metrics=_metrics(r, top.get("metrics"), "metrics"),
                      alerts=_alerts(r, top.get("alerts"), "alerts"))


def _section(r: Reader, node: object, path: str, keys: list[str], required: str, example: str) -> dict | None:
    """The section's mapping, or None when it is absent or unusable (its problems recorded)."""
    if node is None:
        return None
    body = r.mapping(node, path, keys)
    if body is not None and required not in body:
        r.problem(key_path(path, required), f"missing; {example}")
        return None
    return body


def _metrics(r: Reader, node: object, path: str) -> MetricsSettings | None:
    body = _section(r, node, path, METRICS_KEYS, "listen", 'e.g. listen: "127.0.0.1:9150"')
    if body is None:
        return None
    public = r.boolean(body.get("public", False), key_path(path, "public"))
    listen = body["listen"]
    host, _, port_text = listen.rpartition(":") if isinstance(listen, str) else ("", "", "")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        r.problem(key_path(path, "listen"), 'expected "HOST:PORT", e.g. "127.0.0.1:9150" or "[::1]:9150"', listen)
        return None
    if public is None:
        return None
    if not is_loopback(host) and not public:
        # The metrics name containers, images and states: not for the whole network by accident.
        r.problem(key_path(path, "listen"), f"{host} is not a loopback address; to serve metrics beyond this host "
                                            f"say so with {key_path(path, 'public')}: true", listen)
        return None
    return MetricsSettings(host=host, port=int(port_text), public=public)


def _alerts(r: Reader, node: object, path: str) -> AlertSettings | None:
    body = _section(r, node, path, ALERTS_KEYS, "command", "a command as a list, e.g. [/usr/local/bin/page-me]")
    if body is None:
        return None
    command = r.string_list(body["command"], key_path(path, "command"), non_empty=True,
                            hint="a command as a list, e.g. [/usr/local/bin/page-me]")
    min_interval = r.duration(body.get("min_interval", DEFAULT_MIN_INTERVAL), key_path(path, "min_interval"))
    timeout = r.duration(body.get("timeout", DEFAULT_ALERT_TIMEOUT), key_path(path, "timeout"), positive=True)
    if command is None or min_interval is None or timeout is None:
        return None
    return AlertSettings(command=tuple(command), min_interval=min_interval, timeout=timeout)


def warnings(monitoring: Monitoring | None) -> list[str]:
    """What `check-config` says about settings that are allowed but worth a second look."""
    found = []
    metrics = monitoring.metrics if monitoring else None
    if metrics is not None and not is_loopback(metrics.host):
        found.append(f"metrics.listen: {metrics.listen} serves the metrics beyond this host (metrics.public: true); "
                     "they name containers, images and states, and have no authentication: firewall the port")
    return found


def observers_for(site, log) -> list:
    """The observers the site file asks for; none by default."""
    monitoring = getattr(site, "monitoring", None) or Monitoring()
    found = []
    if monitoring.metrics is not None:
        from .metrics import Metrics
        found.append(Metrics(monitoring.metrics, site.name, log))
    if monitoring.alerts is not None:
        from .alerts import Alerts
        found.append(Alerts(monitoring.alerts, site, log))
    return found
