"""End to end: ``mamoru run`` on a simulated Japanese Number Display line (``cadence = "jp_nd"``).

The virtual modem prints no formatted caller ID on this cadence, so each decision below comes
from the V.23 FSK frame the daemon demodulated after answering CAR.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from screening.core.model import Reason
from screening.core.nd_frame import encode_caller

ROOT = Path(__file__).parent.parent

pytestmark = pytest.mark.timeout(180)


def _env(tmp: Path) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "MAMORU_CONFIG"}, "HOME": str(tmp),
            "XDG_STATE_HOME": str(tmp / "state")}


def test_run_decides_calls_from_the_fsk_frame_alone(tmp_path: Path) -> None:
    bad = bytearray(encode_caller("0312345678"))
    bad[-1] ^= 0x01  # corrupted CRC: screened as no caller ID, never dropped
    scenario = tmp_path / "calls.toml"
    scenario.write_text(
        '[[call]]\nlabel = "blocklisted"\nnmbr = "0398765432"\nhang_up_after_s = 40\n'
        f'[[call]]\nlabel = "withheld"\nnmbr = "{Reason.WITHHELD.value}"\ngap_s = 2\nhang_up_after_s = 40\n'
        f'[[call]]\nlabel = "corrupted"\nnmbr = "0312345678"\nnd_frame = "{bytes(bad).hex(" ")}"\n'
        'gap_s = 2\nhang_up_after_s = 40\n',
        encoding="utf-8",
    )
    config = tmp_path / "mamoru.toml"
    config.write_text(f'[line]\nuri = "sim:?time_scale=0.1&scenario={scenario}"\ncadence = "jp_nd"\n'
                      f'[recording]\ndir = "{tmp_path / "recordings"}"\n', encoding="utf-8")  # never the host's /var/lib
    db = tmp_path / "nd.db"
    proc = subprocess.run([sys.executable, "-m", "screening.cli", "run", "--config", str(config), "--db", str(db)],
                          capture_output=True, text=True, timeout=150, env=_env(tmp_path), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(subprocess.run([sys.executable, "-m", "screening.cli", "calls", "--json", "--db", str(db)],
                                    capture_output=True, text=True, timeout=30, cwd=ROOT, env=_env(tmp_path)).stdout)
    got = [(c["action"], c["rule"], c["state"]) for c in reversed(out)]
    assert got == [
        ("block", "blocklist:local", "completed"),
        ("request_number", "withheld", "completed"),
        ("warn", "no_caller_id", "completed"),
    ]
    assert "Number Display frame refused (bad_crc" in proc.stderr
    assert bytes(bad).hex(" ") in proc.stderr
