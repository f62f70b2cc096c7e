"""The one validator of the input contract: Kafka bytes in, an accepted hour or one reason out.

``validate(value, key, rules, now_s)`` is pure (no Spark, no Kafka, no clock: the caller
passes ``now_s``, the stream its micro-batch time, so a replayed batch decides the same).
It parses the value as strict RFC 8259 JSON (Python's ``json``: double quotes only, one
value, nothing but JSON whitespace after it, duplicate keys rejected, strings checked for
lone surrogates, UTF-8 decoded strictly) and then checks the contract field by field, in
a fixed order; the first violation is the reason.  Every reason names the field, shows what
was found (``show``: control characters escaped, long values cut with ``...`` and the
length) and says what the contract wants.  TECHNICAL.md "Contracts" lists the accepted
forms and, generated from ``tests/unit/ingest_cases.py``, every reason with an example.

``bounded_raw`` is the dead letter's copy of the raw value: at most ``max_bytes`` of JSON
text however it is escaped, with the original length and SHA-256 beside it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

#: Fields of an hourly-count message; ``produced_at`` is optional (null or absent).
FIELDS = ("combo", "hour", "count", "produced_at")
REQUIRED = ("combo", "hour", "count")
MAX_COMBO_CHARS = 200
MAX_PRODUCED_AT_CHARS = 40
#: How much of a found value a reason shows.
SHOW_CHARS = 48

_WANT_OBJECT = 'expected one JSON object like {"combo": ..., "hour": ..., "count": ...}'
_WANT_HOUR = "want YYYY-MM-DDTHH:MM:SS with Z or a +HH:MM offset, e.g. 2025-03-02T14:00:00Z"
_WANT_COUNT = "want a non-negative integer"
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})?"
)


@dataclass(frozen=True)
class Rules:
    """The limits of the contract (from ``StreamSettings``; ``known_combos`` None = any)."""

    step_seconds: int = 3600
    max_message_bytes: int = 10_000
    max_count: int = 1_000_000_000
    min_hour_epoch_s: int = 946_684_800
    max_future_hours: int = 48
    known_combos: frozenset[str] | None = None

    @classmethod
    def from_settings(cls, settings: Any, known_combos: Iterable[str] | None = None) -> Rules:
        """The rules of ``StreamSettings``; ``known_combos`` None accepts any combo."""
        known = known_combos
        return cls(
            step_seconds=settings.resolved_step_seconds(),
            max_message_bytes=settings.max_message_bytes,
            max_count=settings.max_count,
            min_hour_epoch_s=settings.min_hour_epoch_s,
            max_future_hours=settings.max_future_hours,
            known_combos=None if known is None else frozenset(known),
        )


@dataclass(frozen=True)
class Accepted:
    """A message that meets the contract: the ``HourlyCount`` fields, ``hour`` in its
    canonical form (UTC, ``Z``), and its step (epoch seconds // step)."""

    combo: str
    hour: str
    count: int
    produced_at: str | None
    step: int


@dataclass(frozen=True)
class Rejected:
    """A message that breaks the contract, and the one reason why."""

    reason: str


class _Reject(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Constant:
    """A bare ``NaN`` / ``Infinity`` / ``-Infinity`` (a JSON extension Python reads)."""

    text: str


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if ch == '"':
        return '\\"'
    if ch == "\\":
        return "\\\\"
    if ch.isprintable():
        return ch
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch)
    if named:
        return named
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def show(value: Any, limit: int = SHOW_CHARS) -> str:
    """A found value, safe for a reason and a log line: strings in double quotes with every
    non-printable character escaped; long values cut with ``...`` and their length.

    Examples
    --------
    >>> show("Accel_CMP")
    '"Accel_CMP"'
    >>> show("a\\nb\\x00")
    '"a\\\\nb\\\\u0000"'
    >>> show("x" * 100, limit=5)
    '"xxxxx..." (100 characters)'
    >>> show([1, 2])
    'an array'
    """
    if isinstance(value, str):
        body = "".join(_escape_char(c) for c in value[:limit])
        if len(value) > limit:
            return f'"{body}..." ({len(value)} characters)'
        return f'"{body}"'
    if isinstance(value, _Constant):
        return value.text
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        text = str(value)  # the number as sent, exactly (1e309 is 1E+309)
        return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return show(str(value), limit)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise _Reject(
                f"malformed JSON: duplicate key {show(name)} in an object; "
                "the contract wants each field once"
            )
        out[name] = value
    return out


_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates,
    parse_float=Decimal,
    parse_int=Decimal,  # exact, and no 4300-digit limit
    parse_constant=_Constant,
    strict=True,  # no raw control characters inside strings
)
_JSON_WS = " \t\n\r"


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return f"the string {show(value)}"
    if isinstance(value, bool):
        return f"the boolean {show(value)}"
    if value is None:
        return "null"
    return f"the number {show(value)}"


