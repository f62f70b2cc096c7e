"""Load any CSV of counts onto a regular per-series time grid, plus small window helpers.

``load_counts`` turns a long CSV (one row per series and time step) into the project's
*grid frame*: one row per combo and step from the combo's first to its last timestamp,
with absent steps present as ``missing`` rows (``NaN`` value, never zero).  Labels,
event ids and the train/val/test split come from the file when it has them; otherwise
labels are empty and the split is cut by time (70/15/15 by default).

Grid frame columns (sorted by ``combo``, then ``timestamp``):

============  ===================  =====================================================
column        dtype                meaning
============  ===================  =====================================================
timestamp     datetime64[ns, UTC]  start of the step
combo         str                  series key
value         float64              the count; NaN where missing
missing       bool                 no usable value at this step
is_anomaly    bool                 ground-truth label (False when the file has none)
anomaly_type  str                  "" when none
event_id      str                  "" when none
split         str                  "train", "val" or "test"
============  ===================  =====================================================

Pure pandas/numpy: nothing here imports Spark, Kafka, Dash or torch, and nothing reads
the clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from app.errors import ContractError, DataError
from app.timebase import TimeBase, infer_freq, parse_freq

__all__ = [
    "FRAME_COLUMNS",
    "SPLITS",
    "ColumnSpec",
    "check_min_length",
    "load_counts",
    "parse_freq",
    "series_by_combo",
    "sliding_windows",
    "split_frame",
]

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
FRAME_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "combo",
    "value",
    "missing",
    "is_anomaly",
    "anomaly_type",
    "event_id",
    "split",
)
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
_TRUE = frozenset({"1", "1.0", "true", "t", "yes", "y"})
_FALSE = frozenset({"0", "0.0", "false", "f", "no", "n", ""})
_EMPTY_VALUES = frozenset({"", "nan", "na", "n/a", "null", "none"})
_OPTIONAL = ("label", "split", "event", "anomaly_type")
_ZONED = r"\d:\d\d(?::\d\d(?:\.\d+)?)?\s*(?:[zZ]|[+-]\d\d:?\d\d|UTC|GMT)$"

_T = TypeVar("_T", bound=np.generic)


@dataclass(frozen=True)
class ColumnSpec:
    """Which CSV columns hold what.

    ``time``, ``key`` and ``value`` must exist (``key=None`` reads the whole file as one
    series, named after the file).  The optional columns follow one rule: left at its
    standard name, a column is used when the file has it and ignored when it does not;
    renamed to anything else, it must exist (a typo is an error, not silently no
    labels); ``None`` means "do not use it even if present".

    Attributes
    ----------
    time
        Timestamps: ISO 8601 or anything pandas parses; naive = UTC, offsets converted.
    key
        Series key (combo).
    value
        Non-negative counts; an empty cell (or ``NaN``/``null``) is a missing step.
    label
        Ground-truth anomaly flag: 0/1 or true/false, empty = 0.
    split
        ``train``/``val``/``test`` (``validation``/``valid`` accepted).
    event
        Anomaly event id (groups labelled steps into events).
    anomaly_type
        Kind of anomaly (free text).
    """

    time: str = "timestamp"
    key: str | None = "combo"
    value: str = "count"
    label: str | None = "is_anomaly"
    split: str | None = "split"
    event: str | None = "event_id"
    anomaly_type: str | None = "anomaly_type"


_DEFAULT_NAMES = {f.name: f.default for f in fields(ColumnSpec)}


RESAMPLE_METHODS: tuple[str, ...] = ("sum", "mean", "last")
VALUE_KINDS: tuple[str, ...] = ("counts", "real")
#: What ``--values`` accepts: a kind, or ``auto`` (counts when every value is a
#: non-negative whole number, real otherwise; decided on the file and logged).
VALUE_CHOICES: tuple[str, ...] = ("auto", *VALUE_KINDS)


def load_counts(
    path: str | Path,
    columns: ColumnSpec = ColumnSpec(),  # frozen, so a shared default is safe
    freq: str = "1h",
    train_frac: float = 0.70,
    val_frac: float = 0.15,
    *,
    resample: str | None = None,
    values: str = "counts",
) -> pd.DataFrame:
    """Read a long CSV of counts into the grid frame (see the module docstring).

    Parameters
    ----------
    path
        The CSV file.
    columns
        Which columns hold what; see ``ColumnSpec`` for the optional-column rule.
    freq
        Step of the grid (fixed pandas frequency: ``"1h"``, ``"30min"``, ...), or
        ``"auto"``: the most common step between consecutive timestamps (logged).  Every
        timestamp must sit on it (counted from the Unix epoch, in UTC) unless
        ``resample`` is given.
    train_frac, val_frac
        Only when the file has no split column: the first ``train_frac`` of each
        series' grid is ``train``, the next ``val_frac`` is ``val``, the rest ``test``.
    resample
        ``None`` (default): off-grid or repeated timestamps are an error.  ``"sum"``
        (counts), ``"mean"`` or ``"last"``: rows are moved to the start of their grid
        step and the rows sharing a step are aggregated (labels: any; logged).
    values
        ``"counts"`` (default): values must be >= 0.  ``"real"``: any finite number
        (already normalised KPIs, rates, temperatures).  ``"auto"``: ``value_kind_of``
        the file's values (the CLIs' default); ``frame.attrs["values"]`` says which.

    Returns
    -------
    pandas.DataFrame
        The grid frame, columns ``FRAME_COLUMNS``; ``attrs`` holds ``source``, ``freq``
        and ``split_source`` (``"file"`` or ``"fractions"``).

    Raises
    ------
    ContractError
        A required column is absent, a cell cannot be parsed (bad timestamp, non-numeric
        or negative count, bad label or split), a (combo, timestamp) pair repeats, a
        timestamp is off the ``freq`` grid, or a combo's splits are not in time order.
    ValueError
        Bad ``freq`` or fractions.
    """
    _check_load_options(freq, train_frac, val_frac, resample=resample, values=values)
    path = Path(path)
    raw = _read_text_table(path)
    used = _resolve_columns(columns, list(raw.columns), path)
    lines = np.arange(len(raw)) + 2  # 1-based file lines; line 1 is the header

    keys = _read_keys(raw, used["key"], path, lines)
    time_col, value_col = columns.time, columns.value  # required: checked above
    times = _parse_times(raw[time_col], path, time_col, keys, lines)
    parsed, empty = _parse_values(
        raw[value_col], path, value_col, keys, times, lines, allow_negative=values != "counts"
    )
    if values == "auto":
        values = _infer_value_kind(parsed[~empty], path)
    if freq == "auto":
        freq = infer_freq(times, keys)
        log.info("%s: time step inferred from the data: freq=%s (--freq sets it)", path, freq)
    step = parse_freq(freq)
    frame = _row_frame(raw, used, path, times=times, keys=keys, values=parsed, lines=lines)

    if resample is not None:
        frame = _resample(frame, step, resample, path, has_split=bool(used["split"]))
    _check_unique(frame, path)
    _check_aligned(frame, step, freq, path)
    frame = frame.sort_values(["combo", "timestamp"], kind="stable").reset_index(drop=True)
    if used["split"]:
        _check_split_order(frame, path)

    parts = [
        _to_grid(series, step, train_frac, val_frac, has_split=used["split"] is not None)
        for _, series in frame.groupby("combo", sort=True)
    ]
    out = pd.concat(parts, ignore_index=True)[list(FRAME_COLUMNS)]
    out.attrs.update(
        source=str(path),
        freq=freq,
        step_seconds=int(step.total_seconds()),
        values=values,
        split_source="file" if used["split"] else "fractions",
    )
    _log_summary(out, path, n_rows=len(raw), n_empty=int(empty.sum()))
    return out


def value_kind_of(values: ArrayLike) -> str:
    """``"counts"`` when every finite value is a non-negative whole number, else ``"real"``.

    Examples
    --------
    >>> value_kind_of([0, 3, 12]), value_kind_of([0.5, 2]), value_kind_of([-1, 2])
    ('counts', 'real', 'real')
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return "counts" if bool((v >= 0).all() and (v == np.round(v)).all()) else "real"


