"""Settings pages: rules, relatives (with a test alert), announcements, and the installer's system page.

Every change goes through ``screening.config_edit``: the config file keeps its
comments, the result is validated by the real loader before it replaces the
file, and a mistake is shown next to its field while the file stays as it was.
The running daemon notices the changed file (or a new recording in
``voice.prompts_dir``) and uses it from the next call on.

Secrets: a relative's notify URLs usually hold a token or password. They are
never rendered back into a page; the edit form shows one placeholder line per
saved URL (``ntfy ●●●● (1)``), and a placeholder left in place keeps that URL.
Uploaded recordings are converted here to the line's 8 kHz format, so the
daemon never has to resample a phone's 44.1 kHz file between two rings.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
import tomllib
import unicodedata
import wave
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from firmware.audio_format import WavError, read_wav_pcm16
from screening import config_edit
from screening.config import Config, ConfigError, ConfigProblem, RelativeConfig
from screening.core.model import Language
from screening.core.model import Action, Prompt, Role
from screening.core.files import atomic_write_bytes
from screening.core.numbers import national_format
from screening.web.auth import User, require_user
from screening.web.context import WebContext
from screening.web.i18n import register, translate
from screening.web.templating import render, request_language
from voice.announcements import MAX_OVERRIDE_S, SAMPLE_RATE, PromptLibrary, convert_rate, is_silent

log = logging.getLogger(__name__)

# The situations a family decides about, in the order a person thinks of them (every Action field of [rules]).
RULES = ("withheld", "international", "out_of_area", "payphone", "no_caller_id", "unknown", "service_conflict",
         "invalid")  # fmt: skip
ACTIONS = (Action.ALLOW, Action.WARN, Action.REQUEST_NUMBER, Action.BLOCK)
PROMPTS = (Prompt.WARNING, Prompt.NUMBER_REQUEST, Prompt.INTERNATIONAL_BLOCKED, Prompt.NUMBER_BLOCKED,
           Prompt.HOUSEHOLD_WARNING)  # fmt: skip
PROMPTS_DIR_NAME = "prompts"  # under the data directory, when [voice] prompts_dir is not set yet
MAX_NOTIFY_URLS = 10
MAX_URL_CHARS = 2000
MAX_NOTIFY_CHARS = 64 * 1024  # the whole form is at most this (limits.FORM_BODY_BYTES): never cut a URL short
MAX_NAME_CHARS = 64
MAX_RECORDING_BYTES = 16 * 1024 * 1024  # 30 s of 48 kHz stereo 32-bit is 11.5 MB
MIN_RECORDING_RATE, MAX_RECORDING_RATE = 4000, 192_000  # an absurd rate would make resampling explode
SECRET_MARK = "●●●●"
_TOKEN = re.compile(re.escape(SECRET_MARK) + r"\s*\((\d{1,3})\)\s*$")

SETTINGS_DONE = {"saved": "settings.done.saved"}
RELATIVES_DONE = {"saved": "settings.done.relative_saved", "removed": "settings.done.relative_removed"}
ANNOUNCEMENTS_DONE = {"saved": "settings.done.recording_saved", "reset": "settings.done.recording_reset"}
SYSTEM_DONE = {"saved": "settings.done.system_saved"}

register({
    "ja": {
        "settings.title": "設定",
        "settings.intro": "電話がかかってきたときに、まもるがどうするかを決めます。変えた設定は、次の電話から使われます。",
        "settings.menu.relatives": "知らせる家族",
        "settings.menu.relatives_hint": "詐欺の疑いがある電話のとき、だれに知らせるか",
        "settings.menu.announcements": "電話をかけてきた人に流すお知らせ",
        "settings.menu.announcements_hint": "お知らせを聞く・ご家族の声で録音する",
        "settings.menu.system": "本体と回線の設定（設置担当者）",
        "settings.menu.system_hint": "電話回線、地域、録音の保存期間、画面のアドレス",
        "settings.menu.account": "ご自分のパスワードと画面の言葉",
        "settings.demo": "今はお試し用の設定で動いているため、ここで変えても保存できません。設定ファイルを指定して起動してください：",
        "settings.save": "保存する",
        "settings.saved_file": "設定ファイル：{path}",
        "settings.rules.title": "電話の種類ごとの対応",
        "settings.rules.intro": "家族や知り合いの番号（許可リスト）は、いつも普通に鳴ります。着信拒否の番号は、いつも断ります。そのほかの電話を、種類ごとに決めてください。",
        "settings.rule.withheld": "非通知の電話（番号を隠してかけてきた電話）",
        "settings.rule.international": "海外からの電話（国際電話）",
        "settings.rule.out_of_area": "「表示圏外」の電話（番号が届かない電話）",
        "settings.rule.payphone": "公衆電話からの電話",
        "settings.rule.no_caller_id": "番号が何も表示されない電話",
        "settings.rule.unknown": "リストにない番号からの電話",
        "settings.rule.service_conflict": "回線の都合で番号が届かない電話",
        "settings.rule.invalid": "番号として正しくない番号からの電話",
        "settings.action.allow": "普通に鳴らす",
        "settings.action.warn": "「録音します」と伝えてから、つなぐ",
        "settings.action.request_number": "番号を出してかけ直してもらう",
        "settings.action.block": "お断りして切る",
        "settings.voice_language": "お知らせの言葉",
        "settings.voice_language_hint": "電話をかけてきた人に流すお知らせの言葉です。詐欺の言葉を聞き取る言葉は、本体を再起動すると変わります。",
        "settings.language.ja": "日本語",
        "settings.language.en": "英語（English）",
        "settings.language.ko": "韓国語（한국어）",
        "settings.language.same": "お知らせと同じ言葉",
        "settings.error.choice": "一覧の中から選んでください。",
        "settings.error.general": "保存できませんでした。設定ファイルに次の問題があります：",
        "settings.error.demo": "お試し用の設定のため、保存できません。",
        "settings.error.not_saved": "保存できませんでした。赤字のところを直してください。",
        "settings.error.number": "数字で入れてください。",
        "settings.relatives.title": "知らせる家族",
        "settings.relatives.intro": "詐欺の疑いがある電話があったとき、ここに書いた順にお知らせを送ります。",
        "settings.relatives.none": "まだだれも登録されていません。下から追加してください。",
        "settings.relatives.channels": "知らせ方",
        "settings.relatives.no_channels": "（通知先なし）",
        "settings.relatives.phone": "電話番号",
        "settings.relatives.phone_hint": "ここに電話をかけて、声でお知らせします。使わないときは空のままにしてください。",
        "settings.relatives.language": "お知らせの言葉",
        "settings.relatives.name": "お名前",
        "settings.relatives.notify": "通知先（1行に1つ）",
        "settings.relatives.notify_hint": "ntfy、メール、LINE などの通知先のアドレスを、1行に1つずつ書いてください。保存済みの通知先は「●●●●」で表示されます。その行を残すと、そのまま使われます。",
        "settings.relatives.edit": "変える",
        "settings.relatives.add_title": "家族を追加する",
        "settings.relatives.add": "追加する",
        "settings.relatives.remove": "削除する",
        "settings.relatives.test": "テストのお知らせを送る",
        "settings.relatives.test_result": "{name} さんへのテスト送信の結果",
        "settings.relatives.test_ok": "届きました",
        "settings.relatives.test_failed": "送れませんでした",
        "settings.relatives.test_none": "通知先がないため、送るものがありませんでした。",
        "settings.relatives.test_error": "テストのお知らせを送れませんでした。少し待ってから、もう一度お試しください。",
        "settings.error.name_required": "お名前を入れてください。",
        "settings.error.name_taken": "同じお名前の方がすでにいます。",
        "settings.error.name_long": "お名前が長すぎます。",
        "settings.error.name_invalid": "お名前に使えない文字が入っています。",
        "settings.error.notify": "{line}行目：この通知先のアドレスは使えません。",
        "settings.error.notify_token": "{line}行目：保存済みの通知先が見つかりません。もう一度入れ直してください。",
        "settings.error.notify_many": "通知先は{max}個までです。",
        "settings.error.notify_long": "{line}行目：アドレスが長すぎます。",
        "settings.error.unreachable": "通知先か電話番号の、どちらかを入れてください。",
        "settings.error.phone": "電話番号として正しくありません。",
        "settings.error.no_relative": "その方は見つかりませんでした。",
        "settings.announcements.title": "電話をかけてきた人に流すお知らせ",
        "settings.announcements.intro": "まもるが電話に出たとき、かけてきた人に流すお知らせです。標準のお知らせのほか、ご家族の声で録音したものも使えます。",
        "settings.announcements.text": "言っていること",
        "settings.announcements.current_shipped": "今は標準のお知らせが流れます。",
        "settings.announcements.current_household": "今はご家族が録音したお知らせが流れます。",
        "settings.announcements.current_broken": "録音したものが使えないため、標準のお知らせが流れます。録音し直してください。",
        "settings.announcements.upload": "録音を入れ替える（WAV形式、{max}秒まで）",
        "settings.announcements.upload_submit": "この録音を使う",
        "settings.announcements.reset": "標準のお知らせに戻す",
        "settings.announcements.no_audio": "お使いのブラウザでは再生できません。",
        "settings.prompt.warning": "録音のお知らせ（知らない番号から）",
        "settings.prompt.number_request": "番号通知のお願い（非通知の電話に）",
        "settings.prompt.international_blocked": "国際電話のお断り",
        "settings.prompt.number_blocked": "着信拒否のお知らせ",
        "settings.prompt.household_warning": "家の中の人への注意（詐欺の疑いがあるとき、スピーカーで）",
        "settings.error.no_file": "録音のファイルを選んでください。",
        "settings.error.too_large": "ファイルが大きすぎます（{mb} MBまで）。",
        "settings.error.not_wav": "このファイルは使えません。WAV形式の録音を選んでください。",
        "settings.error.bad_rate": "このWAVファイルの形式には対応していません。",
        "settings.error.silent": "録音に音が入っていません。",
        "settings.error.too_long": "録音が長すぎます（{max}秒まで）。短く録音し直してください。",
        "settings.error.save_failed": "保存できませんでした。本体の空き容量を確かめてください。",
        "settings.system.title": "本体と回線の設定",
        "settings.system.intro": "設置担当者のための設定です。回線、地域、画面のアドレスは、本体を再起動すると使われます。",
        "settings.system.line_uri": "電話回線（モデム）",
        "settings.system.line_uri_hint": "例：modem:///dev/mamoru-modem（USBモデム）、sim:（お試し用の仮の回線）",
        "settings.system.home_region": "地域（国の記号）",
        "settings.system.home_region_hint": "日本は JP です。この地域の外からの電話を「海外からの電話」とします。",
        "settings.system.keep_days": "録音を残す日数",
        "settings.system.keep_days_hint": "これより古い録音は消えます（家族がまだ確かめていない詐欺の録音は残ります）。",
        "settings.system.web_host": "この画面のアドレス（待ち受けるIPアドレス）",
        "settings.system.web_host_hint": "127.0.0.1 は本体の中だけ、0.0.0.0 は家のネットワークのすべてから見られます。",
        "settings.system.web_port": "この画面のポート番号",
        "settings.system.restart": "回線・地域・画面のアドレスの変更は、本体を再起動すると使われます。",
        "settings.error.line_uri": "回線の書き方が正しくありません。",
        "settings.error.region": "地域の記号が正しくありません（例：JP）。",
        "settings.error.keep_days": "1以上の日数を入れてください。",
        "settings.error.web_host": "IPアドレスが正しくありません。",
        "settings.error.web_port": "0から65535までの数字を入れてください。",
        "settings.provision.title": "設定ファイル（プロビジョニング）を読み込む",
        "settings.provision.intro": "警察署や市役所が作った、署名付きの設定ファイル（.mamoru-bundle）を読み込みます。今の設定、知らせる家族、ログインできる人が入れ替わります。",
        "settings.provision.file": "設定ファイル（.mamoru-bundle）",
        "settings.provision.submit": "読み込む",
        "settings.provision.applied": "設定ファイルを読み込みました。",
        "settings.provision.refused": "この設定ファイルは使えません：{reason}",
        "settings.provision.failed": "読み込みの途中で問題がありました。",
        "settings.refusal.unreadable": "ファイルが読めません。",
        "settings.refusal.too_large": "ファイルが大きすぎます。",
        "settings.refusal.not_json": "壊れているか、設定ファイルではありません。",
        "settings.refusal.not_an_envelope": "設定ファイルの形式ではありません。",
        "settings.refusal.wrong_payload_type": "設定ファイルの種類が違います。",
        "settings.refusal.unsigned": "署名がありません。",
        "settings.refusal.no_trusted_keys": "この本体には、信頼する発行元の鍵が入っていません。",
        "settings.refusal.unknown_signer": "この本体が信頼していない発行元が署名しています。",
        "settings.refusal.bad_signature": "署名が合いません。署名のあとで書き換えられています。",
        "settings.refusal.bad_payload": "中身が正しくありません。",
        "settings.refusal.unsupported_format": "この版のまもるでは読めない形式です。",
        "settings.refusal.expired": "有効期限が切れています。",
        "settings.refusal.wrong_unit": "別の本体のための設定ファイルです。",
        "settings.refusal.rollback": "前に読み込んだものより古い設定ファイルです。",
        "settings.refusal.invalid_config": "中の設定に誤りがあります。",
        "settings.refusal.none_valid": "使える設定ファイルがありません。",
        "settings.refusal.ambiguous": "使える設定ファイルが複数あります。",
        "settings.done.saved": "保存しました。次の電話から使われます。",
        "settings.done.relative_saved": "保存しました。",
        "settings.done.relative_removed": "削除しました。",
        "settings.done.recording_saved": "録音を保存しました。次の電話から流れます。",
        "settings.done.recording_reset": "標準のお知らせに戻しました。",
        "settings.done.system_saved": "保存しました。回線・地域・画面のアドレスの変更は、本体の再起動後に使われます。",
    },
    "en": {
        "settings.title": "Settings",
        "settings.intro": "What mamoru does when the phone rings. Changes apply from the next call.",
        "settings.menu.relatives": "Family to alert",
        "settings.menu.relatives_hint": "Who is told about a suspected fraud call",
        "settings.menu.announcements": "Announcements callers hear",
        "settings.menu.announcements_hint": "Listen to them, or record your own",
        "settings.menu.system": "Unit and line (installer)",
        "settings.menu.system_hint": "Telephone line, region, recording retention, web address",
        "settings.menu.account": "Your password and page language",
        "settings.demo": "mamoru is running on its demonstration settings, so changes cannot be saved here. Start it with a settings file:",
        "settings.save": "Save",
        "settings.saved_file": "Settings file: {path}",
        "settings.rules.title": "What to do with each kind of call",
        "settings.rules.intro": "Numbers on the allow list (family, friends) always ring; numbers on the block list are always refused. Choose what happens with every other kind of call.",
        "settings.rule.withheld": "Withheld number (the caller hid it)",
        "settings.rule.international": "Call from abroad (international)",
        "settings.rule.out_of_area": "\"Out of area\" (no number delivered)",
        "settings.rule.payphone": "Call from a payphone",
        "settings.rule.no_caller_id": "No caller ID at all",
        "settings.rule.unknown": "A number on no list",
        "settings.rule.service_conflict": "No number because of the line's services",
        "settings.rule.invalid": "A number that is not a valid number",
        "settings.action.allow": "Ring normally",
        "settings.action.warn": "Say \"this call is recorded\", then ring",
        "settings.action.request_number": "Ask them to call again with their number",
        "settings.action.block": "Refuse and hang up",
        "settings.voice_language": "Language of the announcements",
        "settings.voice_language_hint": "The language callers hear. The language listened for fraud changes after a restart of the unit.",
        "settings.language.ja": "Japanese (日本語)",
        "settings.language.en": "English",
        "settings.language.ko": "Korean (한국어)",
        "settings.language.same": "Same as the announcements",
        "settings.error.choice": "Please choose one of the options.",
        "settings.error.general": "Not saved. The settings file has these problems:",
        "settings.error.demo": "Demonstration settings cannot be saved.",
        "settings.error.not_saved": "Not saved. Please correct the fields marked in red.",
        "settings.error.number": "Please enter a number.",
        "settings.relatives.title": "Family to alert",
        "settings.relatives.intro": "When a call looks like fraud, these people are alerted, in this order.",
        "settings.relatives.none": "Nobody yet. Add someone below.",
        "settings.relatives.channels": "Alerted by",
        "settings.relatives.no_channels": "(no notification address)",
        "settings.relatives.phone": "Phone number",
        "settings.relatives.phone_hint": "mamoru phones this number with a spoken alert. Leave it empty to not phone.",
        "settings.relatives.language": "Language of the alerts",
        "settings.relatives.name": "Name",
        "settings.relatives.notify": "Notification addresses (one per line)",
        "settings.relatives.notify_hint": "ntfy, e-mail, LINE … addresses, one per line. Saved addresses show as \"●●●●\"; leave such a line in place to keep it.",
        "settings.relatives.edit": "Change",
        "settings.relatives.add_title": "Add a family member",
        "settings.relatives.add": "Add",
        "settings.relatives.remove": "Remove",
        "settings.relatives.test": "Send a test alert",
        "settings.relatives.test_result": "Test alert to {name}",
        "settings.relatives.test_ok": "delivered",
        "settings.relatives.test_failed": "not delivered",
        "settings.relatives.test_none": "There is no notification address, so nothing was sent.",
        "settings.relatives.test_error": "The test alert could not be sent. Please try again in a moment.",
        "settings.error.name_required": "Please enter a name.",
        "settings.error.name_taken": "Someone with this name is already there.",
        "settings.error.name_long": "The name is too long.",
        "settings.error.name_invalid": "The name contains characters that cannot be used.",
        "settings.error.notify": "Line {line}: this notification address cannot be used.",
        "settings.error.notify_token": "Line {line}: this saved address was not found. Please enter it again.",
        "settings.error.notify_many": "At most {max} addresses.",
        "settings.error.notify_long": "Line {line}: the address is too long.",
        "settings.error.unreachable": "Please give a notification address or a phone number.",
        "settings.error.phone": "This is not a valid phone number.",
        "settings.error.no_relative": "That person was not found.",
        "settings.announcements.title": "Announcements callers hear",
        "settings.announcements.intro": "What callers hear when mamoru answers. Use the standard ones, or record them in a family member's voice.",
        "settings.announcements.text": "What it says",
        "settings.announcements.current_shipped": "The standard announcement plays.",
        "settings.announcements.current_household": "Your own recording plays.",
        "settings.announcements.current_broken": "Your recording cannot be used, so the standard one plays. Please record it again.",
        "settings.announcements.upload": "Replace with a recording (WAV, up to {max} s)",
        "settings.announcements.upload_submit": "Use this recording",
        "settings.announcements.reset": "Back to the standard announcement",
        "settings.announcements.no_audio": "This browser cannot play it.",
        "settings.prompt.warning": "Recording notice (unknown numbers)",
        "settings.prompt.number_request": "Please show your number (withheld calls)",
        "settings.prompt.international_blocked": "International calls refused",
        "settings.prompt.number_blocked": "Blocked number",
        "settings.prompt.household_warning": "Warning to the household (speaker, on suspected fraud)",
        "settings.error.no_file": "Please choose a recording.",
        "settings.error.too_large": "The file is too large (at most {mb} MB).",
        "settings.error.not_wav": "This file cannot be used. Please choose a WAV recording.",
        "settings.error.bad_rate": "This kind of WAV file is not supported.",
        "settings.error.silent": "The recording is silent.",
        "settings.error.too_long": "The recording is too long (at most {max} s). Please record a shorter one.",
        "settings.error.save_failed": "Could not save. Please check the unit's free space.",
        "settings.system.title": "Unit and line",
        "settings.system.intro": "Installer settings. The line, region and web address apply after the unit restarts.",
        "settings.system.line_uri": "Telephone line (modem)",
        "settings.system.line_uri_hint": "e.g. modem:///dev/mamoru-modem (USB modem), sim: (demonstration line)",
        "settings.system.home_region": "Region (country code)",
        "settings.system.home_region_hint": "JP for Japan. Calls from outside this region count as international.",
        "settings.system.keep_days": "Keep recordings for (days)",
        "settings.system.keep_days_hint": "Older recordings are deleted (never unreviewed fraud).",
        "settings.system.web_host": "Web page address (IP address to listen on)",
        "settings.system.web_host_hint": "127.0.0.1: only on the unit; 0.0.0.0: from the whole home network.",
        "settings.system.web_port": "Web page port",
        "settings.system.restart": "Changes to the line, region and web address apply after the unit restarts.",
        "settings.error.line_uri": "This line address is not valid.",
        "settings.error.region": "This region code is not valid (e.g. JP).",
        "settings.error.keep_days": "Please enter a number of days, 1 or more.",
        "settings.error.web_host": "This IP address is not valid.",
        "settings.error.web_port": "Please enter a number from 0 to 65535.",
        "settings.provision.title": "Load a provisioning bundle",
        "settings.provision.intro": "Load a signed settings bundle (.mamoru-bundle) from the police or the town. It replaces the settings, the family to alert and who can log in.",
        "settings.provision.file": "Bundle file (.mamoru-bundle)",
        "settings.provision.submit": "Load",
        "settings.provision.applied": "The bundle was applied.",
        "settings.provision.refused": "This bundle cannot be used: {reason}",
        "settings.provision.failed": "Something went wrong while applying it.",
        "settings.refusal.unreadable": "The file cannot be read.",
        "settings.refusal.too_large": "The file is too large.",
        "settings.refusal.not_json": "It is damaged, or not a bundle.",
        "settings.refusal.not_an_envelope": "It is not in the bundle format.",
        "settings.refusal.wrong_payload_type": "It is the wrong kind of file.",
        "settings.refusal.unsigned": "It is not signed.",
        "settings.refusal.no_trusted_keys": "This unit has no trusted issuer keys.",
        "settings.refusal.unknown_signer": "It is signed by an issuer this unit does not trust.",
        "settings.refusal.bad_signature": "The signature does not match: it was changed after signing.",
        "settings.refusal.bad_payload": "Its content is not valid.",
        "settings.refusal.unsupported_format": "This version of mamoru cannot read its format.",
        "settings.refusal.expired": "It has expired.",
        "settings.refusal.wrong_unit": "It was made for another unit.",
        "settings.refusal.rollback": "It is older than the bundle applied before.",
        "settings.refusal.invalid_config": "The settings in it have mistakes.",
        "settings.refusal.none_valid": "No usable bundle.",
        "settings.refusal.ambiguous": "More than one usable bundle.",
        "settings.done.saved": "Saved. It applies from the next call.",
        "settings.done.relative_saved": "Saved.",
        "settings.done.relative_removed": "Removed.",
        "settings.done.recording_saved": "Recording saved. Callers hear it from the next call.",
        "settings.done.recording_reset": "Back to the standard announcement.",
        "settings.done.system_saved": "Saved. Line, region and web address changes apply after the unit restarts.",
    },
})  # fmt: skip


class SettingsProblem(Exception):
    """A form value refused before the config is touched: a message key for one field."""

    def __init__(self, field: str, key: str, **values: object) -> None:
        super().__init__(key)
        self.field, self.key, self.values = field, key, values


# ---- shared --------------------------------------------------------------------------------


def _ctx(request: Request) -> WebContext:
    return request.app.state.ctx


def _text(form: FormData, name: str, limit: int = 4096) -> str:
    """A text field; a file sent under that name, or nothing, counts as empty."""
    value = form.get(name)
    return value[:limit].strip() if isinstance(value, str) else ""


def _flash(request: Request, known: Mapping[str, str]) -> str | None:
    key = known.get(request.query_params.get("done", ""))
    return translate(request_language(request), key) if key else None


def _common(request: Request, user: User) -> dict[str, Any]:
    ctx = _ctx(request)
    return {"editable": ctx.config_path is not None, "config_path": str(ctx.config_path or ""),
            "is_installer": user.role is Role.INSTALLER}  # fmt: skip


def _say(request: Request, key: str, **values: object) -> str:
    return translate(request_language(request), key, **values)


def _demo(request: Request) -> str:
    return _say(request, "settings.error.demo")


def _general(problems: Iterable[ConfigProblem]) -> list[str]:
    """Problems of the file that belong to no field here: named by key, for the installer."""
    return [f"{p.key}: {p.message}" if p.key else p.message for p in problems]


def _save(ctx: WebContext, edit: config_edit.Edit) -> Config:
    assert ctx.config_path is not None
    return config_edit.edit_config(ctx.config_path, edit)


# ---- rules -----------------------------------------------------------------------------------


def _settings_values(cfg: Config) -> dict[str, str]:
    values = {rule: getattr(cfg.rules, rule).value for rule in RULES}
    values["voice_language"] = cfg.voice.language.value
    return values


def _settings_page(request: Request, user: User, *, values: dict[str, str] | None = None,
                   errors: dict[str, list[str]] | None = None, general: list[str] | None = None,
                   notice: str | None = None, status_code: int = 200) -> Response:  # fmt: skip
    cfg = _ctx(request).config()
    return render(request, "settings.html", {
        **_common(request, user), "rules": RULES, "actions": [a.value for a in ACTIONS],
        "languages": [lang.value for lang in Language], "values": values or _settings_values(cfg),
        "errors": errors or {}, "general": general or [], "notice": notice, "done": _flash(request, SETTINGS_DONE),
    }, status_code=status_code)  # fmt: skip


async def settings_page(request: Request) -> Response:
    user = require_user(request)
    return _settings_page(request, user)


async def save_rules(request: Request) -> Response:
    user = require_user(request)
    ctx = _ctx(request)
    form = await request.form()
    cfg = ctx.config()
    values = _settings_values(cfg)
    submitted = {name: _text(form, name, 64) for name in (*RULES, "voice_language") if _text(form, name, 64)}
    # shown again after a mistake: a value that is no choice would show as the first option, so keep the saved one
    choices = {a.value for a in ACTIONS} | {lang.value for lang in Language}
    values.update({name: value for name, value in submitted.items() if value in choices})
    if ctx.config_path is None:
        return _settings_page(request, user, values=values, notice=_demo(request), status_code=409)
    rules = {name: value for name, value in submitted.items()
             if name in RULES and value != getattr(cfg.rules, name).value}  # fmt: skip
    edits = [config_edit.set_values("rules", rules)] if rules else []
    language = submitted.get("voice_language")
    if language is not None and language != cfg.voice.language.value:
        edits.append(config_edit.set_values("voice", {"language": language}))
    try:
        await run_in_threadpool(_save, ctx, config_edit.combine(*edits))
    except ConfigError as exc:
        fields = {f"rules.{name}": name for name in RULES} | {"voice.language": "voice_language"}
        by_field, rest = config_edit.field_errors(exc.problems, fields)
        lang = request_language(request)
        errors = {name: [translate(lang, "settings.error.choice")] for name in by_field}
        return _settings_page(request, user, values=values, errors=errors, general=_general(rest), status_code=400)
    log.info("web: %s changed the rules (%s)", user.name, ", ".join(f"{k}={v}" for k, v in rules.items()) or "voice")
    return RedirectResponse("/settings?done=saved", status_code=303)


# ---- relatives ---------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def channel_label(url: str) -> str:
    """What kind of channel a URL is ("ntfy", "E-Mail" …): never its address, which holds a secret."""
    from deploy.provisioning.sheet import channel_name

    return channel_name(url)


def _token(url: str, position: int) -> str:
    """The placeholder of a saved URL in the edit form (1-based ``position``)."""
    return f"{channel_label(url)} {SECRET_MARK} ({position})"


@dataclass(frozen=True, slots=True)
class RelativeView:
    name: str
    channels: tuple[str, ...]
    phone: str  # national format, as people write it
    language: str
    notify_text: str  # placeholders only


def _relative_view(relative: RelativeConfig, home_region: str) -> RelativeView:
    return RelativeView(
        name=relative.name, channels=tuple(channel_label(u) for u in relative.notify),
        phone=national_format(relative.phone, home_region) if relative.phone else "",
        language=relative.language.value if relative.language else "",
        notify_text="\n".join(_token(u, i) for i, u in enumerate(relative.notify, 1)),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class TestLine:
    channel: str
    ok: bool
    error: str


def _relatives_page(request: Request, user: User, *, form_values: dict[str, str] | None = None,
                    errors: dict[str, list[str]] | None = None, general: list[str] | None = None,
                    notice: str | None = None, test: tuple[str, list[TestLine]] | None = None,
                    status_code: int = 200) -> Response:  # fmt: skip
    cfg = _ctx(request).config()
    relatives = [_relative_view(r, cfg.line.home_region) for r in cfg.relatives]
    return render(request, "relatives.html", {
        **_common(request, user), "relatives": relatives, "languages": [lang.value for lang in Language],
        "form": form_values or {"original": "", "name": "", "notify": "", "phone": "", "language": ""},
        "errors": errors or {}, "general": general or [], "notice": notice, "test": test,
        "done": _flash(request, RELATIVES_DONE), "notify_max": MAX_NOTIFY_URLS,
    }, status_code=status_code)  # fmt: skip


async def relatives_page(request: Request) -> Response:
    user = require_user(request)
    return _relatives_page(request, user)


def _find_relative(cfg: Config, name: str) -> tuple[int, RelativeConfig] | None:
    for index, relative in enumerate(cfg.relatives):
        if relative.name.casefold() == name.strip().casefold():
            return index, relative
    return None


def notify_urls(text: str, saved: tuple[str, ...]) -> list[str]:
    """The textarea's lines as URLs: a placeholder line keeps its saved URL. Raises SettingsProblem."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_NOTIFY_URLS:
        raise SettingsProblem("notify", "settings.error.notify_many", max=MAX_NOTIFY_URLS)
    urls: list[str] = []
    for number, line in enumerate(lines, 1):
        match = _TOKEN.search(line)
        if match is not None:
            position = int(match[1])
            if not 1 <= position <= len(saved):
                raise SettingsProblem("notify", "settings.error.notify_token", line=number)
            urls.append(saved[position - 1])
        elif len(line) > MAX_URL_CHARS:
            raise SettingsProblem("notify", "settings.error.notify_long", line=number)
        else:
            urls.append(line)
    return urls


