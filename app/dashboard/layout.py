"""Component and figure builders: plain functions from values to Dash components/figures.

No callbacks and no Kafka here; ``callbacks`` wires these to the store, ``queries`` computes
the frames they draw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.io as pio
from dash import dcc, html

from app.dashboard.queries import HOUR_COLUMNS, OVERVIEW_COLUMNS

#: One palette for every view, so a colour means the same thing everywhere.
COLORS = {
    "count": "#1d4ed8",
    "expected": "#64748b",
    "band": "rgba(59, 130, 246, 0.16)",
    "flagged": "#dc2626",
    "truth": "#7c3aed",
    "score": "#0f766e",
    "threshold": "#b45309",
    "ink": "#0f172a",
    "muted": "#64748b",
    "panel": "#ffffff",
    "page": "#f1f5f9",
    "border": "#e2e8f0",
    "flag_bg": "#fee2e2",
}
FONT = "Inter, 'Segoe UI', system-ui, -apple-system, sans-serif"
TRUTH_NAME = "ground truth (from dataset file)"

#: The "plotly_white" template, resolved once (a dict figure must carry it explicitly).
TEMPLATE = pio.templates["plotly_white"].to_plotly_json()

_PANEL = {
    "background": COLORS["panel"],
    "border": f"1px solid {COLORS['border']}",
    "borderRadius": "10px",
    "padding": "14px 16px",
    "boxShadow": "0 1px 2px rgba(15, 23, 42, 0.05)",
}
_TITLE = {"margin": "0 0 8px 0", "fontSize": "15px", "fontWeight": 600, "color": COLORS["ink"]}

_COLUMN_NAMES = {
    "combo": "combo",
    "latest_hour": "latest (UTC)",
    "hour": "hour (UTC)",
    "status": "status",
    "count": "count",
    "expected": "expected",
    "expected_low": "low",
    "expected_high": "high",
    "score": "score",
    "threshold": "threshold",
    "is_anomaly": "flagged",
    "direction": "direction",
    "flags_24h": "flags 24h",
    "false_alarms_per_day": "false alarms/day (expected)",
}

#: Header counters: (key in the summary, label).
COUNTERS = (
    ("messages_received", "received"),
    ("scored", "scored hours"),
    ("flagged", "flagged hours"),
    ("lag", "consumer lag"),
    ("last_message_age", "last message"),
    ("job", "streaming job"),
)


# -- page --------------------------------------------------------------------------------------


def build_layout(
    *,
    combos: Sequence[str],
    selected: str | None,
    refresh_ms: int,
    subtitle: str,
    summary: Mapping[str, Any],
    pipeline: Sequence[tuple[str, str]] = (),
) -> html.Div:
    """The whole page; built on every page load so the selector starts on ``selected``."""
    return html.Div(
        style={
            "fontFamily": FONT,
            "background": COLORS["page"],
            "minHeight": "100vh",
            "padding": "18px 24px 28px",
            "color": COLORS["ink"],
            "boxSizing": "border-box",
        },
        children=[
            _page_header(subtitle),
            html.Div(
                counter_cards(summary),
                id="counters",
                style={"display": "flex", "gap": "12px", "margin": "14px 0", "flexWrap": "wrap"},
            ),
            html.Div(
                style={"display": "flex", "gap": "16px", "alignItems": "stretch"},
                children=[
                    _overview_panel(selected, pipeline),
                    _combo_panel(combo_options(combos, selected), selected),
                ],
            ),
            html.Div(
                style={"display": "flex", "gap": "16px", "marginTop": "16px"},
                children=[
                    _hours_panel("Recent hours", "no hours yet", "recent-table"),
                    _hours_panel("Flagged hours", "no flagged hours", "flagged-table"),
                ],
            ),
            _page_footer(),
            dcc.Interval(id="refresh", interval=refresh_ms, n_intervals=0),
            dcc.Store(id="rendered-key"),
            dcc.Store(id="overview-key"),
        ],
    )


def combo_options(combos: Sequence[str], selected: str | None) -> list[dict[str, str]]:
    """The combo selector's options: every combo and ``selected``, sorted, each once.

    Parameters
    ----------
    combos
        The combos known so far.
    selected
        The combo the page opens on (listed even when no hour of it was seen yet).

    Returns
    -------
    list of dict
        ``{"label": combo, "value": combo}`` per combo.

    Examples
    --------
    >>> combo_options(["b", "a"], "c")
    [{'label': 'a', 'value': 'a'}, {'label': 'b', 'value': 'b'}, {'label': 'c', 'value': 'c'}]
    """
    return [{"label": c, "value": c} for c in sorted({*combos, *([selected] if selected else [])})]


def _page_header(subtitle: str) -> html.Div:
    """The page title with ``subtitle`` beside it."""
    return html.Div(
        style={"display": "flex", "alignItems": "baseline", "gap": "14px"},
        children=[
            html.H1(
                "Transaction volume anomalies",
                style={"fontSize": "22px", "margin": "0", "fontWeight": 700},
            ),
            html.Span(subtitle, style={"color": COLORS["muted"], "fontSize": "13px"}),
        ],
    )


def _overview_panel(selected: str | None, pipeline: Sequence[tuple[str, str]]) -> html.Div:
    """The left panel: the (empty until refreshed) all-combos table and the pipeline facts."""
    return html.Div(
        style={**_PANEL, "flex": "0 0 460px", "minWidth": "0"},
        children=[
            html.H3("All combos", style=_TITLE),
            html.P(
                "Latest hour of each combo; flags counted over its last 24 hours "
                "of data. Click a row to open it.",
                style={
                    "fontSize": "12px",
                    "color": COLORS["muted"],
                    "margin": "0 0 8px",
                },
            ),
            html.Div(
                overview_table([], selected),
                id="overview-table",
                style={"overflowX": "auto"},
            ),
            html.H3("Pipeline", style={**_TITLE, "marginTop": "20px"}),
            html.Div(pipeline_table(pipeline), id="pipeline-info"),
        ],
    )


def _combo_panel(options: list[dict[str, str]], selected: str | None) -> html.Div:
    """The right panel: the combo selector and its (empty until refreshed) two graphs."""
    return html.Div(
        style={**_PANEL, "flex": "1 1 auto", "minWidth": "0"},
        children=[
            html.Div(
                style={"display": "flex", "alignItems": "center", "gap": "10px"},
                children=[
                    html.Label(
                        "Combo",
                        htmlFor="combo-select",
                        style={"fontWeight": 600, "fontSize": "14px"},
                    ),
                    html.Div(
                        dcc.Dropdown(
                            id="combo-select",
                            options=options,
                            value=selected,
                            clearable=False,
                            placeholder="waiting for scored hours…",
                        ),
                        style={"width": "280px"},
                    ),
                    html.Span(
                        id="combo-caption",
                        style={"fontSize": "12px", "color": COLORS["muted"]},
                    ),
                ],
            ),
            dcc.Graph(
                id="series-graph",
                figure=empty_figure("waiting for scored hours…", 400),
                config={"displaylogo": False},
                style={"height": "400px"},
            ),
            dcc.Graph(
                id="score-graph",
                figure=empty_figure("", 230),
                config={"displaylogo": False},
                style={"height": "230px"},
            ),
        ],
    )


def _hours_panel(title: str, empty: str, table_id: str) -> html.Div:
    """A half-width panel titled ``title`` holding an (empty until refreshed) hours table."""
    return html.Div(
        style={**_PANEL, "flex": "1 1 50%", "minWidth": "0"},
        children=[
            html.H3(title, style=_TITLE),
            html.Div(hours_table([], empty), id=table_id, style=_SCROLL),
        ],
    )


def _page_footer() -> html.Div:
    """How to read the page, and the link to ``/health``."""
    return html.Div(
        [
            "Times are UTC. Scores are calibrated: higher = more anomalous; an hour is "
            "flagged when its score exceeds the threshold. ",
            html.A("/health", href="/health", style={"color": COLORS["count"]}),
        ],
        style={"fontSize": "12px", "color": COLORS["muted"], "marginTop": "12px"},
    )


def counter_cards(summary: Mapping[str, Any]) -> list[html.Div]:
    """The header counters (``summary`` holds display-ready values keyed as in ``COUNTERS``)."""
    cards = []
    for key, label in COUNTERS:
        value = summary.get(key)
        cards.append(
            html.Div(
                style={**_PANEL, "padding": "8px 14px", "minWidth": "120px"},
                children=[
                    html.Div(
                        label,
                        style={
                            "fontSize": "11px",
                            "color": COLORS["muted"],
                            "textTransform": "uppercase",
                            "letterSpacing": "0.04em",
                        },
                    ),
                    html.Div(
                        "–" if value is None else str(value),
                        id=f"counter-{key.replace('_', '-')}",
                        style={
                            "fontSize": "20px",
                            "fontWeight": 650,
                            "color": COLORS["flagged"]
                            if key == "flagged" and value not in (None, "0")
                            else COLORS["ink"],
                        },
                    ),
                ],
            )
        )
    return cards


def pipeline_table(items: Sequence[tuple[str, str]]) -> html.Table:
    """Two-column facts about the pipeline (Kafka, job, models, settings)."""
    cell = {"padding": "3px 8px 3px 0", "fontSize": "12px", "verticalAlign": "top"}
    return html.Table(
        html.Tbody(
            [
                html.Tr(
                    [
                        html.Td(
                            label, style={**cell, "color": COLORS["muted"], "whiteSpace": "nowrap"}
                        ),
                        html.Td(value, style={**cell, "wordBreak": "break-word"}),
                    ]
                )
                for label, value in items
            ]
        ),
        style={"borderCollapse": "collapse", "width": "100%"},
    )


_LEFT_COLUMNS = ("combo", "hour", "latest_hour", "status", "direction")
_CELL = {
    "padding": "4px 6px",
    "fontSize": "12px",
    "borderBottom": f"1px solid {COLORS['border']}",
    "whiteSpace": "nowrap",
}
_HEAD = {
    **_CELL,
    "fontWeight": 600,
    "color": COLORS["muted"],
    "background": "#f8fafc",
    "borderBottom": f"2px solid {COLORS['border']}",
    "position": "sticky",
    "top": "0",
}
_STATUS_STYLE: dict[str, dict[str, str]] = {
    "warming_up": {"color": COLORS["muted"]},
    "missing": {"color": COLORS["muted"], "fontStyle": "italic"},
    "error": {"color": COLORS["threshold"]},
}


def _align(column: str) -> str:
    return "left" if column in _LEFT_COLUMNS else "right"


def _shown(value: Any) -> str:
    """Cell text: thousands separators for whole numbers, two decimals for the rest."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def data_table(
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    empty: str,
    row_style: Callable[[Mapping[str, Any]], dict[str, str]] | None = None,
    cell_style: Callable[[str, Mapping[str, Any]], dict[str, str]] | None = None,
    row_id: Callable[[Mapping[str, Any]], dict[str, str]] | None = None,
) -> html.Table:
    """A plain HTML table (rows from ``queries.table_rows``), sticky header, no paging."""
    head = html.Thead(
        html.Tr(
            [html.Th(_COLUMN_NAMES[c], style={**_HEAD, "textAlign": _align(c)}) for c in columns]
        )
    )
    if not rows:
        body = [
            html.Tr(
                html.Td(
                    empty,
                    colSpan=len(columns),
                    style={**_CELL, "color": COLORS["muted"], "textAlign": "center"},
                )
            )
        ]
    else:
        body = []
        for row in rows:
            style = row_style(row) if row_style else {}
            cells = [
                html.Td(
                    _shown(row.get(c)),
                    style={
                        **_CELL,
                        "textAlign": _align(c),
                        **(cell_style(c, row) if cell_style else {}),
                    },
                )
                for c in columns
            ]
            extra: dict[str, Any] = {}
            if row_id is not None:
                extra = {"id": row_id(row), "n_clicks": 0}
                style = {**style, "cursor": "pointer"}
            body.append(html.Tr(cells, style=style, **extra))
    return html.Table(
        [head, html.Tbody(body)],
        style={"borderCollapse": "collapse", "width": "100%", "fontFamily": FONT},
    )


