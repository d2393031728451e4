#!/opt/indico/.venv/bin/python
"""indico-health: is this container's program doing its job? Exit 0 yes, 1 no.

    indico-health           decide by what runs as PID 1 (the image's HEALTHCHECK)
    indico-health worker    Indico answers through uwsgi on port 8080
    indico-health celery    the celery worker on this host answers a ping

The worker check sends what the web container would: Indico answers only
requests for BASE_URL's host (and, behind a proxy, scheme), and says 404 to any
other, so a bare GET of http://127.0.0.1:8080/ would never look healthy.

The celery check asks the worker through the broker, as `celery inspect ping`
does, without loading Indico: cheap enough to run every few seconds.
"""
from __future__ import annotations

import http.client
import os
import re
import socket
import sys
from urllib.parse import urlsplit

CONFIG = os.environ.get("INDICO_CONFIG", "/opt/indico/data/etc/indico.conf")
PORT = 8080
TIMEOUT = 8.0


def setting(name: str) -> str:
    """A string setting of indico.conf, read without running the file."""
    with open(CONFIG) as f:
        match = re.search(rf"^{name}\s*=\s*(['\"])(.*?)\1", f.read(), re.M)
    if not match:
        raise LookupError(f"no {name} = '...' line in {CONFIG}")
    return match.group(2)


def check_worker() -> tuple[bool, str]:
    base = urlsplit(setting("BASE_URL"))
    path = base.path.rstrip("/") + "/"
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=TIMEOUT)
    try:
        connection.request("GET", path, headers={
            "Host": base.netloc, "X-Forwarded-Host": base.netloc, "X-Forwarded-Proto": base.scheme,
            "User-Agent": "indico-health"})
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as error:
        return False, f"GET {path} on port {PORT} (Host {base.netloc}): {error or type(error).__name__}"
    finally:
        connection.close()
    return 200 <= status < 400, f"GET {path} on port {PORT} (Host {base.netloc}): HTTP {status}"


def check_celery() -> tuple[bool, str]:
    from celery import Celery

    node = f"celery@{socket.gethostname()}"
    app = Celery(broker=setting("CELERY_BROKER"))
    # Indico's workers answer in pickle, as `indico celery inspect ping` accepts too;
    # the broker is the site's own Redis.
    app.conf.accept_content = app.conf.result_accept_content = ["json", "pickle"]
    try:
        replies = app.control.ping(destination=[node], timeout=TIMEOUT / 2)
    finally:
        app.close()
    answered = any(node in reply for reply in replies)
    return answered, f"ping {node}: {'pong' if answered else 'no answer'}"


def role_of_pid1() -> str | None:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode(errors="replace").lower()
    except OSError:
        return None
    if "uwsgi" in command:
        return "worker"
    if "celery" in command:
        return "celery"
    return None


def main(argv: list[str]) -> int:
    role = argv[0] if argv else role_of_pid1()
    if role is None:
        print("neither uwsgi nor celery runs here: nothing to check")
        return 0
    checks = {"worker": check_worker, "celery": check_celery}
    if role not in checks:
        print(f"indico-health: unknown role {role!r}; expected worker or celery", file=sys.stderr)
        return 2
    try:
        healthy, said = checks[role]()
    except Exception as error:  # a health check reports, it never crashes
        healthy, said = False, f"{type(error).__name__}: {error}"
    print(f"{role}: {said}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
