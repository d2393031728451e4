"""A small image with the lease guard and nothing of Indico: Debian's python3 and python3-redis.

The Debian root filesystem is a tests.debian_images recipe (cached by its recipe
hash); the guard (image/lease_guard.py) is copied onto it by a one-step build, tagged
with a hash of the base image's id and the guard's text, so changing the guard costs
a second, not a new root filesystem.
"""
from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

from tests.debian_images import Recipe, _build_lock, _exists, debian_image

GUARD_SOURCE = Path(__file__).resolve().parent.parent / "image" / "lease_guard.py"
GUARD_PATH = "/usr/local/bin/indico-lease-guard"  # where the worker image has it too
REPOSITORY = "indico-supervisor-test/lease-guard"

PYTHON_REDIS = Recipe(
    name="debian-python-redis",
    packages=("python3", "python3-redis"),
    changes=("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             'CMD ["/bin/sh"]'),
)


def _context(base: str, guard: bytes) -> io.BytesIO:
    dockerfile = f"FROM {base}\nCOPY lease_guard.py {GUARD_PATH}\nRUN chmod 0755 {GUARD_PATH}\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("Dockerfile", dockerfile), ("lease_guard.py", guard)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def guard_image(client, log: Callable[[str], None] | None = None) -> str:
    base = debian_image(client, PYTHON_REDIS, log)
    guard = GUARD_SOURCE.read_bytes()
    digest = hashlib.sha256(client.images.get(base).id.encode() + b"\0" + guard).hexdigest()[:12]
    ref = f"{REPOSITORY}:{digest}"
    with _build_lock("lease-guard"):
        if not _exists(client, ref):
            client.images.build(fileobj=_context(base, guard), custom_context=True, tag=ref, rm=True)
    return ref
