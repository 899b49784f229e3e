"""The printed household sheet: what was set up, and how the family logs in.

One self-contained HTML page per household (A4 print CSS, large type, Japanese
first with English, no JavaScript, no external resources) and an index of all
units of a batch. Notification URLs hold secrets (tokens, passwords, private
ntfy topics), so a relative's channels are shown by service name only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

import segno

from screening.config import Config
from screening.core.clock import iso_utc
from screening.core.model import Action, Language
from screening.core.numbers import national_format

from .bundle import BundleContent

log = logging.getLogger(__name__)

DEFAULT_WEB_URL = "http://mamoru.local/"
QR_ERROR = "m"  # medium error correction: survives a creased or smudged sheet
QR_SCALE = 6

_ACTION_TEXT: dict[Action, tuple[str, str]] = {
    Action.ALLOW: ("そのまま電話が鳴ります", "the phone rings as usual"),
    Action.WARN: ("「この電話は録音されます」と警告してから電話が鳴ります",
                  "answered with a warning that the call is recorded, then the phone rings"),
    Action.REQUEST_NUMBER: ("番号を通知してかけ直すようお願いして切ります",
                            "asked to call again with their number shown, then hung up"),
    Action.BLOCK: ("お断りのメッセージを流して切ります", "refused with a short message and hung up"),
}  # fmt: skip
# (RulesConfig field, Japanese, English), in the order a family thinks of them.
_RULES: tuple[tuple[str, str, str], ...] = (
    ("withheld", "非通知の電話", "Withheld numbers"),
    ("international", "国際電話", "International calls"),
    ("payphone", "公衆電話", "Payphones"),
    ("out_of_area", "表示圏外", "Number unavailable (out of area)"),
    ("no_caller_id", "番号表示のない電話", "No caller ID"),
    ("unknown", "その他の番号", "Any other number"),
)
_LANGUAGE = {Language.JA: "日本語 / Japanese", Language.EN: "英語 / English", Language.KO: "韓国語 / Korean"}

_CSS = """
@page { size: A4; margin: 12mm; }
* { box-sizing: border-box; }
body { font-family: "Noto Sans JP", "Hiragino Sans", "Yu Gothic", "Meiryo", sans-serif;
       font-size: 14pt; line-height: 1.4; color: #000; background: #fff; margin: 0 auto; max-width: 182mm; }
h1 { font-size: 24pt; margin: 0 0 2mm; }
h2 { font-size: 17pt; margin: 5mm 0 2mm; border-bottom: 2px solid #000; page-break-after: avoid; }
.en { display: block; font-size: 12pt; color: #333; font-weight: normal; }
.inline .en { display: inline; margin-left: 0.5em; }
.login p { margin: 0 0 2mm; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #555; padding: 1.5mm 2mm; text-align: left; vertical-align: top; }
.login { display: flex; gap: 8mm; align-items: center; }
.login svg { flex: none; }
.secret { font-family: "DejaVu Sans Mono", "Consolas", monospace; font-size: 22pt; font-weight: bold;
          letter-spacing: 0.12em; }
.url { font-family: "DejaVu Sans Mono", "Consolas", monospace; font-size: 16pt; }
.small { font-size: 11pt; }
table, .login { page-break-inside: avoid; }
.nowrap { white-space: nowrap; }
body:has(table.index) { max-width: none; }
"""


def qr_svg(url: str) -> str:
    """The web login address as an inline SVG QR code (segno)."""
    return segno.make_qr(url, error=QR_ERROR).svg_inline(scale=QR_SCALE)


@contextlib.contextmanager
def _apprise_quiet() -> Iterator[None]:
    """apprise logs a URL it cannot parse verbatim, and these URLs hold secrets."""
    apprise_log = logging.getLogger("apprise")
    was = apprise_log.disabled
    apprise_log.disabled = True
    try:
        yield
    finally:
        apprise_log.disabled = was


def channel_name(url: str) -> str:
    """What kind of channel a notify URL is ("E-Mail", "ntfy", "LINE" ...), never its address or token."""
    import apprise  # heavy: only when a sheet is made

    with _apprise_quiet():
        plugin = apprise.Apprise.instantiate(url)
    name = getattr(plugin, "service_name", None) if plugin else None
    return str(name) if name else "通知 / notification"


@dataclass(frozen=True, slots=True)
class SheetData:
    content: BundleContent
    config: Config
    web_url: str
    username: str
    password: str


def _t(ja: str, en: str) -> str:
    """Japanese first, English under it."""
    return f"{escape(ja)}<span class=\"en\">{escape(en)}</span>"


def _relatives_rows(config: Config) -> list[str]:
    rows = []
    region = config.line.home_region
    for index, relative in enumerate(config.relatives, start=1):
        how = [escape(channel_name(u)) for u in relative.notify]
        if relative.phone and config.alerts.voice_call:
            how.append(f"電話 / phone call: {escape(national_format(relative.phone, region))}")
        language = _LANGUAGE[relative.language or config.voice.language]
        rows.append(f"<tr><td>{index}</td><td>{escape(relative.name)}</td><td>{'<br>'.join(how)}</td>"
                    f"<td>{escape(language)}</td></tr>")  # fmt: skip
    return rows


def _rules_rows(config: Config) -> list[str]:
    """One row per action, naming every kind of call it applies to (shorter, and easier to read)."""
    by_action: dict[Action, list[tuple[str, str]]] = {}
    for key, ja, en in _RULES:
        by_action.setdefault(getattr(config.rules, key), []).append((ja, en))
    rows = []
    for action, kinds in by_action.items():
        ja = "、".join(k[0] for k in kinds)
        en = ", ".join(k[1] for k in kinds)
        rows.append(f"<tr><th>{_t(ja, en)}</th><td>{_t(*_ACTION_TEXT[action])}</td></tr>")
    if config.rules.international_allow_countries:
        countries = ", ".join(sorted(config.rules.international_allow_countries))
        rows.append(f"<tr><th>{_t(*_TEXT['allowed_countries'])}</th><td>{escape(countries)}</td></tr>")
    rows.append(f"<tr><th>{_t(*_TEXT['official'])}</th><td>{_t(*_TEXT['official_action'])}</td></tr>")
    return rows


# Sentences of the sheet: (Japanese, English).
_TEXT: dict[str, tuple[str, str]] = {
    "title": ("まもる 設定のお知らせ", "mamoru call screening: your setup"),
    "web": ("家族用ウェブページ", "Family web page"),
    "address": ("アドレス", "Address"),
    "user": ("ユーザー名", "User name"),
    "password": ("初期パスワード", "Initial password"),
    "keep_safe": ("このパスワードで誰でもログインできます。この紙は大切に保管してください。",
                  "Anyone holding this password can log in: keep this sheet in a safe place."),
    "relatives": ("お知らせする家族", "Who is alerted"),
    "fraud_alert": ("詐欺と判定した電話は、通話中にすぐ家族へ知らせます。",
                    "A call judged to be fraud is reported to the family at once, during the call."),
    "none": ("登録なし", "none set up"),
    "name": ("名前", "Name"),
    "how": ("連絡方法", "How"),
    "language": ("言語", "Language"),
    "calls": ("電話の扱い", "How calls are handled"),
    "allowed_countries": ("国際電話の例外", "Not treated as international"),
    "official": ("警察・消防をよそおう番号", "Numbers that look official (110, …0110)"),
    "official_action": ("家族の登録番号でない限り、少なくとも警告します",
                        "at least warned, unless on the family list"),
    "feeds": ("詐欺電話番号リスト", "Fraud number lists"),
    "feeds_text": ("次のリストの番号からの電話はお断りします。リストは自動で更新されます。",
                   "Calls from numbers on these lists are refused. The lists update themselves."),
    "unit": ("装置", "Unit"),
    "any_unit": ("指定なし", "any unit"),
    "valid_until": ("設定の有効期限", "Setup file valid until"),
}  # fmt: skip


def render_sheet(data: SheetData) -> str:
    """The household's printed sheet (a complete HTML document)."""
    c, cfg = data.content, data.config
    relatives = _relatives_rows(cfg) or [f"<tr><td colspan=\"4\">{_t(*_TEXT['none'])}</td></tr>"]
    alerts = f"<p>{_t(*_TEXT['fraud_alert'])}</p>" if cfg.alerts.fraud else ""
    feeds = "".join(f"<li>{escape(f.name)} <span class=\"small\">({escape(f.url)})</span></li>" for f in c.feeds)
    if feeds:
        feeds = f"<h2>{_t(*_TEXT['feeds'])}</h2>\n<p>{_t(*_TEXT['feeds_text'])}</p>\n<ul>{feeds}</ul>"
    unit = escape(c.unit) if c.unit else _t(*_TEXT["any_unit"])
    issued, valid_until = iso_utc(c.issued_at)[:10], iso_utc(c.not_after)[:10]  # the day only
    return f"""<!DOCTYPE html>
<html lang="ja">
<head>
<meta charset="utf-8">
<title>mamoru {escape(c.household.id)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{_t(*_TEXT["title"])}</h1>
<p><strong>{escape(c.household.label)}</strong> <span class="small">({escape(c.household.id)})</span><br>
<span class="small">設定 / Set up by: {escape(c.issuer)} · {issued}</span></p>

<h2>{_t(*_TEXT["web"])}</h2>
<div class="login">
{qr_svg(data.web_url)}
<div>
<p class="inline">{_t(*_TEXT["address"])}<br><span class="url">{escape(data.web_url)}</span></p>
<p class="inline">{_t(*_TEXT["user"])}<br><span class="secret">{escape(data.username)}</span></p>
<p class="inline">{_t(*_TEXT["password"])}<br><span class="secret">{escape(data.password)}</span></p>
</div>
</div>
<p class="small">{_t(*_TEXT["keep_safe"])}</p>

<h2>{_t(*_TEXT["relatives"])}</h2>
{alerts}
<table>
<tr class="inline"><th>#</th><th>{_t(*_TEXT["name"])}</th><th>{_t(*_TEXT["how"])}</th><th>{_t(*_TEXT["language"])}</th></tr>
{"".join(relatives)}
</table>

<h2>{_t(*_TEXT["calls"])}</h2>
<table>
{"".join(_rules_rows(cfg))}
</table>
<p class="inline">{_t(*_TEXT["language"])}: {escape(_LANGUAGE[cfg.voice.language])}</p>
{feeds}
<p class="small inline">{_t(*_TEXT["unit"])}: {unit}<br>{_t(*_TEXT["valid_until"])}: {valid_until}</p>
</body>
</html>
"""


@dataclass(frozen=True, slots=True)
class IndexEntry:
    household_id: str
    label: str
    unit: str | None
    bundle_file: str
    sheet_file: str
    relatives: int


def render_index(
    entries: Sequence[IndexEntry], failures: Sequence[str], *, issuer: str, generated_at: datetime, source: str
) -> str:
    """The batch's index: every unit with its bundle and sheet, and the rows that were not made."""
    rows = "".join(
        f"<tr><td class=\"nowrap\">{escape(e.household_id)}</td><td>{escape(e.label)}</td>"
        f"<td>{escape(e.unit or '-')}</td><td>{e.relatives}</td>"
        f"<td class=\"nowrap\"><a href=\"{escape(e.bundle_file)}\">{escape(e.bundle_file)}</a></td>"
        f"<td class=\"nowrap\"><a href=\"{escape(e.sheet_file)}\">{escape(e.sheet_file)}</a></td></tr>"
        for e in entries
    )
    failed = "".join(f"<li>{escape(f)}</li>" for f in failures)
    failed_section = f"<h2>{_t('作成できなかった行', 'Rows not made')}</h2><ul>{failed}</ul>" if failures else ""
    return f"""<!DOCTYPE html>
<html lang="ja">
<head>
<meta charset="utf-8">
<title>mamoru units</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{_t("まもる 装置一覧", "mamoru units")}</h1>
<p class="small">{escape(issuer)} · {escape(iso_utc(generated_at, timespec="seconds"))} · {escape(source)} ·
{len(entries)} 台 / units</p>
<table class="index">
<tr><th>ID</th><th>{_t("世帯", "Household")}</th><th>{_t("装置", "Unit")}</th><th>{_t("家族", "Relatives")}</th>
<th>{_t("設定ファイル", "Bundle")}</th><th>{_t("印刷用", "Sheet")}</th></tr>
{rows}
</table>
{failed_section}
</body>
</html>
"""
