"""Bad input never stops the stream and never costs a good hour.

Every kind of bad message is interleaved with a valid stream of two combos and run
through the job's real query (``build_query``, available-now trigger) on the session's
Kafka broker and Spark.  Expected: the query ends without an exception; every bad message
is on the dead-letter topic exactly once, with its own reason text and its raw value; every
good hour is on the scored topic exactly once, with the status the window rules give
(``warming_up`` / ``scored`` / ``missing``).

The run happens in two parts on one checkpoint (the second query restarts from the first
one's offsets and window state), because "duplicate" and "late" depend on what the combo's
state has already accepted: inside one micro-batch rows are sorted by hour first, so an
out-of-order hour there is harmless.  A property test (hypothesis) then interleaves random
bad messages with a valid stream and checks the two counts.
"""

from __future__ import annotations

import base64
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from app.config import DEFAULT_MAX_GAP_HOURS, KafkaSettings
from app.registry import ModelRegistry

from .helpers import (
    Message,
    count_at,
    fresh_topics,
    good,
    hour_iso,
    read_all,
    run_job_available_now,
    send,
)

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

A, S = "Accel_CMP", "Star_nopin"
WINDOW = 24
MAX_GAP = DEFAULT_MAX_GAP_HOURS  # the job runs with the default
RESUME = 30 + MAX_GAP + 2  # part 2: A resumes after a gap of MAX_GAP + 2 hours
END = RESUME + WINDOW + 1  # ... and runs until two hours are scored again
DUPLICATE = "duplicate hour: this combo already has a record for this hour"
LATE = "late hour: older than the newest hour already accepted for this combo"
WANT = '; expected one JSON object like {"combo": ..., "hour": ..., "count": ...}'
MALFORMED = "malformed JSON"  # a reason ending in no ";" part is matched as a prefix
HOUR_WANT = "; want YYYY-MM-DDTHH:MM:SS with Z or a +HH:MM offset, e.g. 2025-03-02T14:00:00Z"


def _json(key: bytes | None, **fields: Any) -> Message:
    return key, json.dumps(fields).encode()


def _msg(combo: Any = A, hour: Any = None, count: Any = 100, key: bytes | None = b"") -> Message:
    """An input message with one field made bad by the caller (key defaults to the combo)."""
    if key == b"":
        key = combo.encode() if isinstance(combo, str) else None
    return _json(key, combo=combo, hour=hour_iso(3) if hour is None else hour, count=count)


def _raw(value: bytes | None) -> str | None:
    """The ``raw`` field the job writes for a value."""
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(value).decode()


def _oversized() -> tuple[Message, str]:
    key, value = _json(b"Accel_CMP", combo=A, hour=hour_iso(4), count=5, padding="x" * 20_000)
    return (key, value), f"oversized message: {len(value)} bytes > MAX_MESSAGE_BYTES=10000"


