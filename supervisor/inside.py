"""`indico-supervisor exec --running`: a command in the role's running container, as `docker exec`.

For what belongs to that container's own processes: `psql` on the database's own socket,
a look at the worker's live state. It runs as the container's user, under its dropped
capabilities and no-new-privileges, like the container itself. Only a container the
daemon owns (this site's label) and that runs is entered; anything else is refused.

Unlike a one-shot job, nothing is created or removed, and there is no engine call to
stop an exec'd process: on SIGINT/SIGTERM/SIGHUP (without -t; with -t, Ctrl-C goes to the
program as a key) we leave, say so, and the command may run on, as with docker.
"""
from __future__ import annotations

import shlex
import sys
from typing import BinaryIO, Callable

import docker
import docker.errors

from .attach import DETACH_KEYS, Output, attend, raw_connection
from .model import Site
from .oneshot import (GONE_STATUS, ExecRefused, Interrupted, check_runnable, role_container, stderr_note,
                      stop_signals_raise)
from .spec import LABEL_SITE


class InRunning:
    """One command in the role's container: exec_create, exec_start(socket), relay, exec_inspect."""

    def __init__(self, site: Site, role: str, command: list[str], client: docker.DockerClient,
                 out: BinaryIO, err: BinaryIO, note: Callable[[str], None],
                 stdin_fd: int | None, terminal_fd: int | None):
        self.container = role_container(site, role)
        check_runnable(site, self.container)
        self.site, self.command, self.client, self.note = site, command, client, note
        self.output, self.stdin_fd, self.terminal_fd = Output(out, err), stdin_fd, terminal_fd

    def run(self) -> int:
        container_id = self._owned_and_running()
        api, tty = self.client.api, self.terminal_fd is not None
        with stop_signals_raise():
            try:
                exec_id = api.exec_create(container_id, self.command, stdin=self.stdin_fd is not None, tty=tty,
                                          detach_keys=DETACH_KEYS)["Id"]
                self.note(f"running {shlex.join(self.command)} in {self.container.name} "
                          f"(role {self.container.role}, its running container)")
                conn = raw_connection(api.exec_start(exec_id, socket=True, tty=tty))
                try:
                    # exec_start has started it: `start` has nothing left to do.
                    attend(conn, self.output.write, self.stdin_fd, self.terminal_fd, start=lambda: None,
                           resize=lambda rows, columns: self._resize(exec_id, rows, columns))
                finally:
                    conn.close()
                return self._exit_status(exec_id)
            except Interrupted as interrupted:
                self.note(f"{interrupted}: leaving; {shlex.join(self.command)} may still run in "
                          f"{self.container.name} (the engine cannot stop an exec'd process)")
                return interrupted.exit_code

    def _owned_and_running(self) -> str:
        name, role = self.container.name, self.container.role
        try:
            found = self.client.api.inspect_container(name)
        except docker.errors.NotFound:
            raise ExecRefused(f"role {role}'s container {name} does not exist; start the site "
                              f"(systemctl start indico-supervisor), or drop --running to run the command "
                              f"in a new container") from None
        if (found["Config"].get("Labels") or {}).get(LABEL_SITE) != self.site.name:
            raise ExecRefused(f"{name} is not a container of site {self.site.name} (no {LABEL_SITE}="
                              f"{self.site.name} label); refusing to run a command in a container we do not own")
        state = found["State"]
        if not state.get("Running") or state.get("Paused") or state.get("Restarting"):
            raise ExecRefused(f"{name} is {state.get('Status', 'not running')}, not running; wait for it "
                              f"(indico-supervisor status), or drop --running to run the command in a new container")
        return found["Id"]

    def _resize(self, exec_id: str, rows: int, columns: int) -> None:
        try:
            self.client.api.exec_resize(exec_id, height=rows, width=columns)
        except docker.errors.APIError:  # it has just ended: nothing left to size
            pass

    def _exit_status(self, exec_id: str) -> int:
        try:
            status = self.client.api.exec_inspect(exec_id)["ExitCode"]
        except docker.errors.NotFound:
            status = None
        if status is None:  # the container went (and its execs with it) before we could read it
            self.note(f"no exit status for the command: {self.container.name} was removed or replaced "
                      f"while it ran (exit {GONE_STATUS})")
            return GONE_STATUS
        return status


def run_in_running(site: Site, role: str, command: list[str], client: docker.DockerClient,
                   stdin_fd: int | None = None, terminal_fd: int | None = None) -> int:
    """Run `command` in `role`'s running container; return its exit status."""
    return InRunning(site, role, command, client, sys.stdout.buffer, sys.stderr.buffer, stderr_note(),
                     stdin_fd, terminal_fd).run()
