"""The site of examples/site.yaml, for real, with a browser in front: db, redis, worker,
celery and web (nginx) under the daemon on one site network, from local images
(tests.indico_images; nginx from Debian's package), nginx configured by make-config's
data/etc/nginx.conf.

Debian's chromium (installed by tests/tools/ensure-chromium when missing) loads the home
page through the web role: Indico's title, its CSS and JS answered by nginx from the
worker's published static files (long-lived Cache-Control; uwsgi says no-cache), a
screenshot kept under $INDICO_SUPERVISOR_ARTEFACTS (else build/artefacts/).

Files Indico sends itself (a generated translation script, an attachment) go by
X-Accel-Redirect: uwsgi names them, nginx sends them from its read-only binds.

Then a second worker image (the first plus a trivial change: one more CSS bundle, which
its pages reference) replaces the worker on a reload: the web container is not
recreated, every page nginx hands out meanwhile has stylesheets that answer, and
afterwards it serves the new bundle and still the old one.
"""
from __future__ import annotations

import http.client
import io
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from harness.daemon import Daemon, wait_until
from harness.sites import remove_site_containers
from tests.indico_images import nginx_image, postgres_image, redis_image, worker_image
from tests.test_indico_outage import user_of
from tests.test_indico_e2e import BASE_URL, CREATE_ADMIN, REPO, edit_config, health, supervisor_exec

UID_GID = "4321:4321"
HOST = BASE_URL.split("//")[1]
TOOLS = REPO / "tests" / "tools"
EXAMPLE = REPO / "examples" / "site.yaml"
# Indico's webpack manifest, in the venv's package: what its pages reference.
STATIC = "/opt/indico/.venv/lib/python3.11/site-packages/indico/web/static"
# The trivial change of the second worker image: one more CSS bundle, which its pages
# reference instead of the first image's (a new Indico release does this for every bundle).
SECOND_BUILD = """FROM {base}
COPY second_build.py /tmp/second_build.py
RUN python3 /tmp/second_build.py && rm /tmp/second_build.py
"""
SECOND_BUILD_SCRIPT = f"""
import json, pathlib
dist = pathlib.Path({STATIC + '/dist'!r})
manifest = json.loads((dist / 'manifest.json').read_text())
old = manifest['common.css']
new = old.replace('common.', 'common.second-build.', 1)
(dist / new.split('/dist/', 1)[1]).write_text((dist / old.split('/dist/', 1)[1]).read_text() + '\\n/* second build */\\n')
manifest['common.css'] = new
(dist / 'manifest.json').write_text(json.dumps(manifest))
"""

# An attachment, as Indico's upload form makes one: the file goes to data/archive.
CREATE_ATTACHMENT = """
import io
from indico.core.db import db
from indico.core.db.sqlalchemy.protection import ProtectionMode
from indico.modules.attachments.models.attachments import Attachment, AttachmentFile, AttachmentType
from indico.modules.attachments.models.folders import AttachmentFolder
from indico.modules.categories import Category
from indico.modules.users import User
from indico.web.flask.app import make_app

app = make_app()
with app.app_context():
    user = User.query.filter_by(is_admin=True).one()
    folder = AttachmentFolder.get_or_create_default(Category.get_root())
    attachment = Attachment(folder=folder, user=user, title='hello', type=AttachmentType.file,
                            protection_mode=ProtectionMode.inheriting)  # the root category's: public
    attachment.file = AttachmentFile(user=user, filename='hello.txt', content_type='text/plain')
    attachment.file.save(io.BytesIO(b'an attachment, sent by nginx from the archive'))
    db.session.add(attachment)
    db.session.commit()
    with app.test_request_context():
        print('download', attachment.download_url)
"""