def split_frame(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of one split (``"all"`` keeps every row), index reset.

    Parameters
    ----------
    frame
        A grid frame.
    split
        ``train``, ``val`` (or ``validation``/``valid``), ``test`` or ``all``.

    Returns
    -------
    pandas.DataFrame
        A copy of the matching rows.

    Examples
    --------
    >>> f = pd.DataFrame({"value": [1.0, 2.0, 3.0], "split": ["train", "val", "test"]})
    >>> split_frame(f, "validation")["value"].tolist()
    [2.0]
    """
    if split == "all":
        return frame.reset_index(drop=True)
    name = _SPLIT_ALIASES.get(split.strip().lower())
    if name is None:
        raise ValueError(f"split={split!r} is not one of {[*SPLITS, 'all']}")
    return frame[frame["split"] == name].reset_index(drop=True)


def series_by_combo(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """One frame per combo, sorted by timestamp, index reset; keys in sorted order.

    Examples
    --------
    >>> f = pd.DataFrame({"combo": ["b", "a", "b"], "timestamp": [2, 1, 1]})
    >>> {k: v["timestamp"].tolist() for k, v in series_by_combo(f).items()}
    {'a': [1], 'b': [1, 2]}
    """
    return {
        str(combo): series.sort_values("timestamp", kind="stable").reset_index(drop=True)
        for combo, series in frame.groupby("combo", sort=True)
    }


def sliding_windows(values: NDArray[_T], window: int) -> NDArray[_T]:
    """All windows of ``window`` consecutive values, one per row (a read-only view).

    Row ``i`` covers ``values[i : i + window]``, so the row *ending* at index ``t`` is
    row ``t - window + 1``.  Shorter input than ``window`` gives zero rows.

    Parameters
    ----------
    values
        1-D array.
    window
        Window length, at least 1.

    Returns
    -------
    NDArray
        Shape ``(max(n - window + 1, 0), window)``, same dtype as ``values``.

    Examples
    --------
    >>> sliding_windows(np.arange(5), 3)
    array([[0, 1, 2],
           [1, 2, 3],
           [2, 3, 4]])
    >>> sliding_windows(np.arange(2.0), 3).shape
    (0, 3)
    """
    arr: NDArray[_T] = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {arr.shape}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window!r}")
    if arr.shape[0] < window:
        return arr[:0, np.newaxis].repeat(window, axis=1)
    return np.lib.stride_tricks.sliding_window_view(arr, window)


def check_min_length(
    frame: pd.DataFrame,
    window: int,
    min_train_points: int,
    split: str = "train",
    hint: str = "",
    step_seconds: int | None = None,
) -> dict[str, int]:
    """Make sure every combo has enough observed steps in ``split`` to train on.

    A combo needs at least ``max(min_train_points, window)`` non-missing steps there.

    Parameters
    ----------
    frame
        A grid frame.
    window
        Window length of the detector.
    min_train_points
        Minimum number of observed training steps.
    split
        The split to count in (default ``train``).
    hint
        Appended to the error: what the user can change to need fewer steps.
    step_seconds
        The grid's step; the error then states the lengths in time as well.

    Returns
    -------
    dict[str, int]
        Observed steps per combo.

    Raises
    ------
    DataError
        Naming every combo that is too short, with its count.
    """
    need = max(int(min_train_points), int(window))
    part = split_frame(frame, split)
    combos = sorted(frame["combo"].unique())
    observed = (~part["missing"]).groupby(part["combo"]).sum()
    counts = {str(c): int(observed.get(c, 0)) for c in combos}
    short = {c: n for c, n in counts.items() if n < need}
    if short:

        def steps(n: int) -> str:
            return TimeBase(step_seconds).describe(n) if step_seconds else f"{n} steps"

        listed = ", ".join(f"{c!r} has {steps(n)}" for c, n in short.items())
        raise DataError(
            f"series too short to train on: {listed} of observed {split} data; each needs at "
            f"least {steps(need)} (max of min_train_points={min_train_points} and "
            f"window={window})" + (f"; {hint}" if hint else "")
        )
    return counts


# --------------------------------------------------------------------------- internals


def _check_load_options(
    freq: str, train_frac: float, val_frac: float, *, resample: str | None, values: str
) -> None:
    """``load_counts``' options, checked before the file is read (``ValueError``)."""
    if resample is not None and resample not in RESAMPLE_METHODS:
        raise ValueError(f"resample={resample!r} is not one of {RESAMPLE_METHODS} (or None)")
    if values not in VALUE_CHOICES:
        raise ValueError(f"values={values!r} is not one of {VALUE_CHOICES}")
    if freq != "auto":
        parse_freq(freq)
    if not (0.0 < train_frac < 1.0 and 0.0 <= val_frac < 1.0 and train_frac + val_frac <= 1.0):
        raise ValueError(
            f"train_frac={train_frac!r}, val_frac={val_frac!r}: need 0 < train_frac < 1, "
            "0 <= val_frac and train_frac + val_frac <= 1"
        )


def _read_keys(
    raw: pd.DataFrame, key_col: str | None, path: Path, lines: NDArray[np.int64]
) -> pd.Series:
    """Each row's series key: column ``key_col`` stripped (never empty), or the file's name
    for every row when there is no key column."""
    keys = (
        raw[key_col].str.strip()
        if key_col is not None
        else pd.Series(path.stem, index=raw.index, dtype=object)
    )
    if key_col is not None and (keys == "").any():
        i = int(np.flatnonzero((keys == "").to_numpy())[0])
        raise ContractError(f"{path}: line {lines[i]}: empty key in column {key_col!r}")
    return keys


def _infer_value_kind(observed: NDArray[np.float64], path: Path) -> str:
    """``value_kind_of`` the file's observed values, logged with the reason."""
    kind = value_kind_of(observed)
    log.info(
        "%s: values are %s (%s; --values sets it)",
        path,
        kind,
        "non-negative whole numbers"
        if kind == "counts"
        else "some are negative or fractional: no log transform, injections in units of "
        "the series' spread",
    )
    return kind


def _row_frame(
    raw: pd.DataFrame,
    used: dict[str, str | None],
    path: Path,
    *,
    times: pd.Series,
    keys: pd.Series,
    values: NDArray[np.float64],
    lines: NDArray[np.int64],
) -> pd.DataFrame:
    """One row per file row: time, key, value and file line, with its event id, anomaly
    type, label (from the label column, else "has an event id") and, when the file has
    one, split."""
    frame = pd.DataFrame(
        {
            "timestamp": times,
            "combo": keys.astype(object),
            "value": values,
            "line": lines,
        }
    )
    event_col, type_col = used["event"], used["anomaly_type"]
    frame["event_id"] = raw[event_col].str.strip() if event_col else ""
    frame["anomaly_type"] = raw[type_col].str.strip() if type_col else ""
    if used["label"]:
        frame["is_anomaly"] = _parse_labels(raw[used["label"]], path, used["label"], lines)
    else:
        frame["is_anomaly"] = frame["event_id"] != ""
    if used["split"]:
        frame["split"] = _parse_splits(raw[used["split"]], path, used["split"], lines)
    return frame


def _read_text_table(path: Path) -> pd.DataFrame:
    """Every cell as a string, nothing turned into NaN yet (we validate it ourselves)."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError as exc:
        raise ContractError(f"{path} is empty (expected a header and rows)") from exc
    except pd.errors.ParserError as exc:
        raise ContractError(f"{path} is not a readable CSV: {exc}") from exc
    raw.columns = [str(c).strip() for c in raw.columns]
    if raw.empty:
        raise ContractError(f"{path} has a header ({list(raw.columns)}) but no rows")
    return raw


def _resolve_columns(spec: ColumnSpec, header: list[str], path: Path) -> dict[str, str | None]:
    """Map each role to the column actually used (``None`` = not used)."""
    used: dict[str, str | None] = {}
    for role in ("time", "key", "value", *_OPTIONAL):
        name = getattr(spec, role)
        if name is None:
            if role in ("time", "value"):
                raise ValueError(f"ColumnSpec.{role} cannot be None")
            used[role] = None
        elif name in header:
            used[role] = name
        elif role in _OPTIONAL and name == _DEFAULT_NAMES[role]:
            used[role] = None  # standard optional column, simply not in this file
        else:
            raise ContractError(
                f"{path}: column {name!r} (ColumnSpec.{role}) is not in the file; "
                f"its columns are {header}"
            )
    chosen = [c for c in used.values() if c is not None]
    clashes = sorted({c for c in chosen if chosen.count(c) > 1})
    if clashes:
        raise ValueError(f"ColumnSpec uses column(s) {clashes} for more than one role")
    return used


def _where(keys: pd.Series, i: int) -> str:
    return f"combo {keys.iloc[i]!r}"


def _parse_times(
    raw: pd.Series, path: Path, col: str, keys: pd.Series, lines: NDArray[np.int64]
) -> pd.Series:
    """Parse to UTC: naive means UTC, offsets are converted."""
    text = raw.str.strip()
    # Parse zoned and naive strings apart: pandas 2.3 applies an earlier row's offset to
    # later naive rows when both kinds share one ISO 8601 call.
    zoned = text.str.contains(_ZONED, regex=True).to_numpy()
    times = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    for part in (zoned, ~zoned):
        if part.any():
            times[part] = pd.to_datetime(text[part], utc=True, format="ISO8601", errors="coerce")
    retry = times.isna() & (text != "")
    if retry.any():
        times[retry] = pd.to_datetime(text[retry], utc=True, format="mixed", errors="coerce")
    bad = times.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ContractError(
            f"{path}: line {lines[i]}: timestamp {text.iloc[i]!r} in column {col!r} "
            f"({_where(keys, i)}) is not a date-time; {int(bad.sum())} row(s) like this"
        )
    return times.astype("datetime64[ns, UTC]")


def _parse_values(
    raw: pd.Series,
    path: Path,
    col: str,
    keys: pd.Series,
    times: pd.Series,
    lines: NDArray[np.int64],
    *,
    allow_negative: bool = False,
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Counts as float64; empty cells become NaN (missing). Returns (values, empty)."""
    text = raw.str.strip()
    empty = text.str.lower().isin(_EMPTY_VALUES).to_numpy()
    values = pd.to_numeric(text.where(~empty), errors="coerce").to_numpy(dtype=np.float64)

    def fail(mask: NDArray[np.bool_], what: str) -> None:
        i = int(np.flatnonzero(mask)[0])
        raise ContractError(
            f"{path}: line {lines[i]}: {col} {text.iloc[i]!r} ({_where(keys, i)}, "
            f"{times.iloc[i].isoformat()}) {what}; {int(mask.sum())} row(s) like this"
        )

    not_number = ~empty & ~np.isfinite(values)
    if not_number.any():
        fail(not_number, "is not a finite number")
    negative = ~empty & (values < 0)
    if negative.any() and not allow_negative:
        fail(
            negative,
            "is negative (counts must be >= 0; pass --values real for values that are not counts)",
        )
    return values, empty


def _parse_labels(raw: pd.Series, path: Path, col: str, lines: NDArray[np.int64]) -> pd.Series:
    text = raw.str.strip().str.lower()
    bad = ~(text.isin(_TRUE) | text.isin(_FALSE)).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ContractError(
            f"{path}: line {lines[i]}: label {raw.iloc[i]!r} in column {col!r} is not "
            "0/1 or true/false"
        )
    return text.isin(_TRUE)


def _parse_splits(raw: pd.Series, path: Path, col: str, lines: NDArray[np.int64]) -> pd.Series:
    mapped = raw.str.strip().str.lower().map(_SPLIT_ALIASES)
    bad = mapped.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ContractError(
            f"{path}: line {lines[i]}: split {raw.iloc[i]!r} in column {col!r} is not one of "
            f"{list(SPLITS)} (or validation/valid)"
        )
    return mapped.astype(object)


def _check_unique(frame: pd.DataFrame, path: Path) -> None:
    dup = frame.duplicated(["combo", "timestamp"], keep=False).to_numpy()
    if not dup.any():
        return
    rows = frame[dup]
    first = rows.iloc[0]
    same = rows[(rows["combo"] == first["combo"]) & (rows["timestamp"] == first["timestamp"])]
    n_pairs = len(rows.drop_duplicates(["combo", "timestamp"]))
    raise ContractError(
        f"{path}: duplicate rows for combo {first['combo']!r} at "
        f"{first['timestamp'].isoformat()} (lines {same['line'].tolist()}); "
        f"{n_pairs} (combo, timestamp) pair(s) repeat. Pass --resample sum (counts), mean "
        "or last to aggregate them onto the grid, or drop duplicates first"
    )


def _check_aligned(frame: pd.DataFrame, step: pd.Timedelta, freq: str, path: Path) -> None:
    ts = frame["timestamp"]
    off = (ts != ts.dt.floor(step)).to_numpy()
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise ContractError(
            f"{path}: line {frame['line'].iloc[i]}: timestamp {ts.iloc[i].isoformat()} "
            f"(combo {frame['combo'].iloc[i]!r}) is not on the freq={freq!r} grid; "
            f"{int(off.sum())} row(s) like this. Pass the data's real freq (or --freq auto), or "
            "--resample sum|mean|last to aggregate onto the grid"
        )


def _resample(
    frame: pd.DataFrame, step: pd.Timedelta, method: str, path: Path, *, has_split: bool
) -> pd.DataFrame:
    """Rows moved to the start of their grid step; rows sharing a (combo, step) merged.

    Values: ``method`` over the present ones (a step whose rows are all empty stays
    missing); labels: any; event id and anomaly type: the first non-empty; split: the
    earliest (train before val before test) of the merged rows.
    """
    frame = frame.copy()
    moved = frame["timestamp"] != frame["timestamp"].dt.floor(step)
    frame["timestamp"] = frame["timestamp"].dt.floor(step)
    frame = frame.sort_values(["combo", "timestamp", "line"], kind="stable")
    agg: dict[str, Any] = {
        "line": pd.NamedAgg("line", "first"),
        "rows": pd.NamedAgg("line", "size"),
        "is_anomaly": pd.NamedAgg("is_anomaly", "max"),
        "event_id": pd.NamedAgg("event_id", "max"),
        "anomaly_type": pd.NamedAgg("anomaly_type", "max"),
    }
    if has_split:
        frame["_rank"] = frame["split"].map({s: i for i, s in enumerate(SPLITS)})
        agg["_rank"] = pd.NamedAgg("_rank", "min")
    groups = frame.groupby(["combo", "timestamp"], sort=False)
    out = groups.agg(**agg)
    # Vectorised per method; sum keeps a step whose rows are all empty missing.
    values = groups["value"]
    out["value"] = values.sum(min_count=1) if method == "sum" else values.agg(method)
    out = out.reset_index()
    n_merged = int(out.loc[out["rows"] > 1, "rows"].sum())
    out = out.drop(columns="rows")
    if has_split:
        out["split"] = out["_rank"].map(dict(enumerate(SPLITS))).astype(object)
        out = out.drop(columns="_rank")
    out["is_anomaly"] = out["is_anomaly"].astype(bool)
    log.info(
        "%s: --resample %s onto %s steps: %d row(s) moved to their step's start, %d row(s) "
        "merged, %d -> %d rows",
        path,
        method,
        step,
        int(moved.sum()),
        n_merged,
        len(frame),
        len(out),
    )
    return out


def _check_split_order(frame: pd.DataFrame, path: Path) -> None:
    """Within each combo (sorted by time), splits must run train -> val -> test."""
    rank = frame["split"].map({s: i for i, s in enumerate(SPLITS)}).to_numpy()
    same_combo = frame["combo"].to_numpy()[1:] == frame["combo"].to_numpy()[:-1]
    back = np.flatnonzero(same_combo & (rank[1:] < rank[:-1]))
    if back.size:
        i = int(back[0]) + 1
        row, prev = frame.iloc[i], frame.iloc[i - 1]
        raise ContractError(
            f"{path}: line {row['line']}: combo {row['combo']!r} is {row['split']!r} at "
            f"{row['timestamp'].isoformat()} after {prev['split']!r} at "
            f"{prev['timestamp'].isoformat()}; splits must follow time: train, then val, "
            "then test"
        )


def _to_grid(
    series: pd.DataFrame,
    step: pd.Timedelta,
    train_frac: float,
    val_frac: float,
    *,
    has_split: bool,
) -> pd.DataFrame:
    """One combo (sorted by time) on its full regular grid."""
    indexed = series.set_index("timestamp")
    grid = pd.date_range(indexed.index[0], indexed.index[-1], freq=step, name="timestamp")
    out = indexed.reindex(grid).reset_index()
    out["combo"] = series["combo"].iloc[0]
    out["value"] = out["value"].astype(np.float64)
    out["missing"] = out["value"].isna()
    out["is_anomaly"] = out["is_anomaly"].eq(True)
    out["anomaly_type"] = out["anomaly_type"].fillna("").astype(object)
    out["event_id"] = out["event_id"].fillna("").astype(object)
    if has_split:
        # a gap takes the split of the observed step before it (a split starts at its
        # first observed step)
        out["split"] = out["split"].ffill().astype(object)
    else:
        n = len(out)
        n_train = int(np.floor(n * train_frac))
        n_train_val = int(np.floor(n * (train_frac + val_frac)))
        labels = np.full(n, "test", dtype=object)
        labels[:n_train_val] = "val"
        labels[:n_train] = "train"
        out["split"] = labels
    return out


def _log_summary(out: pd.DataFrame, path: Path, *, n_rows: int, n_empty: int) -> None:
    per_combo = out.groupby("combo")["missing"].agg(["size", "sum"])
    log.info(
        "loaded %s: %d rows -> %d grid steps, %d combos, %d missing (%d empty cells), "
        "%d labelled, split from %s",
        path,
        n_rows,
        len(out),
        len(per_combo),
        int(per_combo["sum"].sum()),
        n_empty,
        int(out["is_anomaly"].sum()),
        out.attrs.get("split_source", "?"),
    )
    for combo, row in per_combo.iterrows():
        share = row["sum"] / row["size"]
        if share > 0.2:
            log.warning(
                "combo %r: %d of %d grid steps are missing (%.0f%%): wrong freq? (an "
                "irregular series trains better resampled onto a coarser grid, e.g. "
                "--freq 5min --resample sum)",
                combo,
                row["sum"],
                row["size"],
                100 * share,
            )
