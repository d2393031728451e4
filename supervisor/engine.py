"""The Docker SDK edge: describe containers, carry out actions, follow events.

Everything here blocks, so it runs on executor or watcher threads and reports
back through the daemon's inbox; nothing here keeps state of its own.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Callable, Iterable, Iterator

import docker
import docker.auth
import docker.errors
import requests.exceptions

from . import execkill, pulls
from .model import Container, Observed
from .spec import LABEL_HASH, LABEL_ROLE, LABEL_SITE, ContainerSpec

# Events that may change what the daemon should do. exec_* (our own probes) and
# attach/resize noise are filtered out before any inspect is spent on them.
INTERESTING_EVENTS = ("create", "start", "die", "oom", "kill", "stop", "destroy", "health_status", "pause", "unpause")
BUILTIN_NETWORKS = ("bridge", "host", "none", "default")
PULL_TIMEOUT = 120.0  # seconds a pull may go without progress (the site's pull_timeout)
CONNECT_TIMEOUT = 10.0


def connect(timeout: float = 60) -> docker.DockerClient:
    return docker.from_env(timeout=timeout)


def connect_patient() -> docker.DockerClient:
    """A client for jobs and builds that may stay silent for minutes: no read timeout.

    A short ping first, so an engine that is down or hung is reported at once.
    """
    probe = connect(timeout=10)
    try:
        probe.ping()
    finally:
        probe.close()
    return docker.from_env(timeout=None)


def is_unreachable(error: BaseException) -> bool:
    """The engine itself is gone, as opposed to refusing one request."""
    if isinstance(error, (requests.exceptions.ConnectionError, ConnectionError, FileNotFoundError)):
        return True
    return isinstance(error, docker.errors.DockerException) and not isinstance(error, docker.errors.APIError)


def reason(error: BaseException) -> str:
    """The engine's own words for a refusal, without the HTTP wrapping."""
    if isinstance(error, docker.errors.APIError) and error.explanation:
        return str(error.explanation)
    return str(error) or type(error).__name__


def observe(attrs: dict, site: str, observed_at: float) -> Observed:
    labels = attrs.get("Config", {}).get("Labels") or {}
    state = attrs.get("State", {})
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    ip = next((n.get("IPAddress") for n in networks.values() if n.get("IPAddress")), None)
    ours = labels.get(LABEL_SITE) == site
    return Observed(
        id=attrs["Id"], name=attrs.get("Name", "").lstrip("/"),
        site=site if ours else None,
        role=labels.get(LABEL_ROLE) if ours else None,
        spec_hash=labels.get(LABEL_HASH) if ours else None,
        image_id=attrs.get("Image", ""), status=state.get("Status", "unknown"),
        started_at=_epoch(state.get("StartedAt")), finished_at=_epoch(state.get("FinishedAt")),
        created_at=_epoch(attrs.get("Created")),
        exit_code=state.get("ExitCode"), oom_killed=bool(state.get("OOMKilled")),
        health=(state.get("Health") or {}).get("Status"), ip=ip, observed_at=observed_at,
        lease_value=_env_value(attrs, LEASE_VALUE_ENV) if ours else None)


LEASE_VALUE_ENV = "INDICO_SUPERVISOR_LEASE_VALUE"


def _env_value(attrs: dict, name: str) -> str | None:
    prefix = name + "="
    return next((item[len(prefix):] for item in (attrs.get("Config") or {}).get("Env") or ()
                 if item.startswith(prefix)), None)


class ImageMissing(LookupError):
    """The image is not on this host and the pull policy forbids fetching it."""


class PullStalled(Exception):
    """A pull made no progress for its pull_timeout and was abandoned; the engine itself answers."""

    def __init__(self, reference: str, seconds: float):
        super().__init__(f"pull of {reference} made no progress for {seconds:g}s (pull_timeout); abandoned")


