"""The real Indico worker image and its PostgreSQL and Redis, built here with no registry.

The worker image is `image/Dockerfile` itself, built through the engine on the
local Debian Python base (tests.debian_images.PYTHON: bookworm's Python 3.11)
with Indico 3.2.x (3.3 needs Python >= 3.12.2, which bookworm lacks); its
wheels come from PyPI. It is tagged with a hash of image/'s files, the build
arguments and the base image's id, so a second run reuses it and any change to
image/ rebuilds it. A build streams its progress lines as they come.

PostgreSQL 15 and Redis come from Debian's packages (tests.debian_images recipes),
both running as their own non-root accounts, listening on all addresses inside
their containers; nginx from Debian's package, for the web role.

Run as a script to build (or reuse) them all and print their references:
    python -m tests.indico_images
"""
from __future__ import annotations

import hashlib
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from supervisor.build import build_image
from tests.debian_images import PYTHON, Recipe, _build_lock, _exists, debian_image

IMAGE_DIR = Path(__file__).resolve().parent.parent / "image"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the engine colours a step's stderr red
WORKER_REPOSITORY = "indico-supervisor-test/indico-worker"
# The newest Indico that runs on bookworm's Python 3.11.
TEST_INDICO_VERSION = "3.2.9"

DB_NAME = DB_USER = "indico"
# A test database in a throwaway container, reachable only on the engine's bridge.
DB_PASSWORD = "indico-test-password"
PGDATA = "/var/lib/postgresql/indico"
_PG_BIN = "/usr/lib/postgresql/15/bin"

# A new cluster, as initdb makes it, reachable with a password from other containers.
_INITDB = f"""
install -d -o postgres -g postgres -m 700 {PGDATA}
runuser -u postgres -- {_PG_BIN}/initdb --pgdata={PGDATA} --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 --username=postgres >/dev/null
echo "host all all 0.0.0.0/0 scram-sha-256" >> {PGDATA}/pg_hba.conf
"""

# The cluster is made while the root filesystem is built: initdb, then the role,
# database and the extensions Indico needs (a superuser's job) in single-user
# mode, which needs no running server.
POSTGRES = Recipe(
    name="postgresql-15",
    packages=("postgresql-15", "postgresql-contrib"),
    customize=_INITDB + f"""echo "host all all ::/0 scram-sha-256" >> {PGDATA}/pg_hba.conf
echo "CREATE ROLE {DB_USER} LOGIN PASSWORD '{DB_PASSWORD}';
CREATE DATABASE {DB_NAME} OWNER {DB_USER};" \
    | runuser -u postgres -- {_PG_BIN}/postgres --single -D {PGDATA} postgres >/dev/null
echo "CREATE EXTENSION unaccent;
CREATE EXTENSION pg_trgm;" \
    | runuser -u postgres -- {_PG_BIN}/postgres --single -D {PGDATA} {DB_NAME} >/dev/null
""",
    changes=("USER postgres",
             f'CMD ["{_PG_BIN}/postgres", "-D", "{PGDATA}", "-c", "listen_addresses=*", '
             '"-c", "unix_socket_directories=/tmp"]'),
)

# As the official postgres image leaves a new cluster: only the superuser, with the
# password of POSTGRES_PASSWORD; the site's first-time setup (examples/site.yaml) does the rest.
SUPERUSER_PASSWORD = "postgres-test-password"
POSTGRES_BARE = Recipe(
    name="postgresql-15-bare",
    packages=("postgresql-15", "postgresql-contrib"),
    customize=_INITDB + f"""echo "ALTER ROLE postgres PASSWORD '{SUPERUSER_PASSWORD}';" \
    | runuser -u postgres -- {_PG_BIN}/postgres --single -D {PGDATA} postgres >/dev/null
""",
    changes=POSTGRES.changes,
)

REDIS = Recipe(
    name="redis",
    packages=("redis-server",),
    changes=("USER redis",
             'CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", '
             '"--save", "", "--appendonly", "no", "--dir", "/tmp"]'),
)

