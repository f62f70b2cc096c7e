"""Wiring only: ``dcc.Interval`` ticks and the combo selector → store snapshot → builders.

Callbacks never touch Kafka: they read the in-memory store (a copy of one combo's history
at most) and skip re-rendering the graphs when that combo's history has not changed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd
from dash import ALL, Dash, Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from app.dashboard import layout, queries
from app.dashboard.settings import DashboardSettings
from app.dashboard.store import ScoredStore

log = logging.getLogger(__name__)


def format_age(seconds: float | None) -> str | None:
    """A short human age: ``'4 s ago'``, ``'3 min ago'``, ``'2.5 h ago'``; None when unknown.

    Examples
    --------
    >>> format_age(4.2), format_age(190), format_age(9000), format_age(None)
    ('4 s ago', '3 min ago', '2.5 h ago', None)
    """
    if seconds is None:
        return None
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86_400:.1f} d ago"


def header_summary(store: ScoredStore) -> dict[str, Any]:
    """Display values of the header counters, from the store alone."""
    counters = store.counters()
    fresh = store.freshness()
    now = store.now()
    kafka = store.kafka_state()
    heartbeat = store.heartbeat() or {}
    last = fresh["last_message_at"]
    job = heartbeat.get("state")
    if job and fresh["last_heartbeat_at"] is not None:
        job = f"{job} · {format_age(now - fresh['last_heartbeat_at'])}"
    return {
        "messages_received": f"{counters['messages_received']:,}",
        "scored": f"{counters['scored']:,}",
        "flagged": f"{counters['flagged']:,}",
        "lag": "offline"
        if not kafka.connected
        else (None if kafka.lag is None else f"{kafka.lag:,}"),
        "last_message_age": format_age(None if last is None else now - last),
        "job": job or "no heartbeat",
    }


def pipeline_summary(
    store: ScoredStore, settings: DashboardSettings, truth: pd.DataFrame | None
) -> list[tuple[str, str]]:
    """Facts for the page's "Pipeline" panel (Kafka, job heartbeat, models, memory)."""
    now = store.now()
    kafka = store.kafka_state()
    heartbeat = store.heartbeat() or {}
    fresh = store.freshness()
    counters = store.counters()
    if kafka.connected:
        link = f"connected · {kafka.partitions} partition(s)"
    else:
        link = "offline" + (f" ({kafka.last_error})" if kafka.last_error else "")
    if heartbeat:
        age = format_age(
            None if fresh["last_heartbeat_at"] is None else now - fresh["last_heartbeat_at"]
        )
        job = f"{heartbeat.get('state', '?')} · batch {heartbeat.get('batch_id', '–')} · {age}"
    else:
        job = "no heartbeat yet"
    models, _ = queries.find_models(settings.model_path)
    model_text = " · ".join(f"{family} {len(combos)}" for family, combos in models.items())
    return [
        ("Kafka", f"{kafka.bootstrap_servers or '?'} — {link}"),
        ("Topics", f"{kafka.scored_topic or '?'} (scored) · {kafka.status_topic or '?'} (status)"),
        ("Streaming job", job),
        ("Models", f"{model_text} (combos with meta.json)"),
        (
            "Memory",
            f"{counters['hours']:,} hours kept (≤ {store.history_hours:,} per combo) · "
            f"duplicates replaced: {counters['duplicates']:,}",
        ),
        ("Ground truth", "overlaid from dataset file" if truth is not None else "off"),
    ]


def register_callbacks(
    app: Dash, store: ScoredStore, settings: DashboardSettings, truth: pd.DataFrame | None
) -> None:
    """Attach the page's callbacks to ``app``."""
    _register_overview(app, store, settings, truth)
    _register_row_clicks(app)
    _register_combo_view(app, store, truth)


def overview_rows(store: ScoredStore) -> list[dict[str, Any]]:
    """Rows of the all-combos table: each combo's latest hour, its time written short."""
    table = queries.overview(store.latest(24))
    rows = queries.table_rows(table, list(queries.OVERVIEW_COLUMNS))
    for row, latest in zip(rows, table["latest_hour"], strict=True):
        row["latest_hour"] = f"{latest:%b %d %H:%M}"  # short: the panel is narrow
    return rows