def _relative_errors(request: Request, problems: list[ConfigProblem],
                     index: int) -> tuple[dict[str, list[str]], list[str]]:  # fmt: skip
    lang = request_language(request)
    fields = {"relatives": "notify", "relatives.name": "name", "relatives.notify": "notify",
              "relatives.phone": "phone", "relatives.language": "language"}  # fmt: skip
    by_field, rest = config_edit.field_errors(problems, fields, relative=index)
    errors: dict[str, list[str]] = {}
    for field, found in by_field.items():
        for problem in found:
            if field == "notify" and problem.item is not None:
                text = translate(lang, "settings.error.notify", line=problem.item + 1)
            elif field == "notify":
                text = translate(lang, "settings.error.unreachable")
            elif field == "name":
                text = translate(lang, "settings.error.name_required")
            elif field == "phone":
                text = translate(lang, "settings.error.phone")
            else:
                text = translate(lang, "settings.error.choice")
            errors.setdefault(field, []).append(text)
    return errors, _general(rest)


async def save_relative(request: Request) -> Response:
    user = require_user(request)
    ctx = _ctx(request)
    form = await request.form()
    cfg = ctx.config()
    original = _text(form, "original", 256)
    values = {"original": original, "name": _text(form, "name", 256), "notify": _text(form, "notify", MAX_NOTIFY_CHARS),
              "phone": _text(form, "phone", 64), "language": _text(form, "language", 16)}  # fmt: skip
    if ctx.config_path is None:
        return _relatives_page(request, user, form_values=values,
                               notice=_demo(request), status_code=409)
    found = _find_relative(cfg, original) if original else None
    if original and found is None:
        return _relatives_page(request, user, notice=_say(request, "settings.error.no_relative"),
                               status_code=404)  # fmt: skip
    index = found[0] if found else len(cfg.relatives)
    saved = found[1].notify if found else ()
    try:
        _check_name(cfg, values["name"], original)
        urls = notify_urls(values["notify"], saved)
    except SettingsProblem as problem:
        text = translate(request_language(request), problem.key, **problem.values)
        return _relatives_page(request, user, form_values=_redacted(values, saved), errors={problem.field: [text]},
                               status_code=400)  # fmt: skip
    entry: dict[str, Any] = {
        "name": values["name"],
        "notify": config_edit.string_array(urls) if urls else None,
        "phone": values["phone"] or None,
        "language": values["language"] or None,
    }
    try:
        await run_in_threadpool(_save, ctx, config_edit.put_relative(found[1].name if found else None, entry))
    except ConfigError as exc:
        errors, general = _relative_errors(request, exc.problems, index)
        return _relatives_page(request, user, form_values=_redacted(values, saved), errors=errors, general=general,
                               status_code=400)  # fmt: skip
    except KeyError:  # removed by someone else meanwhile
        return _relatives_page(request, user, notice=_say(request, "settings.error.no_relative"),
                               status_code=404)  # fmt: skip
    log.info("web: %s saved relative %r", user.name, values["name"])
    return RedirectResponse("/settings/relatives?done=saved", status_code=303)


