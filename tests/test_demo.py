"""The README's main command, for real: `examples/demo` brings up the whole site with real Indico,
Indico answers at http://127.0.0.1:8080/ through the web role, Ctrl-C stops the site and keeps
its data, and a second run starts from that data (no second `indico db prepare`)."""
from __future__ import annotations

import http.client
import os
import signal
import subprocess
import threading
import time

import docker.errors

from harness.sites import remove_site_containers
from tests.test_indico_e2e import REPO

SITE = "indico-demo"
URL_HOST, PORT = "127.0.0.1", 8080


class Demo:
    """`examples/demo` in a session of its own (so SIGINT reaches only it, as Ctrl-C would reach the
    foreground group); its output drained continuously into `lines`."""

    def __init__(self, data):
        self.lines: list[str] = []
        self.process = subprocess.Popen([str(REPO / "examples" / "demo")], cwd=REPO, start_new_session=True,
                                        env={**os.environ, "INDICO_DEMO_DATA": str(data)},
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.process.poll() is None, "\n".join(self.lines[-60:])
            assert time.monotonic() < deadline, f"no {text!r} within {timeout:.0f}s:\n" + "\n".join(self.lines[-60:])
            time.sleep(0.5)

    def ctrl_c(self, timeout: float = 300) -> int:
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def front_page() -> tuple[int, str, str]:
    connection = http.client.HTTPConnection(URL_HOST, PORT, timeout=30)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        return response.status, response.getheader("Location", ""), response.read().decode(errors="replace")
    finally:
        connection.close()


def site_containers(client) -> list:
    return client.containers.list(filters={"label": f"io.indico-supervisor.site={SITE}"})


def test_the_demo_serves_indico_on_port_8080_and_keeps_its_data_across_a_ctrl_c(docker_client, tmp_path):
    client = docker_client
    assert not site_containers(client), "a demo site already runs on this machine: stop it first"
    data = tmp_path / "demo-data"
    demo = Demo(data)
    try:
        demo.wait_for("Indico is up: open http://127.0.0.1:8080/", 1800)  # a first run may build the images
        status, location, _ = front_page()
        # A new database: Indico sends every visitor to its own first page, where the admin is made.
        assert status == 302 and location.rstrip("/").endswith("/bootstrap"), (status, location)
        assert demo.said("first run: preparing the database")
        assert demo.ctrl_c() == 0, "\n".join(demo.lines[-40:])
        assert not site_containers(client)  # stopped, not abandoned
        assert (data / "data" / "etc" / "indico.conf").exists() and (data / ".database-prepared").exists()
        client.volumes.get(f"{SITE}-pgdata")  # kept

        again = Demo(data)
        demo = again
        again.wait_for("Indico is up", 600)
        assert not again.said("first run:")  # neither make-config nor db prepare again
        status, location, _ = front_page()
        assert status == 302 and location.rstrip("/").endswith("/bootstrap"), (status, location)
        assert again.ctrl_c() == 0, "\n".join(again.lines[-40:])
    finally:
        if demo.process.poll() is None:  # a failed assertion: stop it as an admin would, so no daemon is left
            try:
                demo.ctrl_c()
            except subprocess.TimeoutExpired:
                demo.process.kill()
        remove_site_containers(client, SITE)
        for name in (f"{SITE}-pgdata", f"{SITE}-assets"):
            try:
                client.volumes.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass
        try:
            client.networks.get(f"{SITE}-net").remove()
        except docker.errors.NotFound:
            pass
