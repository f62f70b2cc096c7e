# ruff: noqa: E501
"""The validator's test cases: every reason ``app.ingest.validate`` gives, with an example.

``tests/unit/test_ingest.py`` checks each case, and that TECHNICAL.md's reason table is
``reason_table()``; after changing a case, rewrite the table with
``.venv/bin/python -m tests.unit.ingest_cases --write``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

from app import PROJECT_ROOT
from app.ingest import Rules, show

#: The rules the cases run under (known combos, the default limits) and their "now".
RULES = Rules(known_combos=frozenset({"Accel_CMP", "Star_nopin"}))
NOW_S = 1_747_094_400  # 2025-05-13T00:00:00Z
H = "2025-05-12T03:00:00Z"
K = b"Accel_CMP"


class Case(NamedTuple):
    what: str
    key: bytes | None
    value: bytes | None
    reason: str


def j(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def m(combo: Any = "Accel_CMP", hour: Any = H, count: Any = 100, **extra: Any) -> bytes:
    """A message with one field made bad by the caller."""
    return j(combo=combo, hour=hour, count=count, **extra)


CASES: list[Case] = [
    Case(
        "empty value (tombstone)",
        K,
        None,
        'empty message (no value): a tombstone; expected one JSON object like {"combo": ..., "hour": ..., "count": ...}',
    ),
    Case(
        "empty value (0 bytes)",
        K,
        b"",
        'empty message (0 bytes); expected one JSON object like {"combo": ..., "hour": ..., "count": ...}',
    ),
    Case(
        "oversized",
        K,
        m(padding="x" * 20_000),
        "oversized message: 20083 bytes > MAX_MESSAGE_BYTES=10000",
    ),
    Case(
        "not UTF-8",
        K,
        b"\xff\xfe\x00garbage",
        "value is not valid UTF-8: byte 0xff at offset 0; the contract wants UTF-8 JSON",
    ),
    Case(
        "byte order mark",
        K,
        b"\xef\xbb\xbf" + m(),
        'malformed JSON: starts with a byte order mark (U+FEFF); expected one JSON object like {"combo": ..., "hour": ..., "count": ...}',
    ),
    Case(
        "only whitespace",
        K,
        b" \n ",
        'malformed JSON: the value is empty or only whitespace; expected one JSON object like {"combo": ..., "hour": ..., "count": ...}',
    ),
    Case(
        "cut short",
        K,
        b'{"combo": "Accel_CMP", "hour": ',
        'malformed JSON at character 31: Expecting value (found the end); expected one JSON object like {"combo": ..., "hour": ..., "count": ...}',
    ),
    Case(
        "single quotes",
        K,
        b"{'combo':'Accel_CMP','hour':'2025-05-12T03:00:00Z','count':5}",
        'malformed JSON at character 1: Expecting property name enclosed in double quotes (found "\'combo\':\'Acc"); expected one JSON object like {"combo": ..., "hour": ..., "count": ...}',
    ),
    Case(
        "trailing garbage",
        K,
        m() + b" trailing garbage",
        'malformed JSON: trailing characters after the first value at character 69 (found "trailing gar..." (16 characters)); expected one JSON object like {"combo": ..., "hour": ..., "count": ...}, nothing after it',
    ),
    Case(
        "two objects concatenated",
        K,
        m() + m(hour="2025-05-12T04:00:00Z"),
        'malformed JSON: a second JSON value after the first value at character 68 (found "{\\"combo\\": \\"A..." (68 characters)); expected one JSON object like {"combo": ..., "hour": ..., "count": ...}, nothing after it',
    ),
    Case(
        "duplicate key",
        K,
        b'{"combo":"Accel_CMP","hour":"2025-05-12T03:00:00Z","count":523,"count":-1}',
        'malformed JSON: duplicate key "count" in an object; the contract wants each field once',
    ),
    Case(
        "nested too deeply",
        K,
        b"[" * 5000 + b"]" * 5000,
        'malformed JSON: nested too deeply; expected one JSON object like {"combo": ..., "hour": ..., "count": ...}',
    ),
    Case(
        "an array",
        K,
        b"[1, 2, 3]",
        'malformed JSON: found an array; expected one JSON object like {"combo": ..., "hour": ..., "count": ...}',
    ),
    Case(
        "a string",
        K,
        b'"hello"',
        'malformed JSON: found the string "hello"; expected one JSON object like {"combo": ..., "hour": ..., "count": ...}',
    ),
    Case(
        "lone surrogate escape in combo",
        K,
        b'{"combo":"Accel\\ud800","hour":"2025-05-12T03:00:00Z","count":5}',
        'combo contains a lone surrogate escape \\ud800 (found "Accel\\ud800"); the contract wants valid Unicode text',
    ),
    Case(
        "combo missing",
        K,
        j(hour=H, count=5),
        'missing field \'combo\'; expected one JSON object like {"combo": ..., "hour": ..., "count": ...}',
    ),
    Case(
        "hour missing",
        K,
        j(combo="Accel_CMP", count=5),
        'missing field \'hour\'; expected one JSON object like {"combo": ..., "hour": ..., "count": ...}',
    ),
    Case(
        "count missing",
        K,
        j(combo="Accel_CMP", hour=H),
        'missing field \'count\'; expected one JSON object like {"combo": ..., "hour": ..., "count": ...}',
    ),
    Case(
        "unknown field",
        K,
        m(label=1),
        'unknown field "label"; the contract has only combo, hour, count and produced_at',
    ),
    Case(
        "combo a number",
        K,
        m(combo=123),
        "combo is not a string: found the number 123; want a string",
    ),
    Case(
        "combo empty",
        b"",
        m(combo=""),
        'empty combo: found ""; want 1 to 200 printable characters',
    ),
    Case(
        "combo blank",
        b"   ",
        m(combo="   "),
        'empty combo: found "   "; want 1 to 200 printable characters',
    ),
    Case(
        "combo too long",
        b"A" * 201,
        m(combo="A" * 201),
        'combo too long: found "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA..." (201 characters); want at most 200 characters',
    ),
    Case(
        "combo with a NUL",
        b"Accel_CMP\x00",
        m(combo="Accel_CMP\x00"),
        'combo contains a control or invisible character \\u0000: found "Accel_CMP\\u0000"; want printable characters (letters, digits, punctuation, spaces)',
    ),
    Case(
        "combo with a newline (log injection)",
        b"Accel\nINFO fake",
        m(combo="Accel\nINFO fake"),
        'combo contains a control or invisible character \\n: found "Accel\\nINFO fake"; want printable characters (letters, digits, punctuation, spaces)',
    ),
    Case(
        "combo with a trailing space",
        b"Accel_CMP ",
        m(combo="Accel_CMP "),
        'combo has leading or trailing spaces: found "Accel_CMP "; want none',
    ),
    Case(
        "count a string",
        K,
        m(count="503"),
        'count is not a number: found the string "503"; want a non-negative integer',
    ),
    Case(
        "count a boolean",
        K,
        m(count=True),
        "count is not a number: found the boolean true; want a non-negative integer",
    ),
    Case(
        "count null",
        K,
        m(count=None),
        "count is not a number: found null; want a non-negative integer",
    ),
    Case(
        "count NaN (bare)",
        K,
        m(count=float("nan")),
        "count is NaN: found the bare token NaN; want a non-negative integer",
    ),
    Case(
        "count Infinity (bare)",
        K,
        m(count=float("inf")),
        "count too large: Infinity > MAX_COUNT=1000000000",
    ),
    Case(
        "count -Infinity (bare)",
        K,
        m(count=float("-inf")),
        "negative count: -Infinity; want a non-negative integer",
    ),
    Case(
        "count negative",
        K,
        m(count=-5),
        "negative count: -5; want a non-negative integer",
    ),
    Case(
        "count fractional",
        K,
        m(count=12.5),
        "fractional count: 12.5; want a whole number",
    ),
    Case(
        "count too large",
        K,
        m(count=10**15),
        "count too large: 1000000000000000 > MAX_COUNT=1000000000",
    ),
    Case(
        "count 1e309",
        K,
        b'{"combo":"Accel_CMP","hour":"2025-05-12T03:00:00Z","count":1e309}',
        "count too large: 1E+309 > MAX_COUNT=1000000000",
    ),
    Case(
        "hour a number",
        K,
        m(hour=12345),
        "hour is not a string: found the number 12345; want YYYY-MM-DDTHH:MM:SS with Z or a +HH:MM offset, e.g. 2025-03-02T14:00:00Z",
    ),
    Case(
        "hour not a timestamp",
        K,
        m(hour="yesterday"),
        'hour is not an ISO 8601 timestamp: found "yesterday"; want YYYY-MM-DDTHH:MM:SS with Z or a +HH:MM offset, e.g. 2025-03-02T14:00:00Z',
    ),
    Case(
        "hour without time zone",
        K,
        m(hour="2025-05-12T03:00:00"),
        'hour has no time zone: found "2025-05-12T03:00:00"; want YYYY-MM-DDTHH:MM:SS with Z or a +HH:MM offset, e.g. 2025-03-02T14:00:00Z',
    ),
    Case(
        "hour with a space for T",
        K,
        m(hour="2025-05-12 03:00:00Z"),
        'hour is not an ISO 8601 timestamp: found "2025-05-12 03:00:00Z"; want YYYY-MM-DDTHH:MM:SS with Z or a +HH:MM offset, e.g. 2025-03-02T14:00:00Z',
    ),
    Case(
        "hour date only",
        K,
        m(hour="2025-05-12"),
        'hour is not an ISO 8601 timestamp: found "2025-05-12"; want YYYY-MM-DDTHH:MM:SS with Z or a +HH:MM offset, e.g. 2025-03-02T14:00:00Z',
    ),
    Case(
        "hour with a trailing space",
        K,
        m(hour="2025-05-12T03:00:00Z "),
        'hour is not an ISO 8601 timestamp: found "2025-05-12T03:00:00Z "; want YYYY-MM-DDTHH:MM:SS with Z or a +HH:MM offset, e.g. 2025-03-02T14:00:00Z',
    ),
    Case(
        "hour month 13",
        K,
        m(hour="2025-13-12T03:00:00Z"),
        'hour is not a valid date and time: found "2025-13-12T03:00:00Z"; want YYYY-MM-DDTHH:MM:SS with Z or a +HH:MM offset, e.g. 2025-03-02T14:00:00Z',
    ),
    Case(
        "hour not aligned",
        K,
        m(hour="2025-05-12T03:30:00Z"),
        'hour not aligned to the start of a 3600-second step: "2025-05-12T03:30:00Z"; want a multiple of 3600 s since 1970-01-01T00:00:00Z',
    ),
    Case(
        "hour with a fraction",
        K,
        m(hour="2025-05-12T03:00:00.5Z"),
        'hour not aligned to the start of a 3600-second step: "2025-05-12T03:00:00.5Z"; want a multiple of 3600 s since 1970-01-01T00:00:00Z',
    ),
    Case(
        "hour before 2000",
        K,
        m(hour="1990-01-01T00:00:00Z"),
        'hour too far in the past: "1990-01-01T00:00:00Z"; want 2000-01-01T00:00:00Z or later (MIN_HOUR_EPOCH_S)',
    ),
    Case(
        "hour in 2100",
        K,
        m(hour="2100-01-01T00:00:00Z"),
        'hour too far in the future: "2100-01-01T00:00:00Z"; want at most MAX_FUTURE_HOURS=48 after the batch time 2025-05-13T00:00:00Z',
    ),
    Case(
        "produced_at a number",
        K,
        m(produced_at=5),
        "produced_at is not a string: found the number 5; want null or a timestamp",
    ),
    Case(
        "produced_at not a timestamp",
        K,
        m(produced_at="now"),
        'produced_at is not an ISO 8601 timestamp with a time zone: found "now"; want null or e.g. 2025-03-02T14:00:05.123Z',
    ),
    Case(
        "key missing (null)",
        None,
        m(),
        'message key is missing: want the combo "Accel_CMP" as the key (one combo\'s hours then stay in one partition, in order)',
    ),
    Case(
        "key not UTF-8",
        b"\xff",
        m(),
        'message key is not valid UTF-8 (1 bytes); want the combo "Accel_CMP"',
    ),
    Case(
        "key another combo",
        b"Star_nopin",
        m(),
        'message key "Star_nopin" does not match combo "Accel_CMP"',
    ),
    Case(
        "unknown combo",
        b"Nope",
        m(combo="Nope"),
        'unknown combo "Nope": no model for it under MODEL_PATH',
    ),
]

#: Messages the contract accepts, with the fields it parses from them.
ACCEPTED: list[tuple[str, bytes | None, bytes, dict[str, Any]]] = [
    ("canonical", K, m(), {"combo": "Accel_CMP", "hour": H, "count": 100}),
    ("JSON whitespace around", K, b"\n\t " + m() + b"\r\n", {"hour": H}),
    ("an offset instead of Z", K, m(hour="2025-05-12T05:00:00+02:00"), {"hour": H}),
    ("a zero fraction", K, m(hour="2025-05-12T03:00:00.000Z"), {"hour": H}),
    ("count 0", K, m(count=0), {"count": 0}),
    ("count 5.0 (integral)", K, m(count=5.0), {"count": 5}),
    ("count 1e3", K, m(count=100).replace(b"100}", b"1e3}"), {"count": 1000}),
    ("count MAX_COUNT", K, m(count=1_000_000_000), {"count": 1_000_000_000}),
    (
        "produced_at",
        K,
        m(produced_at="2025-05-12T03:00:01.234Z"),
        {"produced_at": "2025-05-12T03:00:01.234Z"},
    ),
    ("produced_at null", K, m(produced_at=None), {"produced_at": None}),
    (
        "escaped ASCII in combo",
        K,
        m(combo="Accel\\u005fCMP").replace(b"\\\\", b"\\"),
        {"combo": "Accel_CMP"},
    ),
]


def _example(case: Case) -> str:
    if case.value is not None and len(case.value) > 200:
        value = f"({len(case.value)} bytes: {show(case.value[:40].decode('utf-8', 'backslashreplace'))})"
    else:
        value = (
            "null"
            if case.value is None
            else show(case.value.decode("utf-8", "backslashreplace"), 90)
        )
    key = "null" if case.key is None else show(case.key.decode("utf-8", "backslashreplace"), 20)
    return f"key {key}, value {value}"


def _cell(text: str) -> str:
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def reason_table() -> str:
    """The markdown table of every case (TECHNICAL.md, "Contracts")."""
    lines = ["| case | example (key, value) | reason |", "|---|---|---|"]
    lines += [f"| {c.what} | {_cell(_example(c))} | {_cell(c.reason)} |" for c in CASES]
    return "\n".join(lines) + "\n"


BEGIN = "<!-- reason table: generated by python -m tests.unit.ingest_cases --write -->\n"
END = "<!-- end of reason table -->\n"
TECHNICAL = PROJECT_ROOT / "TECHNICAL.md"


def table_in(path: Path = TECHNICAL) -> str:
    text = path.read_text(encoding="utf-8")
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)]


def write_table(path: Path = TECHNICAL) -> None:
    text = path.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    path.write_text(text[:start] + reason_table() + text[end:], encoding="utf-8")


if __name__ == "__main__":
    if "--write" in sys.argv:
        write_table()
    else:
        sys.stdout.write(reason_table())