def chromium() -> str:
    done = subprocess.run([str(TOOLS / "ensure-chromium")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"could not install chromium:\n{done.stderr[-3000:]}"
    return done.stdout.strip().splitlines()[-1]


def browse(browser: str, address: str, *what: str, profile: Path) -> str:
    """Headless chromium on http://indico.test/, the name resolved to the web container."""
    profile.mkdir(parents=True)
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--host-resolver-rules=MAP {HOST} {address}",
         "--window-size=1280,1024", "--virtual-time-budget=10000", *what, f"http://{HOST}/"],
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def get(address: str, port: int, path: str) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection(address, port, timeout=30)
    try:
        connection.request("GET", path, headers={"Host": HOST})
        response = connection.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        try:
            return response.status, headers, response.read()
        except http.client.IncompleteRead as short:
            # uwsgi's X-Accel-Redirect answer: the file's length, and nginx to send the file.
            return response.status, headers, short.partial
    finally:
        connection.close()


def assets_of(page: str) -> tuple[list[str], list[str]]:
    """The page's own stylesheets and scripts (webpack's /dist bundles)."""
    css = re.findall(r'<link[^>]+href="(/dist/css/[^"?]+)', page)
    js = re.findall(r'<script[^>]+src="(/dist/js/[^"?]+)', page)
    return css, js


def front_page(address: str) -> str:
    status, _, body = get(address, 80, "/")
    assert status == 200, (status, body[:500])
    return body.decode()


SECOND_REPOSITORY = "indico-supervisor-test/indico-worker-second"


def second_worker_image(client, first: str) -> str:
    """The first image plus the trivial change, tagged by what it is made of. Older ones
    are removed but for the newest few (each holds an ~800 MB worker build in place)."""
    import hashlib
    import docker.errors

    import tarfile

    dockerfile = SECOND_BUILD.format(base=first)
    ref = f"{SECOND_REPOSITORY}:" + hashlib.sha256(
        (client.images.get(first).id + dockerfile + SECOND_BUILD_SCRIPT).encode()).hexdigest()[:12]
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            for name, text in (("Dockerfile", dockerfile), ("second_build.py", SECOND_BUILD_SCRIPT)):
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        context.seek(0)
        client.images.build(fileobj=context, custom_context=True, tag=ref, rm=True, forcerm=True)
        builds = sorted(client.images.list(name=SECOND_REPOSITORY), key=lambda i: i.attrs["Created"], reverse=True)
        for tag in [t for image in builds for t in image.tags if t != ref][3:]:
            try:
                client.images.remove(tag)
            except docker.errors.APIError:
                pass  # in use by another run's container: left for the next build
    return ref


def template_site(site: str, tmp_path: Path, images: dict) -> dict:
    """examples/site.yaml's roles and their shape, on this test's names and local images."""
    template = yaml.safe_load(EXAMPLE.read_text())
    roles = template["containers"]
    assert set(roles) == {"db", "redis", "worker", "celery", "web"}
    # Local equivalents of the official images: their own accounts, commands and probes.
    local = {
        "db": {"image": images["db"], "command": None, "env": {}, "healthcheck": {"test": ["/usr/lib/postgresql/15/bin/pg_isready", "-h", "127.0.0.1"],
                                          "interval": "1s", "timeout": "5s", "retries": 5}},
        "redis": {"image": images["redis"], "command": None,
                  "healthcheck": {"test": ["redis-cli", "ping"], "interval": "1s", "timeout": "5s", "retries": 5}},
        "worker": {"healthcheck": {"test": ["indico-health"], "interval": "1s", "timeout": "10s", "retries": 3,
                                   "start_period": "120s"}},
        "celery": {},
        "web": {"image": images["web"], "ports": []},  # no host port: reached on the site network
    }
    containers = {}
    for role, body in roles.items():
        body = {**body, **local[role], "name": f"{site}-{role}"}
        if "volumes" in body:  # the template's volume names, made this test's own
            body["volumes"] = {"extra": [re.sub(r"^indico-", f"{site}-", v).replace("/srv/indico/", f"{tmp_path}/")
                                         for v in body["volumes"]["extra"]]}
        containers[role] = body
    return {"site": site, "image": images["worker"], "pull": "never", "user": UID_GID,
            "volumes": {"data": str(tmp_path / "data"), "scratch": str(tmp_path / "scratch")},
            "network": {"name": f"{site}-net"},
            "restart": {"backoff": "1s", "max_backoff": "5s", "reset_after": "60s", "max_restarts": 10,
                        "window": "10m"},
            "containers": containers}


def address(client, name: str, network: str) -> str:
    return client.containers.get(name).attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


@pytest.fixture
def artefacts() -> Path:
    out = Path(os.environ.get("INDICO_SUPERVISOR_ARTEFACTS", REPO / "build" / "artefacts"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_a_browser_loads_indico_through_nginx_which_serves_the_running_workers_assets(
        docker_client, site_name, tmp_path, artefacts):
    client = docker_client
    browser = chromium()
    images = {"worker": worker_image(client), "db": postgres_image(client), "redis": redis_image(client),
              "web": nginx_image(client)}
    second = second_worker_image(client, images["worker"])
    uid, gid = map(int, UID_GID.split(":"))
    for name in ("data", "scratch"):
        (tmp_path / name).mkdir()
        os.chown(tmp_path / name, uid, gid)
    site = template_site(site_name, tmp_path, images)
    site["containers"]["db"]["user"] = user_of(client, images["db"])
    site["containers"]["redis"]["user"] = user_of(client, images["redis"])
    network = site["network"]["name"]
    db, redis, worker, web = (f"{site_name}-{role}" for role in ("db", "redis", "worker", "web"))
    daemon = Daemon(tmp_path, site)
    try:
        made = supervisor_exec(daemon.config_path, "make-config")  # makes the site network, too
        assert made.returncode == 0, made.stderr
        etc = tmp_path / "data" / "etc"
        edit_config(etc / "indico.conf", db, redis)
        nginx_conf = etc / "nginx.conf"
        text = nginx_conf.read_text()
        assert "set $indico_worker indico-worker;" in text
        nginx_conf.write_text(text.replace("set $indico_worker indico-worker;", f"set $indico_worker {worker};"))

        daemon.start()
        wait_until(lambda: _health(client, db) == "healthy", 120, 0.5, "database healthy")
        prepared = supervisor_exec(daemon.config_path, "indico", "db", "prepare")
        assert prepared.returncode == 0, prepared.stdout[-3000:] + prepared.stderr[-3000:]
        created = supervisor_exec(daemon.config_path, "python", "-c", CREATE_ADMIN)
        assert created.returncode == 0, created.stdout + created.stderr[-3000:]
        wait_until(lambda: _health(client, worker) == "healthy", 300, 0.5, "worker healthy")
        wait_until(lambda: _running(client, web), 120, 0.5, "web running")
        web_id = client.containers.get(web).id
        web_ip = address(client, web, network)
        wait_until(lambda: _answers(web_ip), 60, 0.5, "Indico answering through nginx")

        dom = browse(browser, web_ip, "--dump-dom", profile=tmp_path / "profile-dom")
        title = re.search(r"<title>(.*?)</title>", dom, re.S)
        assert title and "Indico" in title.group(1), dom[:1000]
        browse(browser, web_ip, f"--screenshot={artefacts / 'web-front-home.png'}", profile=tmp_path / "profile-shot")
        assert (artefacts / "web-front-home.png").stat().st_size > 10_000

        css, js = assets_of(dom)
        assert css and js, dom[:2000]
        worker_ip = address(client, worker, network)
        for path in css + js:
            status, headers, body = get(web_ip, 80, path)
            assert status == 200 and "immutable" in headers.get("cache-control", "") and body, (path, status, headers)
            # uwsgi, asked directly, says no-cache and leaves the sending to nginx: the answer
            # above came from the worker's published tree.
            status, direct, _ = get(worker_ip, 8080, path)
            assert status == 200 and "no-cache" in direct.get("cache-control", ""), (path, direct)
            assert direct.get("x-accel-redirect") == "/.xsf/static" + path, direct
        # A file Indico generates in its cache (translations), sent by nginx from scratch.
        generated = re.findall(r'<script[^>]+src="(/assets/i18n/[^"?]+)', dom)
        assert generated, dom[:2000]
        status, direct, _ = get(worker_ip, 8080, generated[0])
        assert status == 200 and direct.get("x-accel-redirect", "").startswith("/.xsf/scratch/cache/"), direct
        status, headers, body = get(web_ip, 80, generated[0])
        assert status == 200 and body.startswith(b"window.TRANSLATIONS"), (status, headers, body[:300])
        # An attachment: uwsgi names the file, nginx sends it from the read-only data bind.
        made = supervisor_exec(daemon.config_path, "python", "-c", CREATE_ATTACHMENT)
        assert made.returncode == 0 and "download /" in made.stdout, made.stdout + made.stderr[-3000:]
        download = made.stdout.split("download ", 1)[1].split()[0]
        status, direct, _ = get(worker_ip, 8080, download)
        assert status == 200 and direct.get("x-accel-redirect", "").startswith("/.xsf/data/archive/"), direct
        status, headers, body = get(web_ip, 80, download)
        assert (status, body) == (200, b"an attachment, sent by nginx from the archive"), (status, headers)
        # The browser itself fetched them from nginx: its access log names them.
        log = client.containers.get(web).logs().decode(errors="replace")
        for path in css + js:
            assert re.search(rf'"GET {re.escape(path)} HTTP/1.1" 200 .*HeadlessChrome', log), (path, log[-3000:])

        # A new worker image: the worker is recreated, web is not, and web serves both trees.
        old_css = next(p for p in css if "/common." in p)
        site["containers"]["worker"]["image"] = second
        daemon.write(site)
        daemon.signal(signal.SIGHUP)
        second_id = client.images.get(second).id
        # Meanwhile, every page nginx hands out references stylesheets that answer.
        missing: list[tuple[str, int]] = []

        def switched() -> bool:
            _check_page_assets(web_ip, missing)
            return _image_id(client, worker) == second_id and _health(client, worker) == "healthy"
        wait_until(switched, 300, 0.5, "the second worker healthy")
        assert not missing, missing
        page = front_page(web_ip)
        new_css = next(p for p in assets_of(page)[0] if "/common." in p)
        assert new_css != old_css and "second-build" in new_css
        status, headers, body = get(web_ip, 80, new_css)
        assert status == 200 and "immutable" in headers["cache-control"] and b"/* second build */" in body
        status, headers, body = get(web_ip, 80, old_css)  # a page rendered before may still ask for it
        assert status == 200 and b"/* second build */" not in body
        assert client.containers.get(web).id == web_id
        dom = browse(browser, web_ip, "--dump-dom", profile=tmp_path / "profile-second")
        assert new_css in dom
    finally:
        code = daemon.stop(timeout=200)
        remove_site_containers(client, site_name)
        for volume in (f"{site_name}-{name}" for name in ("pgdata", "redis", "assets")):
            try:
                client.volumes.get(volume).remove()
            except Exception:  # never made: the test failed before
                pass
        try:
            client.networks.get(f"{site_name}-net").remove()
        except Exception:
            pass
    assert code == 0, daemon.log_text()[-3000:]


def _health(client, name: str) -> str | None:
    import docker.errors
    try:
        return health(client, name).get("Status")
    except docker.errors.NotFound:
        return None


def _image_id(client, name: str) -> str | None:
    import docker.errors
    try:
        return client.containers.get(name).attrs["Image"]
    except docker.errors.NotFound:
        return None


def _check_page_assets(address: str, missing: list) -> None:
    """The page nginx serves now (if Indico answers), and each stylesheet it references."""
    try:
        status, _, body = get(address, 80, "/")
        if status != 200:
            return
        for path in assets_of(body.decode(errors="replace"))[0]:
            answer = get(address, 80, path)[0]
            if answer != 200:
                missing.append((path, answer))
    except OSError:
        return


def _running(client, name: str) -> bool:
    import docker.errors
    try:
        return client.containers.get(name).status == "running"
    except docker.errors.NotFound:
        return False


def _answers(address: str) -> bool:
    try:
        return get(address, 80, "/")[0] == 200
    except OSError:
        return False