def _parse(text: str) -> Any:
    if text.startswith("\ufeff"):
        raise _Reject(f"malformed JSON: starts with a byte order mark (U+FEFF); {_WANT_OBJECT}")
    start = len(text) - len(text.lstrip(_JSON_WS))
    if start == len(text):
        raise _Reject(f"malformed JSON: the value is empty or only whitespace; {_WANT_OBJECT}")
    try:
        value, end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        found = show(text[exc.pos : exc.pos + 12], limit=12) if exc.pos < len(text) else "the end"
        raise _Reject(
            f"malformed JSON at character {exc.pos}: {exc.msg} (found {found}); {_WANT_OBJECT}"
        ) from None
    except RecursionError:
        raise _Reject(f"malformed JSON: nested too deeply; {_WANT_OBJECT}") from None
    rest = text[end:].lstrip(_JSON_WS)
    if rest:
        pos = len(text) - len(rest)
        what = "a second JSON value" if rest[0] in '{["' else "trailing characters"
        raise _Reject(
            f"malformed JSON: {what} after the first value at character {pos} "
            f"(found {show(rest, limit=12)}); {_WANT_OBJECT}, nothing after it"
        )
    return value


def _surrogate(value: str) -> str | None:
    for ch in value:
        if 0xD800 <= ord(ch) <= 0xDFFF:
            return f"\\u{ord(ch):04x}"
    return None


def _check_strings(value: Any, path: str) -> None:
    """Lone surrogate escapes (``"\\ud800"``) parse in Python but are no Unicode text."""
    if isinstance(value, str):
        bad = _surrogate(value)
        if bad:
            raise _Reject(
                f"{path} contains a lone surrogate escape {bad} (found {show(value)}); "
                "the contract wants valid Unicode text"
            )
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_strings(k, f"{path} key")
            _check_strings(v, f"{path}.{k}" if path != "value" else k)
    elif isinstance(value, list):
        for v in value:
            _check_strings(v, path)


def _combo(value: Any) -> str:
    if not isinstance(value, str):
        raise _Reject(f"combo is not a string: found {_kind(value)}; want a string")
    if value.strip() == "":
        raise _Reject(
            f"empty combo: found {show(value)}; want 1 to {MAX_COMBO_CHARS} printable characters"
        )
    if len(value) > MAX_COMBO_CHARS:
        raise _Reject(
            f"combo too long: found {show(value)}; want at most {MAX_COMBO_CHARS} characters"
        )
    bad = next((c for c in value if not c.isprintable()), None)
    if bad is not None:
        raise _Reject(
            f"combo contains a control or invisible character {_escape_char(bad)}: found "
            f"{show(value)}; want printable characters (letters, digits, punctuation, spaces)"
        )
    if value != value.strip():
        raise _Reject(f"combo has leading or trailing spaces: found {show(value)}; want none")
    return value


def _count(value: Any, max_count: int) -> int:
    if isinstance(value, _Constant):
        if value.text == "NaN":
            raise _Reject(f"count is NaN: found the bare token NaN; {_WANT_COUNT}")
        if value.text.startswith("-"):
            raise _Reject(f"negative count: {value.text}; {_WANT_COUNT}")
        raise _Reject(f"count too large: {value.text} > MAX_COUNT={max_count}")
    if not isinstance(value, Decimal):
        raise _Reject(f"count is not a number: found {_kind(value)}; {_WANT_COUNT}")
    if value < 0:
        raise _Reject(f"negative count: {show(value)}; {_WANT_COUNT}")
    if value > max_count:
        raise _Reject(f"count too large: {show(value)} > MAX_COUNT={max_count}")
    if value != value.to_integral_value():
        raise _Reject(f"fractional count: {show(value)}; want a whole number")
    return int(value)