def _check_name(cfg: Config, name: str, original: str) -> None:
    if not name:
        raise SettingsProblem("name", "settings.error.name_required")
    if len(name) > MAX_NAME_CHARS:
        raise SettingsProblem("name", "settings.error.name_long")
    if any(unicodedata.category(c).startswith("C") for c in name):  # control and invisible format characters
        raise SettingsProblem("name", "settings.error.name_invalid")
    clash = _find_relative(cfg, name)
    if clash is not None and clash[1].name.casefold() != original.casefold():
        raise SettingsProblem("name", "settings.error.name_taken")


def _redacted(values: dict[str, str], saved: tuple[str, ...]) -> dict[str, str]:
    """The submitted form for showing again: URLs the user just typed are theirs, saved ones stay placeholders."""
    lines = []
    for line in values["notify"].splitlines():
        stripped = line.strip()
        if stripped in saved:  # a saved secret typed again: still never echoed
            stripped = _token(stripped, saved.index(stripped) + 1)
        lines.append(stripped)
    return {**values, "notify": "\n".join(lines)}


async def remove_relative(request: Request) -> Response:
    user = require_user(request)
    ctx = _ctx(request)
    form = await request.form()
    name = _text(form, "name", 256)
    if ctx.config_path is None:
        return _relatives_page(request, user, notice=_demo(request), status_code=409)
    found = _find_relative(ctx.config(), name)
    if found is None:
        return _relatives_page(request, user, notice=_say(request, "settings.error.no_relative"), status_code=404)
    try:
        await run_in_threadpool(_save, ctx, config_edit.remove_relative(found[1].name))
    except ConfigError as exc:
        return _relatives_page(request, user, general=_general(exc.problems), status_code=400)
    except KeyError:
        return _relatives_page(request, user, notice=_say(request, "settings.error.no_relative"), status_code=404)
    log.info("web: %s removed relative %r", user.name, found[1].name)
    return RedirectResponse("/settings/relatives?done=removed", status_code=303)


