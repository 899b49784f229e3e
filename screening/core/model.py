"""Value types shared by every layer: caller ID, decisions, list entries.

Frozen dataclasses and enums only; no I/O. Adapters (firmware/) and the store
(blocklist/) import these; this module imports nothing of theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Reason(StrEnum):
    """Why a caller ID carries no number (Japan Number Display / Bellcore codes)."""

    WITHHELD = "P"  # caller chose to withhold (private / 非通知)
    OUT_OF_AREA = "O"  # unavailable / out of area / international gateway (表示圏外)
    PAYPHONE = "C"  # public telephone (公衆電話)
    SERVICE_CONFLICT = "S"  # service conflict, e.g. call waiting (サービス競合)


class Action(StrEnum):
    ALLOW = "allow"  # let the phone ring, play nothing
    WARN = "warn"  # answer, play the fraud-prevention warning, then let the call through
    SCREEN = "screen"  # answer, warn, take the caller's name (and a key), the household decides
    REQUEST_NUMBER = "request_number"  # answer, ask to call again with number shown, hang up
    BLOCK = "block"  # answer, short announcement, hang up


class CallOutcome(StrEnum):
    """How a screened call ended (``mamoru calls --json`` ``outcome``)."""

    CONNECTED = "connected"  # the household took the call
    REFUSED = "refused"  # the household refused it (or refused and blocked)
    SCREENED_OUT = "screened_out"  # the caller failed the challenge or said nothing
    MESSAGE = "message"  # the caller left a message
    CALLER_HUNG_UP = "caller_hung_up"  # the caller hung up during the prompts


class Category(StrEnum):
    """What kind of caller this is, independent of what the policy does about it."""

    DOMESTIC = "domestic"
    INTERNATIONAL = "international"
    OFFICIAL_LOOKALIKE = "official_lookalike"  # 110/119, police-station …0110 pattern
    WITHHELD = "withheld"
    OUT_OF_AREA = "out_of_area"
    PAYPHONE = "payphone"
    SERVICE_CONFLICT = "service_conflict"
    NO_CALLER_ID = "no_caller_id"
    INVALID = "invalid"  # digits present but not a plausible number


class Prompt(StrEnum):
    """Which announcement the caller hears."""

    WARNING = "warning"  # "this call is recorded to prevent fraud"
    NUMBER_REQUEST = "number_request"  # "please call again with your number shown"
    INTERNATIONAL_BLOCKED = "international_blocked"
    NUMBER_BLOCKED = "number_blocked"  # "this number is not accepted"
    HOUSEHOLD_WARNING = "household_warning"  # to the household: "this may be a fraud call …"
    # screening a caller (action "screen"): to the caller
    NAME_REQUEST = "name_request"  # "we are calling the household, hold on; say your name after the tone"
    CHALLENGE = "challenge"  # "to be put through, press 3" (any_key)
    CHALLENGE_DIGIT = "challenge_digit"  # "press the number of beeps you hear" (random_digit)
    SCREENED_OUT = "screened_out"  # polite end for a caller who failed the challenge
    REFUSED = "refused"  # "the household cannot take your call"
    MESSAGE_REQUEST = "message_request"  # "please leave a message after the tone"
    MESSAGE_THANKS = "message_thanks"  # "your message has been recorded"
    # screening a caller: to the household (their phone's leg, or the in-home speaker)
    SCREEN_ANNOUNCE = "screen_announce"  # "a call for you; the caller said:" (then the recorded name)
    SCREEN_CHOICES = "screen_choices"  # "1 to talk, 2 to refuse, 3 to refuse and block"
    PICK_UP = "pick_up"  # modem line: "pick up the phone to talk"
    FAMILY_JOINED = "family_joined"  # SIP: "your family has joined the call" (a relative pressed 3)


class ListKind(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"


class MatchKind(StrEnum):
    EXACT = "exact"
    PREFIX = "prefix"
    RANGE = "range"


@dataclass(frozen=True, slots=True)
class CallerID:
    """Everything the line told us about the caller, raw and normalised.

    ``number_e164`` is None when there is no number or it could not be parsed;
    ``raw_number`` keeps exactly what the line sent.
    """

    raw_number: str | None = None
    number_e164: str | None = None
    name: str | None = None
    reason: Reason | None = None
    date: str | None = None  # MMDD as sent
    time: str | None = None  # HHMM as sent
    message: str | None = None  # MESG payload, if any
    raw_lines: tuple[str, ...] = field(default=(), compare=False)

    @property
    def has_number(self) -> bool:
        return bool(self.raw_number)


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One allowlist/blocklist entry. Numbers and bounds are E.164 digits with '+'."""

    list: ListKind
    match: MatchKind
    value: str  # exact number, prefix, or range start
    value_end: str | None = None  # range end (inclusive), same length as value
    source: str = "local"  # local, family, police feed name …
    note: str = ""
    added_at: str = ""  # ISO-8601 UTC
    expires_at: str | None = None  # ISO-8601 UTC; None = never
    action: Action | None = None  # this entry's own action (e.g. SCREEN a known number); None = the list's

    def describe(self) -> str:
        if self.match is MatchKind.EXACT:
            return self.value
        if self.match is MatchKind.PREFIX:
            return f"{self.value}*"
        return f"{self.value}..{self.value_end}"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    rule: str  # stable id: "allowlist", "blocklist:local", "withheld", "international:+44" …
    reason: str  # one sentence a relative understands
    category: Category
    prompt: Prompt | None = None  # None for ALLOW
    matched: ListEntry | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "action": self.action.value,
            "rule": self.rule,
            "reason": self.reason,
            "category": self.category.value,
            "prompt": self.prompt.value if self.prompt else None,
        }


