"""``app.ingest.validate``: every reason (the cases of ``ingest_cases``), the accepted forms,
the bounded raw copy of a dead letter, and TECHNICAL.md's reason table."""

from __future__ import annotations

import base64
import hashlib
import json

import pandas as pd
import pytest

from app.contracts import HourlyCount
from app.ingest import Accepted, Rejected, Rules, bounded_raw, cap_raw_text, validate
from app.streaming.job import VALIDATED_COLUMNS, validate_frame
from app.streaming.scorer import score_emissions
from tests.unit.ingest_cases import ACCEPTED, CASES, NOW_S, RULES, Case, reason_table, table_in


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_each_bad_message_gets_its_exact_reason(case: Case) -> None:
    result = validate(case.value, case.key, RULES, NOW_S)
    assert result == Rejected(case.reason)
    assert "\n" not in result.reason and "\r" not in result.reason  # no log-line injection
    assert all(c.isprintable() for c in result.reason)


@pytest.mark.parametrize("case", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_accepted_forms_parse_to_the_contract_values(case: tuple) -> None:
    _, key, value, fields = case
    result = validate(value, key, RULES, NOW_S)
    assert isinstance(result, Accepted), result
    for name, want in fields.items():
        assert getattr(result, name) == want, name
    # One contract: the accepted fields are an HourlyCount, and its wire form is accepted too.
    hc = HourlyCount.from_accepted(result)
    assert validate(hc.to_json_bytes(), key, RULES, NOW_S) == result


def test_the_issue_defects_are_rejected_not_repaired() -> None:
    """Issue 16, "What was seen" 2 and 4: lenient parsing and misleading reasons."""
    head = b'{"combo":"Star_nopin","hour":"2025-05-05T13:00:00Z",'
    key = b"Star_nopin"
    # single quotes, trailing garbage, concatenated objects: rejected, never half-read
    for value in (
        b"{'combo':'Star_nopin','hour':'2025-05-05T13:00:00Z','count':5}",
        head + b'"count":5} trailing garbage',
        head + b'"count":5}' + head + b'"count":6}',
    ):
        assert validate(value, key, RULES, NOW_S).reason.startswith("malformed JSON")
    # duplicate keys, either order: rejected as such, never read as one copy
    for counts in (b'"count":523,"count":-1}', b'"count":-1,"count":524}'):
        assert "duplicate key" in validate(head + counts, key, RULES, NOW_S).reason
    # a newline and a tab before a valid object: accepted (JSON whitespace)
    assert isinstance(validate(b"\n\t" + head + b'"count":5}', key, RULES, NOW_S), Accepted)
    # a NUL in the combo: the reason shows the difference
    value = b'{"combo":"Star_nopin\\u0000","hour":"2025-05-05T13:00:00Z","count":5}'
    assert "\\u0000" in validate(value, b"Star_nopin\x00", RULES, NOW_S).reason


def test_hourly_count_agrees_with_the_validator() -> None:
    ok = HourlyCount(combo="A", hour="2025-05-12T05:00:00+02:00", count=3)
    assert ok.hour == "2025-05-12T03:00:00Z"
    assert ok.to_json_bytes() == b'{"combo":"A","hour":"2025-05-12T03:00:00Z","count":3}'
    for bad in (
        {"hour": "2025-05-12T03:00:00"},  # no time zone
        {"hour": "2025-05-12 03:00:00Z"},  # space for T
        {"hour": "2025-05-12"},  # date only
        {"combo": "A\n"},
        {"combo": "A" * 201},
        {"count": -1},
        {"count": True},
        {"produced_at": "now"},
    ):
        fields = {"combo": "A", "hour": "2025-05-12T03:00:00Z", "count": 3, **bad}
        with pytest.raises(ValueError):
            HourlyCount(**fields)


def test_validate_never_raises_even_on_an_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.ingest as ingest

    def boom(*_: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(ingest, "_combo", boom)
    result = validate(b'{"combo":"A","hour":"2025-05-12T03:00:00Z","count":1}', b"A", Rules(), 0)
    assert result == Rejected("internal validation error: RuntimeError")


# -- the dead letter's raw copy -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "😀".encode() * 90_000,  # 360 KB of emoji: 12 bytes each once JSON-escaped
        b"\x00" * 200_000,  # 6 bytes each escaped
        bytes(range(128, 256)) * 6_000,  # not UTF-8: base64
        b"[" * 500_000,
        b'{"combo":"' + "é".encode() * 100_000 + b'"}',
    ],
    ids=["emoji", "nul", "not-utf8", "nesting", "accents"],
)
def test_dead_letter_raw_copy_stays_within_its_bound(value: bytes) -> None:
    bound = 65_536
    copy = bounded_raw(value, bound)
    assert copy.raw_bytes == len(value)
    assert copy.raw_sha256 == hashlib.sha256(value).hexdigest()
    assert len(json.dumps(copy.raw)) - 2 <= bound
    assert len(json.dumps(copy.raw)) - 2 > bound - 13  # as much as fits, not much less
    if copy.raw.startswith("base64:"):
        assert value.startswith(base64.b64decode(copy.raw[7:]))
    else:
        assert value.decode().startswith(copy.raw)
    assert cap_raw_text(copy.raw, bound) == copy.raw  # the scorer's second cut is idempotent


def test_short_values_are_kept_whole() -> None:
    copy = bounded_raw(b'{"a": 1}', 65_536)
    assert copy.raw == '{"a": 1}' and copy.raw_bytes == 8
    assert bounded_raw(None, 100).raw is None


def test_validate_frame_and_dead_letters_end_to_end_in_pandas() -> None:
    """The job's validation step (plain pandas) then the scorer's dead letters: bounded."""
    poison = (
        b'{"combo":"Accel_CMP","hour":"2025-05-12T03:00:00Z","count":5,"x":"'
        + ("😀".encode() * 2_000)
        + b'"}'
    )
    good = b'{"combo":"Accel_CMP","hour":"2025-05-12T03:00:00Z","count":5}'
    pdf = pd.DataFrame(
        {
            "key": [b"Accel_CMP", b"Accel_CMP", None],
            "value": [good, poison, b"\xff" * 50_000],
            "src_topic": ["in"] * 3,
            "src_partition": [0, 1, 1],
            "src_offset": [10, 11, 12],
        }
    )
    rules = Rules(max_message_bytes=5_000, known_combos=frozenset({"Accel_CMP"}))
    out = validate_frame(pdf, rules, max_raw_bytes=1_000, now_s=NOW_S)
    assert list(out.columns) == VALIDATED_COLUMNS
    assert out["reason"].isna().tolist() == [True, False, False]
    assert out.loc[0, "step"] == 1747018800 // 3600 and out.loc[0, "count"] == 5.0
    assert out.loc[1, "reason"].startswith("oversized message: ")
    emissions = out.iloc[1:].assign(status="invalid", window_values=None)
    _, dead = score_emissions(emissions, registry=None, scored_at="T", max_raw_bytes=1_000)
    for d, src in zip(dead, pdf["value"].iloc[1:], strict=True):
        assert len(json.dumps(d["raw"])) - 2 <= 1_000
        assert d["raw_truncated"] and d["raw_bytes"] == len(src)
        assert d["raw_sha256"] == hashlib.sha256(src).hexdigest()
        assert d["failed_at"] == "T"
        assert len(json.dumps(d)) < 4_000


def test_technical_md_reason_table_is_generated_from_these_cases() -> None:
    assert table_in() == reason_table(), "run: .venv/bin/python -m tests.unit.ingest_cases --write"
