"""Properties of the stream's window state rule (``app.streaming.state.advance``)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from app.streaming.state import ComboWindowState, StepCount, advance

steps = st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=40)


def _feed(order: list[int], window: int = 4, max_gap: int = 3):
    rows = [StepCount("A", s, float(s * 10 + 1)) for s in order]
    return advance(ComboWindowState("A"), rows, window=window, max_gap_steps=max_gap)


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
    state, out2 = advance(state, rows, window=4, max_gap_steps=3)
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
    state, out = advance(ComboWindowState("A"), rows, window=4, max_gap_steps=1)
    ready = [e for e in out if e.status == "ready"]
    assert [e.step for e in ready] == [4, 5]
    assert math.isnan(ready[0].window[2])  # step 3 is missing
    assert [e.status for e in out if e.step == 3] == ["missing"]
    # A gap longer than max_gap resets: the next hours warm up again.
    state, out = advance(state, [StepCount("A", 9, 1.0)], window=4, max_gap_steps=1)
    assert [e.status for e in out] == ["missing"] * 3 + ["warming_up"]
    assert state.values == (1.0,)


def test_late_rows_are_reported_and_ignored() -> None:
    state, _ = _feed([0, 1, 2, 3, 4])
    new, out = advance(state, [StepCount("A", 1, 99.0, ref=7)], window=4, max_gap_steps=3)
    assert new == state
    assert [(e.status, e.ref) for e in out] == [("late", 7)]


def test_state_row_round_trip() -> None:
    state, _ = _feed([0, 1, 3, 4, 5])
    assert ComboWindowState.from_row(state.to_row()).to_row() == state.to_row()
    assert ComboWindowState.from_row(ComboWindowState("B").to_row()) == ComboWindowState("B")