def send_test_alert(ctx: WebContext, cfg: Config, relative: RelativeConfig) -> list[TestLine]:
    """Through the real alert path (outbox, apprise), exactly like `mamoru alert test --to NAME`."""
    from screening.alerts import AlertService
    from screening.notify import AppriseNotifier, mask

    labels = {mask(url): channel_label(url) for url in relative.notify}
    with AlertService(ctx.store, cfg, AppriseNotifier()) as service:
        results = service.test_alert(relative.name)
    return [TestLine(labels.get(r.channel, r.channel.split(":", 1)[0]), r.ok, r.error or "") for r in results]


async def test_relative(request: Request) -> Response:
    user = require_user(request)
    ctx = _ctx(request)
    form = await request.form()
    cfg = ctx.config()
    found = _find_relative(cfg, _text(form, "name", 256))
    if found is None:
        return _relatives_page(request, user, notice=_say(request, "settings.error.no_relative"),
                               status_code=404)  # fmt: skip
    relative = found[1]
    try:
        lines = await run_in_threadpool(send_test_alert, ctx, cfg, relative)
    except Exception:  # noqa: BLE001 -- the outbox or a plugin failing is reported on the page, not as a 500
        log.exception("web: test alert to %s could not be sent", relative.name)
        return _relatives_page(request, user, notice=_say(request, "settings.relatives.test_error"), status_code=500)
    log.info("web: %s sent a test alert to %s: %s", user.name, relative.name,
             ", ".join(f"{line.channel} {'ok' if line.ok else 'failed'}" for line in lines) or "no channels")
    return _relatives_page(request, user, test=(relative.name, lines))


