"""The tiny test image, built with no registry: `docker import` of a busybox rootfs.

There is no Docker Hub here, so instead of pulling `busybox` we pack Debian's static
busybox (/bin/busybox, package busybox-static) into a root filesystem tar and import
it. The result is cached under a tag derived from the binary and BUILD_VERSION, so
only the first call on an engine builds anything.

Run as a script to build (or reuse) it and print the reference:
    python harness/images.py
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile

import docker
import docker.errors

# Bump whenever the rootfs recipe below changes, so cached images are not reused.
BUILD_VERSION = "1"

REPOSITORY = "indico-supervisor-test/busybox"
BUSYBOX = "/bin/busybox"

# Applets the tests and the supervisor's test fixtures rely on.
REQUIRED_APPLETS = ("sh", "sleep", "nc", "httpd", "kill", "wget", "true", "false", "id")

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"

# Fixed mtime: the tar (and so the layer) depends only on the recipe and the binary.
MTIME = 0


def _applets() -> list[str]:
    out = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True, text=True).stdout
    applets = sorted({name for name in out.split() if name and "/" not in name})
    missing = [a for a in REQUIRED_APPLETS if a not in applets]
    if missing:
        raise RuntimeError(f"{BUSYBOX} lacks applets the tests need: {', '.join(missing)}")
    return applets


def _tag_for(binary: bytes) -> str:
    h = hashlib.sha256(binary)
    h.update(b"\0build-version:" + BUILD_VERSION.encode())
    return h.hexdigest()[:12]


def _rootfs_tar(binary: bytes, applets: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:

        def add(name: str, type_=tarfile.REGTYPE, mode=0o755, data=b"", linkname=""):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.linkname = type_, mode, MTIME, linkname
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.size = len(data) if type_ == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if type_ == tarfile.REGTYPE else None)

        for d, mode in [("bin", 0o755), ("etc", 0o755), ("www", 0o755), ("proc", 0o555),
                        ("sys", 0o555), ("dev", 0o755), ("root", 0o700), ("tmp", 0o1777)]:
            add(d, tarfile.DIRTYPE, mode)
        add("bin/busybox", data=binary)
        for applet in sorted(set(applets) | {"sh"}):
            if applet != "busybox":
                add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, linkname="busybox")
        add("etc/passwd", mode=0o644, data=PASSWD.encode())
        add("etc/group", mode=0o644, data=GROUP.encode())
    return buf.getvalue()


def busybox_image(client: docker.DockerClient) -> str:
    """Return `indico-supervisor-test/busybox:<h>`, importing it only if not yet present.

    Also points `…:latest` at the same image, for humans poking around by hand.
    """
    applets = _applets()  # checked even on a cache hit: the binary may have been swapped
    with open(BUSYBOX, "rb") as f:
        binary = f.read()
    tag = _tag_for(binary)
    ref = f"{REPOSITORY}:{tag}"
    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        out = client.api.import_image_from_data(
            _rootfs_tar(binary, applets),
            repository=REPOSITORY,
            tag=tag,
            # An imported image has no Env at all; say PATH explicitly rather than rely on
            # the engine's default.
            changes=['ENV PATH=/bin', 'CMD ["sh"]'],
        )
        # The engine reports failures inside a 200 response as JSON lines.
        for line in str(out).splitlines():
            msg = json.loads(line) if line.strip().startswith("{") else {}
            if "error" in msg or "errorDetail" in msg:
                raise RuntimeError(f"docker import of {ref} failed: {msg}")
        image = client.images.get(ref)
    image.tag(REPOSITORY, "latest")
    return ref


if __name__ == "__main__":
    print(busybox_image(docker.from_env()))
