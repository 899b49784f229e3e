"""The mamoru command line, run as a real subprocess (the installed console script's module)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)


def mamoru(*args: str, env_config: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    if env_config is not None:
        env["MAMORU_CONFIG"] = str(env_config)
    proc = subprocess.run([sys.executable, "-m", "screening.cli", *args], capture_output=True, text=True,
                          timeout=50, env=env, cwd=Path(__file__).parent.parent)
    if check and proc.returncode != 0:
        raise AssertionError(f"mamoru {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "m.db")


@pytest.fixture
def cfg(tmp_path: Path) -> str:
    path = tmp_path / "mamoru.toml"
    path.write_text('[line]\nhome_region = "JP"\n[rules]\ninternational = "warn"\n', encoding="utf-8")
    return str(path)


def check(db: str, *args: str, config: str | None = None) -> dict:
    extra = ["--config", config] if config else []
    return json.loads(mamoru("check", *args, "--db", db, *extra).stdout)


def test_check_outputs_decision_json(db: str) -> None:
    out = check(db, "03-1234-5678")
    assert out["action"] == "warn" and out["rule"] == "unknown" and out["number_e164"] == "+81312345678"
    assert out["category"] == "domestic" and out["reason"]
    assert check(db, "", "--reason", "P")["action"] == "request_number"
    assert check(db, "", "--reason", "C")["rule"] == "payphone"
    assert check(db, "")["rule"] == "no_caller_id"
    assert check(db, "010-44-20-7946-0000")["action"] == "block"
    assert check(db, "110")["category"] == "official_lookalike"


def test_check_uses_config_and_lists(db: str, cfg: str) -> None:
    assert check(db, "+44 20 7946 0000", config=cfg)["action"] == "warn"
    mamoru("allow", "add", "+44 20 7946 0000", "--note", "son in London", "--db", db)
    out = check(db, "010 44 20 7946 0000", config=cfg)
    assert (out["action"], out["rule"]) == ("allow", "allowlist")
    assert out["matched"]["note"] == "son in London"


def test_block_add_list_remove(db: str) -> None:
    mamoru("block", "add", "０３－９８７６－５４３２", "--note", "fake bank", "--db", db)
    mamoru("block", "add", "050-*", "--source", "police", "--days", "30", "--db", db)
    listed = json.loads(mamoru("block", "list", "--json", "--db", db).stdout)
    assert {(e["match"], e["value"]) for e in listed} == {("exact", "+81398765432"), ("prefix", "+8150")}
    assert next(e for e in listed if e["match"] == "prefix")["expires_at"]
    assert check(db, "0398765432")["rule"] == "blocklist:local"
    assert check(db, "05012345678")["rule"] == "blocklist:police"
    assert "03-9876-5432" in mamoru("block", "list", "--db", db).stdout
    mamoru("block", "remove", "03 9876 5432", "--db", db)
    assert check(db, "0398765432")["rule"] == "unknown"
    missing = mamoru("block", "remove", "03 9876 5432", "--db", db, check=False)
    assert missing.returncode == 1 and "not on the block list" in missing.stderr


@pytest.mark.parametrize("bad", ["hello", "12", "03-1234-5678-9999-0000-1", "0*"])
def test_bad_numbers_get_a_clear_error(db: str, bad: str) -> None:
    proc = mamoru("allow", "add", bad, "--db", db, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("mamoru: ") and bad in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_rejects_garbage_number(db: str) -> None:
    proc = mamoru("check", "not-a-number", "--db", db, check=False)
    assert proc.returncode == 1 and "not a phone number" in proc.stderr


def test_config_check(tmp_path: Path, cfg: str) -> None:
    assert mamoru("config", "check", "--config", cfg).stdout.strip().endswith("OK")
    bad = tmp_path / "bad.toml"
    bad.write_text('[rules]\nwithheld = "deny"\ncolour = 1\n[line]\nhome_region = "XX"\n', encoding="utf-8")
    proc = mamoru("config", "check", "--config", str(bad), check=False)
    assert proc.returncode == 2
    assert f"{bad}: rules.withheld" in proc.stderr
    assert f"{bad}: rules.colour" in proc.stderr
    assert f"{bad}: line.home_region" in proc.stderr
    # the environment variable is honoured
    env_proc = mamoru("config", "check", env_config=bad, check=False)
    assert env_proc.returncode == 2 and "rules.withheld" in env_proc.stderr


def test_calls_empty_and_json(db: str) -> None:
    assert "no calls yet" in mamoru("calls", "--db", db).stdout
    assert json.loads(mamoru("calls", "--json", "--db", db).stdout) == []


def test_example_config_is_valid() -> None:
    example = Path(__file__).parent.parent / "deploy" / "mamoru.example.toml"
    assert mamoru("config", "check", "--config", str(example)).returncode == 0