#: Columns of the overview as shown (the full row also carries expected and threshold).
OVERVIEW_SHOWN = tuple(c for c in OVERVIEW_COLUMNS if c not in ("expected", "threshold"))


def overview_table(rows: Sequence[Mapping[str, Any]], selected: str | None) -> html.Table:
    """Every combo's latest hour; the selected combo highlighted, rows clickable
    (id ``{"type": "overview-row", "combo": ...}``)."""

    def row_style(row: Mapping[str, Any]) -> dict[str, str]:
        style = dict(_STATUS_STYLE.get(row.get("status") or "", {}))
        if row.get("combo") == selected:
            style.update({"background": "#e0ecff", "fontWeight": "600"})
        return style

    def cell_style(column: str, row: Mapping[str, Any]) -> dict[str, str]:
        if column == "flags_24h" and (row.get("flags_24h") or 0) > 0:
            return {"color": COLORS["flagged"], "fontWeight": "700"}
        return {}

    return data_table(
        OVERVIEW_SHOWN,
        rows,
        empty="waiting for scored hours…",
        row_style=row_style,
        cell_style=cell_style,
        row_id=lambda row: {"type": "overview-row", "combo": str(row["combo"])},
    )


def hours_table(rows: Sequence[Mapping[str, Any]], empty: str) -> html.Table:
    """Hours of one combo; flagged hours tinted red, warm-up and missing hours greyed."""

    def row_style(row: Mapping[str, Any]) -> dict[str, str]:
        style = dict(_STATUS_STYLE.get(row.get("status") or "", {}))
        if row.get("is_anomaly") == "yes":
            style["background"] = COLORS["flag_bg"]
        return style

    def cell_style(column: str, row: Mapping[str, Any]) -> dict[str, str]:
        if column == "is_anomaly" and row.get("is_anomaly") == "yes":
            return {"color": COLORS["flagged"], "fontWeight": "700"}
        return {}

    return data_table(HOUR_COLUMNS, rows, empty=empty, row_style=row_style, cell_style=cell_style)