# ---- announcements -------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _prompt_texts() -> dict[str, Any]:
    resource = resources.files("voice") / "prompts" / "texts.toml"
    return tomllib.loads(resource.read_text(encoding="utf-8"))


def prompt_text(language: str, prompt: Prompt) -> str:
    return str(_prompt_texts().get(language, {}).get(prompt.value, {}).get("text", ""))


def _prompt(request: Request) -> Prompt:
    try:
        return Prompt(request.path_params["prompt"])
    except ValueError:
        raise HTTPException(status_code=404) from None


@dataclass(frozen=True, slots=True)
class PromptView:
    prompt: str
    text: str
    source: str  # shipped | household | broken


def _prompt_views(cfg: Config) -> list[PromptView]:
    library = PromptLibrary(cfg.voice.language.value, cfg.voice.prompts_dir)
    views = []
    for prompt in PROMPTS:
        path = library.override_path(prompt)
        if path is None or not path.is_file():
            source = "shipped"
        else:
            source = "household" if library.clip_for(prompt).name.startswith("override:") else "broken"
        views.append(PromptView(prompt.value, prompt_text(cfg.voice.language.value, prompt), source))
    return views


async def _announcements_page(request: Request, user: User, *, errors: dict[str, list[str]] | None = None,
                              general: list[str] | None = None, notice: str | None = None,
                              status_code: int = 200) -> Response:  # fmt: skip
    cfg = _ctx(request).config()
    views = await run_in_threadpool(_prompt_views, cfg)
    return render(request, "announcements.html", {
        **_common(request, user), "prompts": views, "errors": errors or {}, "general": general or [], "notice": notice,
        "done": _flash(request, ANNOUNCEMENTS_DONE), "max_seconds": int(MAX_OVERRIDE_S),
    }, status_code=status_code)  # fmt: skip


