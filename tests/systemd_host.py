"""A Debian machine with systemd as PID 1, in a container, for the end-to-end tests.

The image is Debian bookworm with systemd and python3 (the package's Depends, so
installing the .deb needs no network), built by tests/debian_images.py. The container
runs with the capabilities systemd needs (`--privileged` is refused on these machines)
and the host's Docker socket at /run/docker.sock: the daemon inside creates its
containers on the HOST engine, so every path a site binds must exist identically on
the host and inside (`shared_dirs` binds host directories at the same path).

`journal_dir`, a host directory, is the container's /run/systemd/journal: its
journald's sockets appear there, which `host_journal()` uses to give the host engine's
journald log driver a journal to write to.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.debian_images import LOCK_DIR, Recipe

TEST_LABEL = "io.indico-supervisor.test"

SYSTEMD = Recipe(
    name="debian-systemd",
    packages=("systemd", "systemd-sysv", "python3"),
    # Units that need hardware, a network of their own or a console have no place here.
    customize="systemctl mask getty@tty1.service console-getty.service systemd-udevd.service "
              "systemd-udev-trigger.service systemd-networkd.service systemd-resolved.service "
              "systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_reap.service "
              "fstrim.timer\n"
              "systemctl set-default multi-user.target\n",
    changes=("ENV container=docker", 'CMD ["/lib/systemd/systemd"]'),
)


class SystemdHost:
    def __init__(self, client, image: str, journal_dir: Path, shared_dirs: list[Path], mounts: dict[str, str]):
        self.journal_dir = journal_dir
        self.deb = ""  # the package's path inside, set by whoever mounted it
        docker_socket = os.path.realpath("/var/run/docker.sock")
        volumes = {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
                   docker_socket: {"bind": "/run/docker.sock", "mode": "rw"},
                   str(journal_dir): {"bind": "/run/systemd/journal", "mode": "rw"}}
        volumes.update({str(d): {"bind": str(d), "mode": "rw"} for d in shared_dirs})
        volumes.update({host: {"bind": inside, "mode": "ro"} for host, inside in mounts.items()})
        self.container = client.containers.run(
            image, detach=True, name=f"indico-supervisor-systemd-{uuid.uuid4().hex[:8]}",
            labels={TEST_LABEL: "systemd-host"}, hostname="indico-host",
            cap_add=["ALL"], cap_drop=["SYS_RESOURCE"], security_opt=["seccomp=unconfined"],
            cgroupns="host", tmpfs={"/run": "", "/run/lock": ""}, volumes=volumes)

    def wait_booted(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.sh("systemctl is-system-running", check=False)[1].strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)
        raise AssertionError(f"systemd did not finish booting within {timeout}s (state {state!r}):\n"
                             + self.sh("systemctl --failed --no-pager; journalctl -b --no-pager | tail -40",
                                       check=False)[1])

    def sh(self, script: str, check: bool = True) -> tuple[int, str]:
        """Run a shell line inside as root; (exit status, stdout+stderr)."""
        result = self.container.exec_run(["sh", "-c", script])
        output = result.output.decode(errors="replace")
        if check and result.exit_code != 0:
            raise AssertionError(f"`{script}` exited {result.exit_code}:\n{output}")
        return result.exit_code, output

    def write(self, path: str, text: str) -> None:
        quoted, body = shlex.quote(path), text if text.endswith("\n") else text + "\n"
        self.sh(f"mkdir -p $(dirname {quoted}) && cat > {quoted} <<'EOF_E2E'\n{body}EOF_E2E")

    def unit(self, prop: str, unit: str = "indico-supervisor") -> str:
        return self.sh(f"systemctl show --property={prop} --value {unit}")[1].strip()

    def journal(self, *args: str) -> str:
        return self.sh("journalctl --no-pager " + " ".join(shlex.quote(a) for a in args))[1]

    def remove(self) -> None:
        self.container.remove(force=True)


HOST_JOURNAL = Path("/run/systemd/journal")


@contextlib.contextmanager
def host_journal(journal_dir: Path) -> Iterator[str]:
    """Give the host engine's journald log driver a journal; yield where to read it.

    dockerd's journald driver writes to /run/systemd/journal/socket in ITS mount
    namespace (the host's). A host whose dockerd runs under systemd has one: yield
    "host" (read with the host's journalctl). A host without (dockerd started by hand,
    as on the test machines) gets, for the duration, a symlink there to journal_dir,
    where the systemd container's journald has its sockets: yield "container". Only
    a link this made is removed; a lock keeps two sessions from sharing it.
    """
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCK_DIR / "host-journal.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if HOST_JOURNAL.is_symlink():
            HOST_JOURNAL.unlink()  # left by a run that was killed: with the lock held, nobody uses it
        if HOST_JOURNAL.exists():
            yield "host"
            return
        made_parent = not HOST_JOURNAL.parent.exists()
        HOST_JOURNAL.parent.mkdir(parents=True, exist_ok=True)
        HOST_JOURNAL.symlink_to(journal_dir)
        try:
            yield "container"
        finally:
            if HOST_JOURNAL.is_symlink() and os.readlink(HOST_JOURNAL) == str(journal_dir):
                HOST_JOURNAL.unlink()
            if made_parent:
                with contextlib.suppress(OSError):
                    HOST_JOURNAL.parent.rmdir()