_SCROLL = {"maxHeight": "360px", "overflowY": "auto", "overflowX": "auto"}


# -- figures -----------------------------------------------------------------------------------
# Figures are plain dicts (the plotly JSON schema): building ``go.Figure`` objects validates
# every property and costs several times more per refresh for a few thousand points.

Figure = dict[str, Any]


def _base_layout(height: int, uirevision: str | None) -> dict[str, Any]:
    return {
        "template": TEMPLATE,
        "height": height,
        "margin": {"l": 60, "r": 16, "t": 40, "b": 36},
        "font": {"family": FONT, "size": 12, "color": COLORS["ink"]},
        "legend": {
            "orientation": "h",
            "yanchor": "bottom",
            "y": 1.0,
            "x": 1,
            "xanchor": "right",
            "font": {"size": 12},
            "traceorder": "normal",
        },
        "hovermode": "x unified",
        "uirevision": uirevision,
        "xaxis": {"showgrid": True, "gridcolor": "#eef2f7"},
        "yaxis": {"showgrid": True, "gridcolor": "#eef2f7", "zeroline": False},
    }


def empty_figure(message: str, height: int) -> Figure:
    """A blank figure with a centred message (no data yet)."""
    figure_layout = _base_layout(height, None)
    figure_layout["xaxis"] = {"visible": False}
    figure_layout["yaxis"] = {"visible": False}
    if message:
        figure_layout["annotations"] = [
            {
                "text": message,
                "showarrow": False,
                "x": 0.5,
                "y": 0.5,
                "xref": "paper",
                "yref": "paper",
                "font": {"size": 14, "color": COLORS["muted"]},
            }
        ]
    return {"data": [], "layout": figure_layout}


