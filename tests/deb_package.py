"""The .deb for the end-to-end tests, built by `packaging/build-deb` and cached.

The cache key is a hash of every input `packaging/build-deb --inputs` names (and of
Debian's python3, whose minor version the venv is tied to), so a rerun with the same
sources reuses the package and any change to them rebuilds it. A build takes about a
minute (pip fetches the dependencies) and streams its progress lines.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).parent.parent
BUILD = ROOT / "packaging" / "build-deb"
CACHE = Path("/var/tmp/indico-supervisor-test-debs")
KEEP = 5  # packages of other source states (other checkouts, earlier edits) kept for reuse


def inputs_digest() -> str:
    names = subprocess.run([str(BUILD), "--inputs"], check=True, capture_output=True, text=True).stdout.split()
    h = hashlib.sha256()
    for name in sorted(names):
        top = ROOT / name
        for path in sorted([top] if top.is_file() else top.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    python = subprocess.run(["/usr/bin/python3", "--version"], capture_output=True, text=True).stdout
    h.update(python.encode())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """Two sessions asking at once build once (and never share build/deb/)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def built_deb(log: Callable[[str], None] | None = None) -> Path:
    """The path of a .deb built from this checkout's current sources."""
    log = log or (lambda msg: print(f"deb_package: {msg}", file=sys.stderr, flush=True))
    out = CACHE / inputs_digest()
    with _lock():
        found = sorted(out.glob("indico-supervisor_*.deb"))
        if found:
            return found[-1]
        log(f"building the .deb into {out} (packaging/build-deb)")
        proc = subprocess.Popen([str(BUILD), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        tail: list[str] = []
        for line in proc.stderr:
            line = line.rstrip()
            tail = (tail + [line])[-40:]
            if line.startswith("build-deb:") or line.lstrip().startswith(("dh_", "Successfully", "Collecting")):
                log(f"  {line.strip()}")
        path = proc.stdout.read().strip().splitlines()
        if proc.wait() != 0 or not path:
            raise RuntimeError(f"packaging/build-deb failed (exit {proc.returncode}):\n" + "\n".join(tail))
        _prune()
        return Path(path[-1])


def _prune() -> None:
    builds = sorted((d for d in CACHE.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True)
    for old in builds[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)


if __name__ == "__main__":
    print(built_deb())