# The web role's stand-in for the official nginx image: Debian's nginx, with no user of
# its own (the site's `user` runs it) and no configuration of its own (the site binds
# make-config's nginx.conf over /etc/nginx/nginx.conf, as on the official image).
NGINX = Recipe(
    name="nginx",
    packages=("nginx",),
    customize="rm -f /etc/nginx/sites-enabled/default",
    changes=('CMD ["nginx", "-e", "stderr", "-g", "daemon off;"]',),
)


def _log(msg: str) -> None:
    print(f"indico_images: {msg}", file=sys.stderr, flush=True)


def image_digest(buildargs: dict[str, str], base_id: str) -> str:
    """What the worker image is made of: image/'s files, the build arguments, the base."""
    h = hashlib.sha256()
    for path in sorted(p for p in IMAGE_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(IMAGE_DIR)).encode() + b"\0" + path.read_bytes() + b"\0")
    for key in sorted(buildargs):
        h.update(f"{key}={buildargs[key]}\0".encode())
    h.update(base_id.encode())
    return h.hexdigest()[:12]


def build_worker(client, base: str, buildargs: dict[str, str], tag: str,
                 log: Callable[[str], None]) -> None:
    """Built by the supervisor's own `build-image` code, so the tests exercise it on image/."""
    started = time.monotonic()
    last_words: list[str] = []

    def write(text: str) -> None:
        nonlocal last_words
        for line in filter(None, _ANSI.sub("", text).splitlines()):
            last_words = (last_words + [line])[-40:]
            log(f"  [{time.monotonic() - started:5.0f}s] {line}")

    if build_image(client, str(IMAGE_DIR), tag, {"BASE": base, **buildargs}, False, write) != 0:
        raise RuntimeError(f"building {tag} failed; last output:\n" + "\n".join(last_words))


def worker_image(client, log: Callable[[str], None] | None = None,
                 indico_version: str = TEST_INDICO_VERSION) -> str:
    """The worker image for the tests, built only when image/, the arguments or the base changed."""
    log = log or _log
    base = debian_image(client, PYTHON, log)
    buildargs = {"INDICO_VERSION": indico_version}
    ref = f"{WORKER_REPOSITORY}:{image_digest(buildargs, client.images.get(base).id)}"
    with _build_lock("indico-worker"):
        if not _exists(client, ref):
            log(f"building {ref} from image/ on {base} (Indico {indico_version}; a first build takes minutes)")
            build_worker(client, base, buildargs, ref, log)
            _remove_stale_workers(client, keep=ref, log=log)
    return ref


def _remove_stale_workers(client, keep: str, log: Callable[[str], None], spare: int = 3) -> None:
    """Earlier builds of image/ are ~800 MB each; the newest few are spared, since another
    checkout (a branch, a worktree) on this machine may be testing its own image/ right now."""
    import docker.errors

    builds = sorted(client.images.list(name=WORKER_REPOSITORY), key=lambda image: image.attrs["Created"], reverse=True)
    stale = [tag for image in builds for tag in image.tags
             if tag != keep and tag.startswith(WORKER_REPOSITORY + ":")][spare:]
    for tag in stale:
        try:
            client.images.remove(tag)
            log(f"removed the stale {tag}")
        except docker.errors.APIError:
            pass  # still used by a container (another run's): left for its next build


def postgres_image(client, log: Callable[[str], None] | None = None) -> str:
    return debian_image(client, POSTGRES, log or _log)


def bare_postgres_image(client, log: Callable[[str], None] | None = None) -> str:
    return debian_image(client, POSTGRES_BARE, log or _log)


def redis_image(client, log: Callable[[str], None] | None = None) -> str:
    return debian_image(client, REDIS, log or _log)


def nginx_image(client, log: Callable[[str], None] | None = None) -> str:
    return debian_image(client, NGINX, log or _log)


if __name__ == "__main__":
    import docker

    engine = docker.from_env(timeout=900)
    for make in (worker_image, postgres_image, redis_image, nginx_image):
        print(make(engine))