class Language(StrEnum):
    """The household's language: prompts, speech model, fraud phrases, pages and alerts."""

    JA = "ja"
    EN = "en"
    KO = "ko"


class Role(StrEnum):
    """A web account's role (what the bundle grants and the page checks); a TUF key's is ``KeyRole``."""

    FAMILY = "family"
    INSTALLER = "installer"

    def covers(self, needed: Role) -> bool:
        """The installer may do everything family may."""
        return self is Role.INSTALLER or needed is Role.FAMILY


class CallState(StrEnum):
    OFFERED = "offered"  # caller ID complete, row written BEFORE any action is taken
    DECIDED = "decided"
    ACTING = "acting"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"  # found unfinished after a crash / power cut
    FAILED = "failed"


UNFINISHED_STATES = (CallState.OFFERED, CallState.DECIDED, CallState.ACTING)


class EventKind(StrEnum):
    """Known event kinds. Stored as text, so newer kinds read back as plain str."""

    OFFERED = "offered"
    DECIDED = "decided"
    ANSWERED = "answered"
    PLAYED = "played"
    LISTENED = "listened"
    HUNG_UP = "hung_up"
    HANDSET = "handset"
    REJECTED = "rejected"  # declined without answering (SIP: the upstream honours a rejection)
    HOUSEHOLD = "household"  # the household phone's leg was rung (SIP)
    DTMF = "dtmf"
    ENDED = "ended"
    ERROR = "error"
    LINE_FAULT = "line_fault"
    LINE_RESTORED = "line_restored"
    CONFIG = "config"
    RECORDING = "recording"  # a recording was stored, repaired or deleted (detail says which)
    TRANSCRIPT = "transcript"
    FRAUD = "fraud"  # the detector's verdict became fraud, live during the call
    HOUSEHOLD_WARNING = "household_warning"
    REVIEW = "review"  # a person marked the call as fraud / not fraud (detail: label, by, detector_verdict)
    # screening a caller (action "screen"); detail carries the step's facts
    NAME_RECORDED = "name_recorded"  # the caller's name reply was recorded (detail: seconds)
    CHALLENGE = "challenge"  # robocall challenge result (detail: passed, key)
    HOUSEHOLD_DECISION = "household_decision"  # detail: connected|refused|blocked|timeout
    MESSAGE = "message"  # the caller left a message (detail: seconds, path)
    OUTCOME = "outcome"  # how a screened call ended (detail: a CallOutcome value)
    RELATIVE_JOINED = "relative_joined"  # a phoned relative joined a live call (detail: mode listen|speak)


class Verdict(StrEnum):
    """The fraud detector's verdict on a call's transcript."""

    FRAUD = "fraud"
    SUSPICIOUS = "suspicious"
    CLEAN = "clean"


class ReviewLabel(StrEnum):
    """A person's judgement of a call: shown in the log, and evaluation data for the detector."""

    FRAUD = "fraud"
    NOT_FRAUD = "not_fraud"
