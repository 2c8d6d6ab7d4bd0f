"""The systemd unit passes `systemd-analyze verify` and rates at most 2.0 ("OK") in its security analysis."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "alliance-node@.service"
EXPOSURE_MAX = 2.0

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=120)


def test_the_unit_verifies(tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists: point a copy at this checkout's `alliance`.
    alliance = Path(sys.executable).parent / "alliance"
    assert alliance.exists(), alliance
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/alliance run " in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace("ExecStart=/usr/local/bin/alliance ", f"ExecStart={alliance} "))
    result = analyze("verify", str(copy))
    ours = [line for line in result.stderr.splitlines() if "alliance" in line]  # other units' warnings are not ours
    assert result.returncode == 0 and not ours, result.stderr + result.stdout


def test_the_unit_is_rated_ok_by_the_security_analysis() -> None:
    result = analyze("security", "--offline=true", str(UNIT))
    assert result.returncode == 0, result.stderr + result.stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert match, result.stdout
    assert float(match[1]) <= EXPOSURE_MAX, result.stdout
    assert match[2] == "OK", match[0]


def test_the_unit_is_type_notify_with_a_watchdog() -> None:
    settings = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["Type"] == "notify"
    assert settings["Restart"] == "on-failure"
    assert int(settings["WatchdogSec"].removesuffix("s")) > 0


def test_the_units_stderr_is_the_journal_with_level_prefixes() -> None:
    # The node prefixes its lines with <N> when $JOURNAL_STREAM names its stderr (tests/ops/test_node_ops.py);
    # journald turns that prefix into the entry's priority only with these settings (both are systemd's defaults).
    settings = dict(line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and line[0] != "#")
    assert settings.get("StandardError", "journal") == "journal"
    assert settings.get("SyslogLevelPrefix", "yes") == "yes"