def _bad_cases_part1() -> list[tuple[Message, str]]:
    """(message, the exact dead-letter reason, or a prefix of it) for every violation."""
    oversized, oversized_reason = _oversized()
    head = b'{"combo":"Accel_CMP","hour":"' + hour_iso(4).encode() + b'",'
    return [
        ((b"Accel_CMP", b'{"combo": "Accel_CMP", "hour": '), MALFORMED),
        ((b"Accel_CMP", b"[1, 2, 3]"), "malformed JSON: found an array" + WANT),
        ((b"Accel_CMP", b"\xff\xfe\x00garbage"), "value is not valid UTF-8: byte 0xff at offset 0"),
        ((b"Accel_CMP", None), "empty message (no value): a tombstone" + WANT),
        (_json(b"Accel_CMP", hour=hour_iso(3), count=5), "missing field 'combo'" + WANT),
        (_json(b"Accel_CMP", combo=A, count=5), "missing field 'hour'" + WANT),
        (_json(b"Accel_CMP", combo=A, hour=hour_iso(3)), "missing field 'count'" + WANT),
        (_msg(count="abc"), 'count is not a number: found the string "abc"'),
        (_msg(count="503"), 'count is not a number: found the string "503"'),
        (_msg(combo=123), "combo is not a string: found the number 123; want a string"),
        (_msg(hour=12345), "hour is not a string: found the number 12345" + HOUR_WANT),
        (_msg(count=-5), "negative count: -5; want a non-negative integer"),
        (_msg(count=math.nan), "count is NaN: found the bare token NaN"),
        (_msg(count="NaN"), 'count is not a number: found the string "NaN"'),
        (_msg(count=12.5), "fractional count: 12.5; want a whole number"),
        (_msg(count=10**15), "count too large: 1000000000000000 > MAX_COUNT=1000000000"),
        (_msg(count=10**30), f"count too large: {10**30} > MAX_COUNT=1000000000"),
        (_msg(count=math.inf), "count too large: Infinity > MAX_COUNT=1000000000"),
        (_msg(combo="Nope"), 'unknown combo "Nope": no model for it under MODEL_PATH'),
        (_msg(combo=""), 'empty combo: found ""; want 1 to 200 printable characters'),
        (_msg(combo="   "), 'empty combo: found "   "; want 1 to 200 printable characters'),
        (_msg(key=b"Star_nopin"), 'message key "Star_nopin" does not match combo "Accel_CMP"'),
        (_msg(key=None), 'message key is missing: want the combo "Accel_CMP"'),
        (
            _msg(hour="2025-05-12T03:30:00Z"),
            'hour not aligned to the start of a 3600-second step: "2025-05-12T03:30:00Z"',
        ),
        (_msg(hour="yesterday"), 'hour is not an ISO 8601 timestamp: found "yesterday"'),
        (_msg(hour="2025-05-12T03:00:00"), 'hour has no time zone: found "2025-05-12T03:00:00"'),
        (_msg(hour="2025-05-12 03:00:00Z"), "hour is not an ISO 8601 timestamp"),
        (_msg(hour="2025-05-12"), "hour is not an ISO 8601 timestamp"),
        (_msg(hour="1990-01-01T00:00:00Z"), 'hour too far in the past: "1990-01-01T00:00:00Z"'),
        (_msg(hour="2100-01-01T00:00:00Z"), 'hour too far in the future: "2100-01-01T00:00:00Z"'),
        (good(A, 5), DUPLICATE),  # the same hour twice in one micro-batch, same count
        (oversized, oversized_reason),
        # issue 16, "What was seen" 2: lenient JSON must not corrupt real hours
        (
            (
                b"Accel_CMP",
                b"{'combo':'Accel_CMP','hour':'" + hour_iso(7).encode() + b"','count':5}",
            ),
            "malformed JSON at character 1: Expecting property name enclosed in double quotes",
        ),
        (
            (b"Accel_CMP", good(A, 8)[1] + b" trailing garbage"),
            "malformed JSON: trailing characters",
        ),
        ((b"Accel_CMP", good(A, 9)[1] + good(A, 10)[1]), "malformed JSON: a second JSON value"),
        (
            (b"Accel_CMP", head + b'"count":523,"count":-1}'),
            'malformed JSON: duplicate key "count"',
        ),
        (
            (b"Accel_CMP", head + b'"count":-1,"count":524}'),
            'malformed JSON: duplicate key "count"',
        ),
        (
            _msg(combo="Accel_CMP\x00", key=b"Accel_CMP\x00"),
            "combo contains a control or invisible",
        ),
        (_msg(combo="Accel\nINFO fake"), "combo contains a control or invisible character \\n"),
    ]


