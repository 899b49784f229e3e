"""What ``mamoru doctor`` says, in the household's language (Japanese by default).

The checks in ``screening.doctor`` word their findings in English (the ``--json``
output and the logs keep those words). Here each English sentence is matched by a
pattern and said again in plain Japanese, keeping the parts that vary (paths,
numbers, the modem's own error text). A sentence this table does not know yet
(a new check) is shown in English rather than not at all; ``untranslated()``
lets a test find such sentences.

Korean households read the English text for now: there is no Korean table yet.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from screening.core.model import Language
from screening.core.safe_text import pad_columns

__all__ = ["format_report", "say", "title", "untranslated"]


class _Finding(Protocol):
    # Read-only, so doctor.Check (whose severity is a str enum) matches.
    @property
    def name(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def fix(self) -> str: ...


_TITLES_EN = {
    "config": "Settings",
    "line": "Telephone line",
    "speech_model": "Speech checking",
    "disk": "Storage space",
    "clock": "Clock",
    "database": "Call records",
    "recordings": "Recordings",
    "relatives": "Family alerts",
    "feeds": "Police number lists",
    "nd_adapter": "Caller-ID adapter",
}
_TITLES_JA = {
    "config": "設定",
    "line": "電話回線",
    "speech_model": "通話の聞き取り",
    "disk": "空き容量",
    "clock": "時計",
    "database": "通話の記録",
    "recordings": "録音",
    "relatives": "家族へのお知らせ",
    "feeds": "警察などの番号リスト",
    "nd_adapter": "番号表示アダプター",
}
_LABELS = {
    Language.EN: {"ok": "OK", "warning": "WARNING", "problem": "PROBLEM"},
    Language.JA: {"ok": "正常", "warning": "注意", "problem": "問題"},
}
_HELPER = "設定してくれた人に"

# (English sentence as a pattern, Japanese sentence). Named groups carry over unchanged.
_JA: tuple[tuple[str, str], ...] = (
    # any check
    (r"This check could not be done \((?P<e>.*)\)\.", "この確認はできませんでした（{e}）。"),
    (r"Ask your helper to look at the system log \(journalctl -u mamoru\)\.",
     f"{_HELPER}、システムの記録（journalctl -u mamoru）を見てもらってください。"),
    # settings
    (r"No settings file was found, so mamoru uses its demonstration settings\.",
     "設定ファイルが見つからないため、見本（デモ）の設定で動いています。"),
    (r"Ask your helper to create (?P<f>\S+) \(see (?P<g>\S+)\)\.",
     f"{_HELPER} {{f}} を作ってもらってください（見本: {{g}}）。"),
    (r"The settings file (?P<f>.+) is correct\.", "設定ファイル {f} は正しく書かれています。"),
    (r"The settings file has (?P<n>\d+) mistakes?: (?P<l>.*)", "設定ファイルに間違いが {n} か所あります: {l}"),
    (r"Correct these lines in the settings file, then run: mamoru config check",
     "設定ファイルのこれらの行を直してから、mamoru config check を実行してください。"),
    # line
    (r"mamoru is connected to its built-in demonstration line, not to the telephone\. Real calls are not screened\.",
     "mamoru は練習用の回線につながっていて、本物の電話にはつながっていません。本当の電話は確認されません。"),
    (r"Ask your helper to set the telephone modem in the settings \(\[line\] uri\)\.",
     f"{_HELPER}、電話用モデムを設定してもらってください（[line] uri）。"),
    (r"This kind of line \((?P<s>.*)\) cannot be tested by the doctor\.", "この種類の回線（{s}）は点検できません。"),
    (r"The telephone modem is not plugged in\. Check the USB cable to the modem \(grey box\)\.",
     "電話用モデムがつながっていません。モデム（灰色の箱）のUSBケーブルを確かめてください。"),
    (r"Plug the modem's USB cable firmly into the mamoru box\. \(Looked for (?P<d>.*)\.\)",
     "モデムのUSBケーブルを mamoru 本体にしっかり差し込んでください。（探した場所: {d}）"),
    (r"Plug the modem's USB cable firmly into the mamoru box\. \(modem not found at (?P<d>.*)\)",
     "モデムのUSBケーブルを mamoru 本体にしっかり差し込んでください。（モデムが見つからない場所: {d}）"),
    (r"The telephone's handset has been off the hook for a long time, so calls are not answered by mamoru "
     r"\(or its view of the handset is stuck\)\.",
     "受話器が長い時間上がったままです。そのあいだ mamoru は電話に出られません（または受話器の状態の見方が止まっています）。"),
    (r"Put the handset back properly\. If it is, unplug the modem's USB cable, wait 10 seconds and plug it back in\.",
     "電話機の受話器がきちんと置かれているか確かめてください。置かれていれば、モデムのUSBケーブルを抜いて10秒待ち、差し直してください。"),
    # the Number Display adapter
    (r"No separate caller-ID adapter is set \(none is needed\)\.",
     "ナンバー・ディスプレイ用のアダプターは設定されていません（なくても使えます）。"),
    (r"The caller-ID adapter \(Number Display\) is not plugged in: calls are screened without the caller's number\.",
     "ナンバー・ディスプレイ用のアダプターがつながっていません。相手の番号なしで電話を確認しています。"),
    (r"Plug the caller-ID adapter's USB cable firmly into the mamoru box\. \(Looked for (?P<d>.*)\.\)",
     "アダプターのUSBケーブルを mamoru 本体にしっかり差し込んでください。（探した場所: {d}）"),
    (r"The caller-ID adapter is plugged in, but mamoru is not allowed to use it\.",
     "ナンバー・ディスプレイ用のアダプターはつながっていますが、mamoru が使えない設定になっています。"),
    (r"The caller-ID adapter is plugged in \((?P<d>.*)\)\.", "ナンバー・ディスプレイ用のアダプターはつながっています（{d}）。"),
    (r"The telephone modem is plugged in, but mamoru is not allowed to use it\.",
     "電話用モデムはつながっていますが、mamoru が使えない設定になっています。"),
    (r"Ask your helper to add the mamoru user to the 'dialout' group \(device (?P<d>.*)\)\.",
     f"{_HELPER}、mamoru ユーザーを 'dialout' グループに入れてもらってください（装置 {{d}}）。"),
    (r"The internet-telephone \(SIP\) part of mamoru is not installed\.",
     "mamoru のインターネット電話（SIP）の部分が入っていません。"),
    (r"Ask your helper to install it: (?P<a>pip install .*), or (?P<b>\S+) on the box\.",
     f"{_HELPER}入れてもらってください: {{a}}（本体では {{b}}）。"),
    (r"The internet-telephone settings are not usable: (?P<e>.*)\.", "インターネット電話の設定が使えません: {e}。"),
    (r"Ask your helper to correct \[line\] uri and \[sip\] in the settings file\.",
     f"{_HELPER}、設定ファイルの [line] uri と [sip] を直してもらってください。"),
    (r"mamoru registers with (?P<r>.*) but has no password for it\.",
     "mamoru は {r} に登録しますが、そのパスワードがありません。"),
    (r"Ask your helper to write the password into the file named by \[sip\] password_file\.",
     f"{_HELPER}、[sip] password_file のファイルにパスワードを書いてもらってください。"),
    (r"The internet-telephone line is set up \((?P<w>.*)\), but mamoru is not running\.",
     "インターネット電話の回線は設定されています（{w}）が、mamoru が動いていません。"),
    (r"Start it: (?P<c>.*)", "起動してください: {c}"),
    (r"The internet-telephone line has a problem: (?P<e>.*)", "インターネット電話の回線に問題があります: {e}"),
    (r"Check the cable to the home gateway, and that the gateway is switched on\.",
     "ホームゲートウェイへのケーブルと、ゲートウェイの電源が入っているかを確かめてください。"),
    (r"The internet-telephone line is working \((?P<w>.*)\)\.", "インターネット電話の回線は正常です（{w}）。"),
    (r"The telephone modem is connected and answering \(type: (?P<t>.*)\)\.",
     "電話用モデムはつながっていて、正常に応答しています（種類: {t}）。"),
    (r"The telephone modem is connected and in use by the screening service \(that is normal\)\.",
     "電話用モデムはつながっていて、電話を見張る仕組みが使っています（正常です）。"),
    (r"The device plugged in is not a telephone modem mamoru knows\.",
     "つながっている機器は、mamoru が使える電話用モデムではありません。"),
    (r"Use a U\.S\. Robotics USR5637 or a Conexant USB modem\. \((?P<e>.*)\)",
     "U.S. Robotics USR5637 か Conexant のUSBモデムを使ってください。（{e}）"),
    (r"The telephone modem could not be used\. Check the USB cable to the modem \(grey box\)\.",
     "電話用モデムが使えませんでした。モデム（灰色の箱）のUSBケーブルを確かめてください。"),
    (r"Unplug the modem's USB cable, wait 10 seconds and plug it back in\. If that does not help, restart the "
     r"mamoru box\. \((?P<p>.*)\)",
     "モデムのUSBケーブルを抜いて、10秒待ってから差し直してください。直らなければ mamoru 本体を再起動してください。（{p}）"),
    (r"Unplug the modem's USB cable, wait 10 seconds and plug it back in\. \((?P<e>.*)\)",
     "モデムのUSBケーブルを抜いて、10秒待ってから差し直してください。（{e}）"),
    (r"The telephone modem is plugged in but does not answer\.", "電話用モデムはつながっていますが、応答しません。"),
    # speech
    (r"Listening to calls for fraud is switched off in the settings\.",
     "通話を聞いて詐欺を見つける働きは、設定で止めてあります。"),
    (r"The speech model for '(?P<l>.*)' is missing, so calls cannot be checked for fraud\.",
     "通話を聞き取るためのデータ（{l}）が入っていないため、詐欺かどうかを聞き分けられません（録音はされます）。"),
    (r"Ask your helper to run: mamoru model install (?P<l>\S+)\s+\((?P<e>.*)\)",
     f"{_HELPER} mamoru model install {{l}} を実行してもらってください。（{{e}}）"),
    (r"The speech recognition software is not installed, so calls cannot be checked for fraud\.",
     "通話を聞き取るソフトが入っていないため、詐欺かどうかを聞き分けられません（録音はされます）。"),
    (r"Ask your helper to run: (?P<c>pip install .*)", f"{_HELPER} {{c}} を実行してもらってください。"),
    (r"The speech model for '(?P<l>.*)' is installed \((?P<p>.*)\)\.",
     "通話を聞き取るためのデータ（{l}）は入っています（{p}）。"),
    # disk
    (r"The memory card is almost full: only (?P<f>.*) free \((?P<p>.*)\)\.",
     "メモリーカードがほぼいっぱいです。空きは {f}（{p}）しかありません。"),
    (r"Ask your helper to delete old recordings or lower \[recording\] max_disk_mb\. \((?P<p>.*)\)",
     f"{_HELPER}、古い録音を消すか [recording] max_disk_mb を小さくしてもらってください。（{{p}}）"),
    (r"There is enough space: (?P<f>.*) free \((?P<p>.*)\)\.", "空き容量は十分です: {f}（{p}）。"),
    # clock
    (r"The clock is wrong: it says (?P<d>.*)\. Call times and quiet hours will be wrong\.",
     "時計がずれています（{d} になっています）。通話の時刻や、お知らせを控える時間が正しくなりません。"),
    (r"Connect the mamoru box to the internet \(it sets its clock from there\), then restart it\.",
     "mamoru 本体をインターネットにつないでから（そこから時計を合わせます）、再起動してください。"),
    (r"The clock looks right \((?P<t>.*)\)\.", "時計は合っています（{t}）。"),
    # call records
    (r"There are no call records yet\. They are created when mamoru first starts\.",
     "通話の記録はまだありません。mamoru を初めて起動したときに作られます。"),
    (r"If mamoru has been running, ask your helper to check that (?P<p>.*) exists\.",
     f"mamoru がすでに動いていたなら、{_HELPER} {{p}} があるか確かめてもらってください。"),
    (r"The call records cannot be read; the file may be damaged\.",
     "通話の記録が読めません。ファイルが壊れているかもしれません。"),
    (r"Ask your helper to restore (?P<p>.*) from a backup, or move it aside so a new one is made\. \((?P<e>.*)\)",
     f"{_HELPER}、{{p}} をバックアップから戻すか、別の場所に移して新しく作らせてもらってください。（{{e}}）"),
    (r"The call records are damaged\.", "通話の記録が壊れています。"),
    (r"Ask your helper to restore (?P<p>.*) from a backup\. \(integrity check: (?P<v>.*)\)",
     f"{_HELPER}、{{p}} をバックアップから戻してもらってください。（点検の結果: {{v}}）"),
    (r"The call records were written by a newer version of mamoru\.",
     "通話の記録は、もっと新しい mamoru で書かれています。"),
    (r"Ask your helper to update mamoru \(records are version (?P<a>\d+), this mamoru knows (?P<b>\d+)\)\.",
     f"{_HELPER} mamoru を新しくしてもらってください（記録の版 {{a}}、この mamoru は {{b}} まで）。"),
    (r"The call records are from an older version; they are updated when mamoru next starts\.",
     "通話の記録は古い形のままです。次に mamoru が起動したときに自動で新しくなります。"),
    (r"Restart mamoru \(or the box\) once\.", "mamoru（または本体）を一度再起動してください。"),
    (r"The call records open, but checking them for damage took too long\.",
     "通話の記録は開けますが、壊れていないかの確認に時間がかかりすぎました。"),
    (r"The call records are readable and up to date \((?P<p>.*)\)\.", "通話の記録は正常に読めます（{p}）。"),
    # recordings
    (r"Call recording is switched off in the settings\.", "通話の録音は、設定で止めてあります。"),
    (r"Calls cannot be recorded: mamoru cannot save files in the recordings folder\.",
     "通話を録音できません。録音のフォルダーにファイルを保存できません。"),
    (r"Ask your helper to check (?P<d>.*) \(owner mamoru, not read-only\)\. \((?P<e>.*)\)",
     f"{_HELPER} {{d}} を確かめてもらってください（持ち主が mamoru で、書き込めること）。（{{e}}）"),
    (r"The recordings folder will be created with the first recording\.",
     "録音のフォルダーは、最初の録音のときに作られます。"),
    (r"Recordings can be saved \((?P<d>.*)\)\.", "録音を保存できます（{d}）。"),
    # relatives
    (r"No family members are set up, so nobody is told about fraud calls\.",
     "家族の連絡先が設定されていないため、詐欺の電話があっても誰にも知らせが届きません。"),
    (r"Ask your helper to add a \[\[relatives\]\] entry \(name and phone or notify\) to the settings\.",
     f"{_HELPER}、家族の連絡先（[[relatives]]: 名前と、電話番号か通知先）を設定に加えてもらってください。"),
    (r"Family members who are told about fraud calls: (?P<n>.*)\.", "詐欺の電話を知らせる家族: {n}。"),
    # feeds
    (r"No number lists from the police or the town are set up; only your own lists are used\.",
     "警察や市町村からの番号リストは設定されていません。ご家庭のリストだけを使っています。"),
    (r"Ask your helper or the police officer who installed mamoru to add one \(mamoru feed add\)\.",
     "設定してくれた人か、mamoru を取り付けた警察官に加えてもらってください（mamoru feed add）。"),
    (r"These number lists are out of date and no longer block anything: (?P<l>.*)\.",
     "次の番号リストは古くなり、もう何も止めていません: {l}。"),
    (r"Check that the box is connected to the internet; if it is, tell the police officer or helper\.",
     "本体がインターネットにつながっているか確かめてください。つながっていれば、警察官か設定してくれた人に伝えてください。"),
    (r"These number lists could not be updated lately: (?P<l>.*)\.", "次の番号リストは、最近更新できていません: {l}。"),
    (r"Check that the box is connected to the internet\.", "本体がインターネットにつながっているか確かめてください。"),
    (r"Number lists up to date: (?P<l>.*)\.", "番号リストは最新です: {l}。"),
)  # fmt: skip
_JA_COMPILED = tuple((re.compile(pattern, re.DOTALL), text) for pattern, text in _JA)


def _table(language: Language) -> Language:
    """The language we can speak: Japanese or English (Korean reads English for now)."""
    return Language.JA if language is Language.JA else Language.EN


def say(sentence: str, language: Language) -> str:
    """One of the doctor's sentences in ``language``; unknown sentences stay as they are."""
    if not sentence or _table(language) is Language.EN:
        return sentence
    for pattern, text in _JA_COMPILED:
        found = pattern.fullmatch(sentence)
        if found is not None:
            return text.format(**found.groupdict())
    return sentence


