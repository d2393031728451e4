"""Hardening keys: `cap_add` (what a container gets back after every capability is dropped) and `pull_timeout`."""
from __future__ import annotations

import pytest

from supervisor.config import load_site
from tests.test_config import HEAD, check_config, problem_lines, write_site


@pytest.mark.parametrize("written", ["NET_BIND_SERVICE", "CAP_NET_BIND_SERVICE", "net_bind_service", "cap_net_bind_service"])
def test_a_capability_is_accepted_with_or_without_its_cap_prefix_in_any_case(tmp_path, written):
    site = load_site(str(write_site(tmp_path, HEAD + f"containers:\n  worker: {{cap_add: [{written}, CHOWN]}}\n")))
    assert site.container("worker").cap_add == ("CAP_CHOWN", "CAP_NET_BIND_SERVICE")


def test_without_cap_add_a_container_gets_none_back(tmp_path):
    assert load_site(str(write_site(tmp_path, HEAD + "containers: {worker: {}}\n"))).container("worker").cap_add == ()


@pytest.mark.parametrize("written, path, hint", [
    ("[NET_BIND_SERVIC]", "containers.worker.cap_add[0]", "not a Linux capability; expected a name such as NET_BIND_SERVICE"),
    ("[CHOWN, CAP_SYS_TYPO]", "containers.worker.cap_add[1]", "not a Linux capability"),
    ("[ALL]", "containers.worker.cap_add[0]", "ALL would undo the capability drop"),
    ("NET_BIND_SERVICE", "containers.worker.cap_add", "expected a list of capability names"),
    ("[12]", "containers.worker.cap_add[0]", "expected a string"),
])
def test_an_unknown_capability_is_refused_with_its_key_path_and_a_hint(tmp_path, capsys, written, path, hint):
    file = write_site(tmp_path, HEAD + f"containers:\n  worker: {{cap_add: {written}}}\n")
    status, _, err = check_config(file, capsys)
    assert status == 2
    assert any(hint in line for line in problem_lines(err, path)), err


def test_pull_timeout_defaults_to_two_minutes_and_takes_a_duration(tmp_path):
    assert load_site(str(write_site(tmp_path, HEAD + "containers: {worker: {}}\n"))).pull_timeout == 120.0
    site = load_site(str(write_site(tmp_path, HEAD + "pull_timeout: 5m\ncontainers: {worker: {}}\n")))
    assert site.pull_timeout == 300.0


@pytest.mark.parametrize("written", ["0s", "soon", "-1"])
def test_a_pull_timeout_that_is_not_a_positive_duration_is_refused(tmp_path, capsys, written):
    file = write_site(tmp_path, HEAD + f"pull_timeout: {written}\ncontainers: {{worker: {{}}}}\n")
    status, _, err = check_config(file, capsys)
    assert status == 2
    assert problem_lines(err, "pull_timeout"), err
