"""Editing the config file from a program: comments kept, validated by the real loader first, atomic.

Real files in tmp_path, starting from the shipped, heavily commented example config.
"""

from __future__ import annotations

import os
import shutil
import threading
import tomllib
from pathlib import Path

import pytest

from screening import config_edit
from screening.config import ConfigError, ConfigProblem, load_config
from screening.core.model import Action

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "mamoru.example.toml"
COMMENT = "# number withheld by the caller (P, 非通知)"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "mamoru.toml"
    shutil.copy(EXAMPLE, path)
    path.chmod(0o640)
    return path


def test_setting_a_rule_keeps_every_comment_and_the_file_mode(config: Path) -> None:
    before = config.read_text(encoding="utf-8")
    assert COMMENT in before
    cfg = config_edit.edit_config(config, config_edit.set_values("rules", {"withheld": "block"}))
    after = config.read_text(encoding="utf-8")
    assert cfg.rules.withheld is Action.BLOCK and load_config(config).rules.withheld is Action.BLOCK
    assert cfg.source == str(config)
    # Only that one value changed: every other line, comments included, is byte-for-byte the same.
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert changed == [('withheld = "request_number"     ' + COMMENT, 'withheld = "block"     ' + COMMENT)]
    assert config.stat().st_mode & 0o777 == 0o640  # it holds alert secrets: never widened
    assert [p.name for p in config.parent.iterdir()] == ["mamoru.toml"]  # no temp file left behind


def test_an_invalid_value_is_refused_and_the_file_is_untouched(config: Path) -> None:
    before = config.read_bytes()
    inode = config.stat().st_ino
    with pytest.raises(ConfigError) as caught:
        config_edit.edit_config(config, config_edit.set_values("rules", {"withheld": "zap", "unknown": "warn"}))
    assert [(p.file, p.key) for p in caught.value.problems] == [(str(config), "rules.withheld")]
    assert config.read_bytes() == before and config.stat().st_ino == inode
    by_field, rest = config_edit.field_errors(caught.value.problems, {"rules.withheld": "withheld"})
    assert list(by_field) == ["withheld"] and "zap" in by_field["withheld"][0].message and rest == []
    assert [p.name for p in config.parent.iterdir()] == ["mamoru.toml"]


def test_an_edit_that_changes_nothing_does_not_rewrite_the_file(config: Path) -> None:
    inode, mtime = config.stat().st_ino, config.stat().st_mtime_ns
    cfg = config_edit.edit_config(config, config_edit.set_values("rules", {"withheld": "request_number"}))
    assert cfg.rules.withheld is Action.REQUEST_NUMBER
    assert (config.stat().st_ino, config.stat().st_mtime_ns) == (inode, mtime)


def test_a_missing_section_is_added_and_still_validates(tmp_path: Path) -> None:
    path = tmp_path / "small.toml"
    path.write_text("# just a line\n[line]\nuri = \"sim:\"\n", encoding="utf-8")
    cfg = config_edit.edit_config(path, config_edit.combine(
        config_edit.set_values("recording", {"keep_days": 30}), config_edit.set_values("voice", {"language": "en"})))
    assert (cfg.recording.keep_days, cfg.voice.language.value) == (30, "en")
    assert path.read_text(encoding="utf-8").startswith("# just a line\n[line]\nuri = \"sim:\"\n")


def test_relatives_are_added_changed_and_removed(config: Path) -> None:
    urls = ["json://127.0.0.1:9/a", "json://127.0.0.1:9/b"]
    cfg = config_edit.edit_config(config, config_edit.put_relative(
        None, {"name": "Taro", "notify": config_edit.string_array(urls), "language": "en"}))
    assert [(r.name, r.notify, r.language.value) for r in cfg.relatives] == [("Taro", tuple(urls), "en")]
    cfg = config_edit.edit_config(config, config_edit.put_relative(
        None, {"name": "Hanako", "phone": "090-1234-5678"}))
    # change Taro: a new name and phone; language None removes the key (back to the default)
    cfg = config_edit.edit_config(config, config_edit.put_relative(
        "taro", {"name": "Taro Yamada", "phone": "03-1234-5678", "language": None}))
    assert [(r.name, r.phone, r.language) for r in cfg.relatives] == [
        ("Taro Yamada", "+81312345678", None), ("Hanako", "+819012345678", None)]
    assert tomllib.loads(config.read_text(encoding="utf-8"))["relatives"][0]["notify"] == urls
    with pytest.raises(KeyError):
        config_edit.put_relative("Nobody", {"name": "x"})(config_edit.parse_document(config.read_text(), "f"))

    cfg = config_edit.edit_config(config, config_edit.remove_relative("TARO YAMADA"))
    cfg = config_edit.edit_config(config, config_edit.remove_relative("Hanako"))
    assert cfg.relatives == ()
    text = config.read_text(encoding="utf-8")
    assert "[[relatives]]\nname" not in text and COMMENT in text
    assert "# [[relatives]]" in text  # the example's commented-out entries are still there


