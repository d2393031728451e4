"""`indico-supervisor build-image`: build the worker image through the engine, progress as it comes.

The context is the Dockerfile directory the Debian package installs, or the
repository's `image/` in a checkout; the tag is the image the site file's worker
runs, so the daemon (with `pull: never` or `missing`) finds what was built.
"""
from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Callable

import docker
import yaml

from .config import load_site

PACKAGED_CONTEXT = "/usr/share/indico-supervisor/image"
CHECKOUT_CONTEXT = str(Path(__file__).resolve().parent.parent / "image")
DEFAULT_TAG = "indico-worker:latest"
HEARTBEAT_AFTER = 30.0  # seconds of silence (a quiet RUN step) before saying we are still at it
PULL_PROGRESS_EVERY = 2.0
_BUILD_ARG = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)


class BuildRefused(Exception):
    """A request we will not carry out as given (a user mistake): exit status 2."""


def default_context() -> str:
    return PACKAGED_CONTEXT if os.path.isdir(PACKAGED_CONTEXT) else CHECKOUT_CONTEXT


def check_context(context: str) -> str:
    path = os.path.abspath(context)
    if not os.path.isdir(path):
        raise BuildRefused(f"build context {path} is not a directory; give the image's directory with --context DIR")
    if not os.path.isfile(os.path.join(path, "Dockerfile")):
        raise BuildRefused(f"build context {path} has no Dockerfile; give the image's directory with --context DIR")
    return path


def parse_build_args(items: list[str]) -> dict[str, str]:
    args = {}
    for item in items:
        match = _BUILD_ARG.match(item)
        if not match:
            raise BuildRefused(f"--build-arg {item!r}: expected KEY=VALUE, KEY of letters, digits and '_'")
        args[match.group(1)] = match.group(2)
    return args


def default_tag(config_path: str) -> tuple[str, str]:
    """(tag, where it came from): the worker's image in the site file, if there is a file."""
    if not os.path.exists(config_path):
        return DEFAULT_TAG, f"the default; no site file at {config_path}"
    try:
        with open(config_path, encoding="utf-8") as stream:
            tree = yaml.safe_load(stream)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        load_site(config_path)  # raises the ConfigError that says what is wrong, with a hint
        raise
    # Read loosely: a build host need not have the data directories load_site insists on.
    tree = tree if isinstance(tree, dict) else {}
    containers = tree.get("containers") if isinstance(tree.get("containers"), dict) else {}
    worker = containers.get("worker") if isinstance(containers.get("worker"), dict) else {}
    for key, value in (("containers.worker.image", worker.get("image")), ("image", tree.get("image"))):
        if isinstance(value, str) and value:
            return value, f"{key} in {config_path}"
    return DEFAULT_TAG, f"the default; {config_path} names no worker image"


def build_image(client: docker.DockerClient, context: str, tag: str, buildargs: dict[str, str], pull: bool,
                write: Callable[[str], None]) -> int:
    """Build, writing the engine's progress as it comes; 0 when built, 1 when the build failed."""
    lock = threading.Lock()
    last_output = [time.monotonic()]
    done = threading.Event()

    def say(text: str) -> None:
        with lock:
            last_output[0] = time.monotonic()
            write(text)

    def heartbeat() -> None:
        while not done.wait(5):
            silent = time.monotonic() - last_output[0]
            if silent >= HEARTBEAT_AFTER:
                say(f"… still building ({silent:.0f}s without output)\n")

    started = time.monotonic()
    say(f"building {tag} from {context}\n")
    threading.Thread(target=heartbeat, daemon=True, name="build-heartbeat").start()
    image_id, last_pull_line = None, 0.0
    try:
        for line in client.api.build(path=context, tag=tag, buildargs=buildargs, pull=pull,
                                     decode=True, rm=True, forcerm=True):
            if "error" in line or "errorDetail" in line:
                message = (line.get("errorDetail") or {}).get("message") or line.get("error")
                say(f"build failed: {str(message).strip()}\n")
                return 1
            if "stream" in line:
                say(line["stream"])
            elif "status" in line:  # pulling the base image (--pull): condensed, it is many lines a second
                busy = line["status"] in ("Downloading", "Extracting")
                if not busy or time.monotonic() - last_pull_line >= PULL_PROGRESS_EVERY:
                    last_pull_line = time.monotonic()
                    say(" ".join(str(line[k]) for k in ("status", "id", "progress") if line.get(k)) + "\n")
            if (line.get("aux") or {}).get("ID"):
                image_id = line["aux"]["ID"]
    finally:
        done.set()
    say(f"built {tag} ({(image_id or 'id not reported')[:19]}) in {time.monotonic() - started:.0f}s\n")
    return 0
