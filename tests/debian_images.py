"""Debian images for the tests, built with no registry: mmdebstrap, then `docker import`.

The root filesystem comes from the machine's own apt sources (the files in /etc/apt are
handed to mmdebstrap as they are), so no mirror's host name ever appears in this repo.
Each image is tagged with a hash of its recipe, so a second call on the same engine
builds nothing; change the recipe (or BUILD_VERSION) and it is rebuilt.

A build prints mmdebstrap's progress lines as they come (a first build takes 20-90 s);
nothing runs silent.

Run as a script to build (or reuse) one by name and print its reference:
    python -m tests.debian_images python
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import glob
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# Bump when the build procedure below changes in a way the recipe hash cannot see.
BUILD_VERSION = "1"
REPOSITORY_PREFIX = "indico-supervisor-test/"
SUITE = "bookworm"
LOCK_DIR = Path("/var/tmp/indico-supervisor-test-locks")

# Documentation, man pages and translations are dead weight in a test image.
_SLIM = [
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What goes into one image. Everything here is part of the cache key."""

    name: str  # the image is `indico-supervisor-test/<name>:<hash>` (and `:latest`)
    packages: tuple[str, ...] = ()
    # Shell run inside the finished root filesystem (chroot, as root, `sh -e`).
    customize: str = ""
    # Dockerfile-style instructions for `docker import --change` (ENV, CMD, USER, …).
    changes: tuple[str, ...] = ()
    variant: str = "apt"  # mmdebstrap --variant
    # Trust the machine's own extra CAs (/usr/local/share/ca-certificates): where egress
    # goes through a TLS-inspecting proxy, apt and pip inside the image need them too.
    host_ca: bool = False

    def tag(self) -> str:
        key = json.dumps(
            {**dataclasses.asdict(self), "suite": SUITE, "arch": platform.machine(),
             "build": BUILD_VERSION, "host_ca_files": _host_ca_digest() if self.host_ca else None},
            sort_keys=True,
        )
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    def reference(self) -> str:
        return f"{REPOSITORY_PREFIX}{self.name}:{self.tag()}"


HOST_CA_DIR = Path("/usr/local/share/ca-certificates")


def _host_ca_files() -> list[Path]:
    return sorted(HOST_CA_DIR.glob("**/*.crt")) if HOST_CA_DIR.is_dir() else []


def _host_ca_digest() -> str:
    h = hashlib.sha256()
    for path in _host_ca_files():
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


# Recipes shared by several test modules. Tests may define their own Recipe too.
PYTHON = Recipe(
    name="debian-python",
    packages=("python3", "python3-venv", "ca-certificates"),
    changes=("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             # pip (23.x in bookworm) trusts only its own certifi bundle unless told.
             "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
             'CMD ["/bin/bash"]'),
    host_ca=True,
)


def host_apt_sources() -> list[str]:
    """The machine's own apt source files, handed to mmdebstrap as MIRROR arguments."""
    files = []
    main = Path("/etc/apt/sources.list")
    if main.is_file() and any(
        line.strip() and not line.lstrip().startswith("#") for line in main.read_text().splitlines()
    ):
        files.append(str(main))
    for pattern in ("*.sources", "*.list"):
        files.extend(sorted(glob.glob(f"/etc/apt/sources.list.d/{pattern}")))
    if not files:
        raise RuntimeError("no apt sources on this machine (/etc/apt/sources.list[.d]); "
                           "mmdebstrap needs them to build test images")
    return files


def ensure_mmdebstrap(log: Callable[[str], None]) -> None:
    if shutil.which("mmdebstrap"):
        return
    log("installing mmdebstrap (Debian package)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "mmdebstrap"], check=True, env=env,
                   stdout=subprocess.DEVNULL)


@contextlib.contextmanager
def _build_lock(name: str) -> Iterator[None]:
    """Two test processes asking for the same image build it once."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCK_DIR / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _exists(client, ref: str) -> bool:
    import docker.errors

    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


def build_rootfs(recipe: Recipe, tar_path: str, log: Callable[[str], None]) -> None:
    """mmdebstrap the recipe into an uncompressed tar at tar_path, streaming progress."""
    ensure_mmdebstrap(log)
    cmd = ["mmdebstrap", f"--variant={recipe.variant}", *_SLIM]
    if recipe.packages:
        cmd.append("--include=" + ",".join(recipe.packages))
    script = None
    if recipe.customize:
        script = tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False)
        script.write(recipe.customize)
        script.close()
        cmd.append(f'--customize-hook=chroot "$1" /bin/sh -e < {script.name}')
    if recipe.host_ca and _host_ca_files():
        if "ca-certificates" not in recipe.packages:
            raise ValueError(f"recipe {recipe.name}: host_ca needs the ca-certificates package")
        copies = " ".join(f"'{p}'" for p in _host_ca_files())
        cmd.append(f'--customize-hook=mkdir -p "$1{HOST_CA_DIR}" && cp {copies} "$1{HOST_CA_DIR}/"'
                   ' && chroot "$1" update-ca-certificates')
    # apt's lists and caches are not needed once installed.
    cmd.append('--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin')
    cmd += [SUITE, tar_path, *host_apt_sources()]
    log(f"mmdebstrap {recipe.name}: {len(recipe.packages)} packages")
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        tail: list[str] = []
        for line in proc.stderr:  # mmdebstrap reports its phases on stderr
            line = line.rstrip()
            tail = (tail + [line])[-30:]
            if line.startswith("I:") or line.startswith("E:"):
                log(f"  {recipe.name}: {line}")
        if proc.wait() != 0:
            raise RuntimeError(f"mmdebstrap for {recipe.name} failed (exit {proc.returncode}):\n"
                               + "\n".join(tail))
    finally:
        if script:
            os.unlink(script.name)


def debian_image(client, recipe: Recipe, log: Callable[[str], None] | None = None) -> str:
    """Return the image reference for recipe, building and importing it only if missing."""
    log = log or (lambda msg: print(f"debian_images: {msg}", file=sys.stderr, flush=True))
    ref = recipe.reference()
    repository, tag = ref.rsplit(":", 1)
    with _build_lock(recipe.name):
        if not _exists(client, ref):
            with tempfile.TemporaryDirectory(prefix="indico-rootfs-") as tmp:
                tar_path = os.path.join(tmp, "rootfs.tar")
                build_rootfs(recipe, tar_path, log)
                log(f"docker import {ref} ({os.path.getsize(tar_path) // 2**20} MiB)")
                out = client.api.import_image_from_file(
                    tar_path, repository=repository, tag=tag, changes=list(recipe.changes))
                for line in str(out).splitlines():
                    msg = json.loads(line) if line.strip().startswith("{") else {}
                    if "error" in msg or "errorDetail" in msg:
                        raise RuntimeError(f"docker import of {ref} failed: {msg}")
        client.images.get(ref).tag(repository, "latest")
    return ref


if __name__ == "__main__":
    import docker

    recipes = {r.name: r for r in (PYTHON,)}
    wanted = sys.argv[1:] or list(recipes)
    client = docker.from_env()
    for name in wanted:
        key = name if name in recipes else f"debian-{name}"
        print(debian_image(client, recipes[key]))
