"""Page text in Japanese (first) and English.

Each page module registers its own messages at import time with ``register``, so
modules never edit one shared table. A key missing in a language falls back to
English and then to the key itself, and ``missing()`` lets a test insist that
every key exists in both languages.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class UiLanguage(StrEnum):
    JA = "ja"
    EN = "en"


DEFAULT_LANGUAGE = UiLanguage.JA
_MESSAGES: dict[UiLanguage, dict[str, str]] = {lang: {} for lang in UiLanguage}


def register(messages: Mapping[str, Mapping[str, str]]) -> None:
    """Add ``{"ja": {key: text}, "en": {key: text}}``; a key registered twice must not change."""
    for lang_code, table in messages.items():
        lang = UiLanguage(lang_code)
        for key, text in table.items():
            known = _MESSAGES[lang].get(key)
            if known is not None and known != text:
                raise ValueError(f"message {key!r} ({lang}) registered twice with different text")
            _MESSAGES[lang][key] = text


def translate(lang: UiLanguage, key: str, /, **values: object) -> str:
    text = _MESSAGES[lang].get(key) or _MESSAGES[UiLanguage.EN].get(key) or key
    return text.format(**values) if values else text


def missing() -> dict[UiLanguage, set[str]]:
    """Keys some language has and another lacks."""
    every = set().union(*(set(t) for t in _MESSAGES.values()))
    return {lang: every - set(table) for lang, table in _MESSAGES.items() if every - set(table)}


register({
    "ja": {
        "app.title": "まもる 電話の見守り",
        "nav.calls": "通話の記録",
        "nav.lists": "番号リスト",
        "nav.settings": "設定",
        "nav.health": "本体の状態",
        "nav.logout": "ログアウト",
        "nav.account": "アカウント",
        "nav.users": "利用者",
        "lang.switch": "English",
        "error.title": "エラー",
        "error.not_found": "ページが見つかりません。",
        "error.forbidden": "この操作は設置担当者（installer）だけができます。",
        "error.bad_request": "送信された内容を受け付けられませんでした。",
        "error.csrf": "画面が古くなりました。もう一度お試しください。",
        "error.back": "戻る",
    },
    "en": {
        "app.title": "mamoru call guard",
        "nav.calls": "Calls",
        "nav.lists": "Number lists",
        "nav.settings": "Settings",
        "nav.health": "Status",
        "nav.logout": "Log out",
        "nav.account": "Account",
        "nav.users": "Users",
        "lang.switch": "日本語",
        "error.title": "Error",
        "error.not_found": "Page not found.",
        "error.forbidden": "Only the installer can do this.",
        "error.bad_request": "The form could not be accepted.",
        "error.csrf": "This page had expired. Please try again.",
        "error.back": "Back",
    },
})  # fmt: skip
