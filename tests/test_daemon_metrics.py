"""Metrics: the real daemon's Prometheus endpoint, scraped over HTTP, and its settings."""
from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from harness.daemon import kill_main_process, site_config, wait_until

TOOLS = Path(__file__).parent / "tools"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def sample(text: str, name: str, **labels) -> float | None:
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return found.value
    return None


def metrics_daemon(run_daemon, port: int, containers: dict | None = None):
    return run_daemon(containers or {"worker": {}}, metrics={"listen": f"127.0.0.1:{port}"}).start()


def test_a_killed_worker_is_counted_as_a_restart_with_its_cause_and_exit_code(run_daemon, docker_client, site_name):
    port = free_port()
    daemon = metrics_daemon(run_daemon, port)
    daemon.wait_ready()
    before = scrape(port)
    assert sample(before, "indico_supervisor_container_state", role="worker", state="running") == 1
    assert sample(before, "indico_supervisor_container_state", role="worker", state="backoff") == 0
    assert sample(before, "indico_supervisor_container_restarts_total", role="worker") is None
    assert sample(before, "indico_supervisor_engine_up") == 1

    kill_main_process(docker_client, f"{site_name}-worker")
    daemon.wait_event("container_restarted", role="worker")
    after = wait_until(lambda: (text := scrape(port)) and sample(
        text, "indico_supervisor_container_state", role="worker", state="running") == 1 and text,
        what="the worker running again in the metrics")
    assert sample(after, "indico_supervisor_container_restarts_total", role="worker", cause="exited") == 1
    assert sample(after, "indico_supervisor_container_last_exit_code", role="worker") == 137
    assert sample(after, "indico_supervisor_container_uptime_seconds", role="worker") >= 0
    assert sample(after, "indico_supervisor_container_image_info", role="worker",
                  image=daemon.config["image"]) == 1


def test_promtool_accepts_a_real_scrape(run_daemon, docker_client, site_name):
    tool = subprocess.run([str(TOOLS / "ensure-promtool")], capture_output=True, text=True, timeout=600)
    assert tool.returncode == 0, f"could not install promtool:\n{tool.stderr[-3000:]}"
    port = free_port()
    daemon = metrics_daemon(run_daemon, port, {"worker": {}, "celery": {"health": {"exec": ["true"], "interval": "1s"}}})
    daemon.wait_ready()
    kill_main_process(docker_client, f"{site_name}-worker")  # so the counters have samples too
    daemon.wait_event("container_restarted", role="worker")
    text = scrape(port)
    assert "indico_supervisor_container_restarts_total{" in text
    checked = subprocess.run([tool.stdout.strip().splitlines()[-1], "check", "metrics"], input=text,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked.stdout + checked.stderr


def test_a_refused_and_an_applied_reload_are_counted(run_daemon, site_name):
    port = free_port()
    daemon = metrics_daemon(run_daemon, port)
    daemon.wait_ready()
    good = daemon.config
    daemon.write("containers: [not, a, mapping]\n")
    daemon.signal(1)
    daemon.wait_event("reload_refused")
    text = wait_until(lambda: (t := scrape(port)) and sample(t, "indico_supervisor_reload_refused") == 1 and t,
                      what="reload_refused in the metrics")
    assert sample(text, "indico_supervisor_reloads_total", result="refused") == 1
    daemon.write(good)
    daemon.signal(1)
    daemon.wait_event("config_reloaded")
    text = wait_until(lambda: (t := scrape(port)) and sample(t, "indico_supervisor_reload_refused") == 0 and t,
                      what="the refusal cleared in the metrics")
    assert sample(text, "indico_supervisor_reloads_total", result="applied") == 1
    assert not daemon.events("monitoring_not_reloaded")  # the same section: nothing to say


def check_config(tmp_path: Path, metrics: dict) -> subprocess.CompletedProcess:
    config = site_config("tcheck", "busybox:test", tmp_path, {"worker": {}}, metrics=metrics)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([sys.executable, "-m", "supervisor", "check-config", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("listen", ["0.0.0.0:9150", "192.0.2.7:9150", "[::]:9150", "metrics.example.org:9150"])
def test_a_non_loopback_listen_without_public_is_a_config_problem(tmp_path, listen):
    done = check_config(tmp_path, {"listen": listen})
    assert done.returncode == 2
    assert "metrics.listen" in done.stderr and "metrics.public: true" in done.stderr


def test_a_public_listen_passes_check_config_with_a_warning(tmp_path):
    done = check_config(tmp_path, {"listen": "0.0.0.0:9150", "public": True})
    assert done.returncode == 0, done.stderr
    assert "WARNING  metrics.listen: 0.0.0.0:9150" in done.stdout


@pytest.mark.parametrize("listen", ["127.0.0.1:9150", "[::1]:9150", "localhost:9150"])
def test_a_loopback_listen_passes_check_config_without_a_warning(tmp_path, listen):
    done = check_config(tmp_path, {"listen": listen})
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stdout


@pytest.mark.parametrize("listen", ["9150", "127.0.0.1:", "127.0.0.1:99999", 9150])
def test_a_listen_without_host_and_port_is_a_config_problem(tmp_path, listen):
    done = check_config(tmp_path, {"listen": listen})
    assert done.returncode == 2 and "metrics.listen" in done.stderr


def test_a_reload_that_changes_the_metrics_section_keeps_the_endpoint_and_says_so(run_daemon, site_name):
    port = free_port()
    daemon = metrics_daemon(run_daemon, port)
    daemon.wait_ready()
    daemon.write({**daemon.config, "metrics": {"listen": f"127.0.0.1:{free_port()}"}})
    daemon.signal(1)
    daemon.wait_event("config_reloaded")
    daemon.wait_event("monitoring_not_reloaded")
    assert sample(scrape(port), "indico_supervisor_reloads_total", result="applied") == 1