def _match_dead_letters(
    dead: list[dict[str, Any]], bad: list[tuple[Message, str]], topic: str
) -> None:
    """Each bad message ↔ exactly one dead letter with its raw value and its reason (exact,
    or starting with the expected text)."""
    left = [(_raw(value), reason) for (_, value), reason in bad]
    unexpected = []
    for d in dead:
        match = next(
            (w for w in left if w[0] == d.get("raw") and d["reason"].startswith(w[1])), None
        )
        if match is None:
            unexpected.append((d.get("raw"), d["reason"]))
        else:
            left.remove(match)
    assert not left and not unexpected, {"missing": left, "unexpected": unexpected}
    assert all(d["source_topic"] == topic for d in dead)
    assert all(isinstance(d["source_offset"], int) and d["failed_at"] for d in dead)
    for d in dead:  # bounded, traceable
        assert d["raw_sha256"] is None or len(d["raw_sha256"]) == 64
        assert "\n" not in d["reason"]


def test_every_bad_message_is_dead_lettered_with_its_reason_and_no_good_hour_is_lost(
    spark: Any, topics: KafkaSettings, tiny_models: Path, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "checkpoint"
    assert ModelRegistry(tiny_models, detector="fcvae").window() == WINDOW

    # Part 1: A hours 0..29 without 15 (a 1-hour gap, bridged), S hours 0..29 with 10 and
    # 11 swapped (out of order inside a batch: harmless), every bad kind in between.
    valid = [good(A, i) for i in range(30) if i != 15]
    valid += [good(S, i) for i in (*range(10), 11, 10, *range(12, 30))]
    bad1 = _bad_cases_part1()
    stream: list[Message] = []
    for i, message in enumerate(valid):
        stream.append(message)
        if i % 2 == 1 and i // 2 < len(bad1):
            stream.append(bad1[i // 2][0])
    stream.extend(message for message, _ in bad1[len(valid) // 2 :])
    assert len(stream) == len(valid) + len(bad1)
    send(topics, topics.kafka_input_topic, stream)
    run_job_available_now(spark, topics, tiny_models, checkpoint)

    # Part 2, after the state accepted A 0..29: the newest hour again (same and another
    # count: duplicate), an older hour and the hole at 15 (late), a gap of MAX_GAP + 2
    # hours (A resumes at RESUME: missing 30..RESUME-1, window reset, warming up again for
    # WINDOW - 1 hours).
    bad2 = [
        (good(A, 29), DUPLICATE),
        (good(A, 29, count=999_999), DUPLICATE),
        (good(A, 10), LATE),
        (good(A, 15), LATE),
        ((b"Star_nopin", b"{not json"), MALFORMED),
    ]
    valid2 = [good(A, i) for i in range(RESUME, END)] + [good(S, i) for i in range(30, 36)]
    send(topics, topics.kafka_input_topic, [m for m, _ in bad2[:4]] + valid2 + [bad2[4][0]])
    run_job_available_now(spark, topics, tiny_models, checkpoint)

    # Scored topic: every good hour (and every hour of a gap) exactly once, right status.
    records = read_all(topics, topics.kafka_scored_topic)
    keys = Counter((r["combo"], r["hour"]) for r in records)
    assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1]

    def status_a(i: int) -> str:
        if i == 15 or 30 <= i < RESUME:
            return "missing"
        if i < WINDOW - 1 or RESUME <= i < RESUME + WINDOW - 1:
            return "warming_up"
        return "scored"

    expected = {(A, hour_iso(i)): status_a(i) for i in range(END)}
    expected |= {(S, hour_iso(i)): "warming_up" if i < 23 else "scored" for i in range(36)}
    assert {(r["combo"], r["hour"]): r["status"] for r in records} == expected
    by_key = {(r["combo"], r["hour"]): r for r in records}
    for (combo, hour), record in by_key.items():
        if record["status"] != "missing":
            i = next(i for i in range(END) if hour_iso(i) == hour)
            assert record["count"] == count_at(combo, i), (combo, hour)  # first copy won
        if record["status"] == "scored":
            assert record["score"] is not None and record["threshold"] is not None

    # Dead-letter topic: each bad message once, with its raw value and its exact reason.
    dead = read_all(topics, topics.kafka_deadletter_topic)
    _match_dead_letters(dead, bad1 + bad2, topics.kafka_input_topic)


# -- property: random bad messages interleaved with a valid stream -----------------------------

HOURS = 26  # per combo: 23 warming up, 3 scored
_KNOWN = (A, S)


def _with(combo: str = A, hour: str | None = None, count: Any = 100, **extra: Any) -> bytes:
    fields = {"combo": combo, "hour": hour or hour_iso(3), "count": count, **extra}
    return json.dumps(fields).encode()


_bad_value = st.one_of(
    # not JSON at all / not an object / cut short
    st.text(max_size=30).filter(lambda t: not t.lstrip().startswith("{")).map(str.encode),
    st.integers(1, 40).map(lambda n: _with()[:n]),
    # not UTF-8
    st.binary(max_size=20).map(lambda b: b"\xff" + b),
    # a field missing
    st.sampled_from(["combo", "hour", "count"]).map(
        lambda f: json.dumps({k: v for k, v in json.loads(_with()).items() if k != f}).encode()
    ),
    # wrong types and values
    st.text(max_size=10).map(lambda t: _with(count=t)),
    st.integers(-(10**6), -1).map(lambda c: _with(count=c)),
    st.floats(allow_nan=False, allow_infinity=False, min_value=0.01, max_value=1e6)
    .filter(lambda c: c != int(c))
    .map(lambda c: _with(count=c)),
    st.integers(10**9 + 1, 10**40).map(lambda c: _with(count=c)),
    st.sampled_from([math.nan, math.inf, -math.inf]).map(lambda c: _with(count=c)),
    st.integers().map(lambda c: _with(combo=c)),  # type: ignore[arg-type]
    st.text(max_size=12).filter(lambda c: c not in _KNOWN).map(lambda c: _with(combo=c)),
    # bad hours
    st.tuples(st.integers(0, HOURS - 1), st.integers(1, 3599)).map(
        lambda t: _with(hour=hour_iso(t[0])[:-6] + f"{t[1] // 60:02d}:{t[1] % 60:02d}Z")
    ),
    st.integers(1971, 1999).map(lambda y: _with(hour=f"{y}-06-01T00:00:00Z")),
    st.integers(2101, 9999).map(lambda y: _with(hour=f"{y}-06-01T00:00:00Z")),
    # oversized
    st.integers(10_001, 30_000).map(lambda n: _with(padding="x" * n)),
)
# A repeat of a valid hour (another count or the same): the second copy is a duplicate.
_duplicate = st.tuples(
    st.sampled_from(_KNOWN), st.integers(0, HOURS - 1), st.one_of(st.none(), st.integers(0, 9))
).map(lambda t: good(t[0], t[1], count=t[2]))
_bad_message = st.one_of(
    _duplicate, _bad_value.map(lambda v: (b"Accel_CMP", v)), _bad_value.map(lambda v: (None, v))
)


@settings(
    max_examples=5,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: ~5 s per example
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(bad=st.lists(st.tuples(_bad_message, st.integers(0, 2 * HOURS)), min_size=1, max_size=12))
def test_property_dead_letters_equal_bad_messages_and_good_hours_scored_once(
    spark: Any,
    kafka_settings: KafkaSettings,
    tiny_models: Path,
    tmp_path_factory: pytest.TempPathFactory,
    bad: list[tuple[Message, int]],
) -> None:
    topics = fresh_topics(kafka_settings, partitions=2)
    valid = [good(combo, i) for i in range(HOURS) for combo in _KNOWN]
    stream = list(valid)
    # Insert from the back so earlier positions stay valid; a duplicate lands after its
    # original only by chance, which does not matter: one of the two copies is rejected.
    for message, position in sorted(bad, key=lambda b: -b[1]):
        stream.insert(position, message)
    send(topics, topics.kafka_input_topic, stream)
    run_job_available_now(spark, topics, tiny_models, tmp_path_factory.mktemp("ckpt"))

    records = read_all(topics, topics.kafka_scored_topic)
    dead = read_all(topics, topics.kafka_deadletter_topic)
    assert len(dead) == len(bad), sorted(d["reason"] for d in dead)
    keys = Counter((r["combo"], r["hour"]) for r in records)
    assert keys == Counter((c, hour_iso(i)) for i in range(HOURS) for c in _KNOWN)
    statuses = Counter(r["status"] for r in records)
    assert statuses == {"warming_up": 2 * (WINDOW - 1), "scored": 2 * (HOURS - WINDOW + 1)}


def test_poison_pills_near_the_size_limit_cannot_stop_the_job(
    spark: Any, topics: KafkaSettings, tiny_models: Path, tmp_path: Path
) -> None:
    """Messages under the broker's 1 MiB limit whose dead letters would not be: 360 KB of
    emoji (12 bytes each once JSON-escaped), 800 KB of non-UTF-8 bytes (a third more in
    base64), deep nesting. Each used to fail the Kafka sink with RecordTooLargeException on
    every restart; now each is one bounded dead letter, and a restart is clean."""
    import hashlib

    from app.config import StreamSettings

    emoji = json.dumps(
        {"combo": A, "hour": hour_iso(5), "count": 1, "produced_at": "😀" * 90_000},
        ensure_ascii=False,
    ).encode()
    pills = [(A.encode(), emoji), (A.encode(), b"\xff" * 800_000), (A.encode(), b"[" * 200_000)]
    assert all(len(value) < 1_000_000 for _, value in pills)
    valid = [good(A, i) for i in range(12)]
    send(topics, topics.kafka_input_topic, [*valid[:4], *pills, *valid[4:]])
    checkpoint = tmp_path / "checkpoint"
    run_job_available_now(spark, topics, tiny_models, checkpoint)

    scored = read_all(topics, topics.kafka_scored_topic)
    assert sorted(r["hour"] for r in scored) == sorted(hour_iso(i) for i in range(12))
    dead = read_all(topics, topics.kafka_deadletter_topic)
    assert len(dead) == len(pills)
    bound = StreamSettings().deadletter_max_raw_bytes
    by_digest = {d["raw_sha256"]: d for d in dead}
    for _, value in pills:
        letter = by_digest[hashlib.sha256(value).hexdigest()]
        assert letter["raw_bytes"] == len(value) and letter["raw_truncated"] is True
        assert len(json.dumps(letter).encode()) <= bound + 4096
        assert letter["reason"]

    # A restart on the same checkpoint finds nothing left to do and writes nothing again.
    run_job_available_now(spark, topics, tiny_models, checkpoint)
    assert len(read_all(topics, topics.kafka_scored_topic)) == len(scored)
    assert len(read_all(topics, topics.kafka_deadletter_topic)) == len(dead)


def test_one_far_future_hour_costs_only_itself(
    spark: Any, topics: KafkaSettings, tiny_models: Path, tmp_path: Path
) -> None:
    """An hour far ahead of its combo (inside MAX_FUTURE_HOURS of the clock) used to move
    the window there: made-up missing hours, a reset, and the real hours after it dead-
    lettered as late. Now it is held; the combo's next real hour refutes it."""
    from app.config import StreamSettings

    ahead = StreamSettings().max_ahead_steps
    checkpoint = tmp_path / "checkpoint"
    send(topics, topics.kafka_input_topic, [*(good(A, i) for i in range(10)), good(A, 40)])
    run_job_available_now(spark, topics, tiny_models, checkpoint)
    assert 9 + ahead < 40
    send(topics, topics.kafka_input_topic, [good(A, i) for i in range(10, 20)])
    run_job_available_now(spark, topics, tiny_models, checkpoint)

    scored = read_all(topics, topics.kafka_scored_topic)
    assert sorted(r["hour"] for r in scored) == sorted(hour_iso(i) for i in range(20))
    assert {r["status"] for r in scored} <= {"warming_up", "scored"}  # no made-up gap
    dead = read_all(topics, topics.kafka_deadletter_topic)
    assert len(dead) == 1 and dead[0]["reason"].startswith("too far ahead of this combo")