def _times(hours: pd.Series) -> list[str]:
    """UTC timestamps as naive ISO strings (plotly draws them as given: UTC on the axis)."""
    return hours.dt.strftime("%Y-%m-%dT%H:%M:%S").tolist()


def _nullable(series: pd.Series) -> list[Any]:
    return [None if pd.isna(v) else float(v) for v in series]


def band_polygons(x: Sequence[Any], low: pd.Series, high: pd.Series) -> tuple[list[Any], list[Any]]:
    """One closed polygon per run of hours that have a band, separated by None.

    A ``tonexty`` fill between two gappy lines smears across the gaps; closed polygons
    (``fill="toself"``) leave warm-up and missing hours blank.

    Examples
    --------
    >>> xs, ys = band_polygons([1, 2, 3, 4], pd.Series([1.0, 1.0, None, 1.0]),
    ...                        pd.Series([2.0, 2.0, None, 2.0]))
    >>> xs
    [1, 2, 2, 1, 1, None, 4, 4, 4, None]
    >>> ys
    [2.0, 2.0, 1.0, 1.0, 2.0, None, 2.0, 1.0, 2.0, None]
    """
    xs: list[Any] = []
    ys: list[Any] = []
    run: list[tuple[Any, float, float]] = []

    def close() -> None:
        if run:
            xs.extend([p[0] for p in run] + [p[0] for p in reversed(run)] + [run[0][0], None])
            ys.extend([p[2] for p in run] + [p[1] for p in reversed(run)] + [run[0][2], None])
            run.clear()

    for at, lo, hi in zip(x, low, high, strict=True):
        if pd.isna(lo) or pd.isna(hi):
            close()
        else:
            run.append((at, float(lo), float(hi)))
    close()
    return xs, ys


