"""`indico-supervisor exec`: one job in a container dressed as a role's, streamed, then removed.

For `exec -- make-config`, `exec -- indico db prepare` and the like: the job sees the
same image, user, binds, network and env as the role's container, its output comes
back live (stdout and stderr apart), its exit status becomes ours, and its container
is removed whatever happens (exit, engine error, SIGINT, SIGTERM).

The container carries `io.indico-supervisor.oneshot=<site>`, never the site label,
so the daemon neither adopts nor removes it. With `-i` the job gets our stdin (EOF
at its end); with `-t` it gets a terminal of its own, sized like ours, and ours goes
raw meanwhile (`attach`, `terminal`), so `indico shell` and `psql` work.
"""
from __future__ import annotations

import contextlib
import secrets
import shlex
import signal
import sys
import threading
from typing import BinaryIO, Callable

import docker
import docker.errors

from .attach import STDERR, STDOUT, Output, attach_socket, attend
from .engine import Engine, ImageMissing, reason
from .model import Container, Site
from .problems import ConfigError, Problem
from .spec import oneshot_create_kwargs

NAME_INFIX = "-exec-"
# SIGHUP too: a dropped ssh session must not leave an interactive job running for ever.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GONE_STATUS = 125  # as docker's own "the engine failed us": no exit status to pass on
_NAME_ATTEMPTS = 3
CLEANUP_TIMEOUT = 10.0  # seconds an engine call may take while we stop and remove the job
KILL_GRACE = 2.0  # after a second signal: long enough for a healthy engine, short enough to feel at once


class ExecRefused(Exception):
    """A request we will not carry out as given (a user mistake): exit status 2."""


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived; BaseException so no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


def oneshot_name(site: str, suffix: str | None = None) -> str:
    return f"{site}{NAME_INFIX}{suffix or secrets.token_hex(3)}"


def role_container(site: Site, role: str) -> Container:
    """The role's settings, enabled or not: a job may well run for a role this host does not serve."""
    for container in site.containers:
        if container.role == role:
            return container
    roles = ", ".join(c.role for c in site.containers)
    raise ConfigError(site.path, [Problem(f"containers.{role}", f"no such role in this file (it has: {roles}); "
                                                                f"choose one with --role ROLE")])


def check_runnable(site: Site, container: Container) -> None:
    """Refuse what could run as root by accident or take the name of a managed container."""
    if container.uid == 0 and not container.allow_root:  # the file check refuses it too; never rely on one guard
        raise ExecRefused(f"role {container.role} runs as UID 0 (root) without allow_root; refusing to run a job as root")
    prefix = site.name + NAME_INFIX
    clashing = [c for c in site.containers if c.name.startswith(prefix)]
    if clashing:
        names = ", ".join(f"containers.{c.role}.name = {c.name!r}" for c in clashing)
        raise ExecRefused(f"{site.path}: {names}: one-shot containers are named {prefix}<random>, "
                          f"so a managed container named like that could be taken for one; rename it")


