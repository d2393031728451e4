"""The systemd unit, checked by systemd's own tools (systemd-analyze), not by reading it."""
from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from supervisor.config import load_site

ROOT = Path(__file__).parent.parent
UNIT = ROOT / "units" / "indico-supervisor.service"
SHIPPED_BINARY = "/opt/indico-supervisor/bin/indico-supervisor"


def installed_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointing at this checkout's installed binary.

    systemd-analyze checks that ExecStart exists; the package puts it under
    /opt/indico-supervisor, which a test machine has not got. Nothing else changes.
    """
    binary = shutil.which("indico-supervisor") or str(ROOT / ".venv" / "bin" / "indico-supervisor")
    copy = tmp_path / UNIT.name
    copy.write_text((text or UNIT.read_text()).replace(SHIPPED_BINARY, binary))
    return copy


def verify(unit: Path) -> subprocess.CompletedProcess:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: tests/tools/ensure-engine installs Debian's systemd package"
    return subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)


def service_section() -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNIT)
    return dict(parser["Service"])


def seconds(value: str) -> float:
    units = {"s": 1, "min": 60, "h": 3600}
    return sum(float(n) * units[u or "s"] for n, u in re.findall(r"(\d+)\s*(min|h|s)?", value))


def test_the_unit_passes_systemd_analyze_verify_without_a_warning(tmp_path):
    result = verify(installed_copy(tmp_path))
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_verify_would_catch_a_mistyped_directive(tmp_path):
    # Proves the check above is live: systemd warns (exit 0) on unknown keys.
    broken = installed_copy(tmp_path, UNIT.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    assert "Unknown key 'WatchdogSecs'" in verify(broken).stderr


def test_the_unit_is_a_notify_service_with_watchdog_reload_and_runtime_directory():
    service = service_section()
    assert service["Type"] == "notify"
    assert service["ExecStart"].startswith(SHIPPED_BINARY + " run --config /etc/indico-supervisor/site.yaml")
    assert "/bin/kill" not in service["ExecReload"] and "-HUP" in service["ExecReload"]
    assert 0 < seconds(service["WatchdogSec"]) <= 60
    assert service["RuntimeDirectory"] == "indico-supervisor"
    assert service["Restart"] == "on-failure" and service["RestartPreventExitStatus"] == "2"


def test_stop_timeout_outlasts_the_example_sites_containers_stopped_one_after_another(tmp_path):
    site_text = (ROOT / "examples" / "site.yaml").read_text().replace("/srv/indico", str(tmp_path))
    (tmp_path / "data").mkdir()
    (tmp_path / "scratch").mkdir()
    (tmp_path / "site.yaml").write_text(site_text)
    site = load_site(str(tmp_path / "site.yaml"))
    all_stops = sum(c.stop_timeout for c in site.enabled())
    assert seconds(service_section()["TimeoutStopSec"]) > all_stops


@pytest.mark.parametrize("setting", ["NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                                     "PrivateTmp=yes", "ReadWritePaths=/run/docker.sock", "PrivateDevices=yes",
                                     "ProtectProc=invisible", "ProcSubset=pid", "MemoryDenyWriteExecute=yes",
                                     "UMask=0077", "RuntimeDirectoryMode=0750"])
def test_the_unit_is_hardened_but_reaches_the_docker_socket(setting):
    key, value = setting.split("=", 1)
    assert service_section()[key] == value


def exposure(unit: Path) -> tuple[float, str]:
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                            capture_output=True, text=True, timeout=60)
    return float(re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout).group(1)), result.stdout


def test_systemd_rates_the_units_exposure_at_most_the_figure_in_units_readme(tmp_path):
    score, report = exposure(installed_copy(tmp_path))
    # systemd 252's rating; what is left is the Docker socket (root, AF_UNIX), the
    # probes (AF_INET*, the host's network) and CAP_DAC_READ_SEARCH: units/README.md.
    assert score <= 1.8, report[-3000:]
    assert "rates it 1.8 OK" in (ROOT / "units" / "README.md").read_text()


def test_the_exposure_check_would_catch_a_dropped_setting(tmp_path):
    # Proves the threshold above is tight: losing any one of the newer settings crosses it.
    text = UNIT.read_text()
    for setting in ("ProtectProc=invisible", "SystemCallFilter=@system-service", "PrivateDevices=yes"):
        assert setting + "\n" in text
        assert exposure(installed_copy(tmp_path, text.replace(setting + "\n", "")))[0] > 1.8, setting
