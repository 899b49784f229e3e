"""Bulk provisioning: a CSV of households -> one signed bundle and one printed sheet per unit.

Columns (header row required; see docs/provisioning.md):

    household_id   required, unique; letters, digits, - and _ (names the output files)
    label          required; how the household is named on the sheet ("山田 花子 様")
    language       ja | en | ko; empty = the template's voice.language
    unit_serial    the Pi's serial number (8-16 hex digits); empty = any unit
    web_user       the family's web login name; empty = "family"
    relative_name, relative_notify, relative_phone, relative_language
                   the first relative to alert; notify = apprise URLs separated by spaces
    relative2_*, relative3_* ...   further relatives, in escalation order

Each good row becomes ``<household_id>.mamoru-bundle`` and ``<household_id>.html``
in the output directory; a bad row is reported with its line number and nothing
is written for it, while the other rows are still made. ``index.html`` lists
the batch.
"""

from __future__ import annotations

import csv
import difflib
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import tomlkit
from securesystemslib.signer import CryptoSigner
from tomlkit.items import AoT, Table

from screening.config import ConfigError
from screening.core.clock import utc_now
from screening.core.model import Language, Role

from .bundle import (
    BUNDLE_SUFFIX,
    DEFAULT_VALID_DAYS,
    HOUSEHOLD_ID_PATTERN,
    SERIAL_PATTERN,
    BundleError,
    FeedSpec,
    Household,
    WebUser,
    generate_password,
    hash_password,
    make_bundle,
    new_content,
    normalise_serial,
    validate_config_toml,
    write_private_file,
)
from .sheet import DEFAULT_WEB_URL, IndexEntry, SheetData, render_index, render_sheet

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("household_id", "label")
OPTIONAL_COLUMNS = ("language", "unit_serial", "web_user")
RELATIVE_FIELDS = ("name", "notify", "phone", "language")
_RELATIVE_COLUMN = re.compile(r"^relative(\d*)_(name|notify|phone|language)$")
DEFAULT_WEB_USER = "family"
INDEX_NAME = "index.html"


class BulkError(Exception):
    """The batch cannot start (unreadable CSV, bad header, bad template): nothing was written."""


@dataclass(frozen=True, slots=True)
class RowProblem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class Made:
    household_id: str
    bundle: Path
    sheet: Path


@dataclass(slots=True)
class BulkResult:
    made: list[Made] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    index: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class _Relative:
    column_prefix: str  # "relative", "relative2" ... (errors name the CSV column)
    name: str
    notify: tuple[str, ...]
    phone: str
    language: str


@dataclass(frozen=True, slots=True)
class HouseholdRow:
    line: int
    household_id: str
    label: str
    language: str
    unit: str | None
    web_user: str
    relatives: tuple[_Relative, ...]