def test_a_relative_problem_maps_to_the_form_field_and_line(config: Path) -> None:
    config_edit.edit_config(config, config_edit.put_relative(None, {"name": "Taro", "phone": "090-1234-5678"}))
    before = config.read_bytes()
    with pytest.raises(ConfigError) as caught:
        config_edit.edit_config(config, config_edit.put_relative(None, {
            "name": "taro", "notify": ["json://127.0.0.1:9/ok", "not a url"], "phone": "12"}))
    assert config.read_bytes() == before
    keys = sorted(p.key for p in caught.value.problems)
    assert keys == ["relatives[1].name", "relatives[1].notify[1]", "relatives[1].phone"]
    fields = {"relatives.name": "name", "relatives.notify": "notify", "relatives.phone": "phone"}
    by_field, rest = config_edit.field_errors(caught.value.problems, fields, relative=1)
    assert sorted(by_field) == ["name", "notify", "phone"] and rest == []
    assert by_field["notify"][0].item == 1  # the second URL, i.e. the form's second line
    assert "duplicate" in by_field["name"][0].message
    # The same problems seen from a form editing relative 0 belong to no field of it.
    by_field, rest = config_edit.field_errors(caught.value.problems, fields, relative=0)
    assert by_field == {} and len(rest) == 3


def test_field_errors_leave_unknown_keys_for_a_general_notice() -> None:
    problems = [ConfigProblem("f", "", "invalid TOML: line 3"), ConfigProblem("f", "line.uri", "bad"),
                ConfigProblem("f", "relatives[0]", "no way to reach this relative")]
    by_field, rest = config_edit.field_errors(problems, {"line.uri": "line_uri", "relatives": "notify"}, relative=0)
    assert by_field == {"line_uri": [config_edit.FieldProblem("line_uri", "bad")],
                        "notify": [config_edit.FieldProblem("notify", "no way to reach this relative")]}
    assert rest == problems[:1]


def test_a_file_broken_by_hand_is_reported_not_overwritten(config: Path) -> None:
    config.write_text("[rules\nwithheld = block\n", encoding="utf-8")
    before = config.read_bytes()
    with pytest.raises(ConfigError) as caught:
        config_edit.edit_config(config, config_edit.set_values("rules", {"withheld": "block"}))
    assert "invalid TOML" in caught.value.problems[0].message
    assert config.read_bytes() == before


def test_a_section_that_is_not_a_table_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "odd.toml"
    path.write_text("rules = 5\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        config_edit.edit_config(path, config_edit.set_values("rules", {"withheld": "block"}))
    assert path.read_text(encoding="utf-8") == "rules = 5\n"


def test_two_concurrent_edits_both_land(config: Path) -> None:
    """Two browser tabs saving at once: each read-modify-write sees the other's result."""
    barrier = threading.Barrier(8)
    rules = ["withheld", "international", "out_of_area", "payphone", "service_conflict", "no_caller_id",
             "unknown", "invalid"]  # fmt: skip

    def save(rule: str) -> None:
        barrier.wait(timeout=10)
        config_edit.edit_config(config, config_edit.set_values("rules", {rule: "allow"}))

    threads = [threading.Thread(target=save, args=(rule,)) for rule in rules]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    cfg = load_config(config)
    assert all(getattr(cfg.rules, rule) is Action.ALLOW for rule in rules)
    assert COMMENT.split("(")[0].strip() in config.read_text(encoding="utf-8")


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        config_edit.edit_config(path, config_edit.set_values("rules", {"withheld": "block"}))
    assert "UTF-8" in caught.value.problems[0].message
    with pytest.raises(ConfigError):
        config_edit.edit_config(tmp_path / "missing.toml", config_edit.set_values("rules", {"withheld": "block"}))
    assert not (tmp_path / "missing.toml").exists()
    assert os.listdir(tmp_path) == ["latin1.toml"]
