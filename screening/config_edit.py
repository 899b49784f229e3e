"""Change the TOML config file from a program (the web settings page) without losing its comments.

The file is hand-written by an installer and full of explanations, so it is
edited with ``tomlkit`` (which keeps comments and layout) rather than
re-generated. Every edit is validated by the real loader, ``screening.config``,
on the exact bytes about to go live -- a temp file next to the config -- and
only then renamed over the old file (atomic: a power cut leaves the old or the
new file, never half of one). An invalid result raises ``ConfigError`` and the
file is untouched, so the daemon keeps screening with what it has.

``field_errors`` maps the loader's dotted problem keys (``rules.withheld``,
``relatives[1].notify[0]``) back to form fields, so a page can show each
mistake next to the field it came from.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import AoT

from screening.config import Config, ConfigError, ConfigProblem, decode_config_text, load_config
from screening.core.files import staged_file

log = logging.getLogger(__name__)

RELATIVES = "relatives"
_PROBLEM_KEY = re.compile(r"^(?P<base>[a-z_]+)(?:\[(?P<index>\d+)\])?(?:\.(?P<key>[a-z_]+)(?:\[(?P<item>\d+)\])?)?$")
# One lock per file: two browser tabs saving at once must not lose one of the edits.
_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()

Edit = Callable[[tomlkit.TOMLDocument], None]


def edit_config(path: Path, edit: Edit) -> Config:
    """Read ``path``, apply ``edit`` to its document, validate, replace the file atomically.

    Returns the new config (as the loader reads it). Raises ``ConfigError`` --
    with the problems keyed like the loader's -- when the file cannot be read or
    parsed, or when the edited result is invalid; the file is then unchanged.
    An edit that changes nothing does not rewrite the file.
    """
    path = Path(path)
    with _lock_for(path):
        original = _read_text(path)
        document = parse_document(original, str(path))
        try:
            edit(document)
        except (TOMLKitError, TypeError, ValueError) as exc:  # e.g. ``rules = 5`` written by hand
            raise ConfigError([ConfigProblem(str(path), "", f"cannot change this file: {exc}")]) from None
        text = tomlkit.dumps(document)
        if text == original:
            return load_config(path, env={})
        return _replace_validated(path, text)


def parse_document(text: str, file: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except TOMLKitError as exc:
        raise ConfigError([ConfigProblem(file, "", f"invalid TOML: {exc}")]) from None


# ---- edits ---------------------------------------------------------------------------------


def set_values(section: str, values: Mapping[str, Any]) -> Edit:
    """Set keys of one ``[section]`` (created at the end if absent); other keys and comments stay."""

    def edit(document: tomlkit.TOMLDocument) -> None:
        table = document.get(section)
        if table is None:
            table = tomlkit.table()
            document.add(section, table)
        for key, value in values.items():
            table[key] = value

    return edit


def combine(*edits: Edit) -> Edit:
    def edit(document: tomlkit.TOMLDocument) -> None:
        for one in edits:
            one(document)

    return edit


def relative_index(document: tomlkit.TOMLDocument, name: str) -> int | None:
    """Position of the ``[[relatives]]`` entry called ``name`` (case-insensitive, as the loader compares)."""
    entries = document.get(RELATIVES)
    if not isinstance(entries, AoT | list):
        return None
    for index, entry in enumerate(entries):
        if isinstance(entry, Mapping) and str(entry.get("name", "")).strip().casefold() == name.strip().casefold():
            return index
    return None


def put_relative(original_name: str | None, values: Mapping[str, Any]) -> Edit:
    """Change the relative called ``original_name`` (None: add one at the end) to ``values``.

    Keys with the value None are removed from the entry (the default applies).
    Raises KeyError when ``original_name`` names nobody.
    """

    def edit(document: tomlkit.TOMLDocument) -> None:
        index = None if original_name is None else relative_index(document, original_name)
        if original_name is not None and index is None:
            raise KeyError(original_name)
        if index is None:
            entries = document.get(RELATIVES)
            if entries is None:
                entries = tomlkit.aot()
                document.add(tomlkit.nl())
                document.append(RELATIVES, entries)
            table = tomlkit.table()
            entries.append(table)
            # tomlkit hands back its own copy of an appended table in some versions: edit the stored one
            table = entries[-1]
        else:
            table = document[RELATIVES][index]
        for key, value in values.items():
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
        if index is None:
            table.add(tomlkit.nl())  # a blank line before whatever comes next, as a person would write it

    return edit


def remove_relative(name: str) -> Edit:
    """Remove the relative called ``name``; KeyError when there is none."""

    def edit(document: tomlkit.TOMLDocument) -> None:
        index = relative_index(document, name)
        if index is None:
            raise KeyError(name)
        entries = document[RELATIVES]
        del entries[index]
        if len(entries) == 0:
            del document[RELATIVES]

    return edit


def string_array(items: Sequence[str]) -> Any:
    """A TOML array written one item per line (notify URLs are long)."""
    array = tomlkit.array()
    array.extend(items)
    if len(items) > 1:
        array.multiline(True)
    return array


# ---- problems -> form fields -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One problem for a form: ``item`` is the array index (a notify URL's line) or None."""

    field: str
    message: str
    item: int | None = None


def field_errors(
    problems: Iterable[ConfigProblem], fields: Mapping[str, str], *, relative: int | None = None
) -> tuple[dict[str, list[FieldProblem]], list[ConfigProblem]]:
    """Sort problems into ``{form field: [problem, ...]}`` and the rest.

    ``fields`` maps a dotted config key (``rules.withheld``, or ``relatives.notify``
    for a key of the relative being edited) to its form field. ``relative`` is
    the index of the ``[[relatives]]`` entry the form edits; problems of other
    entries, and a problem of the whole entry, are left over for a general notice.
    """
    by_field: dict[str, list[FieldProblem]] = {}
    rest: list[ConfigProblem] = []
    for problem in problems:
        match = _PROBLEM_KEY.match(problem.key)
        field = None
        item = None
        if match is not None:
            index = match["index"]
            dotted = f"{match['base']}.{match['key']}" if match["key"] else match["base"]
            if index is None or (relative is not None and int(index) == relative):
                field = fields.get(dotted)
                item = int(match["item"]) if match["item"] is not None else None
        if field is None:
            rest.append(problem)
        else:
            by_field.setdefault(field, []).append(FieldProblem(field, problem.message, item))
    return by_field, rest


# ---- writing ---------------------------------------------------------------------------------


def _lock_for(path: Path) -> threading.Lock:
    key = path.resolve()
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


def _read_text(path: Path) -> str:
    file = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(file, "", "file not found")]) from None
    except OSError as exc:
        raise ConfigError([ConfigProblem(file, "", f"cannot read: {exc.strerror or exc}")]) from None
    return decode_config_text(data, file)


def _replace_validated(path: Path, text: str) -> Config:
    """temp file + fsync, loaded by the real loader (problems named after ``path``), then rename."""
    previous = path.stat()
    # Keep the file's mode (it holds alert secrets) and, run as root, its owner.
    with staged_file(path, text.encode("utf-8"), mode=previous.st_mode & 0o777, owner_like=previous) as temp:
        try:
            load_config(temp, env={})  # the exact bytes about to go live, read back as a file
        except ConfigError as exc:
            # The temp file's name means nothing to the user: name the real file.
            raise ConfigError([ConfigProblem(str(path), p.key, p.message) for p in exc.problems]) from None
    log.info("config %s changed", path)
    return load_config(path, env={})  # ``source`` is the real path again


