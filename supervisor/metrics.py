"""Prometheus metrics: counted from the loop's events and statuses, served from a thread.

Owns: the counters and gauges (kept by the loop thread in plain dicts), the snapshot
the exposition reads, and the HTTP server (prometheus_client's, on a daemon thread).
The loop replaces the snapshot whole after each change; the server thread only reads
whichever snapshot is current, so nothing is shared while being changed and no lock
is needed. Uptime is the one value computed at scrape time, from a start time.
Must not: block the loop or decide anything.
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app
from prometheus_client.process_collector import ProcessCollector

from .monitoring import MetricsSettings, Published
from .status import State

PREFIX = "indico_supervisor"
HEALTHS = ("healthy", "unhealthy", "starting")
# The ledger's failure events, each followed by a restart (or by `container_failed`).
RESTART_CAUSES = {"container_exited": "exited", "container_oom_killed": "oom_killed",
                  "container_unhealthy": "unhealthy", "container_removed": "removed"}


@dataclass(frozen=True)
class Snapshot:
    roles: tuple = ()  # (role, name, state, health, started_at, image, image_id)
    restarts: tuple = ()  # ((role, cause), count)
    exit_codes: tuple = ()  # (role, code)
    reloads: tuple = ()  # (result, count)
    engine_up: bool = False
    reconnects: int = 0
    pulled_bytes: int = 0
    pull_failures: int = 0
    reload_refused: bool = False


@dataclass
class Counts:
    restarts: dict = field(default_factory=dict)
    exit_codes: dict = field(default_factory=dict)
    reloads: dict = field(default_factory=lambda: {"applied": 0, "refused": 0})
    connects: int = 0
    pulled_bytes: int = 0
    pull_failures: int = 0
    pulling: dict = field(default_factory=dict)  # image -> bytes already counted for its pull under way


class Metrics:
    def __init__(self, settings: MetricsSettings, site: str, log):
        self.settings = settings
        self.site = site
        self.log = log
        self.counts = Counts()
        self.snapshot = Snapshot()
        self.last_published: Published | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        ProcessCollector(namespace=PREFIX, registry=self.registry)  # the daemon's own CPU and memory
        self.server = None
        try:
            self.server = serve(settings.host, settings.port, self.registry)
            log.info("metrics_serving", listen=settings.listen, public=settings.public)
        except OSError as error:
            # Supervision matters more than its numbers: the daemon keeps running without them.
            log.error("metrics_unavailable", listen=settings.listen, reason=str(error),
                      hint="another process holds the address? metrics are off until the daemon restarts")

    # Fed by the loop thread.

    def event(self, event, mono: float) -> None:
        c, fields = self.counts, event.fields
        role = event.role or fields.get("role")
        name = event.name
        if name in RESTART_CAUSES and event.role is not None:  # our own removals name the container instead
            key = (event.role, RESTART_CAUSES[name])
            c.restarts[key] = c.restarts.get(key, 0) + 1
            self._exit_code(role, fields.get("exit_code"))
        elif name == "container_failed":
            self._exit_code(role, fields.get("exit_code"))
        elif name == "config_reloaded":
            c.reloads["applied"] += 1
        elif name == "reload_refused":
            c.reloads["refused"] += 1
        elif name == "engine_connected":
            c.connects += 1
        elif name == "image_pulling":
            c.pulling[fields.get("image")] = 0
        elif name == "image_pull_progress":
            image, done = fields.get("image"), int(fields.get("bytes") or 0)
            counted = c.pulling.get(image, 0)
            c.pulled_bytes += max(0, done - counted)
            c.pulling[image] = max(done, counted)
        elif name in ("image_pull_failed", "image_unavailable"):
            c.pull_failures += 1
        else:
            return
        self._snap()

    def published(self, published: Published) -> None:
        last = self.last_published
        if last is not None and (last.statuses, last.engine_up, last.images, last.reload_refused) == \
                (published.statuses, published.engine_up, published.images, published.reload_refused):
            return  # an idle turn: nothing to rebuild
        self.last_published = published
        self._snap()

    def deadline(self) -> None:
        return None  # counts change with events only; nothing of its own to wake the loop for

    def close(self) -> None:
        if self.server is not None:
            # Not shutdown(): the server thread waits without a timeout and would never see
            # the request. The thread is a daemon thread, and the process ends or execs next.
            self.server.server_close()
            self.server = None

    def _exit_code(self, role: str | None, code) -> None:
        if role and code is not None:
            try:
                self.counts.exit_codes[role] = int(code)
            except (TypeError, ValueError):
                pass

    def _snap(self) -> None:
        c, p = self.counts, self.last_published
        roles = ()
        if p is not None:
            roles = tuple((s.role, s.name, s.state.value, s.health, s.started_at if s.state is State.RUNNING else None,
                           s.image, p.images.get(s.image) or "") for s in p.statuses)
        self.snapshot = Snapshot(
            roles=roles, restarts=tuple(sorted(c.restarts.items())), exit_codes=tuple(sorted(c.exit_codes.items())),
            reloads=tuple(sorted(c.reloads.items())), engine_up=bool(p and p.engine_up),
            reconnects=max(0, c.connects - 1), pulled_bytes=c.pulled_bytes, pull_failures=c.pull_failures,
            reload_refused=bool(p and p.reload_refused))


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass  # a scrape every 15 s is not an event; the daemon's log stays its own


def serve(host: str, port: int, registry: CollectorRegistry) -> ThreadingWSGIServer:
    """prometheus_client's server, but its thread waits for a request without a timeout.

    start_http_server's serve_forever wakes every 0.5 s to look for a shutdown request:
    an idle daemon would then wake twice a second for nothing.
    """
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    server_class = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})
    server = make_server(host, port, make_wsgi_app(registry), server_class, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": None}, name="metrics",
                     daemon=True).start()
    return server


class _Collector:
    """Reads the current snapshot at each scrape (on the server's thread)."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        snap = self.metrics.snapshot  # one read: the rest of this scrape sees one consistent snapshot
        now = time.time()
        g = lambda name, doc, labels=(): GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels))  # noqa: E731

        state = g("container_state", "1 for the state each role is in (enum): " + ", ".join(s.value for s in State),
                  ("role", "state"))
        health = g("container_health", "1 for the health of each role's running container (enum), "
                                       "when a probe or HEALTHCHECK checks it", ("role", "health"))
        started = g("container_start_time_seconds", "start of the running container, seconds since the epoch",
                    ("role",))
        uptime = g("container_uptime_seconds", "seconds since the running container started", ("role",))
        image = InfoMetricFamily(f"{PREFIX}_container_image", "the image each role runs, and its ID",
                                 labels=["role", "image", "image_id"])
        for role, _name, current, checked, start, reference, image_id in snap.roles:
            for value in State:
                state.add_metric([role, value.value], 1.0 if value.value == current else 0.0)
            if checked:
                for value in HEALTHS:
                    health.add_metric([role, value], 1.0 if value == checked else 0.0)
            if start:
                started.add_metric([role], start)
                uptime.add_metric([role], max(0.0, now - start))
            image.add_metric([role], {"image": reference, "image_id": image_id})
        yield from (state, health, started, uptime, image)

        restarts = CounterMetricFamily(f"{PREFIX}_container_restarts", "restarts by cause: the container exited, "
                                       "was OOM-killed, turned unhealthy or was removed", labels=["role", "cause"])
        for (role, cause), count in snap.restarts:
            restarts.add_metric([role, cause], count)
        yield restarts
        exits = g("container_last_exit_code", "exit code of each role's last failed run", ("role",))
        for role, code in snap.exit_codes:
            exits.add_metric([role], code)
        yield exits

        reloads = CounterMetricFamily(f"{PREFIX}_reloads", "reloads of the site file (SIGHUP), by result",
                                      labels=["result"])
        for result, count in snap.reloads:
            reloads.add_metric([result], count)
        yield reloads
        yield GaugeMetricFamily(f"{PREFIX}_reload_refused", "1 while the last reload was refused (until one applies)",
                                value=1.0 if snap.reload_refused else 0.0)
        yield GaugeMetricFamily(f"{PREFIX}_engine_up", "1 when the Docker engine answers", value=float(snap.engine_up))
        yield CounterMetricFamily(f"{PREFIX}_engine_event_stream_reconnects",
                                  "reconnects of the engine's event stream after the first connect",
                                  value=snap.reconnects)
        yield CounterMetricFamily(f"{PREFIX}_image_pulled_bytes", "bytes downloaded by image pulls",
                                  value=snap.pulled_bytes)
        yield CounterMetricFamily(f"{PREFIX}_image_pull_failures", "pulls that failed, and images unavailable",
                                  value=snap.pull_failures)
