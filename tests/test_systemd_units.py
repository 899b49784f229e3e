"""The deployment files: the systemd unit parses and keeps its safety settings.

``systemd-analyze verify`` refuses a unit whose ExecStart binary does not exist
(``/opt/mamoru/venv/bin/mamoru`` is not installed on a build machine), so the
test verifies a copy in a tmp dir whose ExecStart is rewritten to ``/bin/true``
-- everything else is the file as shipped. Unknown or misspelt keys only
produce a warning (exit code 0), so the test also fails on any output.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "systemd" / "mamoru.service"
UDEV = DEPLOY / "udev" / "99-mamoru-modem.rules"
JOURNALD = DEPLOY / "journald" / "mamoru.conf"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (Debian: systemd)")


def _unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value (systemd keys may repeat, so no configparser)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"key outside a section: {line!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _testable_copy(tmp_path: Path) -> Path:
    text = UNIT.read_text(encoding="utf-8")
    text, count = re.subn(r"^ExecStart=.*$", "ExecStart=/bin/true", text, flags=re.MULTILINE)
    assert count == 1
    copy = tmp_path / "mamoru.service"
    copy.write_text(text, encoding="utf-8")
    return copy


@needs_analyze
def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(_testable_copy(tmp_path))],
        capture_output=True, text=True, timeout=60, check=False,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    assert output == "", output  # e.g. "Unknown key 'WatchdogSecs' in section [Service], ignoring."


@needs_analyze
def test_unit_security_exposure_is_low(tmp_path: Path) -> None:
    """systemd's own hardening score, offline: 'OK' (<= 4.0 of 10) or better."""
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--threshold=40", "--no-pager", str(_testable_copy(tmp_path))],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd >= 250")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def test_unit_is_a_watched_notify_service() -> None:
    service = _unit_settings(UNIT)["Service"]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["WatchdogSec"] == ["30"]
    assert service["Restart"] == ["always"]
    assert service["RestartSec"] == ["1"]
    assert service["ExecStart"] == ["/opt/mamoru/venv/bin/mamoru run --config /etc/mamoru/mamoru.toml"]
    assert service["User"] == ["mamoru"]
    assert service["SupplementaryGroups"][0].split() == ["dialout", "audio", "gpio"]
    assert service["StateDirectory"] == ["mamoru"]
    assert "LogRateLimitIntervalSec" in service and "LogRateLimitBurst" in service


def test_unit_never_gives_up_restarting() -> None:
    assert _unit_settings(UNIT)["Unit"]["StartLimitIntervalSec"] == ["0"]


def test_unit_hardening() -> None:
    service = _unit_settings(UNIT)["Service"]
    expected = {
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/mamoru",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "PrivateDevices": "no",  # the USB modem may appear after start; see the unit's comment
    }
    for key, value in expected.items():
        assert service.get(key) == [value], key


def test_watchdog_leaves_room_for_the_loop() -> None:
    """The loop wakes every 0.5 s and beats every WatchdogSec/3: keep WatchdogSec well above that."""
    from screening.daemon import EVENT_WAIT_S
    from screening.watchdog import BEATS_PER_PERIOD

    watchdog_sec = float(_unit_settings(UNIT)["Service"]["WatchdogSec"][0])
    assert watchdog_sec / BEATS_PER_PERIOD > 4 * EVENT_WAIT_S


def test_udev_rules_name_each_supported_modem() -> None:
    rules = [line for line in UDEV.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    ids = set(re.findall(r'ATTRS\{idVendor\}=="([0-9a-f]{4})", ATTRS\{idProduct\}=="([0-9a-f]{4})"', "\n".join(rules)))
    assert ids == {("0baf", "0303"), ("0572", "1329"), ("0572", "1349")}
    for line in rules:
        if "idVendor" in line:
            assert 'SYMLINK+="mamoru-modem"' in line
            assert 'ENV{ID_MM_DEVICE_IGNORE}="1"' in line
    labels = re.findall(r'GOTO="([^"]+)"', "\n".join(rules))
    assert all(f'LABEL="{label}"' in rules for label in labels)


def test_journald_drop_in_limits_disk_use() -> None:
    parser = configparser.ConfigParser(strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(JOURNALD, encoding="utf-8")
    journal = parser["Journal"]
    assert journal["SystemMaxUse"] and journal["SystemKeepFree"] and journal["RuntimeMaxUse"]
    assert journal["Compress"] == "yes"