def series_figure(frame: pd.DataFrame, combo: str, truth: pd.DataFrame | None = None) -> Figure:
    """Counts (line), expected range (shaded band + dotted expected), flagged hours (red
    markers, trace ``flagged``), missing hours (grey crosses) and, when given, labelled
    hours from the dataset file (trace ``TRUTH_NAME``)."""
    if frame.empty:
        return empty_figure(f"no scored hours for {combo} yet", 400)
    traces = _count_traces(frame)
    missing = frame["status"].eq("missing")
    if missing.any():
        traces.append(_missing_trace(frame, missing))
    traces.append(_flagged_count_trace(frame[frame["is_anomaly"]]))
    if truth is not None:
        traces.append(_truth_trace(truth))
    return {"data": traces, "layout": _series_layout(combo)}


def _count_traces(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The expected range (closed polygons), the dotted expected count and the count line."""
    x = _times(frame["hour"])
    band_x, band_y = band_polygons(x, frame["expected_low"], frame["expected_high"])
    return [
        {
            "type": "scatter",
            "x": band_x,
            "y": band_y,
            "name": "expected range",
            "mode": "lines",
            "legendrank": 3,
            "line": {"width": 0},
            "fill": "toself",
            "fillcolor": COLORS["band"],
            "hoverinfo": "skip",
        },
        {
            "type": "scatter",
            "x": x,
            "y": _nullable(frame["expected"]),
            "name": "expected",
            "mode": "lines",
            "legendrank": 2,
            "line": {"color": COLORS["expected"], "width": 1.2, "dash": "dot"},
            "hovertemplate": "%{y:,.0f}",
        },
        {
            "type": "scatter",
            "x": x,
            "y": _nullable(frame["count"]),
            "name": "count",
            "mode": "lines",
            "legendrank": 1,
            "line": {"color": COLORS["count"], "width": 1.8},
            "customdata": frame["status"].tolist(),
            "hovertemplate": "%{y:,.0f} (%{customdata})",
        },
    ]


def _missing_trace(frame: pd.DataFrame, missing: pd.Series) -> dict[str, Any]:
    """Grey crosses at the ``missing`` hours, drawn at the count interpolated across them."""
    filled = frame["count"].interpolate(limit_area="inside").bfill().ffill()
    return {
        "type": "scatter",
        "x": _times(frame.loc[missing, "hour"]),
        "y": _nullable(filled[missing]),
        "name": "missing hour",
        "mode": "markers",
        "legendrank": 6,
        "marker": {
            "color": COLORS["muted"],
            "size": 9,
            "symbol": "x-thin",
            "line": {"width": 2, "color": COLORS["muted"]},
        },
        "hovertemplate": "no data for this hour",
    }


def _flagged_count_trace(flagged: pd.DataFrame) -> dict[str, Any]:
    """Red markers on the counts of the ``flagged`` hours, hovering direction and score."""
    return {
        "type": "scatter",
        "x": _times(flagged["hour"]),
        "y": _nullable(flagged["count"]),
        "name": "flagged",
        "mode": "markers",
        "legendrank": 4,
        "marker": {
            "color": COLORS["flagged"],
            "size": 9,
            "line": {"color": "white", "width": 1},
        },
        "customdata": [
            [None if pd.isna(score) else float(score), direction or ""]
            for score, direction in zip(flagged["score"], flagged["direction"], strict=True)
        ],
        "hovertemplate": "flagged %{customdata[1]} · score %{customdata[0]:.2f}",
    }


def _truth_trace(truth: pd.DataFrame) -> dict[str, Any]:
    """Open diamonds at the hours the dataset file labels (trace ``TRUTH_NAME``)."""
    return {
        "type": "scatter",
        "x": _times(truth["hour"]) if len(truth) else [],
        "y": _nullable(truth["count"]) if len(truth) else [],
        "name": TRUTH_NAME,
        "mode": "markers",
        "legendrank": 5,
        "marker": {
            "color": COLORS["truth"],
            "size": 15,
            "symbol": "diamond-open",
            "line": {"width": 2},
        },
        "customdata": truth["anomaly_type"].fillna("").astype(str).tolist(),
        "hovertemplate": "labelled %{customdata}",
    }


def _series_layout(combo: str) -> dict[str, Any]:
    """The count figure's layout: titled, legend below the time axis."""
    figure_layout = _base_layout(400, combo)
    figure_layout["title"] = {"text": f"{combo}: hourly count", "x": 0, "font": {"size": 14}}
    # Up to six legend entries: below the time axis, so they never cover the title.
    figure_layout["legend"].update({"y": -0.16, "yanchor": "top", "x": 0, "xanchor": "left"})
    figure_layout["margin"] = {"l": 60, "r": 16, "t": 40, "b": 20}
    figure_layout["yaxis"]["title"] = {"text": "transactions / hour"}
    return figure_layout


def score_figure(frame: pd.DataFrame, combo: str) -> Figure:
    """Calibrated score (line), the threshold (dashed) and flagged hours (red markers)."""
    if frame.empty or frame["score"].isna().all():
        return empty_figure("no scores yet (warming up)" if not frame.empty else "", 230)
    x = _times(frame["hour"])
    flagged = frame[frame["is_anomaly"]]
    traces = [
        {
            "type": "scatter",
            "x": x,
            "y": _nullable(frame["score"]),
            "name": "score",
            "mode": "lines",
            "line": {"color": COLORS["score"], "width": 1.6},
            "hovertemplate": "%{y:.2f}",
        },
        {
            "type": "scatter",
            "x": x,
            "y": _nullable(frame["threshold"]),
            "name": "threshold",
            "mode": "lines",
            "line": {"color": COLORS["threshold"], "width": 1.4, "dash": "dash"},
            "hovertemplate": "%{y:.2f}",
            "connectgaps": True,
        },
        {
            "type": "scatter",
            "x": _times(flagged["hour"]),
            "y": _nullable(flagged["score"]),
            "name": "flagged",
            "mode": "markers",
            "marker": {"color": COLORS["flagged"], "size": 7},
            "showlegend": False,
            "hovertemplate": "flagged",
        },
    ]
    figure_layout = _base_layout(230, combo)
    figure_layout["title"] = {
        "text": "anomaly score (calibrated; higher = more anomalous)",
        "x": 0,
        "font": {"size": 13},
    }
    return {"data": traces, "layout": figure_layout}