async def announcements_page(request: Request) -> Response:
    user = require_user(request)
    return await _announcements_page(request, user)


def wav_bytes(pcm16: bytes, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm16)
    return out.getvalue()


def _current_clip_wav(cfg: Config, prompt: Prompt) -> bytes:
    clip = PromptLibrary(cfg.voice.language.value, cfg.voice.prompts_dir).clip_for(prompt)
    return wav_bytes(clip.pcm16, clip.sample_rate)


async def announcement_audio(request: Request) -> Response:
    """What callers hear now (household recording, else shipped): the same PromptLibrary the daemon uses."""
    require_user(request)
    prompt = _prompt(request)
    data = await run_in_threadpool(_current_clip_wav, _ctx(request).config(), prompt)
    disposition = f'inline; filename="{prompt.value}.wav"'
    return Response(data, media_type="audio/wav", headers={"content-disposition": disposition})


def convert_recording(data: bytes) -> bytes:
    """Any PCM WAV (a phone's 44.1 kHz stereo recording …) as the line's 8 kHz mono WAV. Raises SettingsProblem."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as temp:
        temp.write(data)
        temp.flush()
        try:
            pcm, rate = read_wav_pcm16(temp.name)
        except WavError:
            raise SettingsProblem("file", "settings.error.not_wav") from None
    if not MIN_RECORDING_RATE <= rate <= MAX_RECORDING_RATE:
        raise SettingsProblem("file", "settings.error.bad_rate")
    if len(pcm) / 2 / rate > MAX_OVERRIDE_S:  # checked before resampling: that is the slow part
        raise SettingsProblem("file", "settings.error.too_long", max=int(MAX_OVERRIDE_S))
    line_pcm = convert_rate(pcm, rate, SAMPLE_RATE)
    if is_silent(line_pcm):
        raise SettingsProblem("file", "settings.error.silent")
    return wav_bytes(line_pcm, SAMPLE_RATE)


def _prompts_dir(ctx: WebContext) -> Path:
    """``[voice] prompts_dir``, set to ``<data dir>/prompts`` the first time a family records one."""
    cfg = ctx.config()
    if cfg.voice.prompts_dir is not None:
        return Path(cfg.voice.prompts_dir)
    directory = Path(ctx.store.path).parent / PROMPTS_DIR_NAME
    cfg = _save(ctx, config_edit.set_values("voice", {"prompts_dir": str(directory)}))
    assert cfg.voice.prompts_dir is not None
    return Path(cfg.voice.prompts_dir)


def store_recording(ctx: WebContext, prompt: Prompt, data: bytes) -> Path:
    """Convert, then write atomically (the daemon watches the file and must never read half of it)."""
    wav = convert_recording(data)
    directory = _prompts_dir(ctx)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{prompt.value}.wav"
    atomic_write_bytes(target, wav, mode=0o644)  # nothing secret; the daemon may run as another user
    return target


async def _upload(request: Request, limit: int) -> bytes | str:
    """The ``file`` field's bytes, or a message key. The size is checked before anything is parsed."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + 64 * 1024:
        return "settings.error.too_large"
    form = await request.form(max_files=1, max_fields=20)
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return "settings.error.no_file"
    data = await upload.read(limit + 1)
    if len(data) > limit:
        return "settings.error.too_large"
    if not data:
        return "settings.error.no_file"
    return data


