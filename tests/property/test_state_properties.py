"""Properties of the stream's window state rule (``app.streaming.state.advance``)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from app.streaming.state import ComboWindowState, StepCount, advance

steps = st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=40)


def _feed(order: list[int], window: int = 4, max_gap: int = 3):
    rows = [StepCount("A", s, float(s * 10 + 1)) for s in order]
    return advance(
        ComboWindowState("A"), rows, window=window, max_gap_steps=max_gap, max_ahead_steps=None
    )


@given(steps, st.randoms(use_true_random=False))
@settings(max_examples=200, deadline=None)
def test_any_order_inside_a_batch_gives_the_same_result(order: list[int], rnd) -> None:
    shuffled = list(order)
    rnd.shuffle(shuffled)
    state_a, out_a = _feed(sorted(order))
    state_b, out_b = _feed(shuffled)
    assert state_a.to_row() == state_b.to_row()
    key = lambda e: (e.step, e.status, e.count, e.window)  # noqa: E731
    assert sorted(map(key, out_a), key=repr) == sorted(map(key, out_b), key=repr)


@given(steps)
@settings(max_examples=200, deadline=None)
def test_duplicates_never_change_state(order: list[int]) -> None:
    state, _ = _feed(sorted(set(order)))
    state_dup, out = _feed(sorted(order) + sorted(order))
    assert state.to_row() == state_dup.to_row()
    n_dups = len(order) * 2 - len(set(order))
    assert sum(e.status == "duplicate" for e in out) == n_dups


@given(steps, st.integers(min_value=1, max_value=5))
@settings(max_examples=200, deadline=None)
def test_split_into_batches_equals_one_batch(order: list[int], cut: int) -> None:
    ordered = sorted(set(order))
    whole_state, whole_out = _feed(ordered)
    state, out1 = _feed(ordered[:cut])
    rows = [StepCount("A", s, float(s * 10 + 1)) for s in ordered[cut:]]
    state, out2 = advance(state, rows, window=4, max_gap_steps=3, max_ahead_steps=None)
    assert state.to_row() == whole_state.to_row()
    assert [(e.step, e.status) for e in out1 + out2] == [(e.step, e.status) for e in whole_out]


@given(steps)
@settings(max_examples=200, deadline=None)
def test_every_hour_between_first_and_last_is_reported_once(order: list[int]) -> None:
    _, out = _feed(sorted(set(order)), max_gap=100)
    reported = [e.step for e in out if e.status != "duplicate"]
    assert reported == list(range(min(order), max(order) + 1))


def test_ready_windows_hold_nan_for_missing_hours_and_gaps_reset() -> None:
    rows = [StepCount("A", s, 1.0) for s in (0, 1, 2, 4, 5)]
    state, out = advance(
        ComboWindowState("A"), rows, window=4, max_gap_steps=1, max_ahead_steps=None
    )
    ready = [e for e in out if e.status == "ready"]
    assert [e.step for e in ready] == [4, 5]
    assert math.isnan(ready[0].window[2])  # step 3 is missing
    assert [e.status for e in out if e.step == 3] == ["missing"]
    # A gap longer than max_gap resets: the next hours warm up again.
    state, out = advance(
        state, [StepCount("A", 9, 1.0)], window=4, max_gap_steps=1, max_ahead_steps=None
    )
    assert [e.status for e in out] == ["missing"] * 3 + ["warming_up"]
    assert state.values == (1.0,)


def test_late_rows_are_reported_and_ignored() -> None:
    state, _ = _feed([0, 1, 2, 3, 4])
    new, out = advance(
        state, [StepCount("A", 1, 99.0, ref=7)], window=4, max_gap_steps=3, max_ahead_steps=None
    )
    assert new == state
    assert [(e.status, e.ref) for e in out] == [("late", 7)]


def test_state_row_round_trip() -> None:
    state, _ = _feed([0, 1, 3, 4, 5])
    assert ComboWindowState.from_row(state.to_row()).to_row() == state.to_row()
    assert ComboWindowState.from_row(ComboWindowState("B").to_row()) == ComboWindowState("B")


# -- the future-hour rule (MAX_AHEAD_STEPS) ---------------------------------------------------


@given(steps, st.integers(min_value=1, max_value=4))
@settings(max_examples=200, deadline=None)
def test_time_ordered_data_loses_no_hour_under_the_ahead_rule(order: list[int], ahead: int) -> None:
    ordered = sorted(set(order))
    rows = [StepCount("A", s, 1.0) for s in ordered]
    state, out = advance(
        ComboWindowState("A"), rows, window=4, max_gap_steps=100, max_ahead_steps=ahead
    )
    assert not [e for e in out if e.status == "ahead"]
    applied = [e.step for e in out if e.status in ("ready", "warming_up")]
    held = [] if state.held is None else [state.held.step]
    assert applied + held == ordered  # at most the newest step waits for the next one
    assert not held or held[0] - ordered[-2] > ahead


@given(steps, st.integers(min_value=1, max_value=5), st.integers(min_value=1, max_value=4))
@settings(max_examples=200, deadline=None)
def test_ahead_rule_split_into_batches_equals_one_batch(
    order: list[int], cut: int, ahead: int
) -> None:
    ordered = sorted(set(order))
    feed = [StepCount("A", s, float(s)) for s in ordered]
    kw = {"window": 4, "max_gap_steps": 3, "max_ahead_steps": ahead}
    whole, whole_out = advance(ComboWindowState("A"), feed, **kw)
    state, out1 = advance(ComboWindowState("A"), feed[:cut], **kw)
    state = ComboWindowState.from_row(state.to_row())  # through Spark's state row
    state, out2 = advance(state, feed[cut:], **kw)
    assert state.to_row() == whole.to_row()
    assert [(e.step, e.status) for e in out1 + out2] == [(e.step, e.status) for e in whole_out]


@given(
    st.integers(min_value=5, max_value=30),
    st.integers(min_value=4, max_value=500),
    st.integers(min_value=1, max_value=10),
)
@settings(max_examples=200, deadline=None)
def test_one_bad_future_hour_costs_only_itself(start: int, jump: int, more: int) -> None:
    """A combo at ``start``; one message ``jump`` steps ahead (> MAX_AHEAD_STEPS=3); then the
    real hours go on.  Only the bad one is rejected (``ahead``), every real one applies."""
    kw = {"window": 4, "max_gap_steps": 24, "max_ahead_steps": 3}
    state, _ = advance(
        ComboWindowState("A"), [StepCount("A", s, 1.0) for s in range(start + 1)], **kw
    )
    state, out = advance(state, [StepCount("A", start + jump, 9.0, ref=99)], **kw)
    assert out == [] and state.held is not None  # held, the window untouched
    state = ComboWindowState.from_row(state.to_row())
    real = [StepCount("A", start + k, 1.0) for k in range(1, more + 1)]
    state, out = advance(state, real[:1], **kw)
    state, out2 = advance(state, real[1:], **kw)
    assert [(e.step, e.status) for e in out if e.status == "ahead"] == [(start + jump, "ahead")]
    assert out[0].reason.startswith("too far ahead of this combo: ")
    assert [e.step for e in out + out2 if e.status != "ahead"] == [r.step for r in real]
    assert state.last_step == real[-1].step and state.held is None


def test_a_real_outage_is_confirmed_by_the_next_hour() -> None:
    kw = {"window": 4, "max_gap_steps": 24, "max_ahead_steps": 3}
    state, _ = advance(ComboWindowState("A"), [StepCount("A", s, 1.0) for s in range(6)], **kw)
    state, out = advance(state, [StepCount("A", 12, 2.0)], **kw)  # 6 steps after 5: held
    assert out == []
    state, out = advance(state, [StepCount("A", 13, 3.0)], **kw)
    assert [(e.step, e.status) for e in out] == [(s, "missing") for s in range(6, 12)] + [
        (12, "ready"),
        (13, "ready"),
    ]
    assert state.held is None and state.last_step == 13
