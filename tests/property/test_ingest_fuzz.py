"""Fuzzing ``app.ingest.validate`` (issue 16, item 7): arbitrary bytes and mutated valid
messages.  It never raises; it accepts only what the contract accepts, with the values the
contract parses; every rejection has a one-line reason from the documented kinds; the dead
letter's raw copy stays within its bound.  Bounded for CI (a few seconds); a longer run:
``FUZZ_EXAMPLES=20000 .venv/bin/pytest tests/property/test_ingest_fuzz.py``."""

from __future__ import annotations

import json
import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ingest import Accepted, Rejected, Rules, bounded_raw, validate

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RULES = Rules(known_combos=frozenset({"Accel_CMP", "Star_nopin"}))
NOW_S = 1_747_094_400
BOUND = 4_096
#: The documented reason kinds (TECHNICAL.md, reason table): every reason starts with one.
KINDS = re.compile(
    r"^(empty message|oversized message|value is not valid UTF-8|malformed JSON|"
    r"missing field|unknown field|combo (is not a string|too long|contains|has leading)|"
    r"empty combo|count is (not a number|NaN)|negative count|fractional count|"
    r"count too large|hour (is|has no time zone|not aligned|too far)|produced_at is|"
    r"message key|unknown combo|internal validation error)"
)
VALID = {"combo": "Accel_CMP", "hour": "2025-05-12T03:00:00Z", "count": 100}


def _check(value: bytes | None, key: bytes | None) -> Accepted | Rejected:
    result = validate(value, key, RULES, NOW_S)
    if isinstance(result, Rejected):
        assert KINDS.match(result.reason), result.reason
        assert result.reason.isprintable() and len(result.reason) < 1_000
        assert not result.reason.startswith("internal"), result.reason
    else:  # accepted: the value really is one strict JSON object meeting the contract
        message = json.loads(value, object_pairs_hook=dict)  # type: ignore[arg-type]
        assert set(message) <= {"combo", "hour", "count", "produced_at"}
        assert message["combo"] == result.combo and key == result.combo.encode()
        assert result.combo in RULES.known_combos  # type: ignore[operator]
        assert float(message["count"]) == result.count and 0 <= result.count <= RULES.max_count
        assert result.hour.endswith(":00:00Z") and result.step * 3600 >= RULES.min_hour_epoch_s
    copy = bounded_raw(value, BOUND)
    if copy.raw is not None:
        assert len(json.dumps(copy.raw)) - 2 <= BOUND
    return result


@FUZZ
@given(st.one_of(st.none(), st.binary(max_size=300)), st.one_of(st.none(), st.binary(max_size=20)))
def test_arbitrary_bytes(value: bytes | None, key: bytes | None) -> None:
    _check(value, key)


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    _check(text.encode("utf-8", "surrogatepass"), b"Accel_CMP")


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def _encode(fields: list[tuple[str, object]], quote: str, sep: str) -> str:
    body = sep.join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in fields)
    return ("{" + body + "}").replace('"', quote)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["combo", "hour", "count", "produced_at", "extra"]),
            st.one_of(_json_values, st.sampled_from(list(VALID.values()))),
        ),
        max_size=6,
    ),
    st.sampled_from(['"', "'"]),
    st.sampled_from([",", ", ", ",\n"]),
    st.sampled_from(["", " ", "\n", "x", "{}", "\x00", "\ufeff"]),
    st.sampled_from(["", " ", "\t", "\ufeff"]),
    st.booleans(),
)
def test_mutated_messages(
    fields: list[tuple[str, object]],
    quote: str,
    sep: str,
    tail: str,
    head: str,
    base: bool,
) -> None:
    if base:
        fields = list(VALID.items()) + fields  # duplicates when a mutated field repeats
    text = head + _encode(fields, quote, sep) + tail
    result = _check(text.encode("utf-8", "surrogatepass"), b"Accel_CMP")
    names = [k for k, _ in fields]
    if len(set(names)) != len(names) or (quote == "'" and fields) or tail.strip(" \n"):
        assert isinstance(result, Rejected)
    if head == "\ufeff":
        assert isinstance(result, Rejected)


@FUZZ
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60), st.integers(0, 3))
def test_escapes_and_surrogates_in_combo(combo: str, escape: int) -> None:
    raw = json.dumps({**VALID, "combo": combo}, ensure_ascii=bool(escape % 2))
    if escape >= 2:  # a lone surrogate escape somewhere
        raw = raw.replace('"combo": "', '"combo": "\\udc80', 1)
    result = _check(raw.encode(), combo.encode("utf-8", "surrogatepass"))
    if escape >= 2:
        assert isinstance(result, Rejected)


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(["😀", "\x00", "é", '"', "a"]), st.integers(1, 300_000))
def test_large_values_up_to_the_broker_limit(ch: str, n: int) -> None:
    value = json.dumps({**VALID, "pad": ch * n}, ensure_ascii=False).encode()[:1_000_000]
    _check(value, b"Accel_CMP")