async def upload_announcement(request: Request) -> Response:
    user = require_user(request)
    ctx = _ctx(request)
    prompt = _prompt(request)
    lang = request_language(request)
    if ctx.config_path is None:
        return await _announcements_page(request, user, notice=_demo(request),
                                         status_code=409)  # fmt: skip
    data = await _upload(request, MAX_RECORDING_BYTES)
    if isinstance(data, str):
        text = translate(lang, data, mb=MAX_RECORDING_BYTES // 2**20)
        return await _announcements_page(request, user, errors={prompt.value: [text]}, status_code=400)
    try:
        path = await run_in_threadpool(store_recording, ctx, prompt, data)
    except SettingsProblem as problem:
        text = translate(lang, problem.key, **problem.values)
        return await _announcements_page(request, user, errors={prompt.value: [text]}, status_code=400)
    except ConfigError as exc:
        return await _announcements_page(request, user, general=_general(exc.problems), status_code=400)
    except OSError as exc:
        log.error("web: cannot save the %s recording: %s", prompt.value, exc)
        errors = {prompt.value: [_say(request, "settings.error.save_failed")]}
        return await _announcements_page(request, user, errors=errors, status_code=500)
    log.info("web: %s replaced the %s announcement (%s)", user.name, prompt.value, path)
    return RedirectResponse("/settings/announcements?done=saved", status_code=303)


async def reset_announcement(request: Request) -> Response:
    user = require_user(request)
    ctx = _ctx(request)
    prompt = _prompt(request)
    if ctx.config_path is None:
        return await _announcements_page(request, user, notice=_demo(request),
                                         status_code=409)  # fmt: skip
    directory = ctx.config().voice.prompts_dir
    if directory is not None:
        with contextlib.suppress(FileNotFoundError):
            (Path(directory) / f"{prompt.value}.wav").unlink()
    log.info("web: %s reset the %s announcement", user.name, prompt.value)
    return RedirectResponse("/settings/announcements?done=reset", status_code=303)


# ---- system (installer) -------------------------------------------------------------------------

SYSTEM_FIELDS = {  # form field -> (section, key)
    "line_uri": ("line", "uri"),
    "home_region": ("line", "home_region"),
    "voice_language": ("voice", "language"),
    "keep_days": ("recording", "keep_days"),
    "web_host": ("web", "host"),
    "web_port": ("web", "port"),
}
_INTEGER_FIELDS = ("keep_days", "web_port")
_SYSTEM_ERRORS = {"line_uri": "settings.error.line_uri", "home_region": "settings.error.region",
                  "voice_language": "settings.error.choice", "keep_days": "settings.error.keep_days",
                  "web_host": "settings.error.web_host", "web_port": "settings.error.web_port"}  # fmt: skip


def _system_values(cfg: Config) -> dict[str, str]:
    values: dict[str, str] = {}
    for field, (section, key) in SYSTEM_FIELDS.items():
        value = getattr(getattr(cfg, section), key)
        values[field] = str(value.value if isinstance(value, Language) else value)
    return values


def _system_page(request: Request, user: User, *, values: dict[str, str] | None = None,
                 errors: dict[str, list[str]] | None = None, general: list[str] | None = None,
                 notice: str | None = None, provision: dict[str, Any] | None = None,
                 status_code: int = 200) -> Response:  # fmt: skip
    cfg = _ctx(request).config()
    return render(request, "system.html", {
        **_common(request, user), "values": values or _system_values(cfg), "errors": errors or {},
        "general": general or [], "notice": notice, "languages": [lang.value for lang in Language],
        "provision": provision,
        "done": _flash(request, SYSTEM_DONE),
    }, status_code=status_code)  # fmt: skip


async def system_page(request: Request) -> Response:
    user = require_user(request, Role.INSTALLER)
    return _system_page(request, user)


async def save_system(request: Request) -> Response:
    user = require_user(request, Role.INSTALLER)
    ctx = _ctx(request)
    form = await request.form()
    cfg = ctx.config()
    current = _system_values(cfg)
    values = {field: _text(form, field, 512) for field in SYSTEM_FIELDS}
    lang = request_language(request)
    if ctx.config_path is None:
        return _system_page(request, user, values=values, notice=_demo(request),
                            status_code=409)  # fmt: skip
    errors: dict[str, list[str]] = {}
    changes: dict[str, dict[str, Any]] = {}
    for field, (section, key) in SYSTEM_FIELDS.items():
        value: Any = values[field]
        if value == current[field]:
            continue
        if field in _INTEGER_FIELDS:
            if not re.fullmatch(r"-?\d{1,9}", value):
                errors[field] = [translate(lang, "settings.error.number")]
                continue
            value = int(value)
        changes.setdefault(section, {})[key] = value
    if errors:
        return _system_page(request, user, values=values, errors=errors, status_code=400)
    edit = config_edit.combine(*(config_edit.set_values(section, keys) for section, keys in changes.items()))
    try:
        await run_in_threadpool(_save, ctx, edit)
    except ConfigError as exc:
        fields = {f"{section}.{key}": field for field, (section, key) in SYSTEM_FIELDS.items()}
        by_field, rest = config_edit.field_errors(exc.problems, fields)
        errors = {field: [translate(lang, _SYSTEM_ERRORS[field]), *(p.message for p in found)]
                  for field, found in by_field.items()}  # fmt: skip
        return _system_page(request, user, values=values, errors=errors, general=_general(rest), status_code=400)
    log.info("web: %s changed system settings: %s", user.name,
             ", ".join(f"{s}.{k}" for s, keys in changes.items() for k in keys) or "nothing")
    return RedirectResponse("/settings/system?done=saved", status_code=303)


def issuer_keys_dir(ctx: WebContext) -> Path:
    """The keys baked into the image; a WebContext may name others (a test unit)."""
    return Path(ctx.issuer_keys_dir)


def apply_bundle(ctx: WebContext, data: bytes) -> list[str]:
    """``Applier`` on the uploaded file (written to a private temp dir). Raises BundleRefused."""
    from deploy.provisioning.bundle import BUNDLE_SUFFIX, Applier

    assert ctx.config_path is not None
    with tempfile.TemporaryDirectory(prefix="mamoru-bundle-") as directory:
        path = Path(directory) / f"upload{BUNDLE_SUFFIX}"
        path.write_bytes(data)
        applier = Applier(issuer_keys_dir=issuer_keys_dir(ctx), config_path=ctx.config_path,
                          db_override=Path(ctx.store.path))  # fmt: skip
        result = applier.apply([path])
    return result.summary()


async def provision(request: Request) -> Response:
    from deploy.provisioning.bundle import MAX_BUNDLE_BYTES, BundleRefused

    user = require_user(request, Role.INSTALLER)
    ctx = _ctx(request)
    lang = request_language(request)
    if ctx.config_path is None:
        return _system_page(request, user, notice=_demo(request), status_code=409)
    data = await _upload(request, MAX_BUNDLE_BYTES)
    if isinstance(data, str):
        text = translate(lang, data, mb=MAX_BUNDLE_BYTES // 2**20)
        return _system_page(request, user, provision={"ok": False, "message": text, "detail": []}, status_code=400)
    try:
        summary = await run_in_threadpool(apply_bundle, ctx, data)
    except BundleRefused as exc:
        log.warning("web: %s uploaded a bundle that was refused: %s", user.name, exc)
        reason = translate(lang, f"settings.refusal.{exc.reason.value}")
        message = translate(lang, "settings.provision.refused", reason=reason)
        return _system_page(request, user, provision={"ok": False, "message": message, "detail": [exc.detail]},
                            status_code=400)  # fmt: skip
    except (OSError, ConfigError) as exc:
        log.error("web: applying an uploaded bundle failed: %s", exc)
        failed = {"ok": False, "message": translate(lang, "settings.provision.failed"), "detail": [str(exc)]}
        return _system_page(request, user, provision=failed, status_code=500)
    log.warning("web: %s applied a provisioning bundle: %s", user.name, summary[0] if summary else "")
    return _system_page(request, user, provision={"ok": True, "message": translate(lang, "settings.provision.applied"),
                                                  "detail": summary})  # fmt: skip


routes: list[Route] = [
    Route("/settings", settings_page, methods=["GET"]),
    Route("/settings/rules", save_rules, methods=["POST"]),
    Route("/settings/relatives", relatives_page, methods=["GET"]),
    Route("/settings/relatives", save_relative, methods=["POST"]),
    Route("/settings/relatives/remove", remove_relative, methods=["POST"]),
    Route("/settings/relatives/test", test_relative, methods=["POST"]),
    Route("/settings/announcements", announcements_page, methods=["GET"]),
    Route("/settings/announcements/{prompt}.wav", announcement_audio, methods=["GET"]),
    Route("/settings/announcements/{prompt}/reset", reset_announcement, methods=["POST"]),
    Route("/settings/announcements/{prompt}", upload_announcement, methods=["POST"]),
    Route("/settings/system", system_page, methods=["GET"]),
    Route("/settings/system", save_system, methods=["POST"]),
    Route("/settings/provision", provision, methods=["POST"]),
]