def parse_timestamp(text: str) -> datetime | str:
    """A timestamp of the contract's grammar as an aware UTC datetime, or what is wrong.

    Grammar: ``YYYY-MM-DDTHH:MM:SS``, optional fraction (1 to 9 digits), then ``Z`` or a
    ``+HH:MM`` / ``-HH:MM`` offset (required).  ``T`` only, no date alone, no spaces.

    Examples
    --------
    >>> parse_timestamp("2025-03-02T16:00:00+02:00")
    datetime.datetime(2025, 3, 2, 14, 0, tzinfo=datetime.timezone.utc)
    >>> parse_timestamp("2025-03-02 14:00:00Z")
    'not an ISO 8601 timestamp'
    """
    m = _TIMESTAMP.fullmatch(text)
    if m is None:
        return "not an ISO 8601 timestamp"
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    if zone is None:
        return "has no time zone"
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError:
        return "not a valid date and time"
    if zone == "Z":
        offset = 0
    else:
        oh, om = int(zone[1:3]), int(zone[4:6])
        if oh > 23 or om > 59:
            return "not a valid time zone offset"
        offset = (oh * 60 + om) * (1 if zone[0] == "+" else -1)
    micros = int((fraction or "0").ljust(6, "0")[:6])
    try:
        utc = (moment - timedelta(minutes=offset)).replace(tzinfo=UTC)
    except OverflowError:
        return "not a valid date and time"
    return utc + timedelta(microseconds=micros)