def combo_caption(frame: pd.DataFrame) -> str:
    """``"48 hours · 2025-03-01 00:00 → 2025-03-02 23:00 UTC · 2 flagged"``; empty without hours.

    Parameters
    ----------
    frame
        One combo's hours (``queries.combo_frame``).

    Returns
    -------
    str
        The caption beside the combo selector.
    """
    if frame.empty:
        return ""
    first, last = frame["hour"].iloc[0], frame["hour"].iloc[-1]
    return (
        f"{len(frame):,} hours · {first:%Y-%m-%d %H:%M} → {last:%Y-%m-%d %H:%M} UTC · "
        f"{int(frame['is_anomaly'].sum())} flagged"
    )


def _register_overview(
    app: Dash, store: ScoredStore, settings: DashboardSettings, truth: pd.DataFrame | None
) -> None:
    """On every tick: the header counters, the pipeline facts, the all-combos table and the
    selector's options (and its first value, once a combo is known)."""

    @app.callback(
        Output("counters", "children"),
        Output("pipeline-info", "children"),
        Output("overview-table", "children"),
        Output("overview-key", "data"),
        Output("combo-select", "options"),
        Output("combo-select", "value"),
        Input("refresh", "n_intervals"),
        Input("combo-select", "value"),
        State("overview-key", "data"),
    )
    def refresh_overview(_n: int, selected: str | None, shown: str | None) -> tuple[Any, ...]:
        combos = store.combos()
        options = layout.combo_options(combos, settings.combo)
        value: Any = no_update
        if selected is None:  # the page opened before any combo was known
            selected = queries.default_combo(combos, settings.combo)
            value = selected or no_update
        key = f"{store.version()}|{selected}"
        overview: Any = no_update  # re-rendering unchanged rows would only churn the DOM
        if key != shown:
            overview = layout.overview_table(overview_rows(store), selected)
        return (
            layout.counter_cards(header_summary(store)),
            layout.pipeline_table(pipeline_summary(store, settings, truth)),
            overview,
            key,
            options,
            value,
        )


def _register_row_clicks(app: Dash) -> None:
    """A click on a row of the all-combos table selects its combo."""

    @app.callback(
        Output("combo-select", "value", allow_duplicate=True),
        Input({"type": "overview-row", "combo": ALL}, "n_clicks"),
        prevent_initial_call=True,
    )
    def open_clicked_combo(clicks: list[int | None]) -> str:
        trigger = ctx.triggered_id
        if not isinstance(trigger, Mapping) or not any(t.get("value") for t in ctx.triggered):
            raise PreventUpdate  # rows re-rendered, nobody clicked
        return str(trigger["combo"])


def _register_combo_view(app: Dash, store: ScoredStore, truth: pd.DataFrame | None) -> None:
    """The selected combo's graphs, tables and caption, redrawn only when its history
    changed."""

    @app.callback(
        Output("series-graph", "figure"),
        Output("score-graph", "figure"),
        Output("recent-table", "children"),
        Output("flagged-table", "children"),
        Output("combo-caption", "children"),
        Output("rendered-key", "data"),
        Input("refresh", "n_intervals"),
        Input("combo-select", "value"),
        State("rendered-key", "data"),
    )
    def render_combo(_n: int, combo: str | None, rendered: str | None) -> tuple[Any, ...]:
        if not combo:
            raise PreventUpdate
        key = f"{combo}@{store.version(combo)}"
        if key == rendered:
            raise PreventUpdate  # nothing new for this combo: keep the figures as they are
        frame = queries.combo_frame(store.records(combo))
        marks = None if truth is None else queries.ground_truth_for(truth, combo, frame)
        columns = list(queries.HOUR_COLUMNS)
        return (
            layout.series_figure(frame, combo, marks),
            layout.score_figure(frame, combo),
            layout.hours_table(
                queries.table_rows(queries.recent_hours(frame, 48), columns), "no hours yet"
            ),
            layout.hours_table(
                queries.table_rows(queries.flagged_hours(frame, 200), columns), "no flagged hours"
            ),
            combo_caption(frame),
            key,
        )
