"""The engine side of `RunUpgrade`: a new image's upgrade jobs, one after the other, each a one-shot container.

Each job is dressed as the worker role's container (`oneshot.py`'s: same user, binds,
network, env; its own name, the one-shot labels, never the site label, so the daemon
neither adopts nor removes it), on the exact image ID being upgraded to. Its output
goes line by line to the loop (`UpgradeOutput`, logged to the journal); a job still
running after the timeout is killed; every job container is removed whatever happens.
Runs on an executor thread: it blocks, keeps no state, and reports through the inbox.
"""
from __future__ import annotations

import collections
import secrets
import shlex
import threading
from typing import Callable

import docker.errors

from .engine import Engine, connect_patient
from .oneshot import check_runnable, oneshot_name, role_container
from .plan import RunUpgrade
from .spec import LABEL_ONESHOT, LABEL_PREFIX, oneshot_create_kwargs
from .upgrade_lock import upgrade_in_turn
from .upgrades import TAIL_LINES, UpgradeJobLeftOver, UpgradeJobStarted, UpgradeOutput, UpgradeResult

LABEL_UPGRADE = LABEL_PREFIX + "upgrade"  # the image ID a job upgrades to: `docker ps --filter label=…`
POLL = 0.5  # seconds between looks at the timeout and at the daemon's stop
REMOVE_TIMEOUT = 10.0


def run_upgrade(engine: Engine, action: RunUpgrade, site, post: Callable[[object], None],
                stopping: Callable[[], bool]) -> UpgradeResult:
    if site.cluster is None:
        return _run_jobs(engine, action, site, post, stopping)
    # Every host of the cluster sees the new image: one migrates the shared database at a time.
    return upgrade_in_turn(site.cluster, site.name, action.image_id,
                           lambda: _run_jobs(engine, action, site, post, stopping), post, stopping)


def _run_jobs(engine: Engine, action: RunUpgrade, site, post: Callable[[object], None],
              stopping: Callable[[], bool]) -> UpgradeResult:
    container = role_container(site, action.role)
    check_runnable(site, container)  # never a job as root by accident
    engine.ensure_site_resources(container)
    client = connect_patient()  # a job may be silent for minutes: its output stream has no read timeout
    try:
        _remove_left_over_jobs(client, site.name, post)
        for index, command in enumerate(action.commands):
            post(UpgradeJobStarted(action.image_id, index, command))
            job = _Job(client, site.name, container, action, command, post)
            exit_code, timed_out, output = job.run(action.timeout, stopping)
            if exit_code != 0 or timed_out:
                return UpgradeResult(index, shlex.join(command), exit_code, timed_out, tuple(output))
        return UpgradeResult(len(action.commands))
    finally:
        client.close()


class _Job:
    def __init__(self, client, site: str, container, action: RunUpgrade, command: tuple[str, ...],
                 post: Callable[[object], None]):
        self.client, self.post = client, post
        self.command = shlex.join(command)
        kwargs = oneshot_create_kwargs(site, container, list(command), oneshot_name(site, "upgrade-" + _suffix()))
        kwargs["image"] = action.image_id  # exactly the image being upgraded to, whatever its tag says now
        kwargs["labels"][LABEL_UPGRADE] = action.image_id
        self.kwargs = kwargs
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def run(self, timeout: float, stopping: Callable[[], bool]) -> tuple[int | None, bool, list[str]]:
        api = self.client.api
        container_id = self.client.containers.create(**self.kwargs).id
        try:
            stream = api.attach(container_id, stdout=True, stderr=True, stream=True, logs=True, demux=True)
            ended = threading.Event()
            reader = threading.Thread(target=self._read, args=(stream, ended), daemon=True, name="upgrade-output")
            reader.start()
            api.start(container_id)
            waited, timed_out = 0.0, False
            while not ended.wait(POLL):
                waited += POLL
                if waited >= timeout or stopping():
                    timed_out = waited >= timeout
                    api.kill(container_id)  # ends its output stream too
                    break
            exit_code = api.wait(container_id)["StatusCode"]
            reader.join(REMOVE_TIMEOUT)  # the last lines, after the exit
            return exit_code, timed_out, list(self.tail)
        finally:
            try:
                api.remove_container(container_id, force=True, v=True)
            except docker.errors.NotFound:
                pass

    def _read(self, stream, ended: threading.Event) -> None:
        partial = {"stdout": b"", "stderr": b""}
        try:
            for out_chunk, err_chunk in stream:
                for name, chunk in (("stdout", out_chunk), ("stderr", err_chunk)):
                    if chunk:
                        *lines, partial[name] = (partial[name] + chunk).split(b"\n")
                        for line in lines:
                            self._line(name, line)
        except Exception:  # the stream broke (a kill, the engine): the exit status says what happened
            pass
        finally:
            for name, rest in partial.items():
                if rest:
                    self._line(name, rest)
            ended.set()

    def _line(self, stream: str, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r")
        self.tail.append(line)
        self.post(UpgradeOutput(self.command, stream, line))


def _remove_left_over_jobs(client, site: str, post: Callable[[object], None]) -> None:
    """Jobs of an earlier daemon that ended without removing them (SIGKILL, a re-exec): never two migrations at once.

    Only containers carrying both this site's one-shot label and the upgrade label: an
    admin's own `exec` job is never touched.
    """
    for leftover in client.containers.list(all=True, filters={"label": [f"{LABEL_ONESHOT}={site}", LABEL_UPGRADE]}):
        try:
            leftover.remove(force=True, v=True)
        except docker.errors.NotFound:
            continue
        post(UpgradeJobLeftOver(leftover.name, leftover.labels.get(LABEL_UPGRADE, "")))


def _suffix() -> str:
    return secrets.token_hex(3)