def _hour(value: Any, rules: Rules, now_s: float) -> tuple[str, int]:
    if not isinstance(value, str):
        raise _Reject(f"hour is not a string: found {_kind(value)}; {_WANT_HOUR}")
    parsed = parse_timestamp(value)
    if isinstance(parsed, str):
        what = "has no time zone" if parsed == "has no time zone" else f"is {parsed}"
        raise _Reject(f"hour {what}: found {show(value)}; {_WANT_HOUR}")
    seconds = int(parsed.timestamp())
    canonical = parsed.strftime("%Y-%m-%dT%H:%M:%SZ")
    if parsed.microsecond or seconds % rules.step_seconds != 0:
        raise _Reject(
            f"hour not aligned to the start of a {rules.step_seconds}-second step: "
            f"{show(value)}; want a multiple of {rules.step_seconds} s since 1970-01-01T00:00:00Z"
        )
    if seconds < rules.min_hour_epoch_s:
        floor = datetime.fromtimestamp(rules.min_hour_epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise _Reject(
            f"hour too far in the past: {show(value)}; want {floor} or later (MIN_HOUR_EPOCH_S)"
        )
    if seconds > now_s + rules.max_future_hours * 3600:
        now = datetime.fromtimestamp(int(now_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise _Reject(
            f"hour too far in the future: {show(value)}; want at most MAX_FUTURE_HOURS="
            f"{rules.max_future_hours} after the batch time {now}"
        )
    return canonical, seconds // rules.step_seconds


def _produced_at(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Reject(
            f"produced_at is not a string: found {_kind(value)}; want null or a timestamp"
        )
    if len(value) > MAX_PRODUCED_AT_CHARS or isinstance(parse_timestamp(value), str):
        raise _Reject(
            f"produced_at is not an ISO 8601 timestamp with a time zone: found {show(value)}; "
            "want null or e.g. 2025-03-02T14:00:05.123Z"
        )
    return value


def _check_key(key: bytes | None, combo: str) -> None:
    if key is None:
        raise _Reject(
            f"message key is missing: want the combo {show(combo)} as the key "
            "(one combo's hours then stay in one partition, in order)"
        )
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        raise _Reject(
            f"message key is not valid UTF-8 ({len(key)} bytes); want the combo {show(combo)}"
        ) from None
    if text != combo:
        raise _Reject(f"message key {show(text)} does not match combo {show(combo)}")


def validate(
    value: bytes | None, key: bytes | None, rules: Rules, now_s: float
) -> Accepted | Rejected:
    """Check one Kafka message against the input contract.

    ``now_s`` is the time the future-hour guard measures from (the stream passes its
    micro-batch timestamp).  Never raises for any input.

    Examples
    --------
    >>> v = b'{"combo":"A","hour":"2025-03-02T14:00:00Z","count":5}'
    >>> validate(v, b"A", Rules(), now_s=1.8e9)
    Accepted(combo='A', hour='2025-03-02T14:00:00Z', count=5, produced_at=None, step=483590)
    >>> validate(b"{'combo': 'A'}", b"A", Rules(), now_s=1.8e9).reason[:37]
    'malformed JSON at character 1: Expect'
    """
    try:
        return _validate(value, key, rules, now_s)
    except _Reject as exc:
        return Rejected(exc.reason)
    except Exception as exc:  # a bug here must cost one message, never the stream
        return Rejected(f"internal validation error: {type(exc).__name__}")


def _validate(value: bytes | None, key: bytes | None, rules: Rules, now_s: float) -> Accepted:
    if value is None:
        raise _Reject("empty message (no value): a tombstone; " + _WANT_OBJECT)
    if len(value) > rules.max_message_bytes:
        raise _Reject(
            f"oversized message: {len(value)} bytes > MAX_MESSAGE_BYTES={rules.max_message_bytes}"
        )
    if not value:
        raise _Reject("empty message (0 bytes); " + _WANT_OBJECT)
    try:
        text = value.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise _Reject(
            f"value is not valid UTF-8: byte 0x{value[exc.start]:02x} at offset {exc.start}; "
            "the contract wants UTF-8 JSON"
        ) from None
    message = _parse(text)
    if not isinstance(message, dict):
        raise _Reject(f"malformed JSON: found {_kind(message)}; {_WANT_OBJECT}")
    _check_strings(message, "value")
    for name in REQUIRED:
        if name not in message:
            raise _Reject(f"missing field {name!r}; {_WANT_OBJECT}")
    unknown = sorted(set(message) - set(FIELDS))
    if unknown:
        raise _Reject(
            f"unknown field {show(unknown[0])}; the contract has only combo, hour, count "
            "and produced_at"
        )
    combo = _combo(message["combo"])
    count = _count(message["count"], rules.max_count)
    hour, step = _hour(message["hour"], rules, now_s)
    produced_at = _produced_at(message.get("produced_at"))
    _check_key(key, combo)
    if rules.known_combos is not None and combo not in rules.known_combos:
        raise _Reject(f"unknown combo {show(combo)}: no model for it under MODEL_PATH")
    return Accepted(combo=combo, hour=hour, count=count, produced_at=produced_at, step=step)


# -- the dead letter's copy of the raw value ---------------------------------------------------


def _escaped_size(ch: str) -> int:
    """Bytes ``json.dumps`` (ensure_ascii) writes for one character."""
    code = ord(ch)
    if code < 0x20:
        return 2 if ch in "\b\f\n\r\t" else 6
    if ch in '"\\':
        return 2
    if code < 0x80:
        return 1
    return 12 if code > 0xFFFF else 6


def cut_text(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose JSON string body (``json.dumps``, ASCII) is at
    most ``max_bytes`` bytes.

    Examples
    --------
    >>> cut_text("abc", 2)
    'ab'
    >>> cut_text("\\U0001f600x", 11)
    ''
    """
    total = 0
    for i, ch in enumerate(text):
        total += _escaped_size(ch)
        if total > max_bytes:
            return text[:i]
    return text


@dataclass(frozen=True)
class RawCopy:
    """What a dead letter keeps of a raw value: ``raw`` (text, or ``base64:`` + base64 of the
    bytes when they are not UTF-8; a prefix when the value is longer than the bound),
    ``raw_bytes`` (the value's full length), ``raw_sha256`` (hex, of the full value)."""

    raw: str | None
    raw_bytes: int | None
    raw_sha256: str | None


def bounded_raw(value: bytes | None, max_bytes: int) -> RawCopy:
    """The dead letter's copy of ``value``: its JSON-escaped text is at most ``max_bytes``."""
    if value is None:
        return RawCopy(None, None, None)
    digest = hashlib.sha256(value).hexdigest()
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        prefix = value[: max(0, (max_bytes - 7) // 4 * 3)]
        return RawCopy("base64:" + base64.b64encode(prefix).decode(), len(value), digest)
    return RawCopy(cut_text(text, max_bytes), len(value), digest)


def cap_raw_text(raw: str | None, max_bytes: int) -> str | None:
    """Cut an already-made raw copy again (idempotent): the scorer's last guard."""
    if raw is None:
        return None
    if raw.startswith("base64:"):
        keep = 7 + max(0, (max_bytes - 7) // 4 * 4)
        return raw[:keep]
    return cut_text(raw, max_bytes)