class OneShot:
    """One run: create, attach, start, stream, wait, remove. `note` speaks on our stderr.

    `stdin_fd`: relayed to the job (`-i`); `terminal_fd`: the job gets a TTY sized like
    this terminal (`-t`), which goes raw while both are given.
    """

    def __init__(self, site: Site, container: Container, command: list[str], client: docker.DockerClient,
                 out: BinaryIO, err: BinaryIO, note: Callable[[str], None],
                 stdin_fd: int | None = None, terminal_fd: int | None = None):
        self.site, self.container, self.command = site, container, command
        self.client, self.output, self.note = client, Output(out, err), note
        self.stdin_fd, self.terminal_fd = stdin_fd, terminal_fd
        self.name = ""

    def run(self) -> int:
        try:
            return self._run()
        except Interrupted as again:  # only a signal during cleanup gets here: the user will not wait
            return again.exit_code

    def _run(self) -> int:
        container_id = None
        with stop_signals_raise():
            try:
                self._ensure_image()
                with _signals_deferred():  # a container created but not yet known to us would be left behind
                    container_id = self._create()
                self.note(f"running {shlex.join(self.command)} in {self.name} "
                          f"(role {self.container.role}, image {self.container.image})")
                if self.stdin_fd is None and self.terminal_fd is None:
                    self._stream(container_id)
                else:
                    self._attend(container_id)
                return self._exit_status(container_id)
            except Interrupted as interrupted:
                self.note(f"{interrupted}: stopping {self.name or 'the job'} "
                          f"(up to {self.container.stop_timeout:g}s)")
                return interrupted.exit_code
            finally:
                if container_id is not None:
                    self._remove(container_id)

    def _ensure_image(self) -> None:
        c = self.container
        try:
            _, pull_failure = Engine(self.site.name, self.client).resolve_image(
                c.image, c.pull,
                lambda p: self.note(f"pulling {c.image}: {p['layers_done']}/{p['layers']} layers, "
                                    f"{p['bytes'] / 1e6:.1f}/{p['bytes_total'] / 1e6:.1f} MB"),
                on_pull=lambda: self.note(f"pulling {c.image}"), pull_timeout=self.site.pull_timeout)
        except ImageMissing as missing:
            raise ExecRefused(f"{missing} (containers.{c.role}.pull)") from None
        if pull_failure:
            self.note(f"pull of {c.image} failed ({pull_failure}); using the image already on this host")

    def _stream(self, container_id: str) -> None:
        stream = self.client.api.attach(container_id, stdout=True, stderr=True, stream=True, logs=True, demux=True)
        self.client.api.start(container_id)
        for out_chunk, err_chunk in stream:
            self.output.write(STDOUT, out_chunk)
            self.output.write(STDERR, err_chunk)

    def _attend(self, container_id: str) -> None:
        """Our stdin and terminal joined to the job's until its output ends."""
        conn = attach_socket(self.client.api, container_id, stdin=self.stdin_fd is not None)
        try:
            # Sized after start: the engine resizes only a running container (API 1.41 has no
            # size at create), so a job's very first line may see 0x0, as with docker.
            attend(conn, self.output.write, self.stdin_fd, self.terminal_fd,
                   start=lambda: self.client.api.start(container_id),
                   resize=lambda rows, columns: self._resize(container_id, rows, columns))
        finally:
            conn.close()

    def _resize(self, container_id: str, rows: int, columns: int) -> None:
        try:
            self.client.api.resize(container_id, height=rows, width=columns)
        except docker.errors.APIError:  # the job has just ended: nothing left to size
            pass

    def _exit_status(self, container_id: str) -> int:
        try:
            return self.client.api.wait(container_id)["StatusCode"]
        except docker.errors.NotFound:
            self.note(f"{self.name} is gone: its container was removed by someone else while it ran, "
                      f"so its exit status is unknown (exit {GONE_STATUS})")
            return GONE_STATUS

    def _create(self) -> str:
        # `exec --role db` before the daemon ever ran: the site network and volumes it names.
        for created in Engine(self.site.name, self.client).ensure_site_resources(self.container):
            self.note(f"created {created}")
        for attempt in range(_NAME_ATTEMPTS):
            self.name = oneshot_name(self.site.name)
            kwargs = oneshot_create_kwargs(self.site.name, self.container, self.command, self.name)
            if self.stdin_fd is not None:
                # Not detached: the SDK then sets StdinOnce, so the end of our stdin closes the job's.
                kwargs.update(stdin_open=True, detach=False)
            kwargs.update(tty=self.terminal_fd is not None)
            try:
                return self.client.containers.create(**kwargs).id
            except docker.errors.APIError as error:
                # A name taken by someone else's container: pick another, never touch theirs.
                if error.status_code != 409 or attempt == _NAME_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _remove(self, container_id: str) -> None:
        """Stop and remove the job; a signal meanwhile ends us at once (Interrupted escapes).

        Every call is bounded: the job's client waits for ever (a job may be silent for
        hours), but an engine that hangs now must not keep the command from ending.
        """
        api = self.client.api
        api.timeout = CLEANUP_TIMEOUT  # docker-py's stop adds the stop timeout to it
        try:
            api.stop(container_id, timeout=int(round(self.container.stop_timeout)))
            api.remove_container(container_id, force=True, v=True)  # and its anonymous volumes (the image's web volume)
        except docker.errors.NotFound:
            pass
        except Interrupted as again:
            self.note(f"{again} again: killing the job now")
            if not self._kill_briefly(container_id):
                self._say_left_behind(f"the engine did not answer within {KILL_GRACE:g}s")
            raise
        except Exception as error:  # the job's status matters more; say what is left behind
            self._say_left_behind(reason(error))

    def _kill_briefly(self, container_id: str) -> bool:
        """Force-remove the job, waiting for the engine only KILL_GRACE: it may be the one that hangs.

        On a thread, so that waiting is bounded whatever the socket does.
        """
        removed = threading.Event()

        def kill() -> None:
            try:
                self.client.api.remove_container(container_id, force=True, v=True)
            except docker.errors.NotFound:
                pass
            except Exception:  # the caller says what is left behind
                return
            removed.set()
        threading.Thread(target=kill, daemon=True, name="oneshot-kill").start()
        return removed.wait(KILL_GRACE)

    def _say_left_behind(self, why: str) -> None:
        self.note(f"could not remove {self.name} ({why}); remove it with `docker rm -f {self.name}`")


def run_oneshot(site: Site, role: str, command: list[str], client: docker.DockerClient,
                out: BinaryIO | None = None, err: BinaryIO | None = None,
                stdin_fd: int | None = None, terminal_fd: int | None = None) -> int:
    """Run `command` as a job of `role`; return its exit status (128+N if we were stopped by signal N)."""
    container = role_container(site, role)
    check_runnable(site, container)
    job = OneShot(site, container, command, client, out or sys.stdout.buffer, err or sys.stderr.buffer,
                  stderr_note(), stdin_fd, terminal_fd)
    return job.run()


def stderr_note() -> Callable[[str], None]:
    """`exec`'s own messages, on our stderr as it is now (the CLI's scrubbing one)."""
    note_stream = sys.stderr

    def note(text: str) -> None:
        # A terminal that hung up (EIO) must not cut the job's cleanup short.
        with contextlib.suppress(OSError):
            print(f"indico-supervisor exec: {text}", file=note_stream, flush=True)
    return note


def _raise_interrupted(signum: int, frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_signals_raise():
    # `nohup indico-supervisor exec …` asked for a job that outlives the terminal.
    previous = {s: signal.signal(s, _raise_interrupted) for s in _STOP_SIGNALS
                if not (s == signal.SIGHUP and signal.getsignal(s) is signal.SIG_IGN)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT/SIGTERM back; one that arrived meanwhile is raised on leaving."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