class Engine:
    """Blocking calls on one client; safe to share between executor threads."""

    def __init__(self, site: str, client: docker.DockerClient | None = None, timeout: float = 60):
        self.site = site
        self._client = client
        self._timeout = timeout
        self._resources_lock = threading.Lock()
        # Networks and volumes seen to exist: we never remove them, so each is looked up once,
        # not at every create; forgotten when a create says something is missing.
        self._ensured: set[str] = set()

    @property
    def client(self) -> docker.DockerClient:
        # Connecting asks the engine for its API version, so it waits until first use:
        # a daemon started before dockerd must come up and wait, not crash.
        if self._client is None:
            self._client = connect(self._timeout)
        return self._client

    def list(self, names: Iterable[str]) -> list[Observed]:
        """Every container of this site, and any other container holding one of `names`."""
        started = time.monotonic()
        wanted = set(names)
        summaries = self.client.api.containers(all=True)
        found = []
        for summary in summaries:
            labels = summary.get("Labels") or {}
            summary_names = {n.lstrip("/") for n in summary.get("Names") or []}
            if labels.get(LABEL_SITE) == self.site or summary_names & wanted:
                described = self.inspect(summary["Id"], started)
                if described is not None:
                    found.append(described)
        return found

    def inspect(self, container_id: str, observed_at: float | None = None) -> Observed | None:
        at = time.monotonic() if observed_at is None else observed_at
        try:
            return observe(self.client.api.inspect_container(container_id), self.site, at)
        except docker.errors.NotFound:
            return None

    def image_id(self, reference: str) -> str | None:
        try:
            return self.client.api.inspect_image(reference)["Id"]
        except docker.errors.ImageNotFound:
            return None

    def pull(self, reference: str, progress: Callable[[dict], None], stall_timeout: float = PULL_TIMEOUT) -> str:
        """Pull, reporting layers and bytes as they come; return the image ID.

        docker-py's own pull reads without a timeout, so a stalled registry would hold
        this thread (and the role in `pulling`) for ever. The same request is made here
        with a read timeout, and a stream that says nothing new for `stall_timeout` is
        closed: PullStalled, which the ledger retries with backoff.
        """
        repository, tag = pulls.split_reference(reference)
        reporter = pulls.PullReporter(progress)
        response = self._pull_request(repository, tag, stall_timeout)
        try:
            last_progress = time.monotonic()
            for line in pulls.json_lines(response):
                if "error" in line:
                    raise docker.errors.APIError(line["error"])
                if reporter.feed(line):
                    last_progress = time.monotonic()
                elif time.monotonic() - last_progress > stall_timeout:
                    raise PullStalled(reference, stall_timeout)
        except requests.exceptions.ConnectionError as error:
            if not pulls.read_timed_out(error):
                raise
            raise PullStalled(reference, stall_timeout) from None
        finally:
            response.close()  # frees the connection; the engine then cancels its side of the pull
        reporter.finish()
        found = self.image_id(reference)
        if found is None:
            raise docker.errors.ImageNotFound(f"{reference} is not on this host after the pull")
        return found

    def _pull_request(self, repository: str, tag: str | None, stall_timeout: float) -> requests.Response:
        # What APIClient.pull sends (its auth header included), but with a read timeout.
        api = self.client.api
        registry, _ = docker.auth.resolve_repository_name(repository)
        header = docker.auth.get_config_header(api, registry)
        try:
            response = api.post(f"{api.base_url}/v{api.api_version}/images/create",
                                params={"fromImage": repository, "tag": tag},
                                headers={"X-Registry-Auth": header} if header else {},
                                stream=True, timeout=(CONNECT_TIMEOUT, stall_timeout))
        except requests.exceptions.ReadTimeout:
            raise PullStalled(f"{repository}:{tag}" if tag else repository, stall_timeout) from None
        try:
            response.raise_for_status()
        except requests.exceptions.HTTPError as error:
            response.close()
            docker.errors.create_api_error_from_http_exception(error)  # raises the SDK's typed error
        return response

    def resolve_image(self, reference: str, pull: str, progress: Callable[[dict], None],
                      on_pull: Callable[[], None] = lambda: None,
                      pull_timeout: float = PULL_TIMEOUT) -> tuple[str, str | None]:
        """The image ID by a `pull` policy, and why a pull failed when the local copy stands in.

        `missing` and `never` use the image on this host; `never` without one raises
        ImageMissing. A failed pull with the image here keeps Indico running on it.
        """
        local = self.image_id(reference)
        if pull == "never" or (pull == "missing" and local):
            if local is None:
                raise ImageMissing(f"image {reference} is not on this host and pull is never; "
                                   f"build it (`indico-supervisor build-image`) or load it here first")
            return local, None
        on_pull()
        try:
            return self.pull(reference, progress, pull_timeout), None
        except Exception as error:
            if local is None:
                raise
            return local, reason(error)

    def create_and_start(self, spec: ContainerSpec, replace: Observed | None, stop_timeout: float,
                         on_created: Callable[[str], None] = lambda what: None) -> Observed:
        # The network and volumes first: if they cannot be made, the old container still runs.
        for what in self.ensure_site_resources(spec.container):
            on_created(what)
        if replace is not None:
            self.remove(replace.id, stop_timeout)
        try:
            container = self.client.containers.create(**spec.create_kwargs())
            return self.start(container.id)
        except docker.errors.NotFound:
            self._ensured.clear()  # a network or volume removed behind our back: look again next time
            raise

    def ensure_site_resources(self, container: Container) -> list[str]:
        """Create the site network and named volumes a container needs, labelled with the site.

        Never removed by us: a volume holds PostgreSQL's data, and a network may be shared.
        Returns what was created ("network NAME", "volume NAME").
        """
        with self._resources_lock:  # roles start 8 at a time: one creates, the others find it
            return self._ensure_site_resources(container)

    def _ensure_site_resources(self, container: Container) -> list[str]:
        created = []
        name = container.network.name
        if name and name not in BUILTIN_NETWORKS and f"network {name}" not in self._ensured:
            try:
                self.client.api.inspect_network(name)
            except docker.errors.NotFound:
                # check_duplicate: the engine would otherwise make a second network of the same name.
                self._create_quietly(lambda: self.client.api.create_network(name, driver="bridge", check_duplicate=True,
                                                                            labels={LABEL_SITE: self.site}))
                created.append(f"network {name}")
            self._ensured.add(f"network {name}")
        for bind in container.binds:
            if bind.named and f"volume {bind.host}" not in self._ensured:
                try:
                    self.client.api.inspect_volume(bind.host)
                except docker.errors.NotFound:
                    self._create_quietly(lambda: self.client.api.create_volume(bind.host, labels={LABEL_SITE: self.site}))
                    created.append(f"volume {bind.host}")
                self._ensured.add(f"volume {bind.host}")
        return created

    @staticmethod
    def _create_quietly(create: Callable[[], object]) -> None:
        try:
            create()
        except docker.errors.APIError as error:
            if error.status_code != 409:  # made by someone else meanwhile: as good
                raise

    def start(self, container_id: str) -> Observed:
        self.client.api.start(container_id)
        return self._must_inspect(container_id)

    def restart(self, container_id: str, stop_timeout: float) -> Observed:
        self.client.api.stop(container_id, timeout=int(round(stop_timeout)))
        return self.start(container_id)

    def stop(self, container_id: str, stop_timeout: float) -> None:
        try:
            self.client.api.stop(container_id, timeout=int(round(stop_timeout)))
        except docker.errors.NotFound:
            pass

    def remove(self, container_id: str, stop_timeout: float) -> None:
        # Stop first with the container's own signal and timeout: `remove(force)` alone is a SIGKILL.
        self.stop(container_id, stop_timeout)
        try:
            # v: the image's anonymous volumes (the worker's /opt/indico/web, ~80 MB) go with
            # it; a recreated container gets fresh ones from its image.
            self.client.api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            pass

    def exec_exit_code(self, container_id: str, command: list[str], timeout: float) -> int | None:
        """`command`'s exit code in the container, or None when it has not ended within `timeout`.

        Started detached and polled, so the caller's thread waits no longer than the
        timeout (exec_run would wait for ever). A command still running then is killed,
        with what it started, so probes that hang do not pile up in the container.
        """
        api = self.client.api
        exec_id = api.exec_create(container_id, command, stdout=False, stderr=False)["Id"]
        api.exec_start(exec_id, detach=True)
        deadline = time.monotonic() + timeout
        pause = 0.01
        while True:
            state = api.exec_inspect(exec_id)
            if not state.get("Running") and state.get("ExitCode") is not None:
                return state["ExitCode"]
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.25)
        execkill.kill_exec(state.get("Pid") or 0, state.get("ContainerID") or container_id)
        return None

    def events(self) -> Iterator[dict]:
        """This site's container events; the stream ends (or raises) when the engine goes away."""
        return self.client.events(decode=True, filters={"type": "container", "label": f"{LABEL_SITE}={self.site}"})

    def _must_inspect(self, container_id: str) -> Observed:
        described = self.inspect(container_id)
        if described is None:
            raise docker.errors.NotFound(f"container {container_id[:12]} vanished right after starting")
        return described


def _epoch(stamp: str | None) -> float | None:
    # The engine writes nanoseconds in UTC, and "0001-01-01T00:00:00Z" for never.
    if not stamp or stamp.startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None