def read_csv_text(path: Path, encoding: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BulkError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise BulkError(f"{path}: not {encoding} text (byte {exc.start}); save it as 'CSV UTF-8',"
                        " or give --encoding cp932 for a Shift_JIS file from Excel") from None  # fmt: skip
    except LookupError:
        raise BulkError(f"unknown encoding {encoding!r}") from None


def _relative_slots(header: Sequence[str], file: str) -> dict[int, dict[str, str]]:
    """Relative number -> {field: column}; a header naming no known column is a BulkError."""
    known = [*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS, *(f"relative_{f}" for f in RELATIVE_FIELDS)]
    slots: dict[int, dict[str, str]] = {}
    problems = []
    for column in header:
        match = _RELATIVE_COLUMN.match(column)
        if match:
            number = int(match.group(1) or 1)
            if match.group(2) in slots.setdefault(number, {}):
                problems.append(f"relative {number} {match.group(2)} is given by two columns")
            slots[number][match.group(2)] = column
        elif column not in known:
            close = difflib.get_close_matches(column, known, n=1)
            problems.append(f"unknown column {column!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    for number, columns in slots.items():
        if "name" not in columns:
            problems.append(f"relative {number} has columns but no {_column_prefix(number)}_name")
    if problems:
        raise BulkError(f"{file}: header (line 1): " + "; ".join(problems))
    return dict(sorted(slots.items()))


def read_households(text: str, file: str) -> tuple[list[HouseholdRow], list[RowProblem]]:
    """Parse and check every row; each problem names its line. Blank rows are skipped."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise BulkError(f"{file}: empty file (needs a header row: household_id,label,...)") from None
    except csv.Error as exc:
        raise BulkError(f"{file}:1: {exc}") from None
    slots = _relative_slots(header, file)
    rows: list[HouseholdRow] = []
    problems: list[RowProblem] = []
    seen_ids: dict[str, int] = {}
    seen_units: dict[str, int] = {}
    end = reader.line_num
    while True:
        start = end + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(RowProblem(file, reader.line_num, f"not valid CSV: {exc}"))
            break
        end = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            problems.append(RowProblem(file, start, f"{len(values)} fields, the header has {len(header)}"))
            continue
        record = {h: v.strip() for h, v in zip(header, values, strict=True)}
        row, row_problems = _check_row(record, start, slots)
        if row is not None:
            if row.household_id.casefold() in seen_ids:
                row_problems.append(f"household_id {row.household_id!r} already used on line"
                                    f" {seen_ids[row.household_id.casefold()]}")  # fmt: skip
            if row.unit and row.unit in seen_units:
                row_problems.append(f"unit_serial {row.unit} already used on line {seen_units[row.unit]}")
        if row_problems or row is None:
            problems.extend(RowProblem(file, start, p) for p in row_problems)
            continue
        seen_ids[row.household_id.casefold()] = start
        if row.unit:
            seen_units[row.unit] = start
        rows.append(row)
    return rows, problems


def _column_prefix(number: int) -> str:
    return "relative" if number == 1 else f"relative{number}"


def _check_row(
    record: dict[str, str], line: int, slots: dict[int, dict[str, str]]
) -> tuple[HouseholdRow | None, list[str]]:
    problems: list[str] = []
    household_id, label = record["household_id"], record["label"]
    if not HOUSEHOLD_ID_PATTERN.match(household_id):
        problems.append(f"household_id {household_id!r}: use letters, digits, - and _ (at most 64, no spaces)")
    if not label:
        problems.append("label: empty (how the household is named on the sheet)")
    language = record.get("language", "").lower()
    if language and language not in {lang.value for lang in Language}:
        problems.append(f"language {language!r}: use {', '.join(lang.value for lang in Language)} or leave empty")
    unit = normalise_serial(record.get("unit_serial", "")) or None
    if unit and not SERIAL_PATTERN.match(unit):
        problems.append(f"unit_serial {unit!r}: a Raspberry Pi serial is 8 to 16 hex digits"
                        " (cat /proc/device-tree/serial-number)")  # fmt: skip
    relatives = []
    for number, columns in slots.items():
        values = {f: record.get(c, "") for f, c in columns.items()}
        if not any(values.values()):
            continue
        prefix = _column_prefix(number)
        if not values.get("name"):
            problems.append(f"{prefix}_name: empty, but other {prefix}_ columns are filled in")
            continue
        relatives.append(_Relative(prefix, values["name"], tuple(values.get("notify", "").split()),
                                   values.get("phone", ""), values.get("language", "").lower()))  # fmt: skip
    if not relatives:
        problems.append("no relative: fill in relative_name and relative_notify or relative_phone")
    if problems:
        return None, problems
    web_user = record.get("web_user", "") or DEFAULT_WEB_USER
    return HouseholdRow(line, household_id, label, language, unit, web_user, tuple(relatives)), []


def household_config(template: str, row: HouseholdRow) -> str:
    """The template with the household's language and relatives; its comments are kept.

    The household's relatives come first (they are alerted first); any relatives
    the template itself lists (say, a liaison officer) follow them.
    """
    doc = tomlkit.parse(template)
    if row.language:
        if "voice" not in doc:
            doc.add("voice", tomlkit.table())
        voice = doc["voice"]
        assert isinstance(voice, Table)
        voice["language"] = row.language
    template_relatives = doc.get("relatives")
    if template_relatives is not None:
        doc.remove("relatives")
    relatives = tomlkit.aot()
    for relative in row.relatives:
        table = tomlkit.table()
        table.add("name", relative.name)
        table.add("notify", list(relative.notify))
        if relative.phone:
            table.add("phone", relative.phone)
        if relative.language:
            table.add("language", relative.language)
        relatives.append(table)
    if isinstance(template_relatives, AoT):
        for table in template_relatives.body:
            relatives.append(table)
    doc.append("relatives", relatives)
    return tomlkit.dumps(doc)


def _config_problems(exc: ConfigError, row: HouseholdRow) -> list[str]:
    """Config problems named by CSV column where they come from one (relatives[1].phone -> relative2_phone)."""
    messages = []
    for problem in exc.problems:
        key = problem.key
        match = re.match(r"^relatives\[(\d+)\](?:\.(\w+))?(\[\d+\])?$", key)
        if match and int(match.group(1)) < len(row.relatives):
            column = row.relatives[int(match.group(1))].column_prefix + "_" + (match.group(2) or "name")
            item = f" (URL {int(match.group(3)[1:-1]) + 1})" if match.group(3) else ""
            messages.append(f"{column}{item}: {problem.message}")
        elif key == "voice.language":
            messages.append(f"language: {problem.message}")
        else:
            messages.append(f"config {key}: {problem.message}" if key else f"config: {problem.message}")
    return messages


@dataclass(slots=True)
class BulkJob:
    """One batch. No I/O until :meth:`run`."""

    households_csv: Path
    template: Path
    out_dir: Path
    signer: CryptoSigner
    issuer: str
    web_url: str = DEFAULT_WEB_URL
    feeds: Sequence[FeedSpec] = ()
    valid_days: int = DEFAULT_VALID_DAYS
    encoding: str = "utf-8-sig"  # Excel's "CSV UTF-8" starts with a BOM

    def run(self, now: datetime | None = None) -> BulkResult:
        moment = now or utc_now()
        template = self._template()
        rows, problems = read_households(read_csv_text(self.households_csv, self.encoding), str(self.households_csv))
        result = BulkResult(problems=list(problems))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        entries: list[IndexEntry] = []
        for row in rows:
            try:
                entries.append(self._one(row, template, moment, result))
            except (ConfigError, BundleError) as exc:
                messages = _config_problems(exc, row) if isinstance(exc, ConfigError) else [str(exc)]
                result.problems.extend(RowProblem(str(self.households_csv), row.line, m) for m in messages)
        result.problems.sort(key=lambda p: p.line)
        index = render_index(entries, [str(p) for p in result.problems], issuer=self.issuer, generated_at=moment,
                             source=self.households_csv.name)  # fmt: skip
        result.index = self.out_dir / INDEX_NAME
        write_private_file(result.index, index.encode())
        for problem in result.problems:
            log.warning("%s", problem)
        return result

    def _template(self) -> str:
        try:
            text = self.template.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BulkError(f"{self.template}: cannot read the template: {exc}") from None
        try:
            validate_config_toml(text, str(self.template))
        except ConfigError as exc:
            raise BulkError(f"the template does not pass validation:\n{exc}") from None
        return text

    def _one(self, row: HouseholdRow, template: str, now: datetime, result: BulkResult) -> IndexEntry:
        config_text = household_config(template, row)
        config = validate_config_toml(config_text, f"{self.households_csv}:{row.line}")
        password = generate_password()
        user = WebUser(row.web_user, Role.FAMILY, hash_password(password))
        content = new_content(issuer=self.issuer, household=Household(row.household_id, row.label),
                              config_toml=config_text, feeds=self.feeds, web_users=[user], unit=row.unit,
                              valid_days=self.valid_days, now=now)  # fmt: skip
        data = make_bundle(content, self.signer)
        sheet = render_sheet(SheetData(content, config, self.web_url, user.name, password))
        bundle_path = self.out_dir / f"{row.household_id}{BUNDLE_SUFFIX}"
        sheet_path = self.out_dir / f"{row.household_id}.html"
        write_private_file(bundle_path, data)
        write_private_file(sheet_path, sheet.encode())
        result.made.append(Made(row.household_id, bundle_path, sheet_path))
        log.info("household %s: %s, %s", row.household_id, bundle_path.name, sheet_path.name)
        return IndexEntry(row.household_id, row.label, row.unit, bundle_path.name, sheet_path.name,
                          len(config.relatives))  # fmt: skip
