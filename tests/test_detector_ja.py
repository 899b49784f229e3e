"""Japanese detection on the kana reading: exact where short, bounded edits where long, and the scripts.

The reading comes from the real OpenJTalk front end (pyopenjtalk-plus); the
scripts in tests/data/detector_ja_scripts.json are our own paraphrases of the
patterns the police publish (no real calls).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from screening.core.model import Verdict
from voice import kana
from voice.detector import Detection, FraudDetector, PhrasePack
from voice.kana import OpenJTalkReader, fuzzy_find, max_edits, read, romanize
from voice.reading_match import MatchKind, ReadingMode, expand_alternatives

pytest.importorskip("pyopenjtalk")

SCRIPTS = json.loads((Path(__file__).parent / "data" / "detector_ja_scripts.json").read_text(encoding="utf-8"))


def detect(text: str, mode: ReadingMode = ReadingMode.FUZZY_READING) -> Detection:
    return FraudDetector(PhrasePack.load("ja"), mode=mode).detect(text)


def found(d: Detection, pattern_part: str) -> list[tuple[str, MatchKind]]:
    return [(f.matched, f.how) for f in d.flags if pattern_part in f.phrase]


# ---- reading and romanisation ---------------------------------------------------------------


def test_reading_points_back_at_the_words_it_came_from() -> None:
    text = "安処番号を教えて"
    reading = read(OpenJTalkReader(), text)
    assert reading.kana.endswith("おしえて")
    start, end = reading.span(0, 1)
    assert text[start:end] == "安処"
    assert 0 in reading.word_starts and len(reading.kana) in reading.word_starts


def test_romanize_counts_sounds() -> None:
    assert romanize("きゃっしゅかーど")[0] == "kyaqshukaado"
    assert romanize("あんしょーばんごー")[0] == "aNshoobaNgoo"
    letters, owner = romanize("げんきん")
    assert letters == "geNkiN" and owner == (0, 0, 1, 2, 2, 3)


def test_short_readings_get_no_edits() -> None:
    assert max_edits(len("geNkiN")) == 0  # 現金 must never be 元気 (geNki)
    assert max_edits(len("kyaqshukaado")) == 2


def test_fuzzy_find_respects_edits_and_word_edges() -> None:
    assert fuzzy_find("kyaqshukaado", "anatanokyasukaadoo", 2) == (2, 7, 17)
    assert fuzzy_find("kyaqshukaado", "anatanokyasukaadoo", 1) is None
    # "moshimoshiyasusho": shiyasusho is one edit from shiyakusho (市役所) but starts mid-word.
    assert fuzzy_find("shiyakusho", "moshimoshiyasusho", 1) is not None
    assert fuzzy_find("shiyakusho", "moshimoshiyasusho", 1, frozenset({0, 10, 13, 17})) is None


@pytest.mark.parametrize(("pattern", "expected"), [
    ("(a|b)c?", ["a", "ac", "b", "bc"]),
    ("x(y|z(w)?)", ["xy", "xz", "xzw"]),
    ("a+", None),
    ("\\d+万", None),
])
def test_expand_alternatives(pattern: str, expected: list[str] | None) -> None:
    assert expand_alternatives(pattern) == expected


def test_every_japanese_phrase_expands_or_is_knowingly_text_only() -> None:
    text_only = [p.text for p in PhrasePack.load("ja").phrases if expand_alternatives(p.text) is None]
    assert text_only == ["(百|二百|三百|五百|十|五十|数十|何十|\\d+)万(円)?"]


# ---- matching on the reading ----------------------------------------------------------------


def test_wrong_kanji_right_sound_matches_on_the_reading() -> None:
    # Whisper wrote 口座 as 講座 in the benchmark; 警視庁 as 軽視庁 is the same kind of slip.
    d = detect("講座番号を、軽視庁の者が")
    assert ("講座番号", MatchKind.READING) in found(d, "口座番号")
    assert ("軽視庁", MatchKind.READING) in found(d, "警視庁")
    assert not found(detect("講座番号を、軽視庁の者が", ReadingMode.TEXT_ONLY), "口座番号")


@pytest.mark.parametrize(("text", "not_pattern"), [
    ("この操作は設置担当者だけができます", "投資"),   # とーし inside たんとーしゃ; 操作 (そーさ) is not 捜査
    ("応答しません", "投資"),
    ("警察や消防に見せかけた番号です", "検察"),        # heard exactly: not a near miss of 検察
    ("バックアップから戻してください", "払い戻し"),   # first sound differs
    ("お使いのブラウザでは再生できません", "使い込"),  # last sound differs
    ("着信3件、拒否2件、警告{warned}件", "県警"),       # 件 + 警告 (けん|けーこく) is not 県警 (けんけー)
])
def test_readings_do_not_invent_words(text: str, not_pattern: str) -> None:
    assert not found(detect(text), not_pattern)
    # けいさつ (hiragana) and 警察 read alike once long vowels are folded.
    assert read(OpenJTalkReader(), "けいさつ").kana == read(OpenJTalkReader(), "警察").kana


def test_wrong_kanji_with_a_short_vowel_matches_fuzzy() -> None:
    assert ("安処番号", MatchKind.FUZZY_READING) in found(detect("安処番号を教えて"), "暗証番号")


def test_clipped_long_word_matches_fuzzy_and_says_so() -> None:
    text = "あなたのキャスカードを預かりに伺います"
    d = detect(text)
    hits = found(d, "キャッシュカード")
    assert hits == [("キャスカード", MatchKind.FUZZY_READING)]
    flag = next(f for f in d.flags if "キャッシュカード" in f.phrase)
    assert text[int(flag.start):int(flag.end)] == "キャスカード"
    assert flag.as_dict()["how"] == "fuzzy_reading"
    assert d.verdict is Verdict.FRAUD
    assert not found(detect(text, ReadingMode.READING), "キャッシュカード")


@pytest.mark.parametrize("text", ["元気を出してね", "げんきにしてる？", "元気ですか、現場に行きます"])
def test_genki_is_never_genkin(text: str) -> None:
    assert not any("現金" in f.phrase for f in detect(text).flags)


def test_phrase_ending_in_a_verb_stem_matches_inside_the_reading_word() -> None:
    assert ("必ずもおかり", MatchKind.READING) in found(detect("必ずもおかりますよ"), "儲か")


def test_text_match_is_not_repeated_as_reading_match() -> None:
    d = detect("キャッシュカードを預かりに伺います")
    hows = [f.how for f in d.flags if "キャッシュカード" in f.phrase]
    assert hows == [MatchKind.TEXT]


class CountingReader:
    """A real OpenJTalk reader that counts calls (reading every phrase once per pack, not per call)."""

    def __init__(self) -> None:
        self.inner = OpenJTalkReader()
        self.calls = 0

    def tokens(self, text: str) -> Sequence[tuple[str, str]]:
        self.calls += 1
        return self.inner.tokens(text)


def test_phrase_readings_are_built_once_per_reader() -> None:
    reader = CountingReader()
    pack = PhrasePack.load("ja")
    FraudDetector(pack, reader=reader).detect("警察です")
    built = reader.calls
    FraudDetector(pack, reader=reader).detect("警察です")
    assert built > 100 and reader.calls == built + 1


def test_without_pyopenjtalk_text_matching_still_works(caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_openjtalk(name: str, *args: object, **kwargs: object) -> object:
        if name == "pyopenjtalk":
            raise ImportError("No module named 'pyopenjtalk'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    kana.default_reader.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_openjtalk)
    try:
        with caplog.at_level(logging.WARNING, logger="voice.kana"):
            first = detect("あなたのキャスカードと、キャッシュカード")
            detect("還付金")
        assert [f.how for f in first.flags] == [MatchKind.TEXT]
        assert sum("pyopenjtalk" in r.getMessage() for r in caplog.records) == 1
    finally:
        monkeypatch.undo()
        kana.default_reader.cache_clear()


# ---- the scripts --------------------------------------------------------------------------------


@pytest.mark.parametrize("row", SCRIPTS["fraud"], ids=lambda r: r["id"])
def test_japanese_fraud_scripts_are_fraud(row: dict[str, str]) -> None:
    assert detect(row["text"]).verdict is Verdict.FRAUD


@pytest.mark.parametrize("row", SCRIPTS["benign"], ids=lambda r: r["id"])
def test_japanese_benign_scripts_are_not_fraud(row: dict[str, str]) -> None:
    assert detect(row["text"]).verdict is not Verdict.FRAUD


def test_oreore_needs_the_combination_not_one_phrase() -> None:
    parts = ["もしもし、俺だけど。", "携帯が壊れて番号が変わったんだ。", "ちょっと困ったことになって、", "お金が必要なんだ。"]
    for part in parts:
        assert detect(part).verdict is not Verdict.FRAUD, part
    assert detect(parts[0] + parts[1]).verdict is not Verdict.FRAUD
    assert detect("".join(parts)).verdict is Verdict.FRAUD
    assert detect(parts[1] + parts[3]).verdict is Verdict.FRAUD


# ---- mamoru detect on a transcript -------------------------------------------------------------

TRANSCRIBED = {
    "file": "call.wav", "language": "ja", "text": "軽視庁の者です キャスカード を 預かり に 伺い ます",
    "segments": [
        {"text": "軽視庁の者です", "start_s": 0.5, "end_s": 2.0, "words": []},
        {"text": "キャスカード を 預かり に 伺い ます", "start_s": 2.4, "end_s": 5.0,
         "words": [{"text": "キャスカード", "start_s": 2.4, "end_s": 3.1, "conf": 0.9}]},
    ],
    "detection": None,
}


def run_detect(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    import argparse

    from screening.cli.detect import register

    parser = argparse.ArgumentParser(prog="mamoru")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["detect", *argv])
    code = args.func(args)
    return code, capsys.readouterr().out


def test_cli_scores_a_transcribe_json_result_with_call_times(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "call.json"
    f.write_text(json.dumps(TRANSCRIBED, ensure_ascii=False), encoding="utf-8")
    code, out = run_detect([str(f)], capsys)
    result = json.loads(out)
    assert code == 0 and result["verdict"] == "fraud" and result["positions"] == "seconds"
    card = next(flag for flag in result["flags"] if flag["phrase"] == "キャスカード")
    assert card["how"] == "fuzzy_reading" and (card["start"], card["end"]) == (2.4, 3.1)
    assert any(flag["how"] == "reading" and flag["phrase"] == "軽視庁" for flag in result["flags"])


def test_cli_explain_plain_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "call.txt"
    f.write_text("軽視庁の者ですが、キャスカードを預かりに伺います", encoding="utf-8")
    code, out = run_detect(["--lang", "ja", "--explain", str(f)], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("fraud (score ")
    assert any("'キャスカード'" in line and "chars 9-15" in line and "(fuzzy reading)" in line for line in lines)
    assert any("'軽視庁'" in line and "(reading)" in line for line in lines)


# ---- live (streaming) ---------------------------------------------------------------------------


def test_streaming_flags_fuzzy_reading_across_segments_with_times() -> None:
    from voice.detector import StreamingDetector, prepare_reading

    pack = PhrasePack.load("ja")
    assert prepare_reading(pack)
    s = StreamingDetector(pack)
    s.add_segment("軽視庁の者です", 0.0, 1.5, [("軽視庁", 0.0, 0.6), ("の者です", 0.6, 1.5)])
    flags = s.add_segment("キャスカード を 預かり に 伺い ます", 2.0, 4.5,
                          [("キャスカード", 2.0, 2.7), ("を", 2.7, 2.8), ("預かり", 2.9, 3.4), ("に", 3.4, 3.5),
                           ("伺い", 3.6, 4.0), ("ます", 4.0, 4.5)])
    card = [f for f in flags if "キャッシュカード" in f.phrase]
    assert card and card[0].how is MatchKind.FUZZY_READING and (card[0].start, card[0].end) == (2.0, 2.7)
    assert [f.how for f in s.detection.flags if "刑事" in f.phrase] == [MatchKind.READING]
    assert s.detection.verdict is Verdict.FRAUD and s.fraud_since is not None


def test_prepare_reading_is_false_for_text_only_packs() -> None:
    from voice.detector import prepare_reading

    assert not prepare_reading(PhrasePack.load("en"))


# ---- a denial is not a request ------------------------------------------------------------------


@pytest.mark.parametrize(("lang", "text"), [
    ("ja", "さくら信用金庫です。お電話で暗証番号をお聞きすることはありません。キャッシュカードを預かることも一切ございません。"),
    ("ja", "みどり銀行です。当行の職員が暗証番号をお尋ねすることは決してありません。"),
    ("en", "This is your credit union. We will never ask for your PIN or account number over the phone."),
])
def test_a_bank_saying_it_never_asks_for_codes_is_not_fraud(lang: str, text: str) -> None:
    d = FraudDetector(PhrasePack.load(lang)).detect(text)
    assert d.verdict is not Verdict.FRAUD
    assert not any(f.category == "payment_instruction" for f in d.flags)


def test_a_denial_does_not_hide_the_rest_of_a_scam() -> None:
    d = detect("暗証番号をお聞きすることはありませんが、警察です。キャッシュカードを預かりに伺います。")
    assert d.verdict is Verdict.FRAUD
    assert not found(d, "暗証番号") and found(d, "キャッシュカード")


def test_bad_negation_pattern_is_reported() -> None:
    from voice.detector import PhrasePackError

    toml = PhrasePack.load("ja").source
    text = (Path(__file__).parent.parent / toml).read_text(encoding="utf-8")
    broken = text.replace('negation_after = "(を', 'negation_after = "((を', 1)
    with pytest.raises(PhrasePackError, match=r"pack\.negation_after: not a valid pattern"):
        PhrasePack.from_toml(broken, "ja.toml")
