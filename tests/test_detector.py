"""Fraud detection from transcripts: phrase packs, scoring, streaming, CLI, and a quality gate.

Japanese and Korean cases are our own paraphrases of the typical scripts the
police (警察庁) and the FSS (금융감독원) publish; there is no open corpus.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import pytest

from screening.cli.detect import cmd_detect, register
from screening.core.model import Verdict
from voice.detector import Detection, Flag, FraudDetector, PhrasePack, PhrasePackError, StreamingDetector
from voice.text_normalize import TextRules, normalize

CORPUS = Path("/work/shared/corpus")


def detect(lang: str, text: str) -> Detection:
    return FraudDetector(PhrasePack.load(lang)).detect(text)


def categories(d: Detection) -> set[str]:
    return {f.category for f in d.flags}


# ---- pack loading and validation ----------------------------------------------------------

MINIMAL = """
[pack]
language = "xx"
fraud_threshold = 3.0
suspicious_threshold = 1.0
[categories.a]
weight = 1.0
phrases = ["alpha", { phrase = "beta(s)?", weight = 2.0 }]
[categories.b]
phrases = ["gamma"]
[[combinations]]
categories = ["a", "b"]
bonus = 2.0
"""


@pytest.mark.parametrize("lang", ["ja", "en", "ko"])
def test_shipped_packs_load_and_are_cached(lang: str) -> None:
    pack = PhrasePack.load(lang)
    assert pack.language == lang
    assert pack.phrases and pack.combinations
    assert PhrasePack.load(lang) is pack
    assert pack.suspicious_threshold < pack.fraud_threshold


def test_unknown_language_is_a_clear_error() -> None:
    with pytest.raises(PhrasePackError, match=r"phrases/xx\.toml.*no phrase pack"):
        PhrasePack.load("xx")


def test_minimal_pack_parses() -> None:
    pack = PhrasePack.from_toml(MINIMAL, "t.toml")
    assert [c.name for c in pack.categories] == ["a", "b"]
    assert pack.categories[0].phrases[1].weight == 2.0


@pytest.mark.parametrize(("broken", "expected"), [
    (MINIMAL.replace('"beta(s)?"', '"beta(s"'), r"categories\.a\.phrases\[1\]: phrase 'beta\(s' is not a valid pattern"),
    (MINIMAL.replace('"gamma"', '42'), r"categories\.b\.phrases\[0\]: expected a phrase string"),
    (MINIMAL.replace('"gamma"', '"(x)?"'), r"categories\.b\.phrases\[0\]: .*empty text"),
    (MINIMAL.replace('["a", "b"]', '["a", "nope"]'), r"combinations\[0\]\.categories: unknown category: nope"),
    (MINIMAL.replace("fraud_threshold = 3.0", "fraud_threshold = 0.5"), r"suspicious_threshold: must not exceed"),
    (MINIMAL.replace("weight = 1.0", 'weight = "high"'), r"categories\.a\.weight: expected a number"),
    (MINIMAL.replace("[pack]", "[pack]\ncolour = 1"), r"pack\.colour: unknown key"),
    (MINIMAL.replace('"alpha", ', '"alpha", "alpha", '), r"duplicate phrase 'alpha'"),
    ("[pack\n", r"t\.toml: invalid TOML"),
])
def test_malformed_pack_names_file_and_entry(broken: str, expected: str) -> None:
    with pytest.raises(PhrasePackError, match=expected) as info:
        PhrasePack.from_toml(broken, "t.toml")
    assert "t.toml" in str(info.value)


def test_all_problems_reported_at_once() -> None:
    broken = MINIMAL.replace('"gamma"', "42").replace('"beta(s)?"', '"beta(s"')
    with pytest.raises(PhrasePackError) as info:
        PhrasePack.from_toml(broken, "t.toml")
    assert "phrases[1]" in str(info.value) and "phrases[0]" in str(info.value)


# ---- normalisation --------------------------------------------------------------------------


def test_normalize_keeps_offsets_and_folds() -> None:
    rules = TextRules(remove_spaces=True, fold_kana=True)
    n = normalize("ｷｬｯｼｭ カード を", rules)
    assert n.text == "きゃっしゅかーどを"
    assert n.span(5, 8) == (6, 9)  # "カード" in the original


def test_number_words_map_to_digits_spanning_the_word() -> None:
    rules = TextRules(number_words={"one": "1"})
    n = normalize("Press ONE, now!", rules)
    assert n.text == "press 1 now"
    assert n.span(6, 7) == (6, 9)


# ---- categories per language ---------------------------------------------------------------

JA_CASES = {
    "impersonation": "警察の者です",
    "relative_claim": "俺だけど",
    "new_number": "携帯なくしちゃって",
    "trouble": "会社のお金を",
    "money_request": "お金が必要なんだ",
    "payment_instruction": "キャッシュカードと暗証番号",
    "refund": "還付金があります",
    "legal_overdue": "逮捕されます",
    "secrecy_urgency": "誰にも言わないでください",
    "investment_romance": "必ず儲かる未公開株",
    "ivr_prompt": "1番を押してください",
}
EN_CASES = {
    "ivr_prompt": "press 1 now",
    "automated_notice": "this is an automated message",
    "impersonation": "this is the Social Security Administration",
    "account_threat": "your account has been suspended",
    "legal_threat": "there is an arrest warrant",
    "urgency": "call immediately",
    "callback_request": "please return my call",
    "secrecy": "don't tell anyone",
    "payment_instruction": "buy gift cards",
    "refund_prize": "you are eligible for a refund",
    "loan_debt": "debt relief program",
    "warranty": "your extended warranty",
    "energy_solar": "free solar panels",
    "family_emergency": "I'm in jail",
    "investment_romance": "guaranteed returns",
}
KO_CASES = {
    "impersonation": "서울중앙지검 수사관입니다",
    "legal_threat": "명의가 도용되었습니다",
    "payment_instruction": "안전계좌로 옮기세요",
    "loan": "저금리 대환대출",
    "family_emergency": "엄마 나야",
    "refund": "환급금이 있습니다",
    "secrecy_urgency": "아무에게도 말하지 마세요",
    "investment": "원금보장 리딩방",
    "ivr_prompt": "1번을 누르세요",
}


@pytest.mark.parametrize(("lang", "category", "text"), [
    *(("ja", c, t) for c, t in JA_CASES.items()),
    *(("en", c, t) for c, t in EN_CASES.items()),
    *(("ko", c, t) for c, t in KO_CASES.items()),
])
def test_each_category_fires(lang: str, category: str, text: str) -> None:
    assert category in categories(detect(lang, text))


@pytest.mark.parametrize("lang", ["ja", "en", "ko"])
def test_every_pack_category_has_a_test_case(lang: str) -> None:
    cases = {"ja": JA_CASES, "en": EN_CASES, "ko": KO_CASES}[lang]
    assert {c.name for c in PhrasePack.load(lang).categories} == set(cases)


# ---- Japanese scripts (police-published typical patterns) --------------------------------------

JA_FRAUD = [
    "もしもし、俺だけど。携帯なくしちゃって番号変わったんだ。会社のお金を使い込んで、示談金が必要なんだ。",
    "市役所の保険課です。医療費の還付金があります。ATMで手続きできます。",
    "警察ですが、あなたの口座が犯罪に使われています。キャッシュカードを預かりに伺います。暗証番号を教えてください。",
    "未納料金があります。本日中に電子マネーで支払わないと裁判になります。",
    # Vosk-style output: spaces between words, mixed kana / kanji
    "けいさつ です が あなた の こうざ が はんざい に 使わ れて い ます キャッシュ カード を 預かり に 伺い ます",
    "しやくしょ の ほけんか です いりょうひ の かんぷきん が あり ます えーてぃーえむ で てつづき",
    "ｹｲｻﾂです。きゃっしゅかーどをあずかりにうかがいます",
    "全国銀行協会の者です。カードを交換しますので、暗証番号を教えてください",
    "息子の上司の弁護士です。示談金を今日中に用意してください。代わりの者が取りに伺います",
]
JA_BENIGN = [
    "おばあちゃん、俺だけど。今晩ご飯食べに行ってもいい？お母さんも一緒に行くって。",
    "みどり銀行さくら支店の山田です。明日十時のご来店のご予約の確認でお電話しました。印鑑をお持ちください。",
    "さくら内科クリニックです。明日の診察のご予約の確認です。保険証をお持ちください。",
    "こんにちは、町内会の佐藤です。日曜日の清掃活動は雨のため中止になりました。",
]


@pytest.mark.parametrize("text", JA_FRAUD)
def test_japanese_fraud_scripts(text: str) -> None:
    assert detect("ja", text).verdict is Verdict.FRAUD


@pytest.mark.parametrize("text", JA_BENIGN)
def test_japanese_benign_calls_are_not_fraud(text: str) -> None:
    assert detect("ja", text).verdict is not Verdict.FRAUD


def test_japanese_spaced_and_kana_variants_match_same_phrase() -> None:
    forms = ["キャッシュカード", "キャッシュ カード", "きゃっしゅかーど", "ｷｬｯｼｭｶｰﾄﾞ"]
    for form in forms:
        flags = detect("ja", f"あなたの{form}です").flags
        assert any(f.category == "payment_instruction" and f.matched.replace(" ", "") in {form.replace(" ", "")}
                   for f in flags), form


def test_japanese_line_video_call_and_nominee_lending() -> None:
    d = detect("ja", "LINE ビデオ通話 で 名義貸し の 話 を")
    assert categories(d) == {"investment_romance"}


# ---- Korean scripts --------------------------------------------------------------------------

KO_FRAUD = [
    "서울중앙지검 수사관입니다. 고객님 명의가 도용되어 사건에 연루되었습니다. 안전계좌로 이체하셔야 합니다.",
    "금융감독원입니다. 고객님 계좌가 대포통장으로 이용되고 있어 현금을 인출해서 직원에게 전달하셔야 합니다.",
    "저금리 대환대출 가능합니다. 기존 대출을 상환하시고 수수료를 먼저 입금해 주세요.",
    "엄마 나야 폰 고장 났어 수리 맡겨서 임시폰으로 문자해. 급하게 돈 좀 보내줘 문화상품권 사줘",
]
KO_BENIGN = [
    "엄마, 나 오늘 저녁 먹고 들어갈게. 반찬 뭐 사갈까?",
    "안녕하세요 국민은행 강남지점입니다. 내일 오후 두 시 상담 예약 확인차 연락드렸습니다.",
    "서울내과입니다. 다음 주 화요일 진료 예약 확인 전화드렸습니다.",
]


@pytest.mark.parametrize("text", KO_FRAUD)
def test_korean_fraud_scripts(text: str) -> None:
    assert detect("ko", text).verdict is Verdict.FRAUD


@pytest.mark.parametrize("text", KO_BENIGN)
def test_korean_benign_calls_are_not_fraud(text: str) -> None:
    assert detect("ko", text).verdict is not Verdict.FRAUD


def test_korean_spacing_tolerance() -> None:
    assert "payment_instruction" in categories(detect("ko", "안전 계좌 로 보내세요"))


# ---- English specifics -------------------------------------------------------------------------


EN_BENIGN = [
    "Hi Mom, it's me. I'm at the store, do you need anything for dinner?",
    "Hello, this is Chase bank confirming your appointment tomorrow at ten to open a savings account.",
    "This is an automated reminder from CVS Pharmacy. Your prescription is ready. Press one to hear our hours.",
    "Hi, this is Dr. Patel's office reminding you of your appointment on Tuesday. Please call us back to reschedule.",
]


@pytest.mark.parametrize("text", EN_BENIGN)
def test_english_benign_calls_are_not_fraud(text: str) -> None:
    assert detect("en", text).verdict is not Verdict.FRAUD


def test_english_numbers_as_words() -> None:
    spoken = detect("en", "Please press one to speak with an agent.")
    digits = detect("en", "Please press 1 to speak with an agent.")
    assert [f.phrase for f in spoken.flags] == [f.phrase for f in digits.flags]
    assert spoken.score == digits.score


def test_english_inflection_and_word_boundaries() -> None:
    assert "refund_prize" in categories(detect("en", "You will be refunded"))
    assert "refund_prize" not in categories(detect("en", "The tickets are refundable"))
    assert "payment_instruction" not in categories(detect("en", "I'd like the spinach pie"))


def test_offsets_point_at_the_phrase() -> None:
    text = "Hello. Your Social Security number is SUSPENDED! Press ONE."
    for flag in detect("en", text).flags:
        assert text[int(flag.start):].startswith(flag.matched)
    ja = "もしもし、警察 です。 キャッシュ カード を"
    for flag in detect("ja", ja).flags:
        assert ja[int(flag.start):].startswith(flag.matched)
        assert flag.matched[0] in "警キ"


# ---- scoring -----------------------------------------------------------------------------------


def test_combination_is_far_stronger_than_either_alone() -> None:
    imp = detect("en", "This is the Social Security Administration.")
    pay = detect("en", "Buy gift cards.")
    both = detect("en", "This is the Social Security Administration. Buy gift cards.")
    assert imp.verdict is not Verdict.FRAUD and pay.verdict is not Verdict.FRAUD
    assert both.verdict is Verdict.FRAUD
    assert both.score > 2 * (imp.score + pay.score) - 1e-9


def test_repeated_phrase_counts_once() -> None:
    once = detect("en", "gift card")
    thrice = detect("en", "gift card, gift card, gift card")
    assert thrice.score == once.score
    assert len(thrice.flags) == 3


def test_more_phrases_in_one_category_have_diminishing_returns() -> None:
    pack = PhrasePack.from_toml(MINIMAL, "t.toml")
    d = FraudDetector(pack)
    assert d.detect("beta").score == 2.0
    assert d.detect("beta alpha").score == 2.5  # 2.0 + 0.5 * 1.0
    assert d.detect("beta alpha gamma").score == pytest.approx((2.5 + 1.0) * 2.0)


def test_clean_text_is_clean() -> None:
    d = detect("en", "Hi Mom, see you at dinner on Sunday. Love you.")
    assert d.verdict is Verdict.CLEAN and d.flags == () and d.score == 0.0


def test_as_dict_shape() -> None:
    d = detect("en", "gift card")
    assert d.as_dict() == {"verdict": "suspicious", "score": d.score,
                           "flags": [{"phrase": "gift card", "category": "payment_instruction", "start": 0, "end": 9,
                                      "pattern": "gift ?cards?", "how": "text"}]}
    assert isinstance(d.flags[0], Flag)


# ---- streaming -----------------------------------------------------------------------------


def test_streaming_matches_across_segments_with_word_times() -> None:
    s = StreamingDetector(PhrasePack.load("ja"))
    assert s.add_segment("警察 です あなた の キャッシュ", 10.0, 12.0,
                         [("警察", 10.0, 10.4), ("です", 10.4, 10.7), ("あなた", 10.8, 11.1), ("の", 11.1, 11.2),
                          ("キャッシュ", 11.3, 11.9)])
    flags = s.add_segment("カード を 預かり に 伺い ます", 12.5, 15.0,
                          [("カード", 12.5, 12.9), ("を", 12.9, 13.0), ("預かり", 13.1, 13.6), ("に", 13.6, 13.7),
                           ("伺い", 13.8, 14.3), ("ます", 14.3, 14.6)])
    card = [f for f in flags if f.matched.replace(" ", "") == "キャッシュカード"]
    assert card and card[0].start == 11.3  # the word where the phrase starts, in the previous segment
    pickup = [f for f in flags if f.matched.startswith("預かり")]
    assert pickup and pickup[0].start == 13.1
    assert s.detection.verdict is Verdict.FRAUD
    assert s.fraud_since is not None and 12.5 <= s.fraud_since <= 14.6


def test_streaming_fraud_since_is_first_crossing_and_sticks() -> None:
    s = StreamingDetector(PhrasePack.load("en"))
    s.add_segment("hello this is your grandson", 0.0, 2.0)
    assert s.fraud_since is None and s.detection.verdict is not Verdict.FRAUD
    s.add_segment("I'm in jail and need bail money", 2.0, 5.0)
    s.add_segment("please buy gift cards", 5.0, 7.0)
    first = s.fraud_since
    assert first is not None and 2.0 <= first <= 7.0
    s.add_segment("and don't tell anyone, send bitcoin", 7.0, 9.0)
    assert s.fraud_since == first


def test_streaming_does_not_repeat_flags_and_agrees_with_batch() -> None:
    pack = PhrasePack.load("en")
    segments = ["This is the Social Security", "Administration. Your number is suspended.",
                "Press one to speak with an officer.", "Press one."]
    s = StreamingDetector(pack)
    t = 0.0
    for seg in segments:
        s.add_segment(seg, t, t + 2)
        t += 2
    batch = FraudDetector(pack).detect(" ".join(segments))
    assert sorted(f.phrase for f in s.detection.flags) == sorted(f.phrase for f in batch.flags)
    assert s.detection.score == batch.score


def test_streaming_tail_is_bounded_on_long_calls() -> None:
    s = StreamingDetector(PhrasePack.load("en"))
    for i in range(500):
        s.add_segment("we talked about the garden and the weather today", i, i + 1)
    assert len(s._tail) <= StreamingDetector.TAIL_CHARS


# ---- CLI -------------------------------------------------------------------------------------


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str], stdin: str | None = None,
            monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="mamoru")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["detect", *argv])
    assert args.func is cmd_detect
    if stdin is not None and monkeypatch is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = args.func(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_text_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "call.txt"
    f.write_text("警察です。キャッシュカードを預かりに伺います。", encoding="utf-8")
    code, out, _ = run_cli([str(f)], capsys)
    result = json.loads(out)
    assert code == 0 and result["verdict"] == "fraud"
    assert set(result) == {"verdict", "score", "flags"}
    assert {"phrase", "category", "start", "end", "pattern", "how"} == set(result["flags"][0])
    assert result["flags"][0]["start"] == 0


def test_cli_stdin_and_lang(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run_cli(["--lang", "en", "-"], capsys, stdin="Press one about your gift card.",
                        monkeypatch=monkeypatch)
    assert code == 0 and json.loads(out)["flags"]


def test_cli_language_from_config(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text('[voice]\nlanguage = "ko"\n', encoding="utf-8")
    code, out, _ = run_cli(["--config", str(cfg)], capsys, stdin="안전계좌로 이체하세요", monkeypatch=monkeypatch)
    assert code == 0 and json.loads(out)["flags"]


def test_cli_jsonl_bad_lines_reported_in_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "in.jsonl"
    f.write_text("\n".join([
        json.dumps({"id": "a", "text": "Press one, your account is suspended.", "lang": "en"}),
        "{not json",
        json.dumps({"id": "c", "text": "警察です。暗証番号を教えてください"}),
        json.dumps({"id": "d", "text": 5}),
        json.dumps({"id": "e", "text": "x", "lang": "fr"}),
    ]) + "\n", encoding="utf-8")
    code, out, _ = run_cli(["--jsonl", str(f)], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and len(rows) == 5
    assert rows[0]["id"] == "a" and rows[0]["verdict"] == "fraud"
    assert rows[1] == {"line": 2, "error": rows[1]["error"]} and "invalid JSON" in rows[1]["error"]
    assert rows[2]["id"] == "c" and rows[2]["verdict"] == "fraud"
    assert rows[3]["line"] == 4 and rows[3]["id"] == "d"
    assert rows[4]["line"] == 5 and "fr" in rows[4]["error"]


def test_cli_jsonl_all_good_exits_zero(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run_cli(["--jsonl", "-", "--lang", "en"], capsys,
                        stdin=json.dumps({"id": 1, "text": "see you at dinner"}) + "\n\n", monkeypatch=monkeypatch)
    assert code == 0 and json.loads(out) == {"id": 1, "verdict": "clean", "score": 0.0, "flags": []}


def test_cli_missing_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli([str(tmp_path / "nope.txt")], capsys)
    assert code == 1 and out == ""
    assert "cannot read input" in err


# ---- quality gate on the held-back 30 % of the English dev corpus -------------------------------


def _held_back(name: str) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in (CORPUS / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    # Same split as benchmarks/bench_detector.py: sha256(id) % 100 >= 70 is the check split.
    return [r for r in rows
            if int.from_bytes(hashlib.sha256(r["id"].encode()).digest()[:4], "big") % 100 >= 70]


@pytest.mark.skipif(not CORPUS.exists(), reason="dev corpus not available")
def test_quality_gate_on_held_back_split() -> None:
    detector = FraudDetector(PhrasePack.load("en"))
    fraud, benign = _held_back("fraud_en.dev.jsonl"), _held_back("benign_en.dev.jsonl")
    assert len(fraud) > 100 and len(benign) > 80
    recall = sum(detector.detect(r["text"]).verdict is Verdict.FRAUD for r in fraud) / len(fraud)
    false_alarms = sum(detector.detect(r["text"]).verdict is Verdict.FRAUD for r in benign) / len(benign)
    assert recall >= 0.95, f"recall {recall:.3f} < 0.95 on the held-back split"
    assert false_alarms <= 0.02, f"false-alarm rate {false_alarms:.3f} > 0.02 on the held-back split"