def untranslated(sentence: str) -> bool:
    """True when no Japanese wording exists for this sentence (for the tests)."""
    return bool(sentence) and not any(pattern.fullmatch(sentence) for pattern, _ in _JA_COMPILED)


def title(check_name: str, language: Language) -> str:
    titles = _TITLES_JA if _table(language) is Language.JA else _TITLES_EN
    return titles.get(check_name, _TITLES_EN.get(check_name, check_name))


def format_report(checks: Sequence[_Finding], language: Language) -> str:
    """One line per check; the fix indented under each warning or problem; a summary line."""
    lang = _table(language)
    labels = _LABELS[lang]
    what_to_do = "すること:" if lang is Language.JA else "What to do:"
    lines = []
    for check in checks:
        lines.append(f"{pad_columns(labels[check.severity], 8)} {title(check.name, lang)}: {say(check.message, lang)}")
        if check.fix and check.severity != "ok":
            lines.append(f"{'':<8}   {what_to_do} {say(check.fix, lang)}")
    problems = sum(c.severity == "problem" for c in checks)
    lines.append("")
    if lang is Language.JA:
        lines.append("電話を見張るのに必要なものは、すべて正常です。" if problems == 0
                     else f"問題が {problems} 件見つかりました。「問題」と書かれた行を直してください。")
    else:
        lines.append("Everything needed to screen calls is working." if problems == 0
                     else f"{problems} problem{'s' if problems != 1 else ''} found. Please fix the lines marked PROBLEM.")
    return "\n".join(lines)
